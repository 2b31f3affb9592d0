"""``python -m strategies``."""

from strategies.reference import main

raise SystemExit(main())

"""``python -m federated.config``."""

from federated.config.cli import main

raise SystemExit(main())

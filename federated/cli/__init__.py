"""The ``fedtune`` command."""

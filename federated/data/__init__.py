"""federated/data."""

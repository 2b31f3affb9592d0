"""Differential privacy: the accountant's ledger shared by clients and the server."""

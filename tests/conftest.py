"""Shared pytest fixtures. Tests run on CPU, seeded, on small generated data."""

"""Helpers shared by the tests (no tests and no fixtures here: fixtures live in conftest.py files)."""

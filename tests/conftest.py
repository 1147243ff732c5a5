"""Fixtures shared by all tests (helpers live in tests/helpers.py)."""

from helpers import fixture_repo  # noqa: F401

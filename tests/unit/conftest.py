"""Unit tests need no database: a test here that asks for one (through the suite's fixtures,
tests/conftest.py) fails at once instead of starting FerretDB."""

import pytest


@pytest.fixture(scope="session")
def mongodb_uri():
    pytest.fail("tests/unit runs without a database; a test that needs one belongs in tests/")

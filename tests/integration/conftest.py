import os

import pytest


@pytest.fixture(scope="session")
def ringway_bin():
    return os.environ["RINGWAY_BIN"]


@pytest.fixture(scope="session")
def mock_bin():
    return os.environ["RINGWAY_MOCK_BIN"]

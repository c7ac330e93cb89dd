"""Session-wide fixtures shared by several test files."""

from __future__ import annotations

import pytest

from tests.engine_helpers import make_synthetic


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A tiny synthetic dataset in MSR-VTT's format (24 train, 18 test clips)."""
    return make_synthetic(tmp_path_factory.mktemp("synthetic"))

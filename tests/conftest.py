"""Shared fixtures: the real data in ../shared/data, read in place, never copied."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Qt tests run headless; set before any Qt import (pytest-qt imports Qt when collecting).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Keep CPU tests reproducible and polite on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
# The label index of a folder without labels waits in the user cache: keep the tests' out of the
# real one (subprocesses inherit it too).
if "ALLBLAST_TEST_CACHE" not in os.environ:
    import tempfile

    os.environ["ALLBLAST_TEST_CACHE"] = os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="allblast-test-cache-")

# OpenVINO never runs inside the pytest process: `--backend auto` predicts with torch here (the
# engine's "OpenVINO is not installed" path). Its native thread pools, started in-process, made
# full runs die with SIGSEGV tens of tests later. The backend tests (tests/test_backends.py) run
# OpenVINO in spawned children (tests/backend_jobs.py), and every CLI test in a subprocess uses it
# as a user would.
sys.modules["openvino"] = None

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REQUIRE_SHARED = os.environ.get("ALLBLAST_REQUIRE_SHARED_DATA") == "1"


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        if REQUIRE_SHARED:
            pytest.fail(f"ALLBLAST_REQUIRE_SHARED_DATA=1 but {path} is missing")
        pytest.skip(f"real data not found at {path} (tests read ../shared/data in place)")
    return path


@pytest.fixture(scope="session")
def cnmc_dir() -> Path:
    """C-NMC 2019 samples: training_data/fold_0/{all,hem} + validation_data with the labels CSV."""
    return _shared("cnmc-samples")


@pytest.fixture(scope="session")
def pbc_dir() -> Path:
    """PBC: 8 classes x 250 JPEG cells, one folder per class, no patient ids."""
    return _shared("pbc-dev")


@pytest.fixture(scope="session")
def bccd_dir() -> Path:
    return _shared("bccd-dev")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the network fails the test, even if the code under test swallows the
    error (offline users must never wait on downloads and their retries)."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if len(args) > 1 else args)
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield
    assert not attempts, f"network access attempted: {attempts[:3]}"


def pytest_collection_modifyitems(session, config, items):
    """The 2-process DDP test (torchrun subprocesses) runs first. Late in one full run, after the
    GUI and OpenVINO tests, the pytest process itself died with SIGSEGV while it waited for that
    test's subprocess (no Python traceback; not reproduced with any pair of test files). Run first,
    it passed every time."""
    items.sort(key=lambda item: item.nodeid.split("::")[0] != "tests/test_ddp.py")  # stable: the rest keep order

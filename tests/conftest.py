"""Test-session settings and the fixtures several test files share."""

import os
from pathlib import Path

import pytest

# OpenMP threads that busy-wait make torch several times slower on small shared machines; set
# before torch is imported by any test module (the CLI and the Makefile do the same).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder of ``spdnn train`` (the tiny recipe of tests/test_train.py, 2 steps) for
    the tests of ``predict`` and ``evaluate``; one per test module."""
    from spdnn.cli import main
    from tests.test_train import tiny_recipe

    tmp = tmp_path_factory.mktemp("run")
    assert main(["train", str(tiny_recipe(tmp)), "-o", str(tmp / "run"), "--set", "steps=2",
                 "--quiet"]) == 0
    return tmp / "run"

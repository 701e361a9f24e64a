"""Shared helpers for the tests (no fixtures with hidden behaviour)."""

from __future__ import annotations

import glob
from pathlib import Path

import spdnn.spec as S

ROOT = Path(__file__).resolve().parents[1]
NETSPECS = ROOT / "netspecs"


def load_glob(pattern: str) -> list[S.Netspec]:
    """Load the netspecs matching a glob under the repository root, sorted by path."""
    paths = sorted(glob.glob(str(ROOT / pattern)))
    assert paths, f"no netspecs match {pattern}"
    return [S.load(p) for p in paths]


def all_netspec_paths() -> list[Path]:
    from spdnn.spec.blocks import netspec_paths  # block libraries are not netspecs

    return netspec_paths(NETSPECS)

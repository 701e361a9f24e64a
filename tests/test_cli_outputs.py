"""No command writes over its inputs, and an unwritable destination is a one-line error
(hardening issue, items 5, 6 and 10)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from spdnn.cli import main
from spdnn.io import remove_stale_temps, write_atomic
from tests.helpers import ROOT

IRIS_A = sorted((ROOT / "netspecs/iris/appendix_a").glob("*.yaml"))


@pytest.fixture
def parents(tmp_path: Path) -> list[Path]:
    out = []
    for p in IRIS_A:
        shutil.copy(p, tmp_path / p.name)
        out.append(tmp_path / p.name)
    return out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "internal error" not in err
    return err


@pytest.mark.parametrize("case", ["merge-o", "merge-report", "merge-o-is-report", "compile",
                                  "render", "merge-symlink"])
def test_an_output_that_is_an_input_is_refused(case, parents, tmp_path: Path, capsys):
    p1 = parents[0]
    before = p1.read_bytes()
    argv = {
        "merge-o": ["merge", *map(str, parents), "-o", str(p1)],
        "merge-report": ["merge", *map(str, parents), "--report", str(parents[1])],
        "merge-o-is-report": ["merge", *map(str, parents), "-o", str(tmp_path / "m.yaml"),
                              "--report", str(tmp_path / "m.yaml")],
        "compile": ["compile", str(p1), "-o", str(p1)],
        "render": ["render", str(p1), "-o", str(p1)],
        "merge-symlink": ["merge", *map(str, parents), "-o", str(tmp_path / "link.yaml")],
    }[case]
    if case == "merge-symlink":
        os.symlink(p1, tmp_path / "link.yaml")
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert ("overwrite the input" in err) or ("same file" in err)
    assert p1.read_bytes() == before and parents[1].read_text().startswith("#")
    assert not (tmp_path / "m.yaml").exists()


@pytest.mark.parametrize("dest", ["/proc/spdnn_x.py", "{tmp}", "{tmp}/ro/x.py", ""],
                         ids=["proc", "existing-dir", "read-only-dir", "empty"])
def test_an_unwritable_destination_is_a_one_line_error(dest, parents, tmp_path: Path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if dest == "{tmp}/ro/x.py" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    argv = ["compile", str(parents[0]), "-o", dest.format(tmp=tmp_path)]
    assert main(argv) == 2
    one_error_line(capsys)
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_atomic_writes_honour_the_umask_and_leave_no_temporary_file(tmp_path: Path):
    old = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # as open(path, "w") would, not 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_stale_temporary_files_are_removed(tmp_path: Path):
    stale = tmp_path / ".last.pt.abc123.tmp"
    fresh = tmp_path / ".best.pt.def456.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (1, 1))
    assert remove_stale_temps(tmp_path) == [stale]
    assert fresh.exists() and not stale.exists()

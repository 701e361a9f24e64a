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
    stale = tmp_path / ".last.pt.spdnn-abc12_3x.tmp"
    fresh = tmp_path / ".best.pt.spdnn-def456gh.tmp"
    users = [tmp_path / ".notes.tmp", tmp_path / ".last.pt.abc123.tmp",
             tmp_path / ".x.spdnn-toolongname.tmp"]  # not names spdnn gives
    for p in [stale, fresh, *users]:
        p.write_bytes(b"x")
        if p is not fresh:
            os.utime(p, (1, 1))
    assert remove_stale_temps(tmp_path) == [stale]
    assert fresh.exists() and not stale.exists() and all(p.exists() for p in users)


def test_atomic_write_names_its_temporary_file_as_the_clean_up_expects(tmp_path: Path,
                                                                        monkeypatch):
    import tempfile

    made = []
    real = tempfile.mkstemp

    def spy(*a, **k):
        fd, name = real(*a, **k)
        made.append(Path(name))
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    write_atomic(tmp_path / "last.pt", b"x")
    assert len(made) == 1
    made[0].write_bytes(b"left behind")
    os.utime(made[0], (1, 1))
    assert remove_stale_temps(tmp_path) == [made[0]]


def test_overwriting_keeps_the_mode_of_the_file(parents, tmp_path: Path, capsys):
    dest = tmp_path / "net.py"
    dest.write_text("old")
    dest.chmod(0o600)
    assert main(["compile", str(parents[0]), "-o", str(dest)]) == 0
    assert "old" not in dest.read_text()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


@pytest.mark.parametrize("kind", ["fifo", "dir", "device", "link-to-fifo"])
def test_an_existing_output_that_is_not_a_regular_file_is_refused(kind, parents, tmp_path: Path,
                                                                  capsys):
    dest = tmp_path / "out.py"
    if kind == "fifo":
        os.mkfifo(dest)
    elif kind == "dir":
        dest.mkdir()
    elif kind == "device":
        try:
            os.mknod(dest, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # as /dev/null
        except PermissionError:
            pytest.skip("mknod needs root")
    else:
        os.mkfifo(tmp_path / "fifo")
        dest.symlink_to(tmp_path / "fifo")
    before = os.lstat(dest)
    assert main(["compile", str(parents[0]), "-o", str(dest)]) == 2
    err = one_error_line(capsys)
    assert "not a regular file" in err
    after = os.lstat(dest)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


def test_an_output_may_not_replace_a_file_the_input_imports(tmp_path: Path, capsys):
    (tmp_path / "netspecs").mkdir()
    for sub in ("dirty_pixels", "blocks"):
        shutil.copytree(ROOT / "netspecs" / sub, tmp_path / "netspecs" / sub)
    lib = tmp_path / "netspecs/blocks/dirty_pixels.yaml"
    before = lib.read_bytes()
    link = tmp_path / "link.yaml"
    link.symlink_to(lib)
    for dest in (lib, link):
        argv = ["compile", str(tmp_path / "netspecs/dirty_pixels/denoise.yaml"), "-o", str(dest)]
        assert main(argv) == 2
        err = one_error_line(capsys)
        assert "overwrite the input" in err and "imported by" in err
    assert lib.read_bytes() == before

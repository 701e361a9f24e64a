"""Inputs checked before they are read (issue 28, items 3 to 5): YAML through libyaml within the
same bounds and line numbers, images against a pixel limit before decoding, ``.pts`` counts
against the header while reading, too-long path names, checkpoints and weight files validated
after a safe load, non-finite training losses, and a parameter limit in line with memory. Each
reproducer of the issue is a test here."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from spdnn.cli import main
from spdnn.errors import SpecError
from spdnn.spec import yaml_io
from tests.test_nothing_lost import one_error_line


# -- YAML -------------------------------------------------------------------------------------
def test_yaml_is_parsed_by_libyaml_when_pyyaml_has_it():
    if yaml_io.LIBYAML:
        assert yaml_io._BoundedLoader.__name__ == "_CBoundedLoader"


@pytest.mark.parametrize("shape", ["flat list", "90k keys"])
def test_a_large_yaml_file_is_decided_in_under_two_seconds(shape, tmp_path: Path):
    """The issue's reproducers: a 680 KB flat list took 16 s, 0.9 MB of 90k keys 9 s."""
    text = ("[" + "1," * 340_000 + "1]\n" if shape == "flat list"
            else "".join(f"k{i}: 1\n" for i in range(90_000)))
    path = tmp_path / "big.yaml"
    path.write_text(text)
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match=f"more than {yaml_io.MAX_NODES:,} nodes") as e:
        yaml_io.read_yaml(path)
    assert time.perf_counter() - t0 < 2
    assert e.value.line == (1 if shape == "flat list" else yaml_io.MAX_NODES // 2)  # the mapping is node 1


@pytest.mark.parametrize("loader", ["_PyBoundedLoader", "_BoundedLoader"])
@pytest.mark.parametrize("text,line,says", [
    ("a: 1\nb:\n\t- 2\n", 3, "found character '\\t' that cannot start any token"),
    ("a: [1, 2\nb: 3\n", 2, "expected ',' or ']'"),
    ("a: 1\na: 2\n", 2, "key 'a' is given twice"),
    ("a: &x [*x]\n", 1, "refers to the node that holds it"),
    ("a:\n  b: !!python/object:os.system x\n", 2, "YAML tag '!!python/object:os.system'"),
    ("a:\n  - !!int abc\n", 2, "YAML tag '!!int'"),
    ("a: 1\nb: \x07\n", 2, "#x0007"),
])
def test_both_parsers_give_the_same_line_and_message(loader, text, line, says, monkeypatch):
    monkeypatch.setattr(yaml_io, "_BoundedLoader", getattr(yaml_io, loader))
    with pytest.raises(SpecError) as e:
        yaml_io.load_yaml(text, file="f.yaml")
    assert e.value.line == line and says in e.value.one_line(), e.value.one_line()


# -- images -----------------------------------------------------------------------------------
def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width`` x ``height`` 8-bit gray pixels, with one empty
    data chunk: what a decompression bomb's first bytes say, without its megabytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("size,says", [
    ((12_000, 12_000), "is 12,000 x 12,000 pixels, over the limit of 67,108,864 pixels"),
    ((2_000_000, 1), "is 2,000,000 x 1 pixels"),
    ((30_000, 30_000), "is 30,000 x 30,000 pixels")])
def test_predict_refuses_a_huge_image_from_its_header(size, says, run, tmp_path: Path, capsys):
    """The issue's reproducers: a 140 KB 12000x12000 PNG took 68 s and 2.7 GB, a 1x2,000,000
    PNG 51 s, an 875 KB PNG declaring 900M pixels raised DecompressionBombError."""
    big = png_header(tmp_path / "big.png", *size)
    t0 = time.perf_counter()
    assert main(["predict", str(run), str(big), "-o", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - t0 < 5
    err = one_error_line(capsys)
    assert str(big) in err and says in err and "--limits pixels=" in err
    assert not (tmp_path / "out").exists()


def test_the_pixel_limit_is_a_size_limit_and_pillows(tmp_path: Path):
    import numpy as np
    from PIL import Image

    from spdnn.errors import SpdnnError
    from spdnn.io import read_image
    from spdnn.shapes import limits_set

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(path)
    assert read_image(path).shape == (60, 80)
    with limits_set("pixels=4000"), pytest.raises(SpdnnError, match="is 80 x 60 pixels"):
        read_image(path)
    assert Image.MAX_IMAGE_PIXELS == 4000
    with limits_set("pixels=5000"):
        assert read_image(path).shape == (60, 80)


# -- .pts landmark files ----------------------------------------------------------------------
@pytest.mark.parametrize("body,says", [
    ("1 2\n" * 5_000_000, "lists more than 68 points"),
    ("1" * 50_000_000, "a line longer than 256 characters"),
    ("1 2\n" * 67 + "nan 2\n}\n", "two finite numbers"),
])
def test_a_pts_file_is_checked_against_its_header_while_it_is_read(body, says, tmp_path: Path):
    """The issue's reproducer: a .pts file declaring 68 points and listing 50,000,000 took 57 s
    to be refused (here 5,000,000 and one 50 MB line, to keep the test's file small)."""
    from spdnn.data.landmarks import read_pts
    from spdnn.errors import SpdnnError

    p = tmp_path / "many.pts"
    p.write_text("version: 1\nn_points: 68\n{\n" + body)
    t0 = time.perf_counter()
    with pytest.raises(SpdnnError, match=says) as e:
        read_pts(p)
    assert time.perf_counter() - t0 < 0.5
    assert "many.pts" in e.value.one_line()


# -- path names -------------------------------------------------------------------------------
LONG = "a" * 300


@pytest.mark.parametrize("argv", [
    ["validate", f"{LONG}.yaml"], ["inspect", f"{LONG}.yaml"], ["train", f"{LONG}.yaml"],
    ["evaluate", LONG], ["evaluate", f"{LONG}/last.pt"], ["import", f"{LONG}.onnx", "-o", "o.yaml"],
    ["import", f"{LONG}.py:Net", "-o", "o.yaml"], ["zoo", "copy", "iris", LONG],
    ["zoo", "copy", "iris/parent_1", f"{LONG}/x.yaml"]], ids=lambda a: "-".join(a[:2])[:20])
def test_a_path_component_over_255_characters_is_one_line(argv, tmp_path, capsys, monkeypatch):
    """The issue's reproducer: 'OSError: File name too long' was an internal error (exit 1)
    in validate, inspect, train, evaluate, import and zoo copy."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert "aaaaaaaaaaaa...(30" in err and "too long" in err and "shorten the path" in err

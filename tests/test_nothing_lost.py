"""Nothing lost (issue 28, item 1): ``predict`` never writes over an input or another
output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spdnn.cli import main
from tests.test_train import tiny_recipe


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "internal error" not in err
    return err


def png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (60, 80), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    assert main(["train", str(tiny_recipe(tmp)), "-o", str(tmp / "run"), "--set", "steps=2",
                 "--quiet"]) == 0
    return tmp / "run"


# -- predict ------------------------------------------------------------------------------------
def test_predict_never_overwrites_an_input(run, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, a_pred = png(tmp_path / "a.png", 1), png(tmp_path / "a_pred.png", 2)
    before = a_pred.read_bytes()
    assert main(["predict", str(run), "a.png", "a_pred.png", "-o", "."]) == 2
    assert "overwrite the input a_pred.png" in one_error_line(capsys)
    assert a_pred.read_bytes() == before and a.is_file()


def test_predict_refuses_two_inputs_with_one_stem(run, tmp_path: Path, capsys):
    x1, x2 = png(tmp_path / "d1" / "x.png", 1), png(tmp_path / "d2" / "x.png", 2)
    assert main(["predict", str(run), str(x1), str(x2), "-o", str(tmp_path / "out")]) == 2
    assert "two outputs name the same file" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_predict_replaces_a_link_atomically_and_keeps_its_target(run, tmp_path: Path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("my notes")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_pred.png").symlink_to(victim)
    assert main(["predict", str(run), str(png(tmp_path / "a.png")), "-o", str(out)]) == 0
    assert victim.read_text() == "my notes"
    assert not (out / "a_pred.png").is_symlink()
    assert Image.open(out / "a_pred.png").size == (80, 60)
    assert sorted(p.name for p in out.iterdir()) == ["a_pred.png"]  # no temporary left


def test_predict_refuses_an_output_linked_to_an_input(run, tmp_path: Path, capsys):
    a = png(tmp_path / "a.png")
    before = a.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_pred.png").symlink_to(a)
    assert main(["predict", str(run), str(a), "-o", str(out)]) == 2
    assert "overwrite the input" in one_error_line(capsys)
    assert a.read_bytes() == before

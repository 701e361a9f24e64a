"""Every command that reads a checkpoint reads it safely (``spdnn.io.load_checkpoint``:
``torch.load(weights_only=True)``, no fallback).

A crafted ``last.pt``/``best.pt`` whose pickle would run code, a truncated checkpoint, random
bytes, an empty file, a valid torch file that is not an spdnn checkpoint and a checkpoint of an
old format are each fed to ``spdnn train --resume``, ``evaluate``, ``predict``, ``export`` and
``bench``: every command exits with code 2 and one line naming the file, and the crafted
file's code never runs.
"""

from __future__ import annotations

import pathlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from spdnn.cli import main
from spdnn.runs import trainer_for
from spdnn.train import load_recipe

NET = """
name: tiny_iris
input: {name: image, channels: 1, height: 96, width: 128}
layers:
  - {name: c1, op: Conv2d, kernel_size: 3, out_channels: 2, padding: same, batch_norm: true, activation: relu}
  - {name: c2, op: Conv2d, kernel_size: 3, out_channels: 1, padding: same, activation: sigmoid}
output: {name: mask, from: c2}
"""

RECIPE = """
name: tiny
task: iris
model: {netspec: tiny.yaml}
data: {source: synthetic, train_size: 8, val_size: 4, seed: 3}
optim: {name: sgd, lr: 0.05}
batch_size: 4
steps: 2
eval_every: 2
checkpoint_every: 2
log_every: 1
ema: 0.9
samples: 2
seed: 7
"""


class Payload:
    """Unpickling this object writes ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.write_text, (pathlib.Path(self.marker), "code ran"))


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[Path, Path]:
    """One tiny trained run: ``(recipe, run folder)`` with a real last.pt and best.pt."""
    root = tmp_path_factory.mktemp("safety")
    (root / "tiny.yaml").write_text(NET)
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE)
    run = root / "run"
    trainer_for(load_recipe(recipe), outdir=run, progress=False).run()
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file()
    return recipe, run


def _crafted(real: Path, dest: Path, marker: Path) -> None:
    # a real checkpoint with one extra object whose unpickling runs code
    state = torch.load(real, map_location="cpu", weights_only=True)
    state["rng"] = {"torch": state["rng"], "hook": Payload(marker)}
    torch.save(state, dest)


def _bad_file(kind: str, real: Path, dest: Path, marker: Path) -> None:
    if kind == "crafted":
        _crafted(real, dest, marker)
    elif kind == "truncated":
        data = real.read_bytes()
        dest.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        dest.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        dest.write_bytes(b"")
    elif kind == "foreign":  # a valid torch zip file, but not written by spdnn train
        torch.save({"weights": torch.zeros(3), "epoch": 4}, dest)
    elif kind == "old_format":
        state = torch.load(real, map_location="cpu", weights_only=True)
        torch.save({**state, "spdnn_checkpoint": 1}, dest)
    else:  # pragma: no cover
        raise AssertionError(kind)


KINDS = ["crafted", "truncated", "random", "empty", "foreign", "old_format"]
SAYS = {"crafted": "refusing to load", "truncated": "not a readable checkpoint",
        "random": "not a readable checkpoint", "empty": "empty", "foreign": "not a checkpoint written by 'spdnn train'",
        "old_format": "format 1 is not supported"}
"""What each message says."""
COMMANDS = ["train", "evaluate", "predict", "export", "bench"]


def _argv(command: str, recipe: Path, run: Path, tmp_path: Path) -> tuple[list[str], str]:
    """The command line and the checkpoint it reads (train --resume: last.pt; others best.pt)."""
    if command == "train":
        return ["train", str(recipe), "-o", str(run), "--resume"], "last.pt"
    if command == "evaluate":
        return ["evaluate", str(run)], "best.pt"
    if command == "predict":
        img = tmp_path / "eye.png"
        from PIL import Image

        Image.fromarray(np.zeros((96, 128), np.uint8)).save(img)
        return ["predict", str(run), str(img), "-o", str(tmp_path / "pred")], "best.pt"
    if command == "export":
        return ["export", str(run), "-o", str(tmp_path / "m.onnx")], "best.pt"
    return ["bench", str(run), "-o", "", "--no-ceiling", "--batch", "1", "--min-time", "0",
            "--warmup", "0", "--runtime", "torch"], "best.pt"


def test_the_crafted_file_runs_code_when_loaded_unsafely(real_run, tmp_path: Path):
    # the payload is real: an unsafe torch.load executes it (so the tests below can fail)
    marker = tmp_path / "MARKER"
    _crafted(real_run[1] / "last.pt", tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", COMMANDS)
def test_bad_checkpoint_is_one_line_exit_2(command: str, kind: str, real_run, tmp_path: Path,
                                           capsys):
    recipe, real = real_run
    run = tmp_path / "run"
    shutil.copytree(real, run)
    marker = tmp_path / "MARKER"
    for name in ("last.pt", "best.pt"):
        _bad_file(kind, real / name, run / name, marker)
    argv, read = _argv(command, recipe, run, tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {run / read}: "), lines[0]
    assert SAYS[kind] in lines[0]
    assert not marker.exists()
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "pred").exists()


def test_the_real_run_is_readable(real_run, tmp_path: Path):
    # the same commands succeed on the untouched run, so the failures above are the files'
    recipe, real = real_run
    run = tmp_path / "run"
    shutil.copytree(real, run)
    for command in ("evaluate", "export"):
        argv, _ = _argv(command, recipe, run, tmp_path)
        assert main(argv) == 0, command

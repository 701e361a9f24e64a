"""Nothing lost, nothing hung (issue 28, items 1 to 3): ``predict`` and ``train`` never write
over an input, another output or an existing run, the stale-temporary clean-up leaves a user's
files alone, a training set smaller than a batch is an error at start-up, a second signal (or
the end of the grace period) stops training at once, a FIFO given as an input is refused
before it is opened, and a bad value under a YAML tag is a one-line error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spdnn.cli import main
from spdnn.runs import trainer_for
from spdnn.train import TrainingInterrupted, load_recipe
from tests.helpers import ROOT
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


# -- train ----------------------------------------------------------------------------------
def test_a_run_folder_may_not_hold_the_recipe_or_its_netspecs(tmp_path: Path, capsys,
                                                             monkeypatch):
    recipe = tiny_recipe(tmp_path)
    texts = {p: p.read_text() for p in (recipe, tmp_path / "tiny.yaml")}
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(recipe), "-o", ".", "--set", "steps=1"]) == 2
    assert "output folder holds the input" in one_error_line(capsys)
    assert main(["train", str(recipe), "--set", "output=..", "--set", "steps=1"]) == 2
    one_error_line(capsys)
    assert all(p.read_text() == t for p, t in texts.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml", "tiny.yaml"]


@pytest.mark.parametrize("name", ["..", ".", " x"])
def test_a_recipe_name_must_be_a_plain_name(name, tmp_path: Path, capsys, monkeypatch):
    recipe = tiny_recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace("name: tiny", f"name: '{name}'"))
    before = recipe.read_text()
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(recipe), "--set", "output={name}", "--set", "steps=1"]) == 2
    assert "not a plain name" in one_error_line(capsys)
    assert recipe.read_text() == before


def test_a_fresh_run_into_an_existing_run_needs_resume_or_overwrite(tmp_path: Path, capsys):
    recipe = tiny_recipe(tmp_path)
    run = tmp_path / "run"
    assert main(["train", str(recipe), "-o", str(run), "--set", "steps=4", "-q"]) == 0
    notes = run / ".notes.tmp"
    notes.write_text("mine")
    os.utime(notes, (1, 1))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", str(recipe), "-o", str(run), "--set", "steps=2", "-q"]) == 2
    err = one_error_line(capsys)
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert main(["train", str(recipe), "-o", str(run), "--set", "steps=6", "--resume", "-q"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 6
    assert notes.read_text() == "mine"  # the stale-temporary clean-up left it alone
    assert main(["train", str(recipe), "-o", str(run), "--set", "steps=2", "--overwrite",
                 "-q"]) == 0
    assert "moved the old run" in capsys.readouterr().out
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 2
    (aside,) = tmp_path.glob("run.old-*")
    assert torch.load(aside / "last.pt", weights_only=True)["step"] == 6
    assert (aside / ".notes.tmp").read_text() == "mine"


# -- no spin ----------------------------------------------------------------------------------
def test_a_training_set_smaller_than_a_batch_is_an_error_at_start_up(tmp_path: Path):
    """The issue's reproducer (it spun at 100% CPU and ignored SIGTERM)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        ["timeout", "-k", "5", "120", sys.executable, "-m", "spdnn", "train",
         "recipes/iris_a_parent_1.yaml", "--set", "steps=2", "--set", "data.train_size=8",
         "--set", "data.val_size=8", "-o", str(tmp_path / "run")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and "fewer than one batch of 16" in errors[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def _stalling(tmp_path: Path, where: str, signals: int, grace: float = 0.5):
    """A trainer whose step 3 (``where="step"``) or first validation (``"validation"``)
    receives ``signals`` SIGTERMs and then stalls for a minute."""
    recipe = load_recipe(tiny_recipe(tmp_path), ["steps=50", "eval_every=4",
                                                 "checkpoint_every=2"])
    tr = trainer_for(recipe, outdir=tmp_path / "run", progress=False, quiet=True)
    tr.signal_grace_s = grace
    task = tr.task
    method = "training_step" if where == "step" else "validation_step"
    original = getattr(task, method)

    def stall(*args):
        if tr.step == 3 if where == "step" else True:
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)
        return original(*args)

    setattr(task, method, stall)
    return tr


@pytest.mark.parametrize("where,signals,saved_step", [
    ("step", 1, 2), ("step", 2, 2), ("validation", 1, 4), ("validation", 2, 4)],
    ids=["step-grace", "step-second-signal", "validation-grace", "validation-second-signal"])
def test_a_stalled_run_stops_after_a_second_signal_or_the_grace_period(
        where, signals, saved_step, tmp_path: Path):
    tr = _stalling(tmp_path, where, signals)
    t0 = time.perf_counter()
    with pytest.raises(TrainingInterrupted) as e:
        tr.run()
    assert time.perf_counter() - t0 < 20
    assert e.value.signum == signal.SIGTERM and "--resume" in str(e.value)
    # inside a step the half-updated state is not saved: last.pt stays at the last checkpoint
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == saved_step
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(
        signal.getsignal(signal.SIGTERM))
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


# -- inputs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["validate", "compile", "train", "predict"])
def test_a_fifo_input_is_refused_before_it_is_opened(command, run, tmp_path: Path, capsys):
    fifo = tmp_path / ("in.png" if command == "predict" else "in.yaml")
    os.mkfifo(fifo)
    argv = {"validate": ["validate", str(fifo)],
            "compile": ["compile", str(fifo), "-o", str(tmp_path / "x.py")],
            "train": ["train", str(fifo), "-o", str(tmp_path / "r")],
            "predict": ["predict", str(run), str(fifo), "-o", str(tmp_path / "p")]}[command]
    code = subprocess.run([sys.executable, "-m", "spdnn", *argv], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert code.returncode == 2, code.stderr
    errors = [ln for ln in code.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and "FIFO" in errors[0] and "not a regular file" in errors[0]


BAD_TAGS = ["!!int abc", "!!timestamp x", "!!bool maybe", '!!float ""']


@pytest.mark.parametrize("tag", BAD_TAGS)
def test_a_bad_value_under_a_yaml_tag_is_one_line_naming_the_tag(tag, tmp_path: Path, capsys):
    net = tmp_path / "net.yaml"
    net.write_text("name: x\ninput: {name: i, shape: [3]}\nlayers:\n"
                   f"  - {{name: a, op: Linear, out_features: {tag}}}\n")
    assert main(["inspect", str(net)]) == 2
    err = one_error_line(capsys)
    assert "net.yaml:4:" in err and f"YAML tag '{tag.split()[0]}'" in err
    recipe = tiny_recipe(tmp_path)
    assert main(["train", str(recipe), "--set", f"steps={tag}", "-o", str(tmp_path / "r")]) == 2
    err = one_error_line(capsys)
    assert f"--set steps={tag}" in err and f"YAML tag '{tag.split()[0]}'" in err
    recipe.write_text(recipe.read_text().replace("steps: 8", f"steps: {tag}"))
    assert main(["train", str(recipe), "-o", str(tmp_path / "r")]) == 2
    assert "YAML tag" in one_error_line(capsys)
    assert not (tmp_path / "r").exists()

"""Training runs that are interrupted and resumed as users do it: Ctrl-C / SIGTERM save a
checkpoint and exit non-zero, ``--resume`` applies ``--set`` overrides on top of the restored
state and refuses a run folder without a checkpoint (hardening issue, items 7 and 8)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spdnn.cli import main
from spdnn.runs import trainer_for
from spdnn.train import load_recipe
from tests.helpers import ROOT
from tests.test_train import tiny_recipe


def test_resume_applies_overrides_after_restoring_state(tmp_path: Path, capsys):
    path = tiny_recipe(tmp_path)
    run = tmp_path / "run"
    assert main(["train", str(path), "-o", str(run), "--set", "steps=4"]) == 0
    capsys.readouterr()
    assert main(["train", str(path), "-o", str(run), "--resume", "--set", "steps=6",
                 "--set", "optim.lr=0.001", "--set", "optim.momentum=0.5"]) == 0
    text = capsys.readouterr().out
    assert "optim.lr: 0.05 -> 0.001" in text and "steps: 4 -> 6" in text
    st = torch.load(run / "last.pt", weights_only=True)
    assert st["step"] == 6
    group = st["optimizers"]["net"]["param_groups"][0]
    assert group["lr"] == pytest.approx(0.001) and group["momentum"] == 0.5
    assert st["recipe"]["optim"]["lr"] == 0.001
    recipe_yaml = (run / "recipe.yaml").read_text()
    assert recipe_yaml.startswith("# resumed at step 4 with changes:") and "0.001" in recipe_yaml


def test_resume_without_a_checkpoint_is_an_error_unless_asked_to_start(tmp_path: Path, capsys):
    path = tiny_recipe(tmp_path)
    assert main(["train", str(path), "-o", str(tmp_path / "new"), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "last.pt" in err and "not found" in err
    assert main(["train", str(path), "-o", str(tmp_path / "new"), "--resume-or-start",
                 "--set", "steps=2"]) == 0
    assert torch.load(tmp_path / "new" / "last.pt", weights_only=True)["step"] == 2
    assert main(["train", str(path), "-o", str(tmp_path / "new"), "--resume-or-start",
                 "--set", "steps=3"]) == 0
    assert torch.load(tmp_path / "new" / "last.pt", weights_only=True)["step"] == 3


def test_resume_with_other_networks_is_a_clean_error(tmp_path: Path, capsys):
    path = tiny_recipe(tmp_path)
    run = tmp_path / "run"
    assert main(["train", str(path), "-o", str(run), "--set", "steps=2"]) == 0
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(tiny.read_text().replace("out_channels: 4", "out_channels: 6"))
    capsys.readouterr()
    assert main(["train", str(path), "-o", str(run), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not fit the recipe's networks" in err


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_a_checkpoint_and_exits_non_zero(tmp_path: Path, sig, code):
    path = tiny_recipe(tmp_path)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "spdnn", "train", str(path), "-o", str(run),
                             "--set", "steps=100000", "--set", "log_every=1", "--set", "eval_every=100000",
                             "--set", "checkpoint_every=100000"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline and not (run / "recipe.yaml").exists() and proc.poll() is None:
        time.sleep(0.1)  # recipe.yaml is written just before the first step
    time.sleep(2.0)  # some steps into training
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == code, (out, err)
    st = torch.load(run / "last.pt", weights_only=True)
    assert 0 < st["step"] < 100000
    assert "--resume" in err and "last.pt" in err
    # and the run continues from there
    recipe = load_recipe(path, ["steps=100000", "log_every=1", "eval_every=100000",
                                "checkpoint_every=100000"])
    tr = trainer_for(recipe, outdir=run, progress=False, resume=True, stop_after=st["step"] + 2)
    tr.run()
    assert tr.step == st["step"] + 2

"""The shared trainer: recipes, exact resume, checkpoints, outputs, DDP, evaluate/predict/compare."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spdnn.cli import main
from spdnn.errors import SpecError
from spdnn.runs import trainer_for
from spdnn.train import Trainer, load_recipe
from tests.helpers import ROOT

TINY_NET = """
name: tiny_iris
input: {name: image, channels: 1, height: 96, width: 128}
layers:
  - {name: c1, op: Conv2d, kernel_size: 3, out_channels: 4, padding: same, batch_norm: true, activation: relu}
  - {name: drop, op: Dropout, p: 0.2}
  - {name: c2, op: Conv2d, kernel_size: 3, out_channels: 1, padding: same, activation: sigmoid}
output: {name: mask, from: c2}
"""


def tiny_recipe(tmp_path: Path, **extra) -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY_NET)
    lines = ["name: tiny", "task: iris", "model: {netspec: tiny.yaml}",
             "data: {source: synthetic, train_size: 24, val_size: 8, seed: 3}",
             "optim: {name: sgd, lr: 0.05, momentum: 0.9, nesterov: true}",
             "batch_size: 4", "steps: 8", "eval_every: 4", "checkpoint_every: 3", "log_every: 2",
             "ema: 0.9", "samples: 2", "seed: 7"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path = tmp_path / "recipe.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.models["net"].state_dict().items()}


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path: Path):
    recipe = load_recipe(tiny_recipe(tmp_path))
    full = trainer_for(recipe, outdir=tmp_path / "full", progress=False)
    final_full = full.run()
    part = trainer_for(recipe, outdir=tmp_path / "part", progress=False, stop_after=5)
    part.run()
    assert part.step == 5 and (tmp_path / "part" / "last.pt").exists()
    resumed = trainer_for(recipe, outdir=tmp_path / "part", progress=False, resume=True)
    final_resumed = resumed.run()
    assert resumed.step == 8
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert final_full == final_resumed
    ema_a = full.ema["net"].module.state_dict()
    ema_b = resumed.ema["net"].module.state_dict()
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def test_an_interruption_changes_nothing_only_if_resumed(tmp_path: Path):
    # sanity check that the previous test can fail: a fresh (not resumed) run differs
    recipe = load_recipe(tiny_recipe(tmp_path))
    a = trainer_for(recipe, outdir=tmp_path / "a", progress=False)
    a.run()
    b = trainer_for(recipe, outdir=tmp_path / "b", progress=False, stop_after=5)
    b.run()
    assert any(not torch.equal(x, y) for x, y in zip(weights(a).values(), weights(b).values()))


def test_run_folder_contents(tmp_path: Path):
    recipe = load_recipe(tiny_recipe(tmp_path))
    trainer_for(recipe, outdir=tmp_path / "run", progress=False).run()
    run = tmp_path / "run"
    for name in ("last.pt", "best.pt", "metrics.csv", "metrics.json", "netspec.yaml",
                 "recipe.yaml", "samples.png", "plots/loss.png", "plots/metrics.png"):
        assert (run / name).is_file(), name
    assert not [p for p in run.iterdir() if ".tmp" in p.name]
    csv_text = (run / "metrics.csv").read_text()
    assert "val_mcc" in csv_text.splitlines()[0] and "train_loss" in csv_text.splitlines()[0]
    st = torch.load(run / "last.pt", weights_only=True)  # tensors and plain containers only
    assert st["step"] == 8 and "rng" in st and set(st["netspecs"]) == {"net"}


def test_overrides_and_recipe_errors(tmp_path: Path):
    path = tiny_recipe(tmp_path)
    r = load_recipe(path, ["optim.lr=0.001", "steps=3", "data.options.degrade=false"])
    assert r.optim.lr == 0.001 and r.steps == 3 and r.data.options == {"degrade": False}
    bad = tiny_recipe(tmp_path, optimm="{lr: 1}")
    with pytest.raises(SpecError) as e:
        load_recipe(bad)
    assert "optimm" in str(e.value) and "did you mean 'optim'" in str(e.value)
    assert e.value.line == 14
    with pytest.raises(SpecError):
        load_recipe(path, ["optim.lr=-1"])


def test_cli_train_evaluate_predict(tmp_path: Path, capsys):
    path = tiny_recipe(tmp_path)
    run = tmp_path / "run"
    assert main(["train", str(path), "-o", str(run), "--set", "steps=4"]) == 0
    assert "val_mcc" in capsys.readouterr().out
    assert main(["evaluate", str(run)]) == 0
    assert "val_accuracy" in capsys.readouterr().out
    from skimage.io import imsave

    img = tmp_path / "eye.png"
    imsave(img, (torch.rand(120, 160) * 255).byte().numpy(), check_contrast=False)
    assert main(["predict", str(run), str(img), "-o", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "eye_pred.png").is_file()
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2


def test_compare_writes_table_and_plot(tmp_path: Path):
    a = tiny_recipe(tmp_path)
    b = tmp_path / "b.yaml"
    b.write_text(a.read_text().replace("name: tiny", "name: tiny_merge"))
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--set", "steps=2", "-o", str(out)]) == 0
    md = (out / "compare.md").read_text()
    assert "| tiny |" in md and "| tiny_merge |" in md and "mcc" in md
    assert (out / "compare.png").is_file()


def test_compare_reuses_finished_rows_and_retrains_changed_ones(tmp_path: Path):
    a = tiny_recipe(tmp_path)
    out = tmp_path / "cmp"
    assert main(["compare", str(a), "--set", "steps=2", "-o", str(out)]) == 0
    ckpt = out / "tiny" / "last.pt"
    first = ckpt.stat().st_mtime_ns
    assert main(["compare", str(a), "--set", "steps=2", "-o", str(out)]) == 0
    assert ckpt.stat().st_mtime_ns == first  # taken from compare_row.json, not trained again
    assert main(["compare", str(a), "--set", "steps=3", "-o", str(out)]) == 0
    assert ckpt.stat().st_mtime_ns != first  # another budget: trained anew
    import json

    assert json.loads((out / "compare.json").read_text())[0]["steps"] == 3
    assert main(["compare", str(a), "--set", "steps=3", "-o", str(out), "--fresh"]) == 0


def test_ddp_two_cpu_processes_agree(tmp_path: Path):
    path = tiny_recipe(tmp_path)
    env = {**os.environ, "SPDNN_DUMP_RANK_WEIGHTS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", "-m", "spdnn", "train", str(path), "-o", str(tmp_path / "ddp"),
           "--set", "steps=3", "--set", "eval_every=3"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    w0 = torch.load(tmp_path / "ddp" / "rank0_weights.pt")
    w1 = torch.load(tmp_path / "ddp" / "rank1_weights.pt")
    # trainable weights agree exactly (gradients are all-reduced); batch-norm running statistics
    # are per rank (DDP broadcasts rank 0's before each forward; checkpoints hold rank 0's)
    params = [k for k in w0["net"] if not any(b in k for b in ("running_", "num_batches"))]
    assert len(params) == 5
    for k in params:
        assert torch.equal(w0["net"][k], w1["net"][k]), k
    assert torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["step"] == 3

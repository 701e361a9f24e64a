"""The trainer with several networks: a two-network recipe (the DCGAN on sklearn's digits)
trains, checkpoints and resumes bit-exactly through the public recipe format; a task defined
in a test file plugs in; AMP bookkeeping; the CUDA paths (skipped without a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from spdnn.cli import main
from spdnn.errors import SpecError
from spdnn.metrics import Metric
from spdnn.runs import trainer_for, trainer_from_checkpoint
from spdnn.tasks import build_task, register_task, unregister_task
from spdnn.train import SupervisedTask, Trainer, load_recipe
from tests.helpers import ROOT

GAN = ROOT / "netspecs/gan/dcgan"


def gan_recipe(tmp_path: Path, extra: str = "") -> Path:
    text = f"""
name: tiny_gan
task: dcgan
models:
  generator: {{netspec: {GAN / 'digits_generator.yaml'}, ema: 0.9}}
  discriminator:
    netspec: {GAN / 'digits_discriminator.yaml'}
    optim: {{name: adam, lr: 0.0004, betas: [0.5, 0.999]}}
    grad_clip: 5.0
data: {{source: digits, train_size: 48, val_size: 16, seed: 1}}
optim: {{name: adam, lr: 0.0002, betas: [0.5, 0.999]}}
batch_size: 8
steps: 9
eval_every: 3
checkpoint_every: 4
log_every: 2
samples: 4
seed: 5
{extra}
"""
    path = tmp_path / "gan.yaml"
    path.write_text(text)
    return path


def full_state(tr: Trainer) -> dict[str, torch.Tensor]:
    out = {}
    for name, m in tr.models.items():
        out.update({f"{name}.{k}": v.clone() for k, v in m.state_dict().items()})
    for name, e in tr.ema.items():
        out.update({f"ema.{name}.{k}": v.clone() for k, v in e.state_dict().items()})
    for name, o in tr.optimizers.items():
        for pid, st in o.state_dict()["state"].items():
            out.update({f"opt.{name}.{pid}.{k}": torch.as_tensor(v).clone() for k, v in st.items()})
    return out


def test_two_networks_resume_bit_exactly(tmp_path: Path):
    recipe = load_recipe(gan_recipe(tmp_path))
    full = trainer_for(recipe, outdir=tmp_path / "full", progress=False)
    final_full = full.run()
    part = trainer_for(recipe, outdir=tmp_path / "part", progress=False, stop_after=5)
    part.run()
    assert part.step == 5
    resumed = trainer_for(recipe, outdir=tmp_path / "part", progress=False, resume=True)
    final_resumed = resumed.run()
    assert resumed.step == 9
    a, b = full_state(full), full_state(resumed)
    assert a.keys() == b.keys() and any(k.startswith("ema.generator") for k in a)
    assert any(k.startswith("opt.discriminator") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert final_full == final_resumed
    assert set(final_full) >= {"val_loss_d", "val_loss_g", "val_d_real", "val_d_fake", "val_mmd"}
    # every model and optimizer is in the checkpoint, which loads without unpickling code
    st = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    assert set(st["models"]) == set(st["optimizers"]) == {"generator", "discriminator"}
    assert set(st["ema"]) == {"generator"} and set(st["netspecs"]) == {"generator", "discriminator"}


def test_per_model_optimizers_rates_and_counts(tmp_path: Path):
    import json

    recipe = load_recipe(gan_recipe(tmp_path), ["models.generator.optim.lr=0.001"])
    tr = trainer_for(recipe, outdir=tmp_path / "run", progress=False)
    assert tr.optimizers["generator"].param_groups[0]["lr"] == 0.001
    assert tr.optimizers["discriminator"].param_groups[0]["lr"] == 0.0004
    assert set(tr.ema) == {"generator"}
    calls = []
    tr.scaler.update = lambda *a, **k: calls.append(1)  # the AMP rule: once per iteration
    tr.run()
    assert len(calls) == tr.total_steps == 9
    row = next(r for r in tr.history if "lr_generator" in r)
    assert row["lr_generator"] == 0.001 and row["lr_discriminator"] == 0.0004
    assert "train_loss_d" in row and "train_loss_g" in row
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["params_per_model"] == {"generator": 42_049, "discriminator": 19_137}
    assert summary["params"] == 42_049 + 19_137
    assert (tmp_path / "run" / "netspec_generator.yaml").is_file()


def test_a_recipe_must_name_the_task_models(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(gan_recipe(tmp_path).read_text().replace("discriminator:", "critic:", 1))
    with pytest.raises(SpecError) as e:
        build_task(load_recipe(path))
    assert "critic" in str(e.value) and "discriminator" in str(e.value)
    assert main(["train", str(path), "-o", str(tmp_path / "r")]) == 2


def test_predict_of_a_generator_writes_a_sample_grid(tmp_path: Path, capsys):
    recipe = gan_recipe(tmp_path)
    run = tmp_path / "run"
    assert main(["train", str(recipe), "-o", str(run), "--set", "steps=2"]) == 0
    assert (run / "samples.png").is_file()
    assert main(["predict", str(run), "-o", str(tmp_path / "pred"), "--num", "9",
                 "--seed", "3"]) == 0
    assert (tmp_path / "pred" / "samples_seed3.png").is_file()
    assert main(["predict", str(run), str(recipe), "-o", str(tmp_path / "p2")]) == 2
    assert "takes no input files" in capsys.readouterr().err


# -- a task defined here, outside the package: "adding a task is one file" ----------------------
class ShiftMetric(Metric):
    """Mean absolute error, accumulated."""

    def __init__(self) -> None:
        self.reset()

    def update(self, pred, target, mask=None) -> None:
        self.total += float((pred - target).abs().sum())
        self.n += pred.numel()

    def compute(self) -> dict[str, float]:
        return {"mae": self.total / max(1, self.n)}

    def reset(self) -> None:
        self.total, self.n = 0.0, 0


class DoubleTask(SupervisedTask):
    """Learn y = 2x on random vectors."""

    name = "test_double"

    def datasets(self):
        g = torch.Generator().manual_seed(self.recipe.data.seed)
        x = torch.randn(self.recipe.data.train_size + self.recipe.data.val_size, 4, generator=g)
        n = self.recipe.data.train_size
        return TensorDataset(x[:n], 2 * x[:n]), TensorDataset(x[n:], 2 * x[n:])

    def loss(self, pred, target, mask=None):
        return F.mse_loss(pred, target)

    def new_metrics(self):
        return ShiftMetric()


@pytest.fixture
def double_task():
    register_task(DoubleTask)
    yield DoubleTask
    unregister_task(DoubleTask.name)


def test_a_task_from_outside_the_package_trains_and_evaluates(tmp_path: Path, double_task, capsys):
    (tmp_path / "lin.yaml").write_text(
        "# a linear layer\nname: lin\ninput: {name: x, features: 4}\n"
        "layers:\n  - {name: fc, op: Linear, out_features: 4}\noutput: {name: y, from: fc}\n")
    (tmp_path / "r.yaml").write_text(
        "name: double\ntask: test_double\nmodel: {netspec: lin.yaml}\n"
        "data: {train_size: 64, val_size: 16}\noptim: {name: sgd, lr: 0.1, momentum: 0.9}\n"
        "batch_size: 16\nsteps: 60\neval_every: 30\nlog_every: 10\nsamples: 2\n")
    assert main(["train", str(tmp_path / "r.yaml"), "-o", str(tmp_path / "run")]) == 0
    tr = trainer_from_checkpoint(tmp_path / "run")
    ev = tr.evaluate()
    assert ev["val_mae"] < 0.1 and ev["val_loss"] < 0.02  # it learned y = 2x
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    assert main(["predict", str(tmp_path / "run"), "-o", str(tmp_path / "p")]) == 2
    assert "no prediction command" in capsys.readouterr().err


# -- CUDA and mixed precision (skipped without a GPU) ------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("which", ["iris", "gan"])
def test_cuda_amp_trains_and_resumes(tmp_path: Path, which: str):
    if which == "gan":
        path, over = gan_recipe(tmp_path), ["device=cuda", "amp=true"]
    else:
        path = ROOT / "recipes/iris_a_merged.yaml"
        over = ["device=cuda", "amp=true", "steps=6", "batch_size=4", "data.train_size=16",
                "data.val_size=4", "eval_every=3", "checkpoint_every=2", "log_every=1", "samples=2"]
    recipe = load_recipe(path, over)
    part = trainer_for(recipe, outdir=tmp_path / "run", progress=False, stop_after=3)
    assert part.amp and part.device.type == "cuda"
    part.run()
    resumed = trainer_for(recipe, outdir=tmp_path / "run", progress=False, resume=True)
    final = resumed.run()
    assert resumed.step == resumed.total_steps
    assert resumed.scaler.get_scale() > 0
    for m in resumed.models.values():
        assert all(torch.isfinite(p).all() for p in m.parameters())
    losses = [v for k, v in final.items() if k.startswith("val_loss")]
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses)

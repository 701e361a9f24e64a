"""SPADE-SR (Chiu et al., seed 001): the losses of sec. 3.4 against hand-computed values, the
task on tiny netspecs (training with R1's double backward, exact resume, evaluation, predict,
one-line errors) and the inversion phase."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from spdnn.tasks.gan.invert import encoder_loss
from spdnn.tasks.gan.spade_sr import (
    heatmap_loss,
    hinge_d_loss,
    hinge_g_loss,
    hot_column_class,
    r1_penalty,
)
from tests.helpers import ROOT

BLOCKS = ROOT / "netspecs" / "blocks" / "spade.yaml"


# -- the losses, exact ------------------------------------------------------------------------------
def test_hinge_losses_are_eq_1():
    s_real = torch.tensor([[2.0], [0.5], [-1.0]])
    s_fake = torch.tensor([[-3.0], [0.0], [1.5]])
    # D: mean relu(1 + s_fake) = (0 + 1 + 2.5) / 3; mean relu(1 - s_real) = (0 + 0.5 + 2) / 3
    assert hinge_d_loss(s_real, s_fake).item() == pytest.approx(3.5 / 3 + 2.5 / 3, abs=1e-6)
    assert hinge_g_loss(s_fake).item() == pytest.approx(-(-3.0 + 0.0 + 1.5) / 3, abs=1e-6)


def test_r1_is_the_mean_squared_gradient_norm_and_trains_d():
    a = torch.tensor(0.7, requires_grad=True)
    x = torch.tensor([[[[1.0, 2.0]]], [[[0.0, -3.0]]]], requires_grad=True)  # (2, 1, 1, 2)
    score = a * x.square().flatten(1).sum(1, keepdim=True)  # s = a ||x||^2, grad 2 a x
    r1 = r1_penalty(score, x)
    norms = torch.tensor([1.0 + 4.0, 0.0 + 9.0])
    assert r1.item() == pytest.approx(float((4 * 0.49 * norms).mean()), rel=1e-6)
    r1.backward()  # the double backward: d R1 / d a = mean 8 a ||x||^2
    assert a.grad.item() == pytest.approx(float((8 * 0.7 * norms).mean()), rel=1e-6)
    scaled = r1_penalty(a * x.square().flatten(1).sum(1, keepdim=True), x, scale=1024.0)
    assert scaled.item() == pytest.approx(r1.item(), rel=1e-6)  # the AMP scale is undone
    with pytest.raises(ValueError):
        r1_penalty(score, x.detach())


def test_heatmap_loss_is_eq_3_with_its_threshold():
    h = torch.zeros(2, 1, 1, 2)
    fake = torch.tensor([[[[0.05, 0.25]]], [[[-0.5, 0.0]]]])
    real = torch.tensor([[[[0.0, 0.0]]], [[[0.15, -0.03]]]])
    # per sample, relu(|d| - 0.05) averaged over the 2 cells:
    # fake: (0 + 0.2) / 2 = 0.1, (0.45 + 0) / 2 = 0.225; real: 0, (0.1 + 0) / 2 = 0.05
    want = (0.1 + 0.225 + 0.0 + 0.05) / (2 * 2)
    assert heatmap_loss(h, fake, real, 0.05).item() == pytest.approx(want, abs=1e-6)
    assert heatmap_loss(h, fake, None, 0.05).item() == pytest.approx((0.1 + 0.225) / 4, abs=1e-6)
    assert heatmap_loss(h, fake, real, 0.0).item() == pytest.approx(
        (0.15 + 0.25 + 0.0 + 0.09) / 4, abs=1e-6)


def test_hot_column_class_and_encoder_loss():
    h = -torch.ones(3, 1, 5, 8)
    h[0, 0, 2, 6] = 0.4
    h[1, 0, 0, 1] = 0.9
    h[2, 0, 1, 3] = -0.5  # the hottest cell is below the empty level: "no person"
    assert hot_column_class(h).tolist() == [6, 1, 8]
    x, rec = torch.zeros(2, 1, 1, 2), torch.tensor([[[[0.5, -0.5]]], [[[1.0, 0.0]]]])
    assert encoder_loss(x, rec, torch.tensor([2.0, 4.0]), 0.1).item() == pytest.approx(
        0.5 - 0.1 * 3.0, abs=1e-6)  # eq. 6: mean |x - G(z~)| - lambda mean s


# -- the task on tiny netspecs ------------------------------------------------------------------------
def _tiny_specs(folder: Path, h_size=(5, 8)) -> dict[str, Path]:
    """A tiny SPADE-SR generator (the real ops, 4-8 channels) and the real D and I layers
    with 8 channels."""
    folder.mkdir(parents=True, exist_ok=True)
    hh, hw = h_size
    sem = [{"name": "sem1", "op": "SemResBlockIn", "channels": 4, "inputs": ["h"]}] + [
        {"name": f"sem{i}", "op": "SemResBlockUp", "channels": 4} for i in (2, 3, 4)] + [
        {"name": f"s{i}", "op": "LeakyReLU", "negative_slope": 0.01, "inputs": [f"sem{i}"]}
        for i in (1, 2, 3, 4)]
    main = [{"name": "fc", "op": "Linear", "out_features": 8 * hh * hw, "bias": False,
             "inputs": ["z"]},
            {"name": "fc_map", "op": "Reshape", "shape": [8, hh, hw]},
            {"name": "up1", "op": "SPADESRResBlockUp", "fin": 8, "fout": 8,
             "inputs": ["fc_map", "s1", "s2"]},
            {"name": "up2", "op": "SPADESRResBlockUp", "fin": 8, "fout": 8,
             "inputs": ["up1", "s2", "s3"]},
            {"name": "up3", "op": "SPADESRResBlockUp", "fin": 8, "fout": 4,
             "inputs": ["up2", "s3", "s4"]},
            {"name": "norm_out", "op": "SPADESRNorm", "channels": 4, "inputs": ["up3", "s4"]},
            {"name": "act_out", "op": "LeakyReLU", "negative_slope": 0.01},
            {"name": "conv_out", "op": "Conv2d", "kernel_size": 3, "padding": "same",
             "out_channels": 3, "activation": "tanh"}]
    g = {"name": "tiny_spade_sr", "imports": [str(BLOCKS)],
         "inputs": [{"name": "z", "features": 8},
                    {"name": "h", "channels": 1, "height": hh, "width": hw}],
         "layers": sem + main, "output": {"name": "image", "from": "conv_out"}}
    paths = {"generator": folder / "g.yaml"}
    paths["generator"].write_text(yaml.safe_dump(g))
    for name, src in (("discriminator", "discriminator"), ("encoder", "encoder")):
        spec = yaml.safe_load((ROOT / "netspecs" / "spade_sr" / f"{src}.yaml").read_text())
        spec["imports"] = [str(BLOCKS)]
        for lay in spec["layers"]:
            if "channels" in lay:
                lay["channels"] = 4 if lay["name"] == "heat_res" else 8
            if lay["name"] == "fc_z":
                lay["out_features"] = 8
        paths[name] = folder / f"{name[0]}.yaml"
        paths[name].write_text(yaml.safe_dump(spec))
    return paths


def _recipe(tmp: Path, task="spade_sr", **extra) -> Path:
    specs = _tiny_specs(tmp / "nets")
    models = ({"generator": {"netspec": str(specs["generator"]), "ema": 0.9,
                             "optim": {"name": "adam", "lr": 5e-5, "betas": [0.0, 0.999]}},
               "discriminator": {"netspec": str(specs["discriminator"]),
                                 "optim": {"name": "adam", "lr": 2e-4, "betas": [0.0, 0.999]}}}
              if task == "spade_sr" else
              {"encoder": {"netspec": str(specs["encoder"]), "ema": 0.99,
                           "optim": {"name": "adam", "lr": 5e-5, "betas": [0.0, 0.999]}},
               "discriminator": {"netspec": str(specs["discriminator"]),
                                 "optim": {"name": "adam", "lr": 2e-4, "betas": [0.0, 0.999]}}})
    r = {"name": f"tiny_{task}", "task": task, "models": models,
         "data": {"source": "synthetic", "train_size": 8, "val_size": 4, "seed": 0},
         "options": {"eval_samples": 10, "grid_z": 3}, "batch_size": 2, "steps": 2,
         "eval_every": 2, "checkpoint_every": 1, "log_every": 1, "samples": 2, "seed": 0}
    r["options"].update(extra)
    path = tmp / f"{task}.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


def _train(recipe_path: Path, outdir: Path, **kw):
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe

    tr = trainer_for(load_recipe(recipe_path), outdir=outdir, progress=False, **kw)
    tr.run()
    return tr


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spade_sr")
    path = _recipe(tmp)
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe

    before = {k: v.clone() for k, v in trainer_for(
        load_recipe(path), outdir=tmp / "unused", progress=False).models["discriminator"]
        .state_dict().items()}
    tr = _train(path, tmp / "run")
    return tmp, path, tr, before


def test_trains_with_r1_double_backward_on_channels_last(gan_run):
    _, _, tr, d_before = gan_run
    assert tr.step == 2 and tr.memory_format == torch.channels_last
    rows = [r for r in tr.history if "train_r1" in r]
    assert rows and all(math.isfinite(r["train_r1"]) and r["train_r1"] > 0 for r in rows)
    assert all(math.isfinite(r["train_loss_mi"]) for r in rows)
    d_after = tr.models["discriminator"].state_dict()
    assert any(not torch.equal(d_before[k], d_after[k]) for k in d_before)
    assert {"val_heatmap_mae", "val_heatmap_mae_real", "val_loss_d", "val_mmd"} <= set(
        tr.history[-1])


def test_resume_gives_the_same_weights(gan_run):
    tmp, path, tr, _ = gan_run
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe

    trainer_for(load_recipe(path), outdir=tmp / "split", progress=False, stop_after=1).run()
    resumed = _train(path, tmp / "split", resume=True)
    for name in ("generator", "discriminator"):
        a, b = tr.models[name].state_dict(), resumed.models[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_report_and_figures(gan_run):
    tmp, _, tr, _ = gan_run
    models = tr.eval_models()
    for m in models.values():
        m.eval()
    from spdnn.tasks.gan.spade_sr import evaluate_spade_sr

    res = evaluate_spade_sr(tr.task, models, tmp / "eval", tr.device, referee_steps=20)
    for k in ("fid", "fid_real_floor", "recon_d", "recon_d_real", "hot_column_accuracy",
              "referee_accuracy"):
        assert math.isfinite(res[k]), k
    assert 0 <= res["hot_column_accuracy"] <= 1 and res["recon_d"] >= 0
    assert res["params_g"] == sum(p.numel() for p in models["generator"].parameters())
    assert (tmp / "eval" / "samples.png").stat().st_size > 0
    assert (tmp / "eval" / "samples_z.png").stat().st_size > 0
    assert (tmp / "run" / "samples.png").is_file()


def test_predict_writes_images_and_rejects_a_wrong_size(gan_run, capsys):
    from spdnn.cli import main

    tmp, _, _, _ = gan_run
    good, bad, bad_png = tmp / "heat.npy", tmp / "small.npy", tmp / "bad.png"
    np.save(good, np.full((5, 8), 22.0, np.float32))
    np.save(bad, np.full((4, 8), 22.0, np.float32))
    from skimage.io import imsave

    imsave(bad_png, np.full((5, 8), 3, np.uint8), check_contrast=False)
    out = tmp / "pred"
    assert main(["predict", str(tmp / "run"), str(good), "--num", "3", "-o", str(out)]) == 0
    assert (out / "heat_generated.png").stat().st_size > 0
    capsys.readouterr()
    for wrong in (bad, bad_png, tmp / "missing.npy"):
        assert main(["predict", str(tmp / "run"), str(wrong), "-o", str(tmp / "p2")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and wrong.name in err
    assert "4x8" in _err_of(main, tmp, bad, capsys)


def _err_of(main, tmp, path, capsys):
    main(["predict", str(tmp / "run"), str(path), "-o", str(tmp / "p3")])
    return capsys.readouterr().err


def test_spec_and_data_mismatches_are_one_line_errors(tmp_path, capsys):
    from spdnn.cli import main

    # a generator reading 4x8 heatmaps (so making 32x64 images) against D's 40x64 input
    specs = _tiny_specs(tmp_path / "nets4", h_size=(4, 8))
    path = _recipe(tmp_path)
    r = yaml.safe_load(path.read_text())
    r["models"]["generator"]["netspec"] = str(specs["generator"])
    path.write_text(yaml.safe_dump(r))
    assert main(["train", str(path), "-o", str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "(3, 32, 64)" in err
    # paired folder data whose heatmaps are not the generator's 5x8
    from skimage.io import imsave

    (tmp_path / "d" / "rgb").mkdir(parents=True)
    (tmp_path / "d" / "thermal").mkdir()
    for i in range(4):
        imsave(tmp_path / "d" / "rgb" / f"{i}.png", np.zeros((40, 64, 3), np.uint8),
               check_contrast=False)
        np.save(tmp_path / "d" / "thermal" / f"{i}.npy", np.full((4, 8), 25.0, np.float32))
    path = _recipe(tmp_path)
    assert main(["train", str(path), "-o", str(tmp_path / "r2"), "--set", "data.source=folder",
                 "--set", f"data.root={tmp_path / 'd'}", "--set", "data.val_size=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "4x8" in err and "5x8" in err


# -- the inversion phase --------------------------------------------------------------------------------
def test_inversion_trains_the_encoder_against_the_frozen_generator(gan_run, tmp_path):
    gtmp, _, gan, _ = gan_run
    path = _recipe(tmp_path, task="spade_sr_inversion", gan_run=str(gtmp / "run" / "last.pt"),
                   lam=0.1)
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe

    tr = trainer_for(load_recipe(path), outdir=tmp_path / "inv", progress=False)
    g_ema = gan.eval_models()["generator"].state_dict()
    d_gan = gan.models["discriminator"].state_dict()
    d0 = tr.models["discriminator"].state_dict()
    assert all(torch.equal(d0[k], d_gan[k]) for k in d_gan)  # D starts from the GAN run's
    tr.run()
    g = tr.task.generator.state_dict()
    assert all(torch.equal(g[k].cpu(), g_ema[k].cpu()) for k in g_ema)  # G frozen, EMA weights
    assert "val_recon" in tr.history[-1] and math.isfinite(tr.history[-1]["val_recon"])
    models = tr.eval_models()
    for m in models.values():
        m.eval()
    res = tr.task.report(models, tmp_path / "eval", tr.device)
    assert 0 <= res["recon"] <= 1 and 0 <= res["recon_swap"] <= 1
    assert (tmp_path / "eval" / "disentangle.png").stat().st_size > 0
    json.dumps(res)
    with pytest.raises(Exception, match="spade_sr"):  # a run of another task
        bad = _recipe(tmp_path / "b", task="spade_sr_inversion",
                      gan_run=str(tmp_path / "inv" / "last.pt"))
        trainer_for(load_recipe(bad), outdir=tmp_path / "x", progress=False)

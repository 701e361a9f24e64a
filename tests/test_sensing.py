"""Generative Sensing and Dirty Pixels tasks (spdnn.tasks.sensing): the filter ranking, the
netspec spdnn writes with generative units, the permutation that keeps the baseline's function,
the Dirty Pixels units' noise parameters, image metrics against scikit-image, the conventional
denoiser, the resumable pipeline and the one-line errors of the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from spdnn.codegen import build_module
from spdnn.errors import SpecError
from spdnn.shapes import infer
from spdnn.spec import load
from spdnn.tasks.sensing.dirty_pixels import (
    conventional_restore,
    image_quality,
    photo_patches,
    unit_for_level,
)
from spdnn.tasks.sensing.generative_sensing import (
    DEEPCORRECT_TOP,
    _Bypass,
    generative_netspec,
    permuted_state,
    rank_filters,
    unit_counts,
    unit_modules,
)
from tests.helpers import NETSPECS, ROOT

GS = NETSPECS / "generative_sensing"
DP = NETSPECS / "dirty_pixels"


# -- Generative Sensing -------------------------------------------------------------------------
def test_written_netspec_is_the_shipped_generative_network():
    """DeepCorrect's fractions on alexnet_small give the units of alexnet_small_generative.yaml
    (12/36/48/32/32 channels, 5x5 inside conv1's unit): the same parameter count, layer for
    layer."""
    base = load(GS / "alexnet_small.yaml")
    counts = unit_counts(base, DEEPCORRECT_TOP)
    assert counts == {"conv1": 12, "conv2": 36, "conv3": 48, "conv4": 32, "conv5": 32}
    gen = generative_netspec(base, counts, {"conv1": 5})
    shipped = load(GS / "alexnet_small_generative.yaml")
    ours, theirs = infer(gen), infer(shipped)
    assert ours.params == theirs.params == 1_931_674
    for i in range(1, 6):
        assert ours[f"conv{i}_gen"].params == theirs[f"gen{i}"].params
    names = [lay.name for lay in gen.layers]
    assert names[:4] == ["conv1", "conv1_gen", "conv1_relu", "pool1"]
    assert gen.layer("conv1").activation is None


@pytest.mark.parametrize("top,message", [
    ({"conv9": 0.5}, "layer 'conv9' is not in the netspec"),
    ({"pool1": 0.5}, "sits between a conv and its ReLU"),
    ({"conv1": 17}, "17 generative-unit channels asked for, but 'conv1' has 16"),
    ({"conv1": 0.0}, "outside"),
])
def test_bad_unit_requests(top, message):
    with pytest.raises(SpecError, match=message) as e:
        unit_counts(load(GS / "alexnet_small.yaml"), top)
    assert e.value.field == f"options.top.{next(iter(top))}"


def test_permuted_network_with_units_bypassed_is_the_baseline():
    """Any filter order: phi_gen with the permuted baseline weights and its units bypassed (or
    zero-initialised) computes phi exactly; trained units change only the ranked channels."""
    torch.manual_seed(0)
    spec = load(GS / "alexnet_small.yaml")
    base = build_module(spec).eval()
    g = torch.Generator().manual_seed(3)
    orders = {n: torch.randperm(c, generator=g) for n, c in (("conv1", 16), ("conv5", 64))}
    gen_spec = generative_netspec(spec, {"conv1": 5, "conv5": 8}, {})
    gen = build_module(gen_spec).eval()
    state = permuted_state(base.state_dict(), spec, orders)
    own = gen.state_dict()
    import re

    state = {k if k in own else re.sub(r"^([^.]+)\.0\.", r"\1.", k): v for k, v in state.items()}
    missing, unexpected = gen.load_state_dict(state, strict=False)
    assert not unexpected and all(k.split(".")[0] in unit_modules(gen) for k in missing)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want = base(x)
        with _Bypass(gen):
            torch.testing.assert_close(gen(x), want, rtol=1e-5, atol=1e-5)
        assert (gen(x) - want).abs().max() > 1e-4  # random units do change it
        for u in unit_modules(gen).values():
            u.conv_out.weight.zero_()
            u.conv_out.bias.zero_()
        torch.testing.assert_close(gen(x), want, rtol=1e-5, atol=1e-5)


class _Planted(nn.Module):
    """A network whose decision reads only channel 0 of ``feat``."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.feat.weight.copy_(torch.eye(3).view(3, 3, 1, 1))

    def forward(self, x):
        c0 = self.feat(x)[:, 0].mean(dim=(1, 2))
        return torch.stack([c0 - 0.5, 0.5 - c0], dim=1) * 10


def test_ranking_finds_the_planted_filter_and_is_zero_without_degradation():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (64,), generator=g)
    clean = torch.rand(64, 3, 4, 4, generator=g) * 0.2
    clean[:, 0] += torch.where(labels == 0, 0.8, 0.0).view(-1, 1, 1)  # class 0: bright channel 0
    degraded = torch.full_like(clean, 0.45)  # everything washed out
    r = rank_filters(_Planted(), ["feat"], clean, degraded, labels, batch=20)["feat"]
    assert int(r["order"][0]) == 0
    assert float(r["acc_drop"][0]) > 0.3 and torch.equal(r["acc_drop"][1:], torch.zeros(2))
    assert torch.equal(r["ce_rise"][1:], torch.zeros(2))
    same = rank_filters(_Planted(), ["feat"], clean, clean, labels)["feat"]
    assert torch.equal(same["acc_drop"], torch.zeros(3))


# -- Dirty Pixels --------------------------------------------------------------------------------
def test_unit_takes_the_noise_levels_parameters_and_checks_the_psf():
    spec = unit_for_level(load(DP / "denoise.yaml"), _level("6lux"))
    a = spec.layer("anscombe")
    assert (a.gain, a.sigma) == (0.06241, 0.15777)
    assert spec.layer("inverse_anscombe").gain == 0.06241
    unit_for_level(load(DP / "deblur_denoise.yaml"), _level("6lux_psf"))
    with pytest.raises(SpecError, match="PSF"):
        unit_for_level(load(DP / "deblur_denoise.yaml"), _level("3lux"))
    with pytest.raises(SpecError, match="PSF"):
        unit_for_level(load(DP / "denoise.yaml"), _level("6lux_psf"))


def _level(name):
    from spdnn.data.degrade import noise_level

    return noise_level(name)


def test_image_metrics_match_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    x = photo_patches(4, 32, 0)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    q = image_quality(y, x)
    psnr = np.mean([peak_signal_noise_ratio(x[i].numpy(), y[i].numpy(), data_range=1)
                    for i in range(4)])
    ssim = np.mean([structural_similarity(
        x[i].numpy(), y[i].numpy(), data_range=1, channel_axis=0, gaussian_weights=True,
        sigma=1.5, use_sample_covariance=False) for i in range(4)])
    assert q["psnr"] == pytest.approx(psnr, abs=1e-4)
    assert q["ssim"] == pytest.approx(ssim, abs=0.01)  # borders: padded vs cropped


def test_photo_patches_are_seeded_and_val_photos_differ():
    a, b = photo_patches(6, 32, 5), photo_patches(6, 32, 5)
    assert torch.equal(a, b) and a.shape == (6, 3, 32, 32)
    assert not torch.equal(a, photo_patches(6, 32, 6))
    assert photo_patches(2, 16, 0, channels=1).shape == (2, 1, 16, 16)


def test_bm3d_in_the_anscombe_domain_restores_noisy_patches():
    from spdnn.data.degrade import poisson_gaussian

    x = photo_patches(4, 32, 1, channels=1)  # one BM3D call (a 2 x 2 mosaic of one plane)
    y = poisson_gaussian(x, "6lux", torch.Generator().manual_seed(0))
    restored = conventional_restore(y, "6lux", tile=2)
    assert restored.shape == x.shape and float(restored.min()) >= 0
    assert image_quality(restored, x)["psnr"] > image_quality(y, x)["psnr"] + 3.0


# -- pipeline and CLI ----------------------------------------------------------------------------
SMALL = ["steps=2", "batch_size=2", "data.train_size=4", "data.val_size=2", "eval_every=2",
         "checkpoint_every=2", "log_every=1", "samples=2"]


def test_pipeline_does_not_recompute_a_finished_step(tmp_path):
    from spdnn.tasks.sensing.pipeline import cached, run_step

    recipe = ROOT / "recipes/sensing/dp_classifier.yaml"
    run, trained = run_step(recipe, SMALL, tmp_path / "clf")
    assert trained and (run / "step_done.json").is_file()
    stamp = (run / "best.pt").stat().st_mtime_ns
    _, again = run_step(recipe, SMALL, tmp_path / "clf")
    assert not again and (run / "best.pt").stat().st_mtime_ns == stamp
    _, changed = run_step(recipe, SMALL + ["optim.lr=0.002"], tmp_path / "clf")
    assert changed
    calls = []
    value = cached(tmp_path / "c.json", [1], lambda: calls.append(1) or {"v": 2})
    assert cached(tmp_path / "c.json", [1], lambda: calls.append(1) or {"v": 3}) == value
    assert calls == [1] and json.loads((tmp_path / "c.json").read_text())["value"] == {"v": 2}


def test_generative_sensing_run_writes_its_netspec_and_ranking(tmp_path):
    from spdnn.runs import trainer_for
    from spdnn.spec import load as load_spec
    from spdnn.train import load_recipe

    recipe = load_recipe(ROOT / "recipes/sensing/gs_units.yaml",
                         SMALL + ["options.top={conv1: 4, conv3: 0.125}", "data.source=digits"])
    tr = trainer_for(recipe, outdir=tmp_path / "gs", progress=False)
    trainable = tr.param_counts()["net"]
    batch = tuple(t[:2] for t in (tr.val_ds.images, tr.val_ds.labels))
    tr.task.figures(tr.eval_models(), batch, tmp_path / "gs")  # what a run writes at its end
    written = load_spec(tmp_path / "gs" / "generative.yaml")
    assert [lay.corrected for lay in written.layers if lay.op == "GenerativeUnit"] == [4, 12]
    assert trainable == sum(infer(written)[n].params for n in ("conv1_gen", "conv3_gen"))
    ranking = json.loads((tmp_path / "gs" / "ranking.json").read_text())
    assert sorted(ranking["conv1"]["order"]) == list(range(16))
    assert (tmp_path / "gs" / "ranking.png").stat().st_size > 1000
    # untrained units (last conv zero) are the identity: phi_gen's table equals the baseline's
    tr.task.opts.targets, tr.task.opts.target_train, tr.task.opts.target_test = ("faces",), 10, 10
    table = tr.task.report(tr.eval_models(), tmp_path / "eval", torch.device("cpu"))
    for k in range(7):
        assert table[f"faces_gs_s{k}"] == table[f"faces_base_s{k}"] == table[f"faces_gs_own_s{k}"]
    assert table["unit_params"] == trainable and table["faces_test"] == 10
    assert json.loads((tmp_path / "eval" / "probe.json").read_text()) == table


@pytest.mark.parametrize("recipe,override,field", [
    ("gs_units", "options.top={conv9: 0.5}", "options.top.conv9"),
    ("gs_units", "options.top={conv1: 17}", "options.top.conv1"),
    ("gs_units", "options.train_levels=[0, 7]", "options.train_levels[1]"),
    ("dp_denoise", "options.noise={a: 0, b: 0.1}", "options.noise.a"),
    ("dp_denoise", "options.noise=6lux_psf", "options.noise"),
])
def test_bad_input_is_one_line_exit_2(recipe, override, field, tmp_path, capsys):
    from spdnn.cli import main

    out = tmp_path / "r"
    code = main(["train", str(ROOT / f"recipes/sensing/{recipe}.yaml"), "-o", str(out),
                 "--set", override, "--set", "data.train_size=4", "--set", "data.val_size=2",
                 "--set", "data.source=digits" if recipe == "gs_units" else "steps=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and field in err, err
    assert not out.exists()

"""The thermalnet task (Kniaz et al., seed 004): class re-weighting (Zhang et al. 2016 sec. 2.2),
the weighted cross-entropy of eq. 1, expectation / arg-max decoding, eq. 2 RMS with and without
the 3x3 Gaussian smoothing of Table 2, a 2-step training, ``spdnn predict`` and its errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from spdnn.errors import SpecError
from spdnn.metrics import gaussian_smooth
from spdnn.tasks.thermalnet import (
    decode_levels,
    level_histogram,
    rebalancing_weights,
    thermal_errors,
    weighted_cross_entropy,
)
from tests.helpers import ROOT

RECIPE = ROOT / "recipes" / "thermal" / "thermalnet.yaml"
SMALL = ["steps=2", "batch_size=2", "data.train_size=4", "data.val_size=2", "eval_every=2",
         "checkpoint_every=2", "log_every=1", "samples=2"]


# -- class re-weighting ------------------------------------------------------------------------------
def test_rebalancing_weights_on_a_known_histogram():
    # p = (0, .5, 0, .5); (1 - 1/2) p + 1/2 / 4 = (1/8, 3/8, 1/8, 3/8); w ~ (8, 8/3, 8, 8/3);
    # E_p[w] = 8/3, so w = (3, 1, 3, 1)
    w = rebalancing_weights(torch.tensor([0.0, 2.0, 0.0, 2.0]), lam=0.5, sigma=0.0)
    torch.testing.assert_close(w, torch.tensor([3.0, 1.0, 3.0, 1.0], dtype=torch.float64))
    # lambda 1: uniform mixture, every weight 1; lambda 0: w = 1 / (Q p) on a full histogram
    torch.testing.assert_close(rebalancing_weights(torch.tensor([5.0, 1, 2]), 1.0, 0.0),
                               torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(rebalancing_weights(torch.tensor([1.0, 3.0]), 0.0, 0.0),
                               torch.tensor([2.0, 2 / 3], dtype=torch.float64))


def test_rebalancing_smooths_the_distribution_first():
    counts = torch.zeros(40, dtype=torch.float64)
    counts[10], counts[25] = 300, 100
    sigma, lam, q = 2.0, 0.5, 40
    r = math.ceil(3 * sigma)
    g = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    p = counts.numpy() / 400
    smooth = np.array([sum(p[i - d] * g[d + r] for d in range(-r, r + 1) if 0 <= i - d < q)
                       for i in range(q)])
    smooth /= smooth.sum()
    w = 1 / ((1 - lam) * smooth + lam / q)
    w /= (smooth * w).sum()
    got = rebalancing_weights(counts, lam, sigma)
    np.testing.assert_allclose(got.numpy(), w, rtol=1e-12)
    assert float((got * torch.from_numpy(smooth)).sum()) == pytest.approx(1.0)
    assert got[10] < got[25] < got[0]  # rarer levels weigh more


def test_level_histogram_counts_and_rejects_out_of_range_levels():
    from spdnn.errors import SpdnnError

    h = level_histogram(torch.tensor([[0, 2], [2, 2]]), 4)
    assert h.tolist() == [1.0, 0.0, 3.0, 0.0]
    with pytest.raises(SpdnnError, match=r"\[0, 3\]"):
        level_histogram(torch.tensor([4]), 4)


# -- loss and decoding ----------------------------------------------------------------------------
def test_weighted_cross_entropy_is_the_hand_formula():
    logits = torch.tensor([[[[1.0, 0.0]], [[2.0, -1.0]], [[0.5, 3.0]]]])  # (1, 3, 1, 2)
    levels = torch.tensor([[[0, 2]]])
    weights = torch.tensor([2.0, 1.0, 0.5])

    def log_softmax(col, k):
        return col[k] - math.log(sum(math.exp(v) for v in col))

    px0, px1 = [1.0, 2.0, 0.5], [0.0, -1.0, 3.0]
    want = -(2.0 * log_softmax(px0, 0) + 0.5 * log_softmax(px1, 2)) / 2
    assert float(weighted_cross_entropy(logits, levels, weights)) == pytest.approx(want, rel=1e-6)
    plain = -(log_softmax(px0, 0) + log_softmax(px1, 2)) / 2
    assert float(weighted_cross_entropy(logits, levels, None)) == pytest.approx(plain, rel=1e-6)


def test_expectation_and_argmax_decoding():
    probs = torch.tensor([0.2, 0.3, 0.5, 0.0])
    logits = torch.log(probs.clamp_min(1e-30)).view(1, 4, 1, 1).repeat(2, 1, 1, 3)
    logits[1, :, 0, 2] = torch.tensor([5.0, 0.0, 0.0, 0.0])  # one pixel sure of level 0
    e = decode_levels(logits, "expectation")
    assert e.shape == (2, 1, 1, 3)
    assert float(e[0, 0, 0, 0]) == pytest.approx(0.3 + 2 * 0.5)
    p = torch.softmax(torch.tensor([5.0, 0, 0, 0]), 0)
    assert float(e[1, 0, 0, 2]) == pytest.approx(float((p * torch.arange(4)).sum()), rel=1e-6)
    a = decode_levels(logits, "argmax")
    assert a[0].flatten().tolist() == [2.0, 2.0, 2.0] and float(a[1, 0, 0, 2]) == 0.0


# -- RMS and the 3x3 Gaussian smoothing ---------------------------------------------------------------
def test_gaussian_smoothing_keeps_constants_and_spreads_an_impulse_as_the_kernel():
    const = torch.full((1, 1, 6, 7), 3.25, dtype=torch.float64)
    torch.testing.assert_close(gaussian_smooth(const), const)
    impulse = torch.zeros(1, 1, 7, 7, dtype=torch.float64)
    impulse[0, 0, 3, 3] = 1.0
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * 0.8 ** 2))
    g /= g.sum()
    out = gaussian_smooth(impulse, 3, 0.8)[0, 0].numpy()
    np.testing.assert_allclose(out[2:5, 2:5], np.outer(g, g), rtol=1e-12)
    assert out.sum() == pytest.approx(1.0) and np.count_nonzero(out) == 9


def test_thermal_errors_on_known_maps():
    target = torch.full((2, 8, 8), 100, dtype=torch.int64)
    pred = torch.full((2, 1, 8, 8), 102.0)
    pred[1] = 100.0
    pred[1, 0, ::2, ::2] = 104.0  # a quarter of the pixels 4 levels off: RMS 2, MAE 1
    e = thermal_errors(pred, target, degrees_per_level=0.5)
    assert e["rms"].tolist() == pytest.approx([2.0, 2.0])
    assert e["mae"].tolist() == pytest.approx([2.0, 1.0])
    assert e["rms_c"].tolist() == pytest.approx([1.0, 1.0])
    assert float(e["rms_gs"][0]) == pytest.approx(2.0)  # a constant offset is not smoothed away
    # a +-2 checkerboard error: each 1-D pass multiplies it by (g0 - 2 g1), borders included
    # (reflection keeps the alternation), so the smoothed RMS is 2 (g0 - 2 g1)^2
    i, j = np.indices((8, 8))
    chess = torch.from_numpy(100.0 + 2.0 * (-1.0) ** (i + j)).view(1, 1, 8, 8)
    g1, g0 = np.exp(-1 / (2 * 0.8 ** 2)), 1.0
    g0, g1 = g0 / (g0 + 2 * g1), g1 / (g0 + 2 * g1)
    e = thermal_errors(chess, target[:1], degrees_per_level=0.5)
    assert float(e["rms"][0]) == pytest.approx(2.0)
    assert float(e["rms_gs"][0]) == pytest.approx(2 * (g0 - 2 * g1) ** 2, rel=1e-9)


# -- the task: options, training, prediction ----------------------------------------------------------
@pytest.mark.parametrize("override,field", [
    ("options.formulation=regression", "models.net.netspec"),  # 256-level netspec, 1 wanted
    ("options.decode=mode", "options.decode"),
    ("options.smooth_size=4", "options.smooth_size"),
])
def test_bad_options_are_located_errors(override, field):
    from spdnn.tasks import build_task
    from spdnn.train import load_recipe

    with pytest.raises(SpecError) as info:
        build_task(load_recipe(RECIPE, [override]))
    assert info.value.field == field


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe

    out = tmp_path_factory.mktemp("thermalnet") / "run"
    trainer = trainer_for(load_recipe(RECIPE, SMALL), outdir=out, progress=False)
    final = trainer.run()
    assert trainer.step == 2
    counts = sum(level_histogram(trainer.train_ds[i][1], 256) for i in range(4))
    torch.testing.assert_close(trainer.task.level_weights(), rebalancing_weights(counts))
    return out, final


def test_trains_two_steps_with_the_table_2_metrics(run):
    out, final = run
    for k in ("val_loss", "val_rms", "val_rms_gs", "val_rms_argmax", "val_rms_c", "val_mae"):
        assert math.isfinite(final[k]), (k, final)
    assert 0 <= final["val_rms"] <= 255
    assert final["val_rms_c"] == pytest.approx(final["val_rms"] * 25 / 255, rel=1e-6)
    assert (out / "samples.png").is_file()
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["task"]["level_weights"].shape == (256,)  # estimated once, kept


def test_predict_writes_the_thermal_map_and_the_level_histogram(run, tmp_path, capsys):
    from skimage.io import imread, imsave

    from spdnn.cli import main

    rng = np.random.default_rng(0)
    imsave(tmp_path / "street.png", (rng.uniform(size=(60, 90, 3)) * 255).astype(np.uint8),
           check_contrast=False)
    capsys.readouterr()
    out = tmp_path / "pred"
    assert main(["predict", str(run[0]), str(tmp_path / "street.png"), "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "60x90 RGB" in said and "street_levels.png" in said
    for name in ("street_thermal.png", "street_levels.png"):
        assert imread(out / name).ndim == 3

    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    assert main(["predict", str(run[0]), str(tmp_path / "broken.png"), "-o",
                 str(tmp_path / "p2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "broken.png" in err
    assert not (tmp_path / "p2").exists()


def test_regression_netspec_is_the_trunk_with_a_one_channel_head():
    from spdnn.shapes import infer
    from spdnn.spec import load

    cls = infer(load(ROOT / "netspecs/thermalnet/thermalnet.yaml"))
    reg = infer(load(ROOT / "netspecs/thermalnet/thermalnet_regression.yaml"))
    trunk = 899_520 - (512 * 256 + 256) - 2 * (256 * 8 * 8)  # thermalnet.yaml's header
    assert reg.params == trunk + (512 + 1) + 2 * 64 == 736_065
    assert cls.shapes["fire9"] == reg.shapes["fire9"] == (512, 13, 13)
    assert reg.output_shapes() == {"level": (1, 224, 224)}

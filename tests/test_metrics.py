"""Tests of spdnn.metrics against values computed by hand (not by the code under test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spdnn.metrics import (
    SEGMENTATION_THRESHOLD,
    ConfusionCounts,
    MetricAccumulator,
    RegressionAccumulator,
    confusion_counts,
    depth_metrics,
    image_metrics,
    mae,
    mse,
    pcc,
    psnr,
    rmse,
    segmentation_metrics,
    segmentation_metrics_per_image,
    snr,
    ssim,
    uqi,
)

# ---------------------------------------------------------------------------------------------
# segmentation
# ---------------------------------------------------------------------------------------------


def _example_3_1_4_2():
    """10 pixels: tp=3, fp=1, tn=4, fn=2 (probabilities straddle the 0.45 threshold)."""
    # order:            tp  tp   tp   fp   tn   tn   tn   tn   fn   fn
    prob = torch.tensor([0.9, 0.5, 0.46, 0.8, 0.1, 0.45, 0.0, 0.3, 0.2, 0.44])
    target = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 1, 1], dtype=torch.float32)
    return prob.view(1, 1, 2, 5), target.view(1, 1, 2, 5)


def test_confusion_counts_hand_example():
    prob, target = _example_3_1_4_2()
    c = confusion_counts(prob, target)
    assert (c.tp, c.fp, c.tn, c.fn) == (3, 1, 4, 2)
    assert c.total == 10
    assert all(isinstance(v, int) for v in c.as_dict().values())


def test_segmentation_metrics_hand_values():
    m = segmentation_metrics(ConfusionCounts(tp=3, fp=1, tn=4, fn=2))
    # P = tp + fn = 5, N = tn + fp = 5
    expected = {
        "accuracy": 7 / 10,
        "sensitivity": 3 / 5,
        "specificity": 4 / 5,
        "precision": 3 / 4,
        "npv": 4 / 6,
        "f1": 6 / 9,  # 2*3 / (2*3 + 1 + 2)
        "mcc": 10 / math.sqrt(600),  # (3*4 - 1*2) / sqrt(4 * 5 * 5 * 6)
        "informedness": 0.6 + 0.8 - 1,
        "markedness": 0.75 + 4 / 6 - 1,
        "fnr": 2 / 5,
    }
    assert set(m) == set(expected)
    for k, v in expected.items():
        assert m[k] == pytest.approx(v, abs=1e-12), k


def test_threshold_is_strictly_greater_than_045():
    assert SEGMENTATION_THRESHOLD == 0.45
    c = confusion_counts(torch.tensor([0.45, 0.4500001]), torch.tensor([1.0, 1.0]))
    assert (c.tp, c.fn) == (1, 1)


def test_counts_accumulate_over_batches_like_one_batch():
    g = torch.Generator().manual_seed(0)
    prob = torch.rand(6, 1, 9, 11, generator=g)
    target = (torch.rand(6, 1, 9, 11, generator=g) > 0.6).float()
    acc = ConfusionCounts()
    acc.update(prob[:2], target[:2]).update(prob[2:5], target[2:5]).update(prob[5:], target[5:])
    assert acc == confusion_counts(prob, target)
    assert acc.total == 6 * 9 * 11
    assert acc + ConfusionCounts(1, 2, 3, 4) == ConfusionCounts(
        acc.tp + 1, acc.fp + 2, acc.tn + 3, acc.fn + 4
    )


def test_perfect_prediction():
    target = torch.tensor([[0, 1, 1], [0, 0, 1]], dtype=torch.float32)
    m = segmentation_metrics(confusion_counts(target * 0.9 + 0.05, target))
    for k in (
        "accuracy",
        "sensitivity",
        "specificity",
        "precision",
        "npv",
        "f1",
        "mcc",
        "informedness",
        "markedness",
    ):
        assert m[k] == 1.0, k
    assert m["fnr"] == 0.0


def test_inverted_prediction():
    target = torch.tensor([0.0, 1.0, 1.0, 0.0])
    m = segmentation_metrics(confusion_counts(1.0 - target, target))
    assert m["mcc"] == -1.0
    assert m["informedness"] == -1.0
    assert m["accuracy"] == 0.0


def test_all_negative_target_degenerate_cases_follow_zero_division_0():
    target = torch.zeros(20)
    # nothing predicted on an all-negative target: 0/0 ratios are 0, as sklearn/torchmetrics
    m = segmentation_metrics(confusion_counts(torch.zeros(20), target))
    assert m == {
        "accuracy": 1.0,
        "sensitivity": 0.0,
        "specificity": 1.0,
        "precision": 0.0,
        "npv": 1.0,
        "f1": 0.0,
        "mcc": 0.0,
        "informedness": 0.0,
        "markedness": 0.0,
        "fnr": 0.0,
    }
    # 5 false positives out of 20 negatives
    prob = torch.zeros(20)
    prob[:5] = 0.9
    m = segmentation_metrics(confusion_counts(prob, target))
    assert all(math.isfinite(v) for v in m.values())
    assert m["sensitivity"] == 0.0 and m["fnr"] == 0.0  # 0/0
    assert m["specificity"] == pytest.approx(15 / 20)
    assert m["precision"] == 0.0  # 0 / 5
    assert m["f1"] == 0.0  # 0 / (0 + 5 + 0)
    assert m["mcc"] == 0.0  # empty marginal
    # everything predicted positive on an all-negative target
    m = segmentation_metrics(confusion_counts(torch.ones(20), target))
    assert m["mcc"] == 0.0 and m["accuracy"] == 0.0
    # no pixel at all
    m = segmentation_metrics(ConfusionCounts())
    assert set(m.values()) == {0.0, -1.0}  # ratios 0; informedness, markedness 0 + 0 - 1


def test_a_model_that_predicts_all_background_gets_precision_0_not_1():
    target = torch.zeros(100)
    target[:30] = 1
    m = segmentation_metrics(confusion_counts(torch.zeros(100), target))
    assert m["precision"] == 0.0 and m["f1"] == 0.0 and m["mcc"] == 0.0
    assert m["markedness"] == pytest.approx(0.0 + 70 / 100 - 1)


def _sklearn_reference(y_true, y_pred) -> dict[str, float]:
    """The same metrics from scikit-learn (``zero_division=0``), as an independent oracle."""
    from sklearn.metrics import accuracy_score, matthews_corrcoef, precision_recall_fscore_support

    def prf(t, p):
        return precision_recall_fscore_support(t, p, average="binary", pos_label=1,
                                               zero_division=0)

    precision, sensitivity, f1, _ = prf(y_true, y_pred)
    npv, specificity, _, _ = prf(1 - y_true, 1 - y_pred)  # the negative class
    miss = 1 - y_pred  # FNR is the recall of "missed" among true positives
    _, fnr, _, _ = prf(y_true, miss * y_true)
    return {"accuracy": accuracy_score(y_true, y_pred), "sensitivity": sensitivity,
            "specificity": specificity, "precision": precision, "npv": npv, "f1": f1,
            "mcc": matthews_corrcoef(y_true, y_pred), "fnr": fnr}


@pytest.mark.parametrize("case", ["random", "all-negative-target", "all-positive-target",
                                  "nothing-predicted", "everything-predicted", "perfect",
                                  "inverted", "one-pixel"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.filterwarnings("ignore:A single label was found")
def test_segmentation_metrics_agree_with_sklearn(case: str, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    n = 1 if case == "one-pixel" else int(rng.integers(5, 400))
    y_true = rng.integers(0, 2, n)
    y_pred = rng.integers(0, 2, n)
    if case == "all-negative-target":
        y_true[:] = 0
    elif case == "all-positive-target":
        y_true[:] = 1
    elif case == "nothing-predicted":
        y_pred[:] = 0
    elif case == "everything-predicted":
        y_pred[:] = 1
    elif case == "perfect":
        y_pred = y_true.copy()
    elif case == "inverted":
        y_pred = 1 - y_true
    ours = segmentation_metrics(confusion_counts(torch.tensor(y_pred, dtype=torch.float32),
                                                 torch.tensor(y_true, dtype=torch.float32)))
    ref = _sklearn_reference(y_true, y_pred)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(float(v), abs=1e-12), (k, ours[k], v)
    assert ours["informedness"] == pytest.approx(ref["sensitivity"] + ref["specificity"] - 1)


def test_segmentation_mask_excludes_pixels():
    prob, target = _example_3_1_4_2()
    mask = torch.ones_like(target)
    mask.view(-1)[3] = 0  # drop the false positive
    mask.view(-1)[8] = 0  # and one false negative
    c = confusion_counts(prob, target, mask=mask)
    assert (c.tp, c.fp, c.tn, c.fn) == (3, 0, 4, 1)


def test_segmentation_per_image():
    prob, target = _example_3_1_4_2()
    probs = torch.cat([prob, target])  # image 1: the hand example, image 2: perfect
    targets = torch.cat([target, target])
    m = segmentation_metrics_per_image(probs, targets)
    assert m["accuracy"].shape == (2,)
    assert m["accuracy"].tolist() == pytest.approx([0.7, 1.0])
    assert m["mcc"][0].item() == pytest.approx(10 / math.sqrt(600))


# ---------------------------------------------------------------------------------------------
# regression
# ---------------------------------------------------------------------------------------------


def _rand(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_mse_rmse_mae_psnr_snr_known_values():
    target = torch.zeros(2, 1, 4, 4)
    pred = torch.full((2, 1, 4, 4), 0.1)
    assert mse(pred, target).tolist() == pytest.approx([0.01, 0.01])
    assert rmse(pred, target).tolist() == pytest.approx([0.1, 0.1])
    assert mae(pred, target).tolist() == pytest.approx([0.1, 0.1])
    assert psnr(pred, target).tolist() == pytest.approx([20.0, 20.0])  # 10 log10(1 / 0.01)
    assert psnr(pred * 255, target * 255, data_range=255.0).tolist() == pytest.approx([20.0, 20.0])
    # errors of +-0.2: MAE 0.2, RMSE 0.2, MSE 0.04 -> PSNR 10 log10(25)
    pred = torch.tensor([[0.2, -0.2], [0.2, -0.2]])
    target = torch.zeros(2, 2)
    assert mae(pred, target).item() == pytest.approx(0.2)
    assert psnr(pred, target).item() == pytest.approx(10 * math.log10(25))
    # SNR: signal power sum(t^2) = N, error power sum(0.1^2) = 0.01 N -> 20 dB
    t = torch.ones(1, 8, 8)
    assert snr(t + 0.1, t).item() == pytest.approx(20.0)
    assert psnr(t, t).item() == math.inf


def test_ssim_identity_matches_skimage_and_decreases_with_noise():
    from skimage.metrics import structural_similarity

    x = _rand((1, 1, 40, 48))
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)
    g = torch.Generator().manual_seed(1)
    values = []
    for sigma in (0.02, 0.05, 0.1, 0.2):
        y = x + sigma * torch.randn(x.shape, generator=g, dtype=torch.float64)
        values.append(ssim(y, x).item())
        ref = structural_similarity(
            y[0, 0].numpy(),
            x[0, 0].numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert values[-1] == pytest.approx(ref, abs=1e-6)
    assert values == sorted(values, reverse=True)
    assert values[-1] < 0.9


def test_uqi():
    x = _rand((2, 1, 16, 16))
    assert uqi(x, x).tolist() == pytest.approx([1.0, 1.0])
    c = torch.full((1, 1, 16, 16), 0.3)
    assert uqi(c, c).item() == pytest.approx(1.0)  # flat windows: Q = 2 mu mu / (mu^2 + mu^2) = 1
    # flat windows with different means: Q = 2 * 0.3 * 0.6 / (0.09 + 0.36)
    assert uqi(c, c * 2).item() == pytest.approx(0.36 / 0.45)
    noisy = x + 0.1 * torch.randn(
        x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    assert (uqi(noisy, x) < 1).all()


def test_uqi_single_window_hand_value():
    # one 8x8 window: Q = 4 cov mu_x mu_y / ((var_x + var_y)(mu_x^2 + mu_y^2))
    x = torch.tensor([0.0, 1.0] * 32, dtype=torch.float64).view(1, 1, 8, 8)  # mean .5, var .25
    y = 0.5 * x + 0.25  # mean .5, var .0625, cov .125
    expected = 4 * 0.125 * 0.25 / ((0.25 + 0.0625) * 0.5)
    assert uqi(y, x).item() == pytest.approx(expected)


def test_pcc():
    x = _rand((3, 1, 10, 10))
    assert pcc(2 * x + 3, x).tolist() == pytest.approx([1.0] * 3)
    assert pcc(-x, x).tolist() == pytest.approx([-1.0] * 3)
    assert pcc(torch.ones_like(x), x).tolist() == [0.0] * 3  # undefined -> 0


def test_depth_metrics_on_constructed_example():
    target = torch.ones(1, 1, 2, 4)
    p = [1.0, 1.2, 1.3, 1.5, 1.9, 2.0, 0.5, 0.7]
    pred = torch.tensor(p).view(1, 1, 2, 4)
    m = depth_metrics(pred, target)
    # max(p/t, t/p): 1, 1.2, 1.3, 1.5, 1.9, 2, 2, 1.4286 vs 1.25, 1.5625, 1.953125
    assert m["delta1"].item() == pytest.approx(2 / 8)
    assert m["delta2"].item() == pytest.approx(5 / 8)
    assert m["delta3"].item() == pytest.approx(6 / 8)
    assert m["abs_rel"].item() == pytest.approx(3.7 / 8)
    assert m["sq_rel"].item() == pytest.approx(2.53 / 8)
    assert m["rmse"].item() == pytest.approx(math.sqrt(2.53 / 8))
    assert m["rmse_log"].item() == pytest.approx(math.sqrt(sum(math.log(v) ** 2 for v in p) / 8))
    # relative measures use the target as denominator
    m2 = depth_metrics(torch.full((1, 1, 1, 2), 3.0), torch.tensor([2.0, 4.0]).view(1, 1, 1, 2))
    assert m2["abs_rel"].item() == pytest.approx((1 / 2 + 1 / 4) / 2)


def test_masks_and_inf_targets_exclude_pixels():
    x = _rand((2, 1, 24, 24), seed=3)
    y = x + 0.05 * torch.randn(
        x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[:, :, :, 20:] = False
    y_bad = y.clone()
    y_bad[~mask] = 1e6  # garbage prediction where there is no ground truth
    x_inf = x.clone()
    x_inf[~mask] = math.inf  # e.g. Middlebury's inf disparities
    ref = {**image_metrics(y[..., :20], x[..., :20]), **depth_metrics(y[..., :20], x[..., :20])}
    ref.pop("ssim")
    ref.pop("uqi")
    for got in (
        {**image_metrics(y_bad, x, mask), **depth_metrics(y_bad, x, mask)},
        {
            **image_metrics(y_bad, x_inf),
            **depth_metrics(y_bad, x_inf),
        },  # inf target alone is enough
    ):
        for k, v in ref.items():
            assert torch.allclose(got[k], v), k
    # windowed measures ignore the values at masked pixels
    y_other = y.clone()
    y_other[~mask] = -3.0
    assert torch.allclose(ssim(y_bad, x, mask), ssim(y_other, x, mask))
    assert torch.allclose(uqi(y_bad, x, mask), uqi(y_other, x, mask))
    assert ssim(y, x, mask).isfinite().all()
    # float masks work too; an image with no valid pixel gives nan
    empty = torch.zeros_like(x)
    assert torch.isnan(mse(y, x, empty)).all()
    assert torch.isnan(ssim(y, x, empty)).all()
    assert torch.allclose(mse(y, x, mask.double()), mse(y[..., :20], x[..., :20]))


def test_accumulator_averages_over_images_not_batches():
    acc = MetricAccumulator()
    acc.update({"a": torch.tensor([1.0])})
    acc.update({"a": torch.tensor([2.0, 3.0, 6.0]), "b": torch.tensor([math.nan, 4.0, 8.0])})
    assert acc.mean()["a"] == pytest.approx(3.0)  # (1 + 2 + 3 + 6) / 4, not (1 + 11/3) / 2
    assert acc.count() == {"a": 4, "b": 2}
    assert acc.mean()["b"] == pytest.approx(6.0)
    assert acc.std()["a"] == pytest.approx(float(np.std([1, 2, 3, 6])))


def test_regression_accumulator_equals_one_big_batch():
    x = _rand((5, 1, 16, 20), seed=5) + 0.1
    y = x + 0.05 * torch.randn(
        x.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64
    )
    a, b = RegressionAccumulator(), RegressionAccumulator()
    a.update(y[:2], x[:2])
    a.update(y[2:], x[2:])
    b.update(y, x)
    ma, mb = a.mean(), b.mean()
    assert set(ma) == {
        "psnr",
        "mse",
        "rmse",
        "snr",
        "mae",
        "ssim",
        "uqi",
        "pcc",
        "abs_rel",
        "sq_rel",
        "rmse_log",
        "delta1",
        "delta2",
        "delta3",
    }
    for k in ma:
        assert ma[k] == pytest.approx(mb[k]), k
    assert a.count()["psnr"] == 5

"""Evaluation metrics of the thesis' segmentation and depth experiments, written in torch.

Two families (``torchmetrics`` is deliberately not a dependency):

* **Binary segmentation** (thesis App. D, sec. 4 and Table 1): the network outputs a probability
  map, a pixel is called iris when its probability is **greater than 0.45**
  (:data:`SEGMENTATION_THRESHOLD`), and the binary map is compared with a binary target.
  :class:`ConfusionCounts` accumulates TP/FP/TN/FN over batches; :func:`segmentation_metrics`
  turns counts into accuracy, sensitivity, specificity, precision, NPV, F1, MCC, informedness,
  markedness and FNR. :func:`segmentation_metrics_per_image` gives the same metrics per image
  (the thesis reports the mean µ and standard deviation σ over images).

* **Image / depth regression** (thesis App. B sec. 3, Tables 2-5): PSNR, MSE, RMSE, SNR, MAE, SSIM,
  UQI, PCC (:func:`image_metrics`) and the KITTI-style error measures of Eigen et al. used in
  Table 5 - Abs Rel, Sq Rel, RMSE, RMSE log, δ < 1.25, 1.25², 1.25³ (:func:`depth_metrics`).
  Every regression metric is computed **per image** and takes an optional validity mask; pixels
  where the mask is false **or the target is not finite** (e.g. the ``inf`` disparities of the
  Middlebury ground truth) are excluded. :class:`MetricAccumulator` and
  :class:`RegressionAccumulator` average the per-image values over any number of batches of any
  sizes (each image weighs the same, whatever batch it came in).

Shape conventions for the regression metrics: ``pred`` and ``target`` are ``(B, C, H, W)``,
``(B, H, W)`` (one channel) or ``(H, W)`` (one image); ``mask`` is bool or 0/1 float and broadcasts
to ``pred`` (e.g. ``(B, 1, H, W)`` for a multi-channel image). All per-image results are float64
tensors of shape ``(B,)``; an image without any valid pixel gets ``nan`` (and accumulators skip it).
Computation is done in float64 whatever the input dtype.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Metric",
    "SegmentationMetric",
    "KernelMMD",
    "SEGMENTATION_THRESHOLD",
    "ConfusionCounts",
    "confusion_counts",
    "segmentation_metrics",
    "segmentation_metrics_per_image",
    "mse",
    "rmse",
    "mae",
    "psnr",
    "snr",
    "ssim",
    "uqi",
    "pcc",
    "gaussian_smooth",
    "image_metrics",
    "depth_metrics",
    "MetricAccumulator",
    "RegressionAccumulator",
]

#: Threshold of the thesis App. D sec. 4: "values bigger than a threshold are shifted to 1 and the
#: others to 0. The threshold value 0.45 has been used in our experiments."
SEGMENTATION_THRESHOLD = 0.45

SEGMENTATION_KEYS = (
    "accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "npv",
    "f1",
    "mcc",
    "informedness",
    "markedness",
    "fnr",
)

# --------------------------------------------------------------------------------------------
# The metric interface
# --------------------------------------------------------------------------------------------

HIGHER_IS_BETTER: dict[str, bool] = {
    # segmentation / classification (thesis App. A, D; iris task)
    "accuracy": True, "sensitivity": True, "specificity": True, "precision": True, "npv": True,
    "f1": True, "mcc": True, "informedness": True, "markedness": True, "fnr": False,
    "loss": False, "error": False, "balanced_accuracy": True,
    # depth (thesis App. B Table 10) and image quality
    "psnr": True, "snr": True, "ssim": True, "uqi": True, "pcc": True, "mse": False,
    "rmse": False, "mae": False, "abs_rel": False, "sq_rel": False, "rmse_log": False,
    "delta1": True, "delta2": True, "delta3": True,
    # GANs (spdnn.tasks.gan.evaluation): lower FID, MMD and attribute error are better; lower
    # SSIM/UQI between generated images means more varied samples (App. G Appendix A)
    "fid": False, "mmd": False, "cond_accuracy": True, "attr_mae": False,
    "div_within_ssim": False, "div_between_ssim": False, "div_within_uqi": False,
    "div_between_uqi": False, "div_within_mse": True, "div_between_mse": True,
    # Thermalnet (Kniaz et al. eq. 2, Table 2): RMS in levels, + 3x3 Gaussian smoothing, in C
    "rms": False, "rms_gs": False, "rms_argmax": False, "rms_c": False, "rms_gs_c": False,
    "mae_c": False,
}
"""Which way a metric improves, by name (without the ``val_`` prefix), for tables and plots
that mark the better direction (``spdnn compare``); a name not listed has no direction."""

class Metric(ABC):
    """The one interface of every metric accumulator the trainer uses (like torchmetrics'
    ``Metric``): ``update`` once per batch, ``compute`` at the end, ``reset`` to start over.

    ``update(pred, target, mask=None)`` takes a batch of predictions and targets of the same
    shape (``(B, C, H, W)`` maps for the image tasks) and an optional validity mask that
    broadcasts to them; ``compute()`` returns ``{name: float}``.
    """

    @abstractmethod
    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add one batch."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metric values over every batch added since the last reset."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every batch."""


# --------------------------------------------------------------------------------------------
# Binary segmentation (App. D, Table 1)
# --------------------------------------------------------------------------------------------


def _binarize(prob: Tensor, target: Tensor, threshold: float, mask: Tensor | None):
    """Return (pred, tgt, valid) bool tensors of the same shape."""
    prob = torch.as_tensor(prob)
    target = torch.as_tensor(target)
    pred = prob > threshold
    tgt = target.bool() if target.dtype == torch.bool else target > 0.5
    pred, tgt = torch.broadcast_tensors(pred, tgt)
    if mask is None:
        valid = torch.ones_like(pred)
    else:
        mask = torch.as_tensor(mask)
        valid = mask.bool() if mask.dtype == torch.bool else mask > 0.5
        valid = valid.expand_as(pred)
    return pred, tgt, valid


@dataclass
class ConfusionCounts:
    """Pixel confusion counts of a binary segmentation, accumulated over batches.

    The counts are summed as ``torch.int64`` and stored as Python ``int`` (exact, no overflow, no
    float rounding however many pixels are accumulated).

    Positive = iris pixel. ``tp``: predicted iris and iris in the target; ``fp``: predicted iris,
    not iris in the target; ``tn``: neither; ``fn``: iris in the target but not predicted.

    Usage::

        counts = ConfusionCounts()
        for prob, target in loader:                     # prob: sigmoid output in [0, 1]
            counts.update(prob, target)                 # threshold 0.45 (App. D)
        print(segmentation_metrics(counts))
    """

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    @property
    def total(self) -> int:
        """Number of counted pixels."""
        return self.tp + self.fp + self.tn + self.fn

    def update(
        self,
        prob: Tensor,
        target: Tensor,
        threshold: float = SEGMENTATION_THRESHOLD,
        mask: Tensor | None = None,
    ) -> ConfusionCounts:
        """Add the counts of one batch (any shape; see :func:`confusion_counts`); returns ``self``."""
        other = confusion_counts(prob, target, threshold=threshold, mask=mask)
        self.tp += other.tp
        self.fp += other.fp
        self.tn += other.tn
        self.fn += other.fn
        return self

    def __add__(self, other: ConfusionCounts) -> ConfusionCounts:
        return ConfusionCounts(
            self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn
        )

    def as_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}


def confusion_counts(
    prob: Tensor,
    target: Tensor,
    threshold: float = SEGMENTATION_THRESHOLD,
    mask: Tensor | None = None,
) -> ConfusionCounts:
    """Confusion counts of a probability map against a binary target.

    Args:
        prob: predicted probabilities (any shape, values in [0, 1]; logits would need a sigmoid
            first). A pixel is predicted positive when ``prob > threshold`` (strictly, App. D sec. 4).
        target: binary ground truth, same (or broadcastable) shape: bool, or float/int where
            ``> 0.5`` means positive.
        threshold: decision threshold, 0.45 in the thesis.
        mask: optional validity mask (bool or 0/1); pixels where it is false are not counted.
    """
    pred, tgt, valid = _binarize(prob, target, threshold, mask)

    def count(x: Tensor) -> int:
        return int((x & valid).sum(dtype=torch.int64).item())

    return ConfusionCounts(
        tp=count(pred & tgt), fp=count(pred & ~tgt), tn=count(~pred & ~tgt), fn=count(~pred & tgt)
    )


def _safe_ratio(num: Tensor, den: Tensor, empty: float) -> Tensor:
    """``num / den``, and ``empty`` where ``den == 0``."""
    out = num / torch.where(den == 0, torch.ones_like(den), den)
    return torch.where(den == 0, torch.full_like(out, empty), out)


def _segmentation_from_counts(tp: Tensor, fp: Tensor, tn: Tensor, fn: Tensor) -> dict[str, Tensor]:
    tp, fp, tn, fn = (t.to(torch.float64) for t in (tp, fp, tn, fn))
    total = tp + fp + tn + fn
    accuracy = _safe_ratio(tp + tn, total, 0.0)
    sensitivity = _safe_ratio(tp, tp + fn, 0.0)
    specificity = _safe_ratio(tn, tn + fp, 0.0)
    precision = _safe_ratio(tp, tp + fp, 0.0)
    npv = _safe_ratio(tn, tn + fn, 0.0)
    f1 = _safe_ratio(2 * tp, 2 * tp + fp + fn, 0.0)
    fnr = _safe_ratio(fn, tp + fn, 0.0)
    den = torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = _safe_ratio(tp * tn - fp * fn, den, 0.0)
    return {
        "accuracy": accuracy,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "precision": precision,
        "npv": npv,
        "f1": f1,
        "mcc": mcc,
        "informedness": sensitivity + specificity - 1.0,
        "markedness": precision + npv - 1.0,
        "fnr": fnr,
    }


def segmentation_metrics(counts: ConfusionCounts) -> dict[str, float]:
    """Binary segmentation metrics of thesis App. D Table 1 from accumulated counts.

    With P = TP + FN (target positives) and N = TN + FP (target negatives):

    ========================  ==============================================  =============
    key                       formula                                         range
    ========================  ==============================================  =============
    ``accuracy``              (TP + TN) / (P + N)                             [0, 1]
    ``sensitivity`` (TPR)     TP / (TP + FN)                                  [0, 1]
    ``specificity`` (TNR)     TN / (TN + FP)                                  [0, 1]
    ``precision`` (PPV)       TP / (TP + FP)                                  [0, 1]
    ``npv``                   TN / (TN + FN)                                  [0, 1]
    ``f1``                    2TP / (2TP + FP + FN)                           [0, 1]
    ``mcc``                   (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))  [−1, 1]
    ``informedness``          sensitivity + specificity − 1                   [−1, 1]
    ``markedness``            precision + NPV − 1                             [−1, 1]
    ``fnr``                   FN / (TP + FN) (= 1 − sensitivity when TP+FN>0)  [0, 1]
    ========================  ==============================================  =============

    **0/0 convention** (every value is a finite number, never ``nan``): a ratio whose
    denominator is 0 is **0.0**, the ``zero_division=0`` convention of scikit-learn
    (``precision_recall_fscore_support``, ``matthews_corrcoef``) and torchmetrics. So a map that
    predicts no iris pixel has precision 0 (not 1), an all-negative target gives sensitivity and
    FNR 0, an empty confusion-matrix row or column gives MCC 0, and zero pixels give 0
    everywhere; informedness and markedness are computed from those values. (The thesis does
    not define the degenerate cases.)
    """
    t = torch.tensor([counts.tp, counts.fp, counts.tn, counts.fn], dtype=torch.int64)
    out = _segmentation_from_counts(t[0], t[1], t[2], t[3])
    return {k: float(v.item()) for k, v in out.items()}


class SegmentationMetric(Metric):
    """Confusion counts over a whole validation set, then the App. D metrics
    (:func:`segmentation_metrics`); ``pred`` is a probability map in [0, 1], binarized at
    ``threshold`` (App. D sec. 4: 0.45); ``target`` a 0/1 map of the same shape."""

    def __init__(self, threshold: float = SEGMENTATION_THRESHOLD) -> None:
        self.threshold = threshold
        self.counts = ConfusionCounts()

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        self.counts.update(pred, target, threshold=self.threshold, mask=mask)

    def compute(self) -> dict[str, float]:
        return segmentation_metrics(self.counts)

    def reset(self) -> None:
        self.counts = ConfusionCounts()


def segmentation_metrics_per_image(
    prob: Tensor,
    target: Tensor,
    threshold: float = SEGMENTATION_THRESHOLD,
    mask: Tensor | None = None,
) -> dict[str, Tensor]:
    """The metrics of :func:`segmentation_metrics`, one value per image.

    ``prob``/``target``/``mask`` are ``(B, ...)``; counts are taken over all but the first axis.
    Returns float64 tensors of shape ``(B,)`` (same 0/0 convention). Feed them to a
    :class:`MetricAccumulator` to get the µ and σ over images reported in App. D Tables 2-6.
    """
    pred, tgt, valid = _binarize(prob, target, threshold, mask)
    b = pred.shape[0]
    pred, tgt, valid = pred.reshape(b, -1), tgt.reshape(b, -1), valid.reshape(b, -1)

    def count(x: Tensor) -> Tensor:
        return (x & valid).sum(dim=1, dtype=torch.int64)

    return _segmentation_from_counts(
        count(pred & tgt), count(pred & ~tgt), count(~pred & ~tgt), count(~pred & tgt)
    )


# --------------------------------------------------------------------------------------------
# Image / depth regression (App. B sec. 3)
# --------------------------------------------------------------------------------------------


def _prepare(pred: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Bring inputs to float64 ``(B, C, H, W)`` and return (pred, target, weight 0/1).

    Invalid target values (non finite) are excluded and replaced by 0 so that they never turn a
    sum into ``nan``.
    """
    pred = torch.as_tensor(pred)
    target = torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")

    def to4(x: Tensor) -> Tensor:
        if x.dim() == 2:
            return x[None, None]
        if x.dim() == 3:
            return x[:, None]
        if x.dim() == 4:
            return x
        raise ValueError(f"expected (H, W), (B, H, W) or (B, C, H, W), got {tuple(x.shape)}")

    pred = to4(pred).to(torch.float64)
    target = to4(target).to(torch.float64)
    valid = torch.isfinite(target)
    if mask is not None:
        m = torch.as_tensor(mask, device=pred.device)
        m = m.bool() if m.dtype == torch.bool else m > 0.5
        if m.dim() < 4:
            m = to4(m) if m.dim() >= 2 else m
        valid = valid & m.expand_as(valid)
    target = torch.where(valid, target, torch.zeros_like(target))
    pred = torch.where(valid, pred, torch.zeros_like(pred))
    return pred, target, valid.to(torch.float64)


def _nan_if_empty(value: Tensor, count: Tensor) -> Tensor:
    return torch.where(count > 0, value, torch.full_like(value, math.nan))


def _masked_mean(x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image mean of ``x`` over valid pixels; returns (mean, count), both (B,)."""
    count = w.sum(dim=(1, 2, 3))
    s = (x * w).sum(dim=(1, 2, 3))
    return _nan_if_empty(s / count.clamp_min(1), count), count


def mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error per image: mean over valid pixels of (pred − target)². App. B Table 2.

    For data in [0, 1] the MSE lies in [0, 1]. Returns ``(B,)`` float64.
    """
    p, t, w = _prepare(pred, target, mask)
    return _masked_mean((p - t) ** 2, w)[0]


def rmse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Root mean squared error per image, sqrt(MSE). App. B Tables 2 and 5. ``(B,)`` float64."""
    return torch.sqrt(mse(pred, target, mask))


def mae(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean absolute error per image: mean |pred − target| over valid pixels. App. B Table 2."""
    p, t, w = _prepare(pred, target, mask)
    return _masked_mean((p - t).abs(), w)[0]


def psnr(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, data_range: float = 1.0
) -> Tensor:
    """Peak signal-to-noise ratio per image in dB: 10·log10(data_range² / MSE). App. B Table 2.

    ``data_range`` is the peak-to-peak range of the data (1.0 for images in [0, 1], 255 for
    uint8-valued data). A perfect prediction (MSE = 0) gives ``+inf``. ``(B,)`` float64.
    """
    m = mse(pred, target, mask)
    return 10.0 * torch.log10(data_range**2 / m)


def snr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Signal-to-noise ratio per image in dB: 10·log10(Σ target² / Σ (pred − target)²).

    This is the SNR that MATLAB's ``[peaksnr, snr] = psnr(A, ref)`` returns (signal power of the
    reference over the error power), the tool the thesis' App. B evaluation was done with
    **[INFERRED]**. A perfect prediction gives ``+inf``; an all-zero target with errors ``-inf``.
    ``(B,)`` float64.
    """
    p, t, w = _prepare(pred, target, mask)
    sig = (t**2 * w).sum(dim=(1, 2, 3))
    err = ((p - t) ** 2 * w).sum(dim=(1, 2, 3))
    count = w.sum(dim=(1, 2, 3))
    return _nan_if_empty(10.0 * torch.log10(sig / err), count)


def pcc(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Pearson correlation coefficient per image over valid pixels, in [−1, 1]. App. B Table 2.

    PCC = cov(pred, target) / (σ_pred σ_target). If either image is constant over its valid pixels
    (σ = 0) the correlation is undefined and **0.0** is returned. ``(B,)`` float64.
    """
    p, t, w = _prepare(pred, target, mask)
    mp, count = _masked_mean(p, w)
    mt, _ = _masked_mean(t, w)
    dp = (p - mp.nan_to_num()[:, None, None, None]) * w
    dt = (t - mt.nan_to_num()[:, None, None, None]) * w
    cov = (dp * dt).sum(dim=(1, 2, 3))
    vp = (dp**2).sum(dim=(1, 2, 3))
    vt = (dt**2).sum(dim=(1, 2, 3))
    den = torch.sqrt(vp * vt)
    tiny = 1e-24 * torch.clamp(count, min=1) ** 2
    r = torch.where(den > tiny, cov / torch.where(den > tiny, den, torch.ones_like(den)), 0.0)
    return _nan_if_empty(r.clamp(-1.0, 1.0), count)


def _gaussian_1d(size: int, sigma: float) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_smooth(x: Tensor, size: int = 3, sigma: float = 0.8) -> Tensor:
    """Filter ``(N, C, H, W)`` maps with a normalised ``size`` x ``size`` Gaussian (the outer
    product of a 1-D Gaussian of std ``sigma`` pixels, weights summing to 1), borders reflected
    without repeating the edge pixel (OpenCV's default ``BORDER_REFLECT_101``), so a constant
    map is unchanged and the output has the input's shape and dtype.

    The defaults are Thermalnet's "gaussian smooth 3x3" post-process (Kniaz et al., Table 2,
    "TN + GS"; the paper gives no sigma, 0.8 is OpenCV's ``getGaussianKernel`` rule for a
    3-tap kernel, 0.3 ((size - 1) / 2 - 1) + 0.8).

    Raises:
        ValueError: ``size`` not odd and positive, ``sigma`` <= 0, or a map smaller than the
            kernel's radius + 1 (reflection needs it).
    """
    if size < 1 or size % 2 == 0 or not sigma > 0:
        raise ValueError(f"gaussian_smooth needs an odd size >= 1 and sigma > 0, got {size}, "
                         f"{sigma}")
    r = size // 2
    if r == 0:
        return x.clone()
    if min(x.shape[-2:]) <= r:
        raise ValueError(f"a {x.shape[-2]}x{x.shape[-1]} map is too small for a {size}x{size} "
                         "kernel")
    n, c, h, w = x.shape
    k = _gaussian_1d(size, sigma).to(x.dtype)
    y = F.pad(x.reshape(n * c, 1, h, w), (r, r, r, r), mode="reflect")
    return _filter_valid(y, k).reshape(n, c, h, w)


def _filter_valid(x: Tensor, k1d: Tensor) -> Tensor:
    """Separable 'valid' filtering of ``(N, 1, H, W)`` with the outer product of ``k1d``."""
    n = k1d.numel()
    x = F.conv2d(x, k1d.view(1, 1, n, 1))
    return F.conv2d(x, k1d.view(1, 1, 1, n))


def _local_stats(p: Tensor, t: Tensor, w: Tensor, k1d: Tensor):
    """Masked local means/variances/covariance over a sliding window (normalised convolution).

    Returns (weight, mu_p, mu_t, var_p, var_t, cov), each ``(B*C, 1, H', W')``; ``weight`` is the
    fraction of the window's weight that falls on valid pixels.
    """
    b, c, h, wd = p.shape
    p = p.reshape(b * c, 1, h, wd)
    t = t.reshape(b * c, 1, h, wd)
    w = w.reshape(b * c, 1, h, wd)
    weight = _filter_valid(w, k1d)
    safe = torch.where(weight > 0, weight, torch.ones_like(weight))
    mu_p = _filter_valid(w * p, k1d) / safe
    mu_t = _filter_valid(w * t, k1d) / safe
    var_p = (_filter_valid(w * p * p, k1d) / safe - mu_p**2).clamp_min(0)
    var_t = (_filter_valid(w * t * t, k1d) / safe - mu_t**2).clamp_min(0)
    cov = _filter_valid(w * p * t, k1d) / safe - mu_p * mu_t
    return weight, mu_p, mu_t, var_p, var_t, cov


def _pool_windows(qmap: Tensor, weight: Tensor, b: int, min_weight: float = 0.5) -> Tensor:
    """Mean of a quality map over used windows (valid weight >= min_weight), per image."""
    used = (weight >= min_weight - 1e-12).to(torch.float64)
    used = used.reshape(b, -1)
    q = torch.where(used > 0, qmap.reshape(b, -1), torch.zeros_like(used))
    n = used.sum(dim=1)
    return _nan_if_empty(q.sum(dim=1) / n.clamp_min(1), n)


def ssim(
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Structural similarity index (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004) per image.

    SSIM map = ((2 µp µt + C1)(2 σpt + C2)) / ((µp² + µt² + C1)(σp² + σt² + C2)) with local
    statistics from an ``win_size`` x ``win_size`` Gaussian window (11, σ = 1.5, normalised),
    C1 = (k1·L)², C2 = (k2·L)², k1 = 0.01, k2 = 0.03, L = ``data_range``; population (not
    Bessel-corrected) variances. The map is computed at 'valid' window positions only (no
    padding, as in Wang's reference ``ssim_index.m``) and averaged over positions and channels.
    Without a mask this equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=L)``. Range [−1, 1], 1 iff identical.
    Used in App. B Table 2.

    With a mask the local statistics are taken over the valid pixels of each window only
    (normalised convolution) and a window counts when at least half of its weight lies on valid
    pixels. Images smaller than the window raise ``ValueError``. ``(B,)`` float64.
    """
    p, t, w = _prepare(pred, target, mask)
    if p.shape[-1] < win_size or p.shape[-2] < win_size:
        raise ValueError(
            f"SSIM needs images of at least {win_size}x{win_size}, got {tuple(p.shape[-2:])}"
        )
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    k = _gaussian_1d(win_size, sigma).to(p.device)
    weight, mp, mt, vp, vt, cov = _local_stats(p, t, w, k)
    smap = ((2 * mp * mt + c1) * (2 * cov + c2)) / ((mp**2 + mt**2 + c1) * (vp + vt + c2))
    return _pool_windows(smap, weight, p.shape[0])


def uqi(pred: Tensor, target: Tensor, mask: Tensor | None = None, block_size: int = 8) -> Tensor:
    """Universal quality index Q (Wang & Bovik, IEEE SPL 2002) per image. App. B Table 2.

    Q = 4 σpt µp µt / ((σp² + σt²)(µp² + µt²)), computed on a sliding ``block_size`` x
    ``block_size`` box window (8 in the paper) at 'valid' positions and averaged. Degenerate
    windows follow the authors' reference code ``img_qi.m``: if σp² + σt² = 0 but
    µp² + µt² ≠ 0, Q = 2 µp µt / (µp² + µt²); if µp² + µt² = 0, Q = 1 (a variance or mean sum
    below 1e-12 counts as 0). Range [−1, 1], 1 iff identical. Masks as for :func:`ssim`.
    ``(B,)`` float64.
    """
    p, t, w = _prepare(pred, target, mask)
    if p.shape[-1] < block_size or p.shape[-2] < block_size:
        raise ValueError(f"UQI needs images of at least {block_size}x{block_size}")
    k = torch.full((block_size,), 1.0 / block_size, dtype=torch.float64, device=p.device)
    weight, mp, mt, vp, vt, cov = _local_stats(p, t, w, k)
    eps = 1e-12
    d1 = vp + vt
    d2 = mp**2 + mt**2
    num = 4 * cov * mp * mt
    q = torch.ones_like(d1)
    flat = (d1 <= eps) & (d2 > eps)
    q = torch.where(flat, 2 * mp * mt / torch.where(flat, d2, torch.ones_like(d2)), q)
    regular = (d1 > eps) & (d2 > eps)
    q = torch.where(regular, num / torch.where(regular, d1 * d2, torch.ones_like(d1)), q)
    return _pool_windows(q, weight, p.shape[0])


def image_metrics(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, data_range: float = 1.0
) -> dict[str, Tensor]:
    """The eight measures of App. B sec. 3 (Table 2), per image.

    Keys: ``psnr``, ``mse``, ``rmse``, ``snr``, ``mae``, ``ssim``, ``uqi``, ``pcc``; each a
    ``(B,)`` float64 tensor. See the individual functions for definitions.
    """
    m = mse(pred, target, mask)
    return {
        "psnr": 10.0 * torch.log10(data_range**2 / m),
        "mse": m,
        "rmse": torch.sqrt(m),
        "snr": snr(pred, target, mask),
        "mae": mae(pred, target, mask),
        "ssim": ssim(pred, target, mask, data_range=data_range),
        "uqi": uqi(pred, target, mask),
        "pcc": pcc(pred, target, mask),
    }


def depth_metrics(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, min_value: float = 1e-3
) -> dict[str, Tensor]:
    """KITTI-style depth error measures of Eigen et al. (NIPS 2014), App. B sec. 3.4, Table 5.

    Over the P valid pixels of each image, with d̃ the prediction and d* the ground truth:

    * ``abs_rel`` = (1/P) Σ |d̃ − d*| / d*
    * ``sq_rel``  = (1/P) Σ (d̃ − d*)² / d*
    * ``rmse``    = sqrt((1/P) Σ (d̃ − d*)²)
    * ``rmse_log`` = sqrt((1/P) Σ (log d̃ − log d*)²)   (natural log)
    * ``delta1``, ``delta2``, ``delta3`` = fraction of pixels with max(d̃/d*, d*/d̃) < 1.25^k,
      k = 1, 2, 3 (a fraction in [0, 1], not a percentage).

    Valid pixels: mask true, target finite **and target > min_value** (ratios and logs need a
    positive ground truth; KITTI stores missing disparity as 0). Predictions are clamped to
    ``>= min_value`` before ratios/logs, as the usual evaluation code clamps to a minimum depth.
    The measures are the same for depth or disparity maps (any positive quantity), in the target's
    units. Returns ``(B,)`` float64 tensors; per-image values, as in the Eigen/Godard evaluation.
    """
    p, t, w = _prepare(pred, target, mask)
    w = w * (t > min_value).to(torch.float64)
    t = torch.where(w > 0, t, torch.ones_like(t))
    p = torch.where(w > 0, p.clamp_min(min_value), torch.ones_like(p))
    diff = p - t
    abs_rel, count = _masked_mean(diff.abs() / t, w)
    sq_rel, _ = _masked_mean(diff**2 / t, w)
    rm = torch.sqrt(_masked_mean(diff**2, w)[0])
    rml = torch.sqrt(_masked_mean((torch.log(p) - torch.log(t)) ** 2, w)[0])
    ratio = torch.maximum(p / t, t / p)
    out = {"abs_rel": abs_rel, "sq_rel": sq_rel, "rmse": rm, "rmse_log": rml}
    for k in (1, 2, 3):
        out[f"delta{k}"] = _masked_mean((ratio < 1.25**k).to(torch.float64), w)[0]
    return out


# --------------------------------------------------------------------------------------------
# Accumulators
# --------------------------------------------------------------------------------------------


class MetricAccumulator:
    """Averages per-image metric values over batches of any sizes.

    ``update`` takes a mapping ``name -> values`` (a ``(B,)`` tensor, a sequence, or a scalar for
    one image). Each image counts once, so the result is the mean over images whatever the batch
    split. ``nan`` values (images without a valid pixel) are skipped per metric; ``±inf`` values
    (e.g. PSNR of a perfect image) are kept and make the mean infinite, which is the honest value.
    Sums are kept in float64 (Welford-free two-moment sums; fine for the magnitudes involved).
    """

    def __init__(self) -> None:
        self._sum: dict[str, float] = {}
        self._sq: dict[str, float] = {}
        self._n: dict[str, int] = {}

    def update(self, values: Mapping[str, Tensor | float | Iterable[float]]) -> None:
        for key, v in values.items():
            t = torch.as_tensor(v, dtype=torch.float64).reshape(-1).detach().cpu()
            t = t[~torch.isnan(t)]
            if t.numel() == 0:
                self._n.setdefault(key, 0)
                self._sum.setdefault(key, 0.0)
                self._sq.setdefault(key, 0.0)
                continue
            self._sum[key] = self._sum.get(key, 0.0) + float(t.sum())
            self._sq[key] = self._sq.get(key, 0.0) + float((t**2).sum())
            self._n[key] = self._n.get(key, 0) + int(t.numel())

    def count(self) -> dict[str, int]:
        """Number of images averaged, per metric."""
        return dict(self._n)

    def mean(self) -> dict[str, float]:
        """Mean over images (µ); ``nan`` for a metric that never got a value."""
        return {k: (self._sum[k] / n if n else math.nan) for k, n in self._n.items()}

    def std(self) -> dict[str, float]:
        """Population standard deviation over images (σ); ``nan`` when there is no value."""
        out = {}
        for k, n in self._n.items():
            if n == 0:
                out[k] = math.nan
                continue
            m = self._sum[k] / n
            if math.isinf(m):
                out[k] = math.nan
                continue
            out[k] = math.sqrt(max(self._sq[k] / n - m * m, 0.0))
        return out

    def reset(self) -> None:
        self._sum.clear()
        self._sq.clear()
        self._n.clear()


class RegressionAccumulator(MetricAccumulator, Metric):
    """Per-image image-quality (and optionally KITTI depth) metrics averaged over batches.

    Usage::

        acc = RegressionAccumulator(data_range=1.0, depth=True)
        for image, target, mask in loader:
            acc.update(model(image), target, mask)
        acc.mean()   # {'psnr': ..., 'mse': ..., ..., 'abs_rel': ..., 'delta1': ...}

    Keys: those of :func:`image_metrics`, plus those of :func:`depth_metrics` when ``depth`` is true
    (``rmse`` is the same quantity in both and is taken from :func:`image_metrics`).
    """

    def __init__(self, data_range: float = 1.0, depth: bool = True, min_value: float = 1e-3):
        super().__init__()
        self.data_range = data_range
        self.depth = depth
        self.min_value = min_value

    def update(  # type: ignore[override]
        self,
        pred: Tensor | Mapping[str, Tensor],
        target: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> None:
        """Add a batch ``(pred, target, mask)``; or a ready mapping of per-image values."""
        if isinstance(pred, Mapping):
            super().update(pred)
            return
        if target is None:
            raise TypeError("update(pred, target, mask=None) needs a target")
        with torch.no_grad():
            pred = pred.detach()
            target = torch.as_tensor(target).detach()
            values = image_metrics(pred, target, mask, data_range=self.data_range)
            if self.depth:
                d = depth_metrics(pred, target, mask, min_value=self.min_value)
                d.pop("rmse")
                values.update(d)
        super().update(values)

    def compute(self) -> dict[str, float]:
        """The mean over images of every metric (see :meth:`MetricAccumulator.mean`)."""
        return {k: float(v) for k, v in self.mean().items()}


class KernelMMD(Metric):
    """Squared maximum mean discrepancy between generated and real samples (Gretton et al.,
    "A Kernel Two-Sample Test", JMLR 2012, eq. 3: the unbiased estimate) with a Gaussian kernel
    ``exp(-|a - b|^2 / (2 sigma^2))`` on the flattened samples; ``sigma`` is the median distance
    between the real samples (the median heuristic) unless given. 0 when both sets come from
    one distribution; larger is worse.

    ``update(pred, target)``: ``pred`` generated and ``target`` real samples of any shape
    ``(B, ...)``; ``compute()`` -> ``{"mmd": float}`` (needs at least 2 of each).
    """

    def __init__(self, sigma: float | None = None) -> None:
        self.sigma = sigma
        self.reset()

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        self._fake.append(pred.detach().reshape(pred.shape[0], -1).double().cpu())
        self._real.append(target.detach().reshape(target.shape[0], -1).double().cpu())

    def reset(self) -> None:
        self._fake: list[Tensor] = []
        self._real: list[Tensor] = []

    def compute(self) -> dict[str, float]:
        x, y = torch.cat(self._fake), torch.cat(self._real)
        m, n = len(x), len(y)
        if m < 2 or n < 2:
            return {"mmd": math.nan}
        dyy = torch.cdist(y, y) ** 2
        sigma = self.sigma
        if sigma is None:
            off = dyy[~torch.eye(n, dtype=torch.bool)]
            sigma = float(off.sqrt().median()) or 1.0
        g = 1.0 / (2 * sigma**2)
        kxx = torch.exp(-g * torch.cdist(x, x) ** 2)
        kyy = torch.exp(-g * dyy)
        kxy = torch.exp(-g * torch.cdist(x, y) ** 2)
        mmd = ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
               + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)) - 2 * kxy.mean())
        return {"mmd": float(mmd)}

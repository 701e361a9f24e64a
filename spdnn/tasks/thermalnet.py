"""Thermalnet: a thermal image from one RGB image (Kniaz et al., "Thermalnet: a deep convolutional
network for synthetic thermal image generation", seed 004; ``netspecs/thermalnet/``).

**The thermal data is a SYNTHETIC stand-in** (:mod:`spdnn.data.thermal`): no paired RGB-thermal
images ship in any package, so the targets are a skin / cloth / ambient temperature field with
Gaussian noise, quantised to 256 levels over 15..40 C. A network trained here has learnt that
model, not real thermal emission.

* Data: :func:`spdnn.data.thermal.thermal_datasets` with ``target="levels"`` at the netspec's
  input size (224 x 224): items ``(rgb float32 (3, 224, 224) in [0, 1], levels int64 (224, 224)
  in [0, 255])``; ``data.source`` ``synthetic`` (rendered people over scikit-image photographs)
  or any other source that module reads (``vtest``: real RGB people from OpenCV's vtest.avi
  with the synthetic thermal field).
* Loss, ``options.formulation: classification`` (the paper's, ``netspecs/thermalnet/
  thermalnet.yaml``, 256 logits per pixel): the per-pixel multinomial cross-entropy of sec. 3.1
  eq. 1, ``L = -sum_{h,w} v(Y_hw) sum_q Y_hwq log Yhat_hwq`` with one-hot ``Y`` over the levels
  and the class re-weighting ``v``, which the paper names but does not define; it is the
  colorization rebalancing of Zhang et al. 2016 (sec. 2.2, eq. 3-4), whose loss eq. 1 follows
  (:func:`rebalancing_weights`). Averaged over pixels and images (the paper sums; a constant
  factor). ``options.formulation: regression`` (``thermalnet_regression.yaml``, one channel;
  not in the paper, the baseline the issue asks for): L2 (default) or L1 between the output
  and ``level / 255``.
* Prediction (``options.decode``): ``expectation`` (the expected level under the per-pixel
  softmax, the default) or ``argmax`` (the most probable level). Kniaz et al. state neither;
  Zhang et al.'s annealed mean is not used by them and is not offered.
* Metrics (sec. 5.1 eq. 2, Table 2): per-image RMS error in level units (Table 2 reports RMS
  of 8-bit IR brightness, our levels are 8-bit too but span a fixed 15..40 C, 0.098 C a
  level), averaged over images (Table 2: "Average RMS"), for the prediction as is ("TN") and
  after a 3x3 Gaussian smoothing ("TN + GS"; :func:`spdnn.metrics.gaussian_smooth`); the same
  in degrees C (:func:`spdnn.data.thermal.dequantise_levels`) and the MAE. The classification
  form also reports the RMS of the arg-max decode. Table 2's "TN + PP" (a Gatys et al. style
  reconstruction through ImageNet VGG-16, sec. 3.4) needs pretrained weights nothing here
  ships and is not reproduced. The best checkpoint has the lowest validation RMS.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from spdnn.errors import SpdnnError, SpecError
from spdnn.metrics import RegressionAccumulator, gaussian_smooth, mae, rmse
from spdnn.tasks.common import MapStyle, prediction_grid, validate_options
from spdnn.tasks.registry import register_task
from spdnn.train.task import ImageToMapTask

__all__ = ["REBALANCE_LAMBDA", "REBALANCE_SIGMA", "SMOOTH_SIGMA", "SMOOTH_SIZE",
           "ThermalnetOptions", "ThermalnetTask", "decode_levels", "level_histogram",
           "rebalancing_weights", "thermal_errors", "weighted_cross_entropy"]

REBALANCE_LAMBDA = 0.5
"""Weight of the uniform distribution mixed into the smoothed empirical level distribution
(Zhang et al. 2016, "Colorful Image Colorization", sec. 2.2: lambda = 1/2)."""

REBALANCE_SIGMA = 5.0
"""Std of the Gaussian that smooths the empirical level distribution, in levels (Zhang et al.
sec. 2.2: sigma = 5, there in their ab-grid units of 10; here one level is 0.098 C)."""

SMOOTH_SIZE = 3
"""Kniaz et al. Table 2, "TN + GS - Thermalnet + gaussian smooth 3x3"."""

SMOOTH_SIGMA = 0.8
"""Std of the 3x3 smoothing, pixels (the paper gives none; OpenCV's getGaussianKernel rule
0.3 ((ksize - 1) / 2 - 1) + 0.8 for ksize 3)."""


class ThermalnetOptions(BaseModel):
    """``options:`` of a ``thermalnet`` recipe (unknown fields are errors)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    formulation: Literal["classification", "regression"] = "classification"
    """``classification``: 256 logits per pixel, eq. 1 (the paper's); ``regression``: one
    channel, the level / 255 (the baseline; the netspec must end in 1 channel)."""
    rebalance: bool = True
    """Classification: weight each pixel's loss by its level's rebalancing weight (eq. 1's
    ``v``); off: every pixel weighs 1."""
    rebalance_lambda: float = Field(default=REBALANCE_LAMBDA, ge=0, le=1)
    """:data:`REBALANCE_LAMBDA` (Zhang et al. sec. 2.2)."""
    rebalance_sigma: float = Field(default=REBALANCE_SIGMA, ge=0, le=256)
    """:data:`REBALANCE_SIGMA`, levels (0: no smoothing)."""
    rebalance_images: int | None = Field(default=None, gt=0, le=10**7)
    """Training images the level distribution is estimated from (the first ones; ``None``: all
    of them). Estimated once, at the first step, and kept in the checkpoint."""
    decode: Literal["expectation", "argmax"] = "expectation"
    """The predicted level of a pixel: the expected level under its softmax, or the arg-max."""
    regression_loss: Literal["l2", "l1"] = "l2"
    """Regression: the loss on level / 255 (L2 because Table 2's measure is an RMS)."""
    smooth_size: int = Field(default=SMOOTH_SIZE, ge=1, le=31)
    """:data:`SMOOTH_SIZE` (odd)."""
    smooth_sigma: float = Field(default=SMOOTH_SIGMA, gt=0, le=100)
    """:data:`SMOOTH_SIGMA`, pixels."""


def level_histogram(levels: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Pixel counts per level of an int64 level map of any shape: ``(num_levels,)`` float64.

    Raises:
        SpdnnError: a level outside [0, num_levels - 1].
    """
    flat = levels.reshape(-1)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= num_levels):
        raise SpdnnError(f"thermal levels must lie in [0, {num_levels - 1}], got "
                         f"[{int(flat.min())}, {int(flat.max())}]")
    return torch.bincount(flat, minlength=num_levels).to(torch.float64)


def rebalancing_weights(counts: torch.Tensor, lam: float = REBALANCE_LAMBDA,
                        sigma: float = REBALANCE_SIGMA) -> torch.Tensor:
    """The class re-weighting ``v`` of Kniaz et al. eq. 1, as Zhang et al. 2016 define it
    (sec. 2.2, eq. 4): ``w_q ~ ((1 - lam) p~_q + lam / Q)^-1`` with ``p~`` the empirical level
    distribution smoothed by a Gaussian of std ``sigma`` levels, normalised so the expected
    weight under ``p~`` is 1: ``sum_q p~_q w_q = 1``.

    The smoothing kernel is ``exp(-d^2 / (2 sigma^2))`` for ``|d| <= ceil(3 sigma)`` levels,
    normalised; levels beyond the ends count as empty and ``p~`` is renormalised to sum to 1.

    Args:
        counts: ``(Q,)`` pixel counts per level (:func:`level_histogram`), not all 0.
        lam: :data:`REBALANCE_LAMBDA`, in [0, 1].
        sigma: :data:`REBALANCE_SIGMA`, levels, >= 0 (0: no smoothing).
    Returns:
        ``(Q,)`` float64 weights, positive where ``lam > 0``.
    Raises:
        SpdnnError: empty counts, or ``lam`` = 0 with a level of zero smoothed probability.
    """
    counts = counts.to(torch.float64)
    q = counts.numel()
    if not float(counts.sum()) > 0:
        raise SpdnnError("no thermal levels to estimate the class distribution from")
    p = counts / counts.sum()
    if sigma > 0:
        r = int(math.ceil(3 * sigma))
        d = torch.arange(-r, r + 1, dtype=torch.float64)
        g = torch.exp(-d ** 2 / (2 * sigma ** 2))
        p = F.conv1d(p.view(1, 1, q), (g / g.sum()).view(1, 1, -1), padding=r).view(q)
        p = p / p.sum()
    mix = (1 - lam) * p + lam / q
    if not bool((mix > 0).all()):
        raise SpdnnError("rebalance_lambda 0 leaves levels of zero probability with infinite "
                         "weight", field="options.rebalance_lambda", hint="use a lambda > 0")
    w = 1.0 / mix
    return w / (p * w).sum()


def weighted_cross_entropy(logits: torch.Tensor, levels: torch.Tensor,
                           weights: torch.Tensor | None) -> torch.Tensor:
    """Kniaz et al. eq. 1 averaged over pixels: ``mean_{n,h,w} v(Y_nhw) (-log softmax(logits)
    _{n, Y_nhw, h, w})`` (one-hot targets; ``v`` the level weights, 1 without them). Unlike
    PyTorch's ``cross_entropy(weight=)`` mean, the sum is not divided by the weights' sum.

    Args:
        logits: ``(N, Q, H, W)`` float.
        levels: ``(N, H, W)`` int64 in [0, Q - 1].
        weights: ``(Q,)`` or ``None``.
    Returns:
        scalar float32.
    """
    nll = F.cross_entropy(logits.float(), levels, reduction="none")
    if weights is None:
        return nll.mean()
    return (weights.to(nll)[levels] * nll).mean()


def decode_levels(logits: torch.Tensor, how: str = "expectation") -> torch.Tensor:
    """Per-pixel level from ``(N, Q, H, W)`` logits: ``expectation`` = ``sum_q q softmax_q``
    (float in [0, Q - 1]) or ``argmax`` (the most probable level, as float). Returns ``(N, 1,
    H, W)`` float32."""
    logits = logits.float()
    if how == "argmax":
        return logits.argmax(dim=1, keepdim=True).float()
    q = torch.arange(logits.shape[1], dtype=torch.float32, device=logits.device)
    return torch.einsum("nqhw,q->nhw", logits.softmax(dim=1), q).unsqueeze(1)


def thermal_errors(pred: torch.Tensor, target: torch.Tensor, degrees_per_level: float,
                   smooth_size: int = SMOOTH_SIZE, smooth_sigma: float = SMOOTH_SIGMA
                   ) -> dict[str, torch.Tensor]:
    """Per-image errors of predicted level maps, each ``(N,)`` float64: ``rms`` (Kniaz et al.
    eq. 2, ``sqrt(sum_hw (Y - Yhat)^2 / (h w))``, levels), ``rms_gs`` (the same after
    :func:`spdnn.metrics.gaussian_smooth` of the prediction, Table 2 "TN + GS"), ``mae``
    (levels), and ``rms_c``, ``rms_gs_c``, ``mae_c`` in degrees C (levels times
    ``degrees_per_level``, the spacing of :func:`spdnn.data.thermal.dequantise_levels`).

    Args:
        pred: ``(N, 1, H, W)`` float levels.
        target: ``(N, H, W)`` or ``(N, 1, H, W)`` levels.
    """
    t = target.reshape(pred.shape).to(pred.dtype)
    out = {"rms": rmse(pred, t),
           "rms_gs": rmse(gaussian_smooth(pred, smooth_size, smooth_sigma), t),
           "mae": mae(pred, t)}
    out.update({f"{k}_c": v * degrees_per_level for k, v in list(out.items())})
    return out


@register_task
class ThermalnetTask(ImageToMapTask):
    """RGB image -> thermal levels per pixel (see the module docstring).

    Raises:
        SpecError: bad ``options``, or a netspec whose output does not fit the formulation
            (classification: 256 channels, one per level; regression: 1).
    """

    name = "thermalnet"
    default_best_metric = "val_rms"
    default_best_mode = "min"
    summary_metrics = ("val_rms", "val_rms_gs", "val_rms_c", "val_mae", "val_loss")

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        from spdnn.data.thermal import THERMALNET_LEVELS
        from spdnn.shapes import infer

        self.opts: ThermalnetOptions = validate_options(ThermalnetOptions, recipe.options)
        if self.opts.smooth_size % 2 == 0:
            raise SpecError(f"the smoothing kernel needs an odd size, got {self.opts.smooth_size}",
                            field="options.smooth_size", hint="use 3 (Table 2's 3x3)")
        self.levels = THERMALNET_LEVELS
        spec = self.netspecs["net"]
        self.image_size = tuple(spec.inputs[0].shape[1:])
        out = tuple(next(iter(infer(spec).output_shapes().values())))
        want = self.levels if self.opts.formulation == "classification" else 1
        if len(out) != 3 or out[0] != want or out[1:] != self.image_size:
            raise SpecError(
                f"options.formulation {self.opts.formulation} needs a netspec output of "
                f"({want}, {self.image_size[0]}, {self.image_size[1]}), this one gives {out}",
                field="models.net.netspec",
                hint="netspecs/thermalnet/thermalnet.yaml (classification) or "
                     "thermalnet_regression.yaml (regression)")
        self._train = None
        self._weights: torch.Tensor | None = None

    # -- data and state -------------------------------------------------------------------------
    def datasets(self):
        from spdnn.data.thermal import thermal_datasets

        train, val = thermal_datasets(self.recipe.data, "levels", image_size=self.image_size)
        self._train = train
        return train, val

    def level_weights(self) -> torch.Tensor | None:
        """The rebalancing weights ``(Q,)`` float64 of the training set (estimated once from
        the first ``options.rebalance_images`` training images, then kept, also in the
        checkpoint); ``None`` when rebalancing is off or the task regresses."""
        if self.opts.formulation != "classification" or not self.opts.rebalance:
            return None
        if self._weights is None:
            train = self._train if self._train is not None else self.datasets()[0]
            n = len(train) if self.opts.rebalance_images is None else min(
                len(train), self.opts.rebalance_images)
            counts = torch.zeros(self.levels, dtype=torch.float64)
            for i in range(n):
                counts += level_histogram(train[i][1], self.levels)
            self._weights = rebalancing_weights(counts, self.opts.rebalance_lambda,
                                                self.opts.rebalance_sigma)
        return self._weights

    def state_dict(self):
        return {} if self._weights is None else {"level_weights": self._weights.clone()}

    def load_state_dict(self, state):
        w = state.get("level_weights")
        self._weights = None if w is None else torch.as_tensor(w, dtype=torch.float64)

    # -- loss, decoding, steps ------------------------------------------------------------------
    def loss(self, pred, target, mask=None):
        """``pred``: the network's output (logits ``(N, Q, H, W)`` or ``(N, 1, H, W)`` level /
        255); ``target``: levels ``(N, H, W)`` int64."""
        if self.opts.formulation == "classification":
            return weighted_cross_entropy(pred, target, self.level_weights())
        t = target.unsqueeze(1).float() / (self.levels - 1)
        if self.opts.regression_loss == "l1":
            return F.l1_loss(pred.float(), t)
        return F.mse_loss(pred.float(), t)

    def decode(self, out: torch.Tensor, how: str | None = None) -> torch.Tensor:
        """The predicted levels ``(N, 1, H, W)`` float32 in [0, Q - 1] of the network's output
        (``how``: ``options.decode`` by default; regression outputs are clamped and scaled)."""
        if self.opts.formulation == "regression":
            return out.float().clamp(0, 1) * (self.levels - 1)
        return decode_levels(out, how or self.opts.decode)

    def new_metrics(self):
        return RegressionAccumulator()  # filled with per-image values (thermal_errors)

    def _degrees_per_level(self) -> float:
        """Degrees C between adjacent levels (:func:`spdnn.data.thermal.dequantise_levels`)."""
        import numpy as np

        from spdnn.data.thermal import dequantise_levels

        lo, hi = dequantise_levels(np.array([0, self.levels - 1]), self.levels).tolist()
        return (hi - lo) / (self.levels - 1)  # the ends are exact in float32, a step is not

    def validation_step(self, models, batch, metrics):
        x, y = batch[0], batch[1]
        out = self.predict(models, x).float()
        if metrics is not None:
            pred = self.decode(out)
            values = thermal_errors(pred, y, self._degrees_per_level(), self.opts.smooth_size,
                                    self.opts.smooth_sigma)
            if self.opts.formulation == "classification":
                values["rms_argmax"] = rmse(self.decode(out, "argmax"),
                                            y.unsqueeze(1).float())
            metrics.update(values)
        return {"loss": float(self.loss(out, y))}

    # -- outputs --------------------------------------------------------------------------------
    @torch.no_grad()
    def figures(self, models, batch, outdir: Path) -> list[Path]:
        """``samples.png``: image | true thermal | predicted (``options.decode``) | predicted
        after the 3x3 Gaussian smoothing, in degrees C on one colour bar (inferno, 15..40 C),
        marked SYNTHETIC."""
        from spdnn.data.thermal import THERMALNET_RANGE_C

        x, y = batch[0], batch[1]
        pred = self.decode(self.predict(models, x).float())
        smooth = gaussian_smooth(pred, self.opts.smooth_size, self.opts.smooth_sigma)
        lo, hi = THERMALNET_RANGE_C
        k = self._degrees_per_level()
        style = MapStyle(cmap="inferno", vmin=lo, vmax=hi, colorbar="degrees C (synthetic)")
        rows = [("image", x, MapStyle(cmap=None)),
                ("true thermal (synthetic)", lo + y.unsqueeze(1).float().cpu() * k, style),
                (f"predicted ({self.opts.decode})" if self.opts.formulation == "classification"
                 else "predicted (regression)", lo + pred.cpu() * k, style),
                (f"smoothed {self.opts.smooth_size}x{self.opts.smooth_size}",
                 lo + smooth.cpu() * k, style)]
        return [prediction_grid(rows, outdir / "samples.png",
                                f"{self.recipe.name}: validation samples (SYNTHETIC thermal "
                                "stand-in)")]

    def prediction_outputs(self, inputs, outdir, options):
        """``<stem>_thermal.png`` and ``<stem>_levels.png`` in ``outdir`` for each image."""
        return [outdir / f"{Path(p).stem}_{kind}.png" for p in inputs
                for kind in ("thermal", "levels")]

    def predict_files(self, models, inputs, outdir, device, options):
        """For each image (read and fitted by :meth:`predict_images`, ``--fit``): write
        ``<stem>_thermal.png``, the predicted temperature at the image's resolution in a false
        colour map (inferno, 15..40 C) with a colour bar in degrees C, titled as an estimate of
        a network trained on the SYNTHETIC thermal stand-in, and ``<stem>_levels.png``, the
        histogram of the predicted levels over the pixels the network saw (and, classification,
        the mean softmax distribution).

        Raises:
            SpdnnError: as :meth:`predict_images` (no inputs, an unreadable image, ... one line
                naming the file).
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        from spdnn.data.thermal import THERMALNET_RANGE_C
        from spdnn.io import save_figure

        lo, hi = THERMALNET_RANGE_C
        k = self._degrees_per_level()
        written = []
        for path, out, undo, what in self.predict_images(models, inputs, device, options):
            level = self.decode(out)[0, 0].numpy()
            seen = undo(np.ones_like(level)) > 0.5
            celsius = lo + np.clip(undo(level), 0, self.levels - 1) * k
            fig, ax = plt.subplots(figsize=(6.0, 6.0 * celsius.shape[0] / celsius.shape[1] + 0.8),
                                   layout="constrained")
            im = ax.imshow(np.ma.masked_where(~seen, celsius), cmap="inferno", vmin=lo, vmax=hi,
                           interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{path.name}: thermal estimate ({self.recipe.name}, trained on a "
                         "SYNTHETIC thermal stand-in; not a measurement)", fontsize=8, wrap=True)
            fig.colorbar(im, ax=ax, shrink=0.85).set_label("degrees C")
            outdir.mkdir(parents=True, exist_ok=True)
            thermal_png, levels_png = self.prediction_outputs([path], outdir, options)
            thermal = save_figure(fig, thermal_png, dpi=110)

            fig, ax = plt.subplots(figsize=(6.4, 3.4), layout="constrained")
            vals = np.rint(undo(level)[seen]).clip(0, self.levels - 1).astype(int)
            hist = np.bincount(vals, minlength=self.levels)
            ax.bar(np.arange(self.levels), hist / max(1, hist.sum()), width=1.0,
                   color="tab:orange", label="predicted levels (pixels)")
            if self.opts.formulation == "classification":
                mean_p = out[0].softmax(dim=0).mean(dim=(1, 2)).numpy()
                ax.plot(np.arange(self.levels), mean_p, color="k", lw=0.8,
                        label="mean softmax over pixels")
            ax.set_xlim(-0.5, self.levels - 0.5)
            ax.set_xlabel("thermal level")
            ax.set_ylabel("fraction of pixels")
            top = ax.secondary_xaxis("top", functions=(lambda q: lo + q * k,
                                                       lambda c: (c - lo) / k))
            top.set_xlabel("degrees C (synthetic stand-in scale)")
            ax.legend(fontsize=7)
            save_figure(fig, levels_png, dpi=110)
            written += [(what, thermal), ("  level histogram", levels_png)]
        return written

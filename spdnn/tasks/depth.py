"""Monocular depth (thesis App. B, the depth paper).

* Data: ``source: motorcycle`` (default; the Middlebury pair bundled with scikit-image, random
  crops and horizontal flips at 80x264, validation crops disjoint from training crops;
  ``data.options``: ``target`` normalised | disparity, ``vertical_flips``, ``matched_zoom``),
  ``synthetic`` (ray-cast scenes with exact depth; ``data.options.target`` depth |
  inverse_depth | scaled_depth) or ``kitti`` with ``root:`` at a KITTI 2015 stereo folder
  (``data.options.val_fraction``). Targets are in [0, 1]; pixels without ground truth are
  masked out everywhere.
* Loss: mean squared error over valid pixels (App. B sec. 2.3).
* Metrics (App. B sec. 3, Table 5): PSNR, MSE, RMSE, SNR, MAE, SSIM, UQI, PCC and Abs Rel,
  Sq Rel, RMSE log, delta < 1.25^k. The best checkpoint has the lowest validation loss.
"""

from __future__ import annotations

from pathlib import Path

import torch

from spdnn.data.depth import KittiDepthDataset, MotorcycleDepthDataset, SyntheticDepthDataset
from spdnn.errors import SpdnnError
from spdnn.metrics import RegressionAccumulator
from spdnn.tasks.common import MapStyle, prediction_grid, split_dataset
from spdnn.tasks.registry import register_task
from spdnn.train.task import ImageToMapTask


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the pixels where ``mask`` is 1 (all pixels without a mask)."""
    if mask is None:
        return torch.mean((pred - target) ** 2)
    w = mask.to(pred.dtype)
    return torch.sum(w * (pred - target) ** 2) / w.sum().clamp_min(1.0)


@register_task
class DepthTask(ImageToMapTask):
    """Depth from one 80x264 grayscale image."""

    name = "depth"

    def _options(self, allowed: tuple[str, ...]) -> dict:
        """``data.options`` of the chosen source; an option it does not take is an error."""
        opts = dict(self.recipe.data.options)
        for key in opts:
            if key not in allowed:
                raise SpdnnError(f"data.options.{key} is not an option of data.source "
                                 f"'{self.recipe.data.source}'", field=f"data.options.{key}",
                                 hint="options: " + ", ".join(allowed))
        return opts

    def datasets(self):
        d = self.recipe.data
        if d.source == "motorcycle":
            o = self._options(("target", "vertical_flips", "matched_zoom"))
            return (MotorcycleDepthDataset("train", n=d.train_size, seed=d.seed, cache=d.cache, **o),
                    MotorcycleDepthDataset("val", n=d.val_size, seed=d.seed, cache=d.cache, **o))
        if d.source == "synthetic":
            o = self._options(("target",))
            return (SyntheticDepthDataset(d.train_size, seed=d.seed, cache=d.cache, **o),
                    SyntheticDepthDataset(d.val_size, seed=d.seed + 10_000, cache=d.cache, **o))
        if d.source == "kitti":
            if not d.root:
                raise SpdnnError("data.source 'kitti' needs data.root", field="data.root",
                                 hint="point it at the KITTI 2015 stereo folder (training/image_2, ...)")
            o = self._options(("val_fraction",))
            return split_dataset(KittiDepthDataset(d.root, cache=d.cache),
                                 float(o.get("val_fraction", 0.2)), d.seed)
        raise SpdnnError(f"unknown depth data source '{d.source}'", field="data.source",
                         hint="use motorcycle, synthetic or kitti")

    def loss(self, pred, target, mask=None):
        return masked_mse(pred, target, mask)

    def new_metrics(self):
        return RegressionAccumulator(data_range=1.0, depth=True)

    @torch.no_grad()
    def figures(self, models, batch, outdir: Path) -> list[Path]:
        """``samples.png``: image, target, prediction and absolute error of validation samples;
        disparity in the magma colour map on a shared [0, 1] colour bar (bright = near), pixels
        without ground truth in gray."""
        x, y, mask = batch
        pred = self.predict(models, x).float().clamp(0, 1)
        err = (pred - y).abs()
        valid = mask > 0.5
        top = float(torch.quantile(err[valid], 0.99)) if valid.any() else 1.0
        depth = "normalised disparity (1 = near)"
        rows = [("image", x),
                ("target (gray: no ground truth)", y,
                 MapStyle(cmap="magma", valid=mask, colorbar=depth)),
                ("prediction", pred, MapStyle(cmap="magma", colorbar=depth)),
                ("|prediction - target|", err,
                 MapStyle(cmap="viridis", vmax=max(top, 1e-3), valid=mask,
                          colorbar="absolute error (valid pixels)"))]
        return [prediction_grid(rows, outdir / "samples.png",
                                f"{self.recipe.name}: validation samples")]

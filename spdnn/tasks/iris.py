"""Iris segmentation (thesis App. A "Pushing the AI envelope" and App. D).

* Data: ``source: synthetic`` (default; :class:`spdnn.data.SyntheticIrisDataset` with the App. D
  2.3 degradations, exact masks) or ``source: folder`` with ``root:`` pointing at a real
  database in the ``images/`` + ``masks/`` layout (:class:`spdnn.data.IrisFolderDataset`),
  split 80/20 (``options: {val_fraction: 0.2}``).
* Loss: mean binary cross-entropy between the sigmoid map and the mask (App. D eq. 4).
* Metrics on the map thresholded at 0.45 (App. D sec. 4): accuracy, sensitivity, specificity,
  precision, NPV, F1, MCC, informedness, FNR. The best checkpoint is the one with the highest
  validation MCC.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from spdnn.data.iris import IrisFolderDataset, SyntheticIrisDataset
from spdnn.errors import SpdnnError
from spdnn.metrics import SEGMENTATION_THRESHOLD, SegmentationMetric
from spdnn.tasks.common import MapStyle, prediction_grid, split_dataset
from spdnn.tasks.registry import register_task
from spdnn.train.task import ImageToMapTask

EPS = 1e-7  # the authors add float32 eps to the sigmoid output before the loss (sec. 1.1)


def iris_datasets(d) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """``(train, validation)`` eye datasets of ``(image, mask)`` items (``(1, 96, 128)`` float32
    each) for a recipe's ``data`` section ``d``: ``source: synthetic`` (two seeds, the App. D 2.3
    degradations unless ``options.degrade: false``) or ``source: folder`` (``d.root`` in the
    ``images/`` + ``masks/`` layout, split by ``options.val_fraction``, default 0.2). The iris
    task and the GAN+aspect tasks (:mod:`spdnn.tasks.aspect`) read their eyes here.

    Raises:
        SpdnnError: ``folder`` without ``data.root``, a bad folder, an unknown source.
    """
    opts = dict(d.options)
    if d.source == "synthetic":
        degrade = bool(opts.pop("degrade", True))
        return (SyntheticIrisDataset(d.train_size, seed=d.seed, degrade=degrade, cache=d.cache),
                SyntheticIrisDataset(d.val_size, seed=d.seed + 10_000, degrade=degrade,
                                     cache=d.cache))
    if d.source == "folder":
        if not d.root:
            raise SpdnnError("data.source 'folder' needs data.root", field="data.root",
                             hint="point it at a folder with images/ and masks/")
        ds = IrisFolderDataset(d.root, degrade=bool(opts.get("degrade", False)), seed=d.seed,
                               cache=d.cache)
        return split_dataset(ds, float(opts.get("val_fraction", 0.2)), d.seed)
    raise SpdnnError(f"unknown iris data source '{d.source}'", field="data.source",
                     hint="use synthetic or folder")


@register_task
class IrisTask(ImageToMapTask):
    """Binary iris segmentation of 96x128 grayscale eye images."""

    name = "iris"
    default_best_metric = "val_mcc"
    default_best_mode = "max"

    def datasets(self):
        return iris_datasets(self.recipe.data)

    def loss(self, pred, target, mask=None):
        return F.binary_cross_entropy(pred.clamp(EPS, 1 - EPS), target)

    def new_metrics(self):
        return SegmentationMetric(float(self.recipe.data.options.get("threshold",
                                                                     SEGMENTATION_THRESHOLD)))

    @torch.no_grad()
    def figures(self, models, batch, outdir: Path) -> list[Path]:
        """``samples.png``: image, mask, predicted probability (colour bar) and the errors of
        the map thresholded as the metrics are (true/false positives and negatives coloured)."""
        x, y = batch[0], batch[1]
        pred = self.predict(models, x).float()
        t = float(self.recipe.data.options.get("threshold", SEGMENTATION_THRESHOLD))
        hit, truth = pred > t, y > 0.5
        colours = {"true positive": (1.0, 1.0, 1.0), "false positive": (0.89, 0.10, 0.11),
                   "false negative": (0.12, 0.47, 0.71), "true negative": (0.0, 0.0, 0.0)}
        cases = [hit & truth, hit & ~truth, ~hit & truth, ~hit & ~truth]
        errors = torch.zeros(x.shape[0], 3, *x.shape[-2:])
        for case, rgb in zip(cases, colours.values()):
            errors += case[:, :1].float().cpu() * torch.tensor(rgb).view(1, 3, 1, 1)
        rows = [("image", x), ("mask", y),
                ("prediction", pred, MapStyle(colorbar="P(iris)")),
                (f"> {t:g} vs mask", errors, MapStyle(cmap=None, legend=tuple(
                    (tuple(rgb), name) for name, rgb in colours.items())))]
        return [prediction_grid(rows, outdir / "samples.png",
                                f"{self.recipe.name}: validation samples (threshold {t:g})")]

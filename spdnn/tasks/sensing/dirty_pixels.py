"""Dirty Pixels (Diamond et al., seed 003): the denoising unit (generalized Anscombe -> one
unrolled HQS iteration with a CNN prox -> exact unbiased inverse Anscombe) and the joint
deblurring + denoising unit (``netspecs/dirty_pixels/``), trained alone with an image loss and
jointly with a classifier; a conventional denoiser for Table 2's "denoiser + pretrained" row.

Tasks:

* ``dirty_pixels_unit`` -- the unit alone: mean squared error between the unit's output on
  ``y = clip(a P((k * x) / a) + N(0, b^2))`` (:func:`spdnn.data.degrade.poisson_gaussian`,
  drawn anew every step) and the clean ``x`` (the paper pre-trains for average PSNR, sec. 6).
  Validation: PSNR and SSIM of the restored and of the noisy images (torchmetrics; checked
  against scikit-image in the tests). Data: ``data.source: photos`` (random 32x32 patches of
  scikit-image's photographs, :func:`photo_patches`; the paper's BSDS300-patch role) or any
  :mod:`spdnn.data.images` source.
* ``dirty_pixels_joint`` -- models ``unit`` and ``classifier`` trained end to end (Fig. 3):
  cross-entropy of ``classifier(unit(y))`` plus ``image_loss`` times the MSE of ``unit(y)``
  (sec. 5-6: the joint architecture, initialised from the pre-trained unit and classifier:
  ``options.unit_pretrained`` / ``options.classifier_pretrained``, runs of the two steps).

The unit's Anscombe layers take ``(a, b)`` of ``options.noise`` (the netspec's values are
replaced, so one netspec serves every light level); a deblurring unit's PSF must be the
noise level's (``options.noise.psf_sigma``), else a one-line error.

:func:`conventional_restore` is Table 2's conventional pre-processing: BM3D (the ``bm3d``
package, Makitalo & Foi's variance-stabilised use: Anscombe, BM3D at unit noise, exact unbiased
inverse), followed for a blurred level by a Wiener deconvolution (scikit-image) with the known
PSF (the paper's row is "HQS + pretrained" there).
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from spdnn.data.degrade import NoiseLevel, anscombe_pair, noise_level, poisson_gaussian
from spdnn.data.images import TensorImages, image_datasets
from spdnn.errors import SpecError
from spdnn.tasks.common import validate_options
from spdnn.tasks.registry import register_task
from spdnn.tasks.sensing.common import accuracy, load_weights, step_generator
from spdnn.train.task import Task

PHOTOS_TRAIN = ("astronaut", "camera", "rocket", "immunohistochemistry", "coins", "moon")
PHOTOS_VAL = ("coffee", "chelsea")
"""scikit-image photographs (shipped in its wheel) the ``photos`` source crops patches from;
validation patches come from other photographs than training ones."""


@functools.lru_cache(maxsize=16)
def _photo(name: str) -> np.ndarray:
    import skimage.data
    from skimage.color import gray2rgb
    from skimage.util import img_as_float32

    img = img_as_float32(getattr(skimage.data, name)())
    return gray2rgb(img) if img.ndim == 2 else img[..., :3]


def photo_patches(n: int, size: int, seed: int, names: tuple[str, ...] = PHOTOS_TRAIN,
                  channels: int = 3) -> torch.Tensor:
    """``(n, channels, size, size)`` float32 patches in [0, 1] cropped at seeded random
    positions from the photographs ``names`` (round robin); 1 channel by BT.601 luminance."""
    from spdnn.data.images import fit_images

    g = np.random.default_rng(seed)
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        img = _photo(names[i % len(names)])
        r = g.integers(0, img.shape[0] - size + 1)
        c = g.integers(0, img.shape[1] - size + 1)
        out[i] = torch.from_numpy(np.ascontiguousarray(img[r:r + size, c:c + size])).permute(2, 0, 1)
    return fit_images(out, (channels, size, size)) if channels != 3 else out


def restoration_datasets(data, shape: tuple[int, int, int]) -> tuple[TensorImages, TensorImages]:
    """``(train, validation)`` of clean images for a unit: ``photos`` patches or an image
    source of :mod:`spdnn.data.images` (labels kept)."""
    if data.source == "photos":
        c, h, _ = shape
        tr = photo_patches(data.train_size, h, data.seed, PHOTOS_TRAIN, c)
        va = photo_patches(data.val_size, h, data.seed + 1, PHOTOS_VAL, c)
        zeros = torch.zeros  # no classes
        return (TensorImages(tr, zeros(len(tr), dtype=torch.long), ["patch"]),
                TensorImages(va, zeros(len(va), dtype=torch.long), ["patch"]))
    return image_datasets(data, shape)


def image_quality(restored: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM over a batch ``(N, C, H, W)`` in [0, 1] (torchmetrics'
    ``peak_signal_noise_ratio`` per image, data range 1, and ``structural_similarity_index_
    measure``: Gaussian window 11, sigma 1.5, the standard constants)."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    r, c = restored.detach().float().clamp(0, 1), clean.detach().float()
    psnr = peak_signal_noise_ratio(r, c, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(r, c, data_range=1.0)
    return {"psnr": float(psnr.mean()), "ssim": float(ssim)}


def unit_for_level(spec, level: NoiseLevel, field: str = "options.noise"):
    """The unit netspec with its ``Anscombe`` / ``InverseAnscombe`` layers set to the level's
    ``(a, b)``.

    Raises:
        SpecError: an ``HQSStage`` whose PSF differs from the level's (a deblurring unit on
            noise without blur, or the reverse).
    """
    from spdnn.spec import from_data

    data = spec.to_data()
    for lay in data["layers"]:
        if lay["op"] in ("Anscombe", "InverseAnscombe"):
            lay["gain"], lay["sigma"] = float(level.a), float(level.b)
        if lay["op"] == "HQSStage":
            psf = lay.get("psf") or {}
            sigma = float(psf.get("sigma", 0.0))
            if abs(sigma - level.psf_sigma) > 1e-9 or (sigma > 0 and psf.get("size")
                                                      not in (None, level.psf_size)):
                raise SpecError(f"the unit's PSF (sigma {sigma:g}) is not the noise level's "
                                f"(psf_sigma {level.psf_sigma:g}, size {level.psf_size})",
                                field=field, hint="use denoise.yaml for noise without blur, "
                                "deblur_denoise.yaml for a level with a PSF")
    return from_data(data, file=f"<{spec.name} at a={level.a:g}, b={level.b:g}>")


class UnitOptions(BaseModel):
    """``options`` of ``dirty_pixels_unit``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    noise: str | dict[str, Any] = "3lux"
    """A name of :data:`spdnn.data.degrade.NOISE_LEVELS` or ``{a, b[, psf_sigma, psf_size]}``."""
    pretrained: str | None = None


class JointOptions(UnitOptions):
    """``options`` of ``dirty_pixels_joint``: the two pre-trained runs and the weight of the
    image loss added to the classification loss (0: classification only)."""

    unit_pretrained: str | None = None
    classifier_pretrained: str | None = None
    image_loss: float = Field(default=0.0, ge=0.0)


class Joint(torch.nn.Module):
    """``classifier(unit(y))``: the joint architecture of Dirty Pixels Fig. 3."""

    def __init__(self, unit: torch.nn.Module, classifier: torch.nn.Module) -> None:
        super().__init__()
        self.unit, self.classifier = unit, classifier

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.unit(y)
        return x, self.classifier(x)


class _DegradingTask(Task):
    """Shared: the noise level, its seeded draws per training step and per validation pass."""

    options_model: type[UnitOptions] = UnitOptions
    unit_model = "net"

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        self.opts = validate_options(self.options_model, recipe.options)
        self.level = noise_level(self.opts.noise, field="options.noise")
        self.netspecs = dict(netspecs)
        self.netspecs[self.unit_model] = unit_for_level(netspecs[self.unit_model], self.level)
        self._val = torch.Generator()

    def degrade(self, x: torch.Tensor, step: int | None = None) -> torch.Tensor:
        g = self._val if step is None else step_generator(self.recipe.seed, step)
        return poisson_gaussian(x, self.level, g)

    def new_metrics(self):
        self._val = torch.Generator().manual_seed(self.recipe.data.seed + 1)
        return None

    def figures(self, models, batch, outdir: Path) -> list[Path]:
        """``samples.png``: noisy | restored | clean, PSNR under each."""
        x = batch[0][:6]
        y = self.degrade(x)
        restored = self.restore(models, y)
        return [restoration_figure([("noisy", y), ("restored", restored), ("clean", x)], x,
                                   outdir / "samples.png", f"{self.recipe.name}: "
                                   f"{self.opts.noise if isinstance(self.opts.noise, str) else 'noise'}")]

    @abstractmethod
    def restore(self, models, y):
        """The restored images of degraded ``y`` (N, C, H, W) in [0, 1], same shape."""


@register_task
class DirtyPixelsUnit(_DegradingTask):
    """The denoising (or joint deblurring + denoising) unit alone, trained for the MSE of the
    restored image (module docstring)."""

    name = "dirty_pixels_unit"
    default_best_metric = "val_psnr"
    default_best_mode = "max"
    summary_metrics = ("val_psnr", "val_ssim", "val_psnr_noisy", "val_ssim_noisy")

    def datasets(self):
        return restoration_datasets(self.recipe.data, self.netspecs["net"].inputs[0].shape)

    def build_models(self, nets):
        if self.opts.pretrained:
            load_weights(self.opts.pretrained, nets["net"], "options.pretrained")
        return nets

    def training_step(self, trainer, batch):
        x = batch[0]
        y = self.degrade(x, trainer.step)
        with trainer.autocast():
            out = trainer.train_models["net"](y)
        loss = F.mse_loss(out.float(), x)
        trainer.backward_step(loss, "net")
        return {"loss": float(loss.detach())}

    def validation_step(self, models, batch, metrics):
        x = batch[0]
        y = self.degrade(x)
        out = models["net"](y).float()
        q, qn = image_quality(out, x), image_quality(y, x)
        return {"loss": float(F.mse_loss(out, x)), "psnr": q["psnr"], "ssim": q["ssim"],
                "psnr_noisy": qn["psnr"], "ssim_noisy": qn["ssim"]}

    def restore(self, models, y):
        return models["net"](y).float()


@register_task
class DirtyPixelsJoint(_DegradingTask):
    """The unit and the classifier trained end to end on degraded images (module docstring)."""

    name = "dirty_pixels_joint"
    model_names = ("unit", "classifier")
    options_model = JointOptions
    unit_model = "unit"
    default_best_metric = "val_acc"
    default_best_mode = "max"
    summary_metrics = ("val_acc", "val_psnr", "val_loss")

    def datasets(self):
        return image_datasets(self.recipe.data, self.netspecs["classifier"].inputs[0].shape)

    def build_models(self, nets):
        if self.opts.unit_pretrained:
            load_weights(self.opts.unit_pretrained, nets["unit"], "options.unit_pretrained")
        if self.opts.classifier_pretrained:
            load_weights(self.opts.classifier_pretrained, nets["classifier"],
                         "options.classifier_pretrained")
        return {"joint": Joint(nets["unit"], nets["classifier"])}

    def training_step(self, trainer, batch):
        x, labels = batch[0], batch[1]
        y = self.degrade(x, trainer.step)
        with trainer.autocast():
            restored, logits = trainer.train_models["joint"](y)
        ce = F.cross_entropy(logits.float(), labels)
        loss = ce + self.opts.image_loss * F.mse_loss(restored.float(), x) \
            if self.opts.image_loss else ce
        trainer.backward_step(loss, "joint")
        return {"loss": float(loss.detach()), "ce": float(ce.detach())}

    def validation_step(self, models, batch, metrics):
        x, labels = batch[0], batch[1]
        y = self.degrade(x)
        restored, logits = models["joint"](y)
        return {"loss": float(F.cross_entropy(logits.float(), labels)),
                "acc": accuracy(logits.float(), labels),
                "psnr": image_quality(restored, x)["psnr"]}

    def restore(self, models, y):
        return models["joint"](y)[0].float()


# -- conventional restoration ----------------------------------------------------------------------
def _tiles(images: np.ndarray, per_row: int) -> np.ndarray:
    """``(N, H, W)`` images laid out as one mosaic of ``per_row`` columns (zero padded)."""
    n, h, w = images.shape
    rows = -(-n // per_row)
    out = np.zeros((rows * h, per_row * w), images.dtype)
    for i in range(n):
        r, c = divmod(i, per_row)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = images[i]
    return out


def _untile(mosaic: np.ndarray, n: int, h: int, w: int, per_row: int) -> np.ndarray:
    return np.stack([mosaic[(i // per_row) * h:(i // per_row + 1) * h,
                            (i % per_row) * w:(i % per_row + 1) * w] for i in range(n)])


def conventional_restore(y: torch.Tensor, level: NoiseLevel | str, tile: int = 10,
                         wiener_balance: float = 0.05) -> torch.Tensor:
    """Table 2's conventional pre-processing of degraded images ``(N, C, H, W)`` in [0, 1]:
    BM3D (``bm3d.bm3d``, all stages) of each colour plane in the generalized-Anscombe domain
    at unit noise (Makitalo & Foi 2013), exact unbiased inverse; then, when the level has a
    PSF, ``skimage.restoration.wiener`` with that PSF (balance ``wiener_balance``). For speed
    the images are denoised ``tile x tile`` at a time as one mosaic (BM3D's block matching may
    then pair patches of neighbouring images). Returns ``(N, C, H, W)`` float32 in [0, 1]."""
    import bm3d

    lev = noise_level(level, field="noise")
    fwd, inv = anscombe_pair(lev)
    n, c, h, w = y.shape
    d = fwd(y.float()).numpy()
    out = np.empty_like(d)
    per = tile * tile
    for ch in range(c):
        for s in range(0, n, per):
            part = d[s:s + per, ch]
            mosaic = _tiles(part, tile)
            den = bm3d.bm3d(mosaic, sigma_psd=1.0, stage_arg=bm3d.BM3DStages.ALL_STAGES)
            out[s:s + per, ch] = _untile(np.asarray(den, np.float32), len(part), h, w, tile)
    x = inv(torch.from_numpy(out)).clamp(0, 1)
    if lev.psf_sigma > 0:
        from skimage.restoration import wiener

        from spdnn.codegen.runtime import psf_kernel

        k = psf_kernel(None, lev.psf_sigma, lev.psf_size).numpy()
        arr = x.numpy()
        x = torch.from_numpy(np.stack([np.stack([
            wiener(arr[i, ch], k, wiener_balance, clip=True) for ch in range(c)])
            for i in range(n)]).astype(np.float32)).clamp(0, 1)
    return x.float()


def restoration_figure(columns: list[tuple[str, torch.Tensor]], clean: torch.Tensor,
                       path: Path, title: str) -> Path:
    """A grid: one column per ``(name, images (N, C, H, W))``, one row per image, the PSNR
    against ``clean`` under each panel (Dirty Pixels Fig. 7 in kind)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spdnn.io import save_figure

    n = columns[0][1].shape[0]
    fig, axes = plt.subplots(n, len(columns), figsize=(1.7 * len(columns), 1.85 * n + 0.4),
                             squeeze=False, layout="constrained")
    for j, (name, imgs) in enumerate(columns):
        for i in range(n):
            ax = axes[i][j]
            a = imgs[i].detach().float().cpu().clamp(0, 1)
            ax.imshow(a.permute(1, 2, 0).numpy() if a.shape[0] == 3 else a[0].numpy(),
                      cmap=None if a.shape[0] == 3 else "gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            p = image_quality(imgs[i:i + 1], clean[i:i + 1])["psnr"]
            ax.set_xlabel("clean" if name == "clean" else f"{p:.1f} dB", fontsize=8)
            if i == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=120)

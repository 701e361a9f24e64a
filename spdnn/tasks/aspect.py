"""GAN+aspect: latent-space aspect mapping (thesis sec. 3.3.1, Figs. 3.14-3.17; App. F "Latent
Space Mapping for Generation of Object Elements with Corresponding Data Annotation").

For a trained generator ``G`` every aspect ``A(x)`` of the data (an iris segmentation map,
facial landmarks) is, by the data processing inequality, a function of the latent code alone;
App. F learns it in three steps:

1. train ``G`` (BEGAN, z ~ U[-1, 1]^64): here :class:`IrisBEGANTask` (``task: began_iris``),
   the BEGAN of :mod:`spdnn.tasks.gan.began` on eye images;
2. invert ``G`` on every real sample, ``z_i = argmin_z mean |G(z) - x_i|`` (App. F eq. 4;
   :mod:`spdnn.tasks.gan.invert`, ``spdnn invert``), giving the "learned latent space";
3. train an aspect generator ``M`` with ``M(z_i) ~ A(x_i)`` under the mean squared error (App. F
   eqs. 5-6): :class:`AspectTask` (``task: aspect``), a decoder "exactly similar to the generator
   in BEGAN" for masks, the MLP of App. F Table II for landmarks.

Inference (Fig. 3.15, App. F Fig. 10): one ``z`` feeds both ``G`` and ``M``, giving a new image
with its ground truth (``spdnn generate``).

Data. :class:`IrisBEGANTask` reads the eyes of the iris task (:func:`spdnn.tasks.iris.
iris_datasets`: the embedded synthetic degraded eyes with exact masks, or a real ``images/`` +
``masks/`` folder) and brings them to the generator's size with :func:`eye_pairs` (images by
:func:`spdnn.data.images.fit_images`, anti-aliased bilinear; masks the same way, then > 0.5).
:class:`AspectTask` reads a latents file written by ``spdnn invert`` (``data.source: latents``,
``data.root: <file>``): :func:`spdnn.tasks.gan.invert.load_latents`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from spdnn.errors import SpdnnError, SpecError
from spdnn.metrics import SEGMENTATION_THRESHOLD, SegmentationMetric
from spdnn.tasks.gan.began import BEGANTask
from spdnn.tasks.registry import register_task
from spdnn.train.task import SupervisedTask

COLLAPSE_RATIO = 0.1
"""A generator has collapsed when two of its samples differ by less than this fraction of the
mean squared difference of two real images (the criterion of benchmarks/bench_gan_family.py)."""


def eye_pairs(ds, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``(image, mask)`` items of an iris dataset brought to ``shape`` ``(1, H, W)``:
    images ``(N, 1, H, W)`` float32 in [0, 1] (anti-aliased bilinear,
    :func:`spdnn.data.images.fit_images`), masks ``(N, 1, H, W)`` float32 0/1 (the same
    resizing of the exact mask, then > 0.5).

    Raises:
        SpdnnError: an empty dataset, or a ``shape`` with more than one channel (the eyes
            are gray).
    """
    from spdnn.data.images import fit_images

    if len(ds) == 0:
        raise SpdnnError("no eye images to read", field="data.train_size")
    if shape[0] != 1:
        raise SpdnnError(f"the eye images are gray; the networks read {shape[0]} channels",
                         field="models.generator", hint="give the generator 1 output channel")
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([it[0] for it in items]).float()
    masks = torch.stack([it[1] for it in items]).float()
    return fit_images(images, shape), (fit_images(masks, shape) > 0.5).float()


@register_task
class IrisBEGANTask(BEGANTask):
    """BEGAN on low-quality eye images (App. F sec. 3.2.2: "The BEGAN scheme has been used to
    learn the data distribution for the low-quality iris database"; 64-d latent, Adam 1e-4,
    betas 0.5/0.999). Data: the iris task's ``data`` section (``synthetic`` or ``folder``),
    at the generator's size (:func:`eye_pairs`); items ``(image, 0)``. The masks stay available
    for the aspect step (:meth:`eye_pairs`).

    :meth:`report` (``spdnn evaluate``): the diversity of generated and real images
    (:func:`spdnn.tasks.gan.evaluation.diversity`: UQI, SSIM, MSE, RMSE, MAE over random pairs)
    and ``collapsed`` (1.0 when generated pairs differ by less than :data:`COLLAPSE_RATIO` of
    real pairs' MSE). FID needs a referee trained on two or more classes
    (:mod:`spdnn.tasks.gan.evaluation`); one class of eyes has none, so it is not reported.
    """

    name = "began_iris"
    summary_metrics = ("div_within_mse", "real_within_mse", "div_within_ssim",
                       "real_within_ssim", "collapsed", "val_mmd", "val_m_global")

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        self._pairs: tuple | None = None

    def eye_pairs(self) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                 tuple[torch.Tensor, torch.Tensor]]:
        """``((train images, train masks), (val images, val masks))`` at the generator's
        size (:func:`eye_pairs`), computed once per task."""
        if self._pairs is None:
            from spdnn.tasks.iris import iris_datasets

            train, val = iris_datasets(self.recipe.data)
            self._pairs = (eye_pairs(train, self.image_shape), eye_pairs(val, self.image_shape))
        return self._pairs

    def datasets(self):
        from spdnn.data.images import TensorImages

        (ti, _), (vi, _) = self.eye_pairs()
        return (TensorImages(ti, torch.zeros(len(ti), dtype=torch.long), ["eye"]),
                TensorImages(vi, torch.zeros(len(vi), dtype=torch.long), ["eye"]))

    @torch.no_grad()
    def report(self, models, outdir: Path, device) -> dict[str, float]:
        from spdnn.tasks.gan.evaluation import EVAL_SEED, diversity, plot_diversity

        (_, _), (vi, _) = self.eye_pairs()
        n = min(int(self.options.eval_samples), max(len(vi), 2))
        fake = self.samples(models, n, self.recipe.seed, device)
        pairs = 200
        g = torch.Generator().manual_seed(EVAL_SEED + 1)
        gen, real = diversity(fake, None, pairs, g), diversity(vi, None, pairs, g)
        res = {f"div_within_{k}": v for k, v in gen["within"].items()}
        res.update({f"real_within_{k}": v for k, v in real["within"].items()})
        res["collapsed"] = float(res["div_within_mse"] < COLLAPSE_RATIO * res["real_within_mse"])
        plot_diversity(gen, real, Path(outdir) / "diversity.png",
                       f"{self.recipe.name}: mean over {pairs} random image pairs",
                       groups_of="class")
        return res


class _LatentPairs(torch.utils.data.Dataset):
    """``(z (d,), aspect)`` items of a latents file (:func:`spdnn.tasks.gan.invert.load_latents`)."""

    def __init__(self, z: torch.Tensor, aspect: torch.Tensor) -> None:
        self.z, self.aspect = z.float().contiguous(), aspect.float().contiguous()

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, i: int):
        return self.z[i], self.aspect[i]


@register_task
class AspectTask(SupervisedTask):
    """The aspect generator ``M: z -> aspect`` of App. F (eqs. 5-6), one network (``model:``).

    * Data: ``data.source: latents``, ``data.root``: a latents file of ``spdnn invert`` holding
      ``z`` ``(N, d)`` and the aspect of each inverted sample: ``masks`` ``(N, 1, H, W)`` 0/1 or
      ``landmarks`` ``(N, 2P)`` in [0, 1] (x, y per point, divided by the image's width and
      height). ``data.train_size`` / ``data.val_size``: the first and the last items of a
      permutation seeded by ``data.seed`` (App. F trains on all samples, with no validation;
      the shipped recipes hold a small validation part for the best checkpoint).
    * Network: input ``features: d`` (the generator's latent size), output the aspect's shape;
      masks: the BEGAN generator layout (netspecs/gan/aspect/iris_mask_generator_24x32.yaml),
      landmarks: App. F Table II (netspecs/gan/aspect/landmark_generator*.yaml).
    * Loss: the mean squared error (App. F eqs. 5-6; Adam lr 3e-4, betas 0.9/0.999, batch 16).
    * Metrics: masks: the iris segmentation metrics at 0.45 (App. D sec. 4: MCC, F1, ...; best
      checkpoint: highest validation MCC); landmarks: validation MSE and the mean point error
      ``val_point_error`` (Euclidean, in units of the image size).

    Raises:
        SpecError: another ``data.source``; a latents file without an aspect; a network whose
            input size differs from the latents' or whose output shape differs from the aspect's.
    """

    name = "aspect"
    default_best_metric = "val_loss"
    default_best_mode = "min"

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        from spdnn.shapes import infer
        from spdnn.tasks.gan.invert import load_latents

        d = recipe.data
        if d.source != "latents" or not d.root:
            raise SpecError(f"the aspect task reads a latents file of 'spdnn invert', not data "
                            f"source '{d.source}'", field="data.source" if d.source != "latents"
                            else "data.root", hint="data: {source: latents, root: latents.pt}")
        self.latents = load_latents(d.root)
        self.kind = "masks" if "masks" in self.latents else "landmarks"
        if self.kind not in self.latents:
            raise SpecError("the latents file holds no aspect (masks or landmarks)",
                            field="data.root", hint="invert data that has masks or .pts files")
        net = netspecs["net"]
        z_dim = int(self.latents["z"].shape[1])
        want = tuple(net.inputs[0].shape)
        if want != (z_dim,):
            raise SpecError(f"the aspect network reads {want}, the latents of {d.root} have "
                            f"{z_dim} values (the generator's latent size)", field="model",
                            hint=f"give the aspect network 'input: {{features: {z_dim}}}'")
        out = tuple(list(infer(net).output_shapes().values())[0])
        aspect = tuple(self.latents[self.kind].shape[1:])
        if out != aspect:
            raise SpecError(f"the aspect network outputs {out}, the {self.kind} of {d.root} "
                            f"have shape {aspect}", field="model",
                            hint="make the network's output the aspect's shape")
        if self.kind == "masks":
            self.default_best_metric, self.default_best_mode = "val_mcc", "max"

    def datasets(self):
        d = self.recipe.data
        z, a = self.latents["z"], self.latents[self.kind]
        n = len(z)
        if d.train_size + d.val_size > n:
            raise SpdnnError(f"data.train_size + data.val_size = {d.train_size + d.val_size} "
                             f"but {d.root} holds {n} latents", field="data.train_size",
                             hint=f"use at most {n} in all")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(d.seed))
        tr, va = perm[:d.train_size], perm[n - d.val_size:]
        return _LatentPairs(z[tr], a[tr]), _LatentPairs(z[va], a[va])

    def loss(self, pred, target, mask=None):
        """Mean squared error (App. F eqs. 5-6)."""
        return F.mse_loss(pred.float(), target.float())

    def new_metrics(self):
        if self.kind == "masks":
            return SegmentationMetric(SEGMENTATION_THRESHOLD)
        return None

    def validation_step(self, models, batch, metrics):
        out = super().validation_step(models, batch, metrics)
        if self.kind == "landmarks":
            pred = self.predict(models, batch[0]).float()
            p, t = pred.reshape(len(pred), -1, 2), batch[1].float().reshape(len(pred), -1, 2)
            out["point_error"] = float((p - t).norm(dim=-1).mean())
        return out

    @torch.no_grad()
    def figures(self, models, batch, outdir: Path) -> list[Path]:
        if self.kind != "masks":
            return []
        from spdnn.tasks.common import MapStyle, prediction_grid

        z, y = batch[0], batch[1]
        pred = self.predict(models, z).float().clamp(0, 1)
        rows = [("mask of the real image", y), ("M(z), z = inverse of G",
                                                 pred, MapStyle(colorbar="M(z)"))]
        return [prediction_grid(rows, outdir / "samples.png",
                                f"{self.recipe.name}: aspect generator on validation latents")]

"""SPADE-SR: low-resolution thermal sensor-guided image synthesis (Chiu, Tseng & Chen,
"Low-Resolution Thermal Sensor-Guided Image Synthesis", seed 001), the GAN phase (sec. 3.4),
and SPADE, its baseline (Table 3), on the shared trainer.

* Models: ``generator`` ``G(z, h)``: ``z`` ``(128,)`` ~ N(0, I) (sec. 3.1) and the heatmap ``h``
  ``(1, 5, 8)`` in [-1, 1] (sec. 4.2) -> an RGB image ``(3, 40, 64)`` in [-1, 1] (tanh;
  netspecs/spade_sr/spade_sr_{32,64,128}.yaml, spade_{64,128}.yaml); ``discriminator`` ``D(x)``
  with two outputs, the realness score ``s`` (one linear value, no activation) and the
  reconstructed heatmap ``h^`` ``(1, 5, 8)`` (tanh), AC-GAN form: D sees only the image
  (sec. 3.1, 3.3; netspecs/spade_sr/discriminator.yaml). Images enter the networks in [-1, 1]
  (``options.pixel_range: symmetric``, the data's [0, 1] mapped by ``2 x - 1``).
* Data: :func:`spdnn.data.thermal.thermal_datasets` with target ``heatmap``, at the generator's
  image size and its ``h`` input's size (a heatmap of another size is a one-line error). The
  thermal side of the ``synthetic`` source is a SYNTHETIC stand-in (see that module).
* Losses (float32), with ``n`` the batch:

  - eq. 1, hinge: ``L_adv^D = mean relu(1 + s_fake) + mean relu(1 - s_real)``,
    ``L_adv^G = -mean s_fake`` (:func:`hinge_d_loss`, :func:`hinge_g_loss`);
  - eq. 2, R1 on real images: ``R1 = mean_i ||grad_x s(x_i)||^2`` (:func:`r1_penalty`; the
    squared norm over all pixels and channels, in the networks' [-1, 1] units);
  - eq. 3, thresholded heatmap reconstruction: ``L_mi = 1/(2n) sum_i [relu(|h_i - h^fake_i| -
    t) + relu(|h_i - h^real_i| - t)]`` with ``t = 0.05`` (:func:`heatmap_loss`; the map
    ``|h - h^|`` is averaged over its ``5 x 8`` cells, which the paper leaves unwritten);
  - eq. 4: ``L^D = L_adv^D + gamma L_mi + beta R1``, ``L^G = L_adv^G + gamma L_mi`` with
    ``beta = 5``, ``gamma = 2`` (sec. 3.4). In ``L^G`` only the fake term of ``L_mi`` depends on
    ``G`` (the real one is logged, detached).

  One D update, then one G update, per iteration (sec. 4.2: "update ratio ... 1:1"); Adam
  betas (0, 0.999), lr 2e-4 for D and 5e-5 for G, batch 256 in the paper; EMA 0.999 of G for
  evaluation (sec. 4.2), all set in the recipes (``optim`` / ``ema`` per model).
  **R1 and the trainer**: R1 needs the gradient of D's score with respect to the real batch with
  ``create_graph=True`` (a double backward); it is taken inside the trainer's autocast and on
  its channels-last tensors (verified on CPU float32 by tests/test_spade_sr.py). Under CUDA
  AMP the score is scaled by the trainer's grad scaler before the inner gradient and the
  gradient unscaled, so float16 does not underflow it.
* Validation (``val_*``): the losses, mean scores on real and generated images, ``heatmap_mae``
  (``mean |h - h^|`` of D's head on generated images: how well G keeps the heatmap, as D reads
  it), ``heatmap_mae_real`` (the same on the real images: D's own error) and the kernel MMD.
* Evaluation (:meth:`SpadeSRTask.report`, ``spdnn evaluate``): FID on a referee trained on the
  run's real training crops (:mod:`spdnn.tasks.gan.evaluation`; never Inception). The data has
  no class labels, so the referee learns :func:`hot_column_class`: the column band of the
  hottest heatmap cell (8 classes) or "no person" (a ninth): its features must see where the
  person is, which is what the heatmap controls. ``hot_column_accuracy`` is the referee's class
  of each generated image against the class of the heatmap it was generated for (chance 1/9;
  the referee's own accuracy on real validation crops is ``referee_accuracy``, against
  ``referee_majority`` for always naming the commonest class: on person-centred crops most
  heatmaps peak in the middle columns, and a referee near that share makes both FID's
  features and this accuracy weak). ``recon_d`` is
  ``heatmap_mae`` above on ``eval_samples`` pairs: **not** the paper's "recon." of Table 3, a
  pixel MAE of a whole clip regenerated from one inverted code (sec. 4.2), which needs the
  inversion encoder: :mod:`spdnn.tasks.gan.spade_sr_inversion` reports the frame-wise form.
  ``params_g`` counts G's parameters (Table 3's "param.").
* Figures: ``samples.png`` has one row per validation heatmap: the heatmap | four generated
  images (four ``z``) | the real image; ``samples_z.png`` is paper Fig. 1's idea: one heatmap,
  many ``z`` (the thermal layout fixed, the non-thermal attributes vary).
* ``spdnn predict RUN heat.npy heat.png ...``: per heatmap file (degrees C, ``.npy`` float or
  16-bit ``.png`` in hundredths of a degree, as the paired folder source reads it;
  rescaled from 19..30 C to [-1, 1] as sec. 4.2), ``--num`` images from ``z`` drawn with
  ``--seed``, written as ``<stem>_generated.png`` (the heatmap, then the images).

Raises (when the task is built): a generator without the two inputs ``z`` (vector) and ``h``
(map); a discriminator without a one-value score output and a heatmap output of ``h``'s shape
(``models.discriminator``); bad ``options``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from spdnn.errors import SpdnnError, SpecError
from spdnn.tasks.gan.base import GANOptions, GANTask
from spdnn.tasks.registry import register_task

R1_BETA = 5.0
"""Weight beta of R1 in D's loss (sec. 3.4, eq. 4: "We set beta = 5.0")."""
HEATMAP_GAMMA = 2.0
"""Weight gamma of the heatmap reconstruction loss in both losses (eq. 4: "gamma = 2.0")."""
HEATMAP_THRESHOLD = 0.05
"""Threshold of the heatmap reconstruction loss, in heatmap units of [-1, 1] (eq. 3)."""
EMPTY_LEVEL = -0.2
"""The referee's "no person" class: a heatmap whose hottest cell is below this value (in [-1, 1];
23.4 C on the paper's 19..30 C scale). Ours: the SYNTHETIC stand-in's empty scenes sit near
-0.45 (22 C ambient), a cell a person covers is well above."""


class SpadeSROptions(GANOptions):
    """``options:`` of ``spade_sr`` (defaults: the paper's, sec. 3.4 and 4.2)."""

    latent: Literal["normal", "uniform"] = "normal"
    """``z ~ N(0, 1)`` (sec. 3.1)."""
    pixel_range: Literal["unit", "symmetric"] = "symmetric"
    """Images in [-1, 1] (the generator ends in tanh)."""
    r1_beta: float = Field(default=R1_BETA, ge=0, le=1e4)
    """beta of eq. 4 (:data:`R1_BETA`); 0 skips the double backward."""
    heatmap_gamma: float = Field(default=HEATMAP_GAMMA, ge=0, le=1e4)
    """gamma of eq. 4 (:data:`HEATMAP_GAMMA`)."""
    heatmap_threshold: float = Field(default=HEATMAP_THRESHOLD, ge=0, le=2)
    """The threshold of eq. 3 (:data:`HEATMAP_THRESHOLD`)."""
    eval_samples: int = Field(default=500, ge=10, le=100_000)
    """Generated images per evaluation (one per validation heatmap, at most the validation
    set's size)."""
    grid_z: int = Field(default=16, ge=1, le=256)
    """Images of ``samples_z.png`` (one heatmap, ``grid_z`` codes)."""


# -- the losses of sec. 3.4 -------------------------------------------------------------------------
def hinge_d_loss(s_real: torch.Tensor, s_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 1, D: ``mean relu(1 + s_fake) + mean relu(1 - s_real)`` of realness scores ``(n, 1)``
    (or ``(n,)``), float32 scalar."""
    return torch.relu(1 + s_fake.float()).mean() + torch.relu(1 - s_real.float()).mean()


def hinge_g_loss(s_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 1, G: ``-mean s_fake``, float32 scalar."""
    return -s_fake.float().mean()


def r1_penalty(score: torch.Tensor, images: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Eq. 2 (Mescheder et al. 2018): ``mean_i ||d s_i / d x_i||^2`` for scores ``(n, 1)``
    computed from ``images`` ``(n, C, H, W)`` (which must require grad), the squared norm over
    every pixel and channel. The gradient keeps its graph (``create_graph=True``) so the penalty
    trains D (a double backward). ``scale``: the AMP loss scale the score is multiplied by
    before the inner gradient (the result is unscaled); 1 without AMP.

    Raises:
        ValueError: ``images`` does not require grad.
    """
    if not images.requires_grad:
        raise ValueError("R1 needs the real images with requires_grad=True")
    (grad,) = torch.autograd.grad(score.float().sum() * scale, images, create_graph=True)
    grad = grad.float() / scale
    return grad.square().flatten(1).sum(1).mean()


def heatmap_loss(h: torch.Tensor, h_fake: torch.Tensor | None, h_real: torch.Tensor | None,
                 threshold: float = HEATMAP_THRESHOLD) -> torch.Tensor:
    """Eq. 3: ``1/(2n) sum_i [relu(|h_i - h^fake_i| - t) + relu(|h_i - h^real_i| - t)]`` for
    heatmaps ``(n, 1, H, W)`` in [-1, 1], each term averaged over the map's cells (module
    docstring). A ``None`` side contributes 0 (still divided by ``2n``), float32 scalar."""
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for est in (h_fake, h_real):
        if est is not None:
            d = (h.float() - est.float()).abs() - threshold
            total = total + torch.relu(d).flatten(1).mean(1).sum()
    return total / (2 * h.shape[0])


def hot_column_class(heatmaps: torch.Tensor, empty_level: float = EMPTY_LEVEL) -> torch.Tensor:
    """The referee's classes of heatmaps ``(n, 1, H, W)`` in [-1, 1]: the column (0..W-1) of the
    hottest cell, or ``W`` ("no person") when that cell is below ``empty_level``
    (:data:`EMPTY_LEVEL`). Returns ``int64 (n,)``."""
    flat = heatmaps.float().flatten(1)
    col = flat.argmax(1) % heatmaps.shape[-1]
    return torch.where(flat.amax(1) < empty_level, heatmaps.shape[-1], col).long()


def heatmap_image(heatmaps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Heatmaps ``(n, 1, h, w)`` in [-1, 1] as RGB pictures ``(n, 3, H, W)`` in [0, 1] at the
    image size (nearest cells, the ``inferno`` colour map over [-1, 1])."""
    import matplotlib

    cmap = matplotlib.colormaps["inferno"]
    up = torch.nn.functional.interpolate(heatmaps.float().cpu(), size=size, mode="nearest")
    rgb = cmap(((up[:, 0] + 1) / 2).clamp(0, 1).numpy())[..., :3]
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float()


def _stack(ds, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(ds) if limit is None else min(limit, len(ds))
    items = [ds[i] for i in range(n)]
    return torch.stack([a for a, _ in items]).float(), torch.stack([b for _, b in items]).float()


@register_task
class SpadeSRTask(GANTask):
    """SPADE-SR / SPADE GAN phase (see the module docstring)."""

    name = "spade_sr"
    model_names = ("generator", "discriminator")
    Options = SpadeSROptions
    conditional = "map"
    default_best_metric = "val_heatmap_mae"
    default_best_mode = "min"
    summary_metrics = ("fid", "fid_real_floor", "recon_d", "hot_column_accuracy", "params_g",
                       "val_heatmap_mae", "val_mmd")

    def __init__(self, recipe, netspecs) -> None:
        from spdnn.shapes import infer

        super().__init__(recipe, netspecs)
        d = netspecs["discriminator"]
        field = "models.discriminator"
        hint = ("end the discriminator in two outputs: the realness score (dense 1) and the "
                "heatmap (conv to 1 channel at h's size, tanh): netspecs/spade_sr/"
                "discriminator.yaml")
        if len(d.outputs) != 2:
            raise SpecError(f"a SPADE-SR discriminator has two outputs (score, heatmap), this "
                            f"one has {len(d.outputs)}", field=field, hint=hint)
        shapes = list(infer(d).output_shapes().values())
        if math.prod(shapes[0]) != 1:
            raise SpecError(f"the first output of a SPADE-SR discriminator is the realness "
                            f"score (1 per image), '{d.outputs[0].name}' has "
                            f"{math.prod(shapes[0])}", field=field, hint=hint)
        if tuple(shapes[1]) != self.map_shape:
            raise SpecError(f"the discriminator's heatmap output is {tuple(shapes[1])}, the "
                            f"generator's {self.map_input} input is {self.map_shape}",
                            field=field, hint=hint)
        self.score_output, self.heatmap_output = d.outputs[0].name, d.outputs[1].name
        self.image_size: tuple[int, int] = tuple(self.image_shape[1:])
        self.heatmap_size: tuple[int, int] = tuple(self.map_shape[1:])

    # -- data -----------------------------------------------------------------------------------
    def datasets(self):
        """``(train, val)`` of :func:`spdnn.data.thermal.thermal_datasets` at the generator's
        sizes; items ``(rgb (3, H, W) in [0, 1], heatmap (1, h, w) in [-1, 1])``.

        Raises:
            SpecError: the data's heatmap is not the generator's ``h`` size.
        """
        from spdnn.data.thermal import thermal_datasets

        train, val = thermal_datasets(self.recipe.data, "heatmap", self.image_size,
                                      self.heatmap_size)
        got = tuple(train[0][1].shape)
        if got != self.map_shape:
            raise SpecError(f"the data's heatmaps are {'x'.join(map(str, got))}, the generator's "
                            f"{self.map_input} input is {'x'.join(map(str, self.map_shape))}",
                            field="data", hint="give heatmaps of the generator's h size")
        return train, val

    def check_heatmaps(self, h: torch.Tensor, what: str) -> None:
        """Raise a one-line :class:`SpdnnError` unless ``h`` is ``(n, *map_shape)``."""
        if h.dim() != 4 or tuple(h.shape[1:]) != self.map_shape:
            want = "x".join(map(str, self.map_shape[1:]))
            raise SpdnnError(f"{what} is {'x'.join(map(str, h.shape[-2:]))}, the generator's "
                             f"{self.map_input} input is {want} (height x width)",
                             hint=f"give {want} heatmaps")

    # -- networks -------------------------------------------------------------------------------
    def discriminate(self, D, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(score (n, 1), heatmap (n, 1, h, w))`` of images ``(n, 3, H, W)`` in [-1, 1]."""
        out = D(images)
        return out[self.score_output], out[self.heatmap_output]

    def generate(self, models, n: int, device, heatmaps: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, **_: Any) -> torch.Tensor:
        """``(n, 3, H, W)`` images in [0, 1] (float32, CPU) of ``G(z, h)`` for ``heatmaps``
        ``(n, 1, h, w)`` in [-1, 1], ``z`` drawn from ``generator``."""
        if heatmaps is None:
            raise ValueError("SPADE-SR generates from heatmaps")
        z = self.latent(n, device, generator=generator)
        return self.to_unit(self.generator_of(models)(z, heatmaps.to(device).float())).cpu()

    def generator_of(self, models) -> torch.nn.Module:
        """The generator of ``models`` (the inversion task holds a frozen one instead)."""
        return models["generator"]

    # -- steps ----------------------------------------------------------------------------------
    def d_losses(self, trainer, D, real: torch.Tensor, fake: torch.Tensor, h: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """``L^D`` of eq. 4 on a real batch ``(n, 3, H, W)`` and generated images (detached
        here) in [-1, 1] with their heatmap ``h``; returns ``(loss, logs, h^real)``, the last
        D's heatmaps of the real images (detached), the real term of G's ``L_mi``."""
        o = self.options
        real = real.detach().requires_grad_(o.r1_beta > 0)
        with trainer.autocast():
            s_real, h_real = self.discriminate(D, real)
            s_fake, h_fake = self.discriminate(D, fake.detach())
        adv = hinge_d_loss(s_real, s_fake)
        mi = heatmap_loss(h, h_fake, h_real, o.heatmap_threshold)
        loss = adv + o.heatmap_gamma * mi
        logs = {"loss_d_adv": float(adv.detach()), "loss_mi": float(mi.detach()),
                "s_real": float(s_real.detach().float().mean()),
                "s_fake": float(s_fake.detach().float().mean())}
        return self.with_r1(trainer, loss, s_real, real, logs), logs, h_real.detach()

    def with_r1(self, trainer, loss: torch.Tensor, s_real: torch.Tensor, real: torch.Tensor,
                logs: dict[str, float]) -> torch.Tensor:
        """``loss + beta R1`` (eq. 4, :func:`r1_penalty` at the trainer's AMP scale) of D's
        scores ``s_real`` of ``real`` (which requires grad when ``options.r1_beta > 0``), the
        penalty logged as ``r1``; ``loss`` unchanged when beta is 0."""
        if self.options.r1_beta <= 0:
            return loss
        scale = float(trainer.scaler.get_scale()) if trainer.amp else 1.0
        r1 = r1_penalty(s_real, real, scale)
        logs["r1"] = float(r1.detach())
        return loss + self.options.r1_beta * r1

    def training_step(self, trainer, batch):
        real, h = self.to_net(batch[0]), batch[1].float()
        G, D = trainer.train_models["generator"], trainer.train_models["discriminator"]
        z = self.latent(real.shape[0], real.device)
        with trainer.autocast():
            fake = G(z, h)
        loss_d, logs, h_real = self.d_losses(trainer, D, real, fake, h)
        trainer.backward_step(loss_d, "discriminator")
        with trainer.autocast():
            s_gen, h_gen = self.discriminate(D, fake)
        mi_g = heatmap_loss(h, h_gen, h_real, self.options.heatmap_threshold)
        loss_g = hinge_g_loss(s_gen) + self.options.heatmap_gamma * mi_g
        trainer.backward_step(loss_g, "generator")
        return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()), **logs}

    def validation_step(self, models, batch, metrics):
        real01, h = batch[0], batch[1].float()
        G, D = models["generator"], models["discriminator"]
        z = self.latent(real01.shape[0], real01.device, generator=self._val_z)
        fake = G(z, h).float()
        real = self.to_net(real01)
        s_real, h_real = (t.float() for t in self.discriminate(D, real))
        s_fake, h_fake = (t.float() for t in self.discriminate(D, fake))
        if metrics is not None:
            metrics.update(self.to_unit(fake), real01)
        o = self.options
        mi = heatmap_loss(h, h_fake, h_real, o.heatmap_threshold)
        return {"loss_d": float(hinge_d_loss(s_real, s_fake) + o.heatmap_gamma * mi),
                "loss_g": float(hinge_g_loss(s_fake) + o.heatmap_gamma * mi),
                "loss_mi": float(mi), "s_real": float(s_real.mean()),
                "s_fake": float(s_fake.mean()),
                "heatmap_mae": float((h_fake - h).abs().mean()),
                "heatmap_mae_real": float((h_real - h).abs().mean())}

    # -- figures --------------------------------------------------------------------------------
    def figures(self, models, batch, outdir: Path) -> list[Path]:
        """``samples.png`` of the first ``recipe.samples`` (at most 8) validation heatmaps and
        ``samples_z.png`` with at most ``4 x`` that many codes."""
        n = max(1, min(8, self.recipe.samples))
        h = batch[1][:n].float()
        return [self.samples_figure(models, batch[0].device, outdir / "samples.png",
                                    heatmaps=h, real=batch[0][:n]),
                self.z_grid_figure(models, batch[0].device, outdir / "samples_z.png", h[:1],
                                   count=min(self.options.grid_z, 4 * n))]

    def samples_figure(self, models, device, dest: Path, heatmaps: torch.Tensor | None = None,
                       real: torch.Tensor | None = None, per: int = 4) -> Path:
        """``samples.png``: per heatmap ``(n, 1, h, w)`` a row heatmap | ``per`` generated
        images (fixed ``z`` from the recipe's seed) | the real image (when ``real`` is
        given)."""
        from spdnn.tasks.common import sample_grid

        if heatmaps is None:
            _, val = self.datasets()
            real, heatmaps = _stack(val, 8)
        g = torch.Generator().manual_seed(self.recipe.seed)
        n = heatmaps.shape[0]
        fake = self.generate(models, n * per, device, heatmaps.repeat_interleave(per, 0),
                             generator=g).reshape(n, per, *self.image_shape)
        cells = [heatmap_image(heatmaps, self.image_size)[:, None], fake]
        if real is not None:
            cells.append(real.float().cpu()[:, None])
        tiles = torch.cat(cells, 1)
        title = (f"{self.recipe.name}: heatmap | {per} generated (fixed z)"
                 + (" | real" if real is not None else ""))
        return sample_grid(tiles.flatten(0, 1), dest, title, cols=tiles.shape[1])

    def z_grid_figure(self, models, device, dest: Path, heatmap: torch.Tensor,
                      count: int | None = None) -> Path:
        """``samples_z.png`` (paper Fig. 1): one heatmap ``(1, 1, h, w)`` and ``count``
        (default ``options.grid_z``) images of it with different ``z`` (seeded), heatmap
        first."""
        from spdnn.tasks.common import sample_grid

        k = count or self.options.grid_z
        g = torch.Generator().manual_seed(self.recipe.seed + 1)
        imgs = self.generate(models, k, device, heatmap.expand(k, -1, -1, -1), generator=g)
        tiles = torch.cat([heatmap_image(heatmap, self.image_size), imgs])
        cols = min(len(tiles), int(math.ceil(math.sqrt(len(tiles) * 1.6))))
        return sample_grid(tiles, dest, f"{self.recipe.name}: one heatmap (first), {k} codes z",
                           cols=cols)

    # -- prediction -----------------------------------------------------------------------------
    def prediction_outputs(self, inputs, outdir, options):
        """``<stem>_generated.png`` in ``outdir`` for each heatmap file."""
        return [outdir / f"{Path(p).stem}_generated.png" for p in inputs]

    def predict_files(self, models, inputs, outdir, device, options):
        """``spdnn predict``: ``--num`` images per heatmap file (module docstring), written to
        ``outdir/<stem>_generated.png``.

        Raises:
            SpdnnError: no inputs, an unreadable heatmap, one of the wrong size or holding NaN.
        """
        from spdnn.data.thermal import read_heatmap, rescale_heatmap
        from spdnn.tasks.common import sample_grid

        if not inputs:
            raise SpdnnError("give heatmap files (.npy in degrees C or 16-bit .png in 0.01 C)",
                             hint="spdnn predict RUN heat.npy --num 8 --seed 0")
        n, seed = int(options.get("num", 8)), int(options.get("seed", 0))
        if n < 1:
            raise SpdnnError(f"--num must be >= 1, got {n}", field="--num")
        outdir.mkdir(parents=True, exist_ok=True)
        written = []
        for path in inputs:
            path = Path(path)
            if not path.is_file():
                raise SpdnnError("no such heatmap file", file=str(path))
            c = read_heatmap(path, field=None)
            if not torch.isfinite(torch.from_numpy(c)).all():
                raise SpdnnError("the heatmap holds NaN or infinite values", file=str(path))
            h = torch.from_numpy(rescale_heatmap(c)).float()
            h = h.reshape(1, 1, *h.shape[-2:]) if h.dim() == 2 else h[None]
            try:
                self.check_heatmaps(h, "the heatmap")
            except SpdnnError as exc:
                raise exc.located(str(path)) from None
            g = torch.Generator().manual_seed(seed)
            imgs = self.generate(models, n, device, h.expand(n, -1, -1, -1), generator=g)
            dest = self.prediction_outputs([path], outdir, options)[0]
            tiles = torch.cat([heatmap_image(h, self.image_size), imgs])
            sample_grid(tiles, dest, f"{path.name}: heatmap, then {n} images (seed {seed})",
                        cols=min(len(tiles), 9))
            written.append((f"{path}: {n} images of {tuple(imgs.shape[1:])} for a "
                            f"{'x'.join(map(str, self.map_shape[1:]))} heatmap", dest))
        return written

    # -- evaluation -----------------------------------------------------------------------------
    def report(self, models, outdir: Path, device) -> dict[str, float]:
        """FID on the hottest-column referee, ``recon_d``, ``hot_column_accuracy`` and
        ``params_g`` (module docstring); writes ``samples.png``, ``samples_z.png`` and the
        cached referee under ``outdir``."""
        return evaluate_spade_sr(self, models, Path(outdir), device)


@torch.no_grad()
def evaluate_spade_sr(task: SpadeSRTask, models, outdir: Path, device,
                      referee_steps: int | None = None,
                      cache_dir: Path | None = None) -> dict[str, float]:
    """The evaluation of :meth:`SpadeSRTask.report` (module docstring), also used by the
    inversion task; the referee is cached in ``cache_dir`` (default ``outdir``: runs on the
    same data can share one). Returns ``fid``, ``fid_real_floor``, ``fid_samples``,
    ``referee_accuracy``, ``referee_majority`` (the share of the commonest validation class:
    what a referee that ignores the image scores),
    ``hot_column_accuracy``, ``recon_d``, ``recon_d_real``, ``params_g``.

    Raises:
        SpdnnError: fewer than four validation images.
    """
    from spdnn.data.images import TensorImages
    from spdnn.tasks.gan import evaluation as E

    device = torch.device(device)
    outdir.mkdir(parents=True, exist_ok=True)
    train, val = task.datasets()
    if len(val) < 4:
        raise SpdnnError(f"the SPADE-SR evaluation needs at least 4 validation images, got "
                         f"{len(val)}", field="data.val_size", hint="use val_size >= 4")
    x_tr, h_tr = _stack(train)
    x_va, h_va = _stack(val)
    k = task.heatmap_size[1] + 1
    names = [str(c) for c in range(k - 1)] + ["none"]
    tr = TensorImages(x_tr, hot_column_class(h_tr), names)
    va = TensorImages(x_va, hot_column_class(h_va), names)
    steps = E.REFEREE_STEPS if referee_steps is None else int(referee_steps)
    referee = E.trained_classifier("referee", E.referee_netspec(task.image_shape, k), tr, va,
                                   steps, E.REFEREE_SEED, Path(cache_dir or outdir),
                                   E._data_key(task), device)
    n = min(int(task.options.eval_samples), len(val))
    perm = torch.randperm(len(val), generator=torch.Generator().manual_seed(E.EVAL_SEED))
    idx = perm[:n]
    g = torch.Generator().manual_seed(int(task.recipe.seed))
    fake, est, real_est = [], [], []
    for s in range(0, n, E.GEN_CHUNK):
        part = idx[s:s + E.GEN_CHUNK]
        imgs = task.generate(models, len(part), device, h_va[part], generator=g)
        fake.append(imgs)
        for images, out in ((imgs, est), (x_va[part], real_est)):  # D's heatmap head
            out.append(task.discriminate(models["discriminator"],
                                         task.to_net(images.to(device)))[1].float().cpu())
    fake, est, real_est = torch.cat(fake), torch.cat(est), torch.cat(real_est)
    feats = E.RefereeFeatures(referee.module)
    res = {"fid": E.fid(feats, fake, x_va[idx], device)}
    half = min(n, len(val) // 2)
    res["fid_real_floor"] = E.fid(feats, x_va[perm[:half]], x_va[perm[half:2 * half]], device)
    res["fid_samples"] = float(n)
    res["referee_accuracy"] = referee.accuracy
    res["referee_majority"] = float(torch.bincount(va.labels).max() / len(va.labels))
    got = E.predict(referee.module, fake, device)
    res["hot_column_accuracy"] = float((got == va.labels[idx]).float().mean())
    res["recon_d"] = float((est - h_va[idx]).abs().mean())
    res["recon_d_real"] = float((real_est - h_va[idx]).abs().mean())
    res["params_g"] = float(sum(p.numel() for p in task.generator_of(models).parameters()))
    task.samples_figure(models, device, outdir / "samples.png", heatmaps=h_va[perm[:8]],
                        real=x_va[perm[:8]])
    task.z_grid_figure(models, device, outdir / "samples_z.png", h_va[perm[:1]])
    return {k_: float(v) if math.isfinite(float(v)) else float("nan") for k_, v in res.items()}

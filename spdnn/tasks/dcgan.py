"""A generator and a discriminator trained against each other (GAN; thesis sec. 3.3, the
adversarial game of Goodfellow et al. that BEGAN, VAC+GAN and VAR+GAN build on; the layer
layout of DCGAN, Radford et al., used in thesis App. H Tables 1-2).

* Models: ``generator`` (a vector ``z`` of ``features`` floats -> an image ``(C, H, W)`` in
  [0, 1], e.g. a sigmoid output) and ``discriminator`` (that image -> one value per sample:
  a logit, or a probability when its last layer ends in a sigmoid).
* Loss: the non-saturating GAN loss: the discriminator minimises
  ``BCE(D(x), 1) + BCE(D(G(z)), 0)``, the generator ``BCE(D(G(z)), 1)``; ``z ~ N(0, I)``.
  Both are computed in float32 from logits where possible (autocast-safe), one update of the
  discriminator, then one of the generator, per iteration.
* Data: ``source: digits`` (default): scikit-learn's 1,797 **real** 8x8 handwritten digits
  (UCI optical digits), scaled from 0..16 to [0, 1], split by a seeded permutation into
  ``train_size`` training and ``val_size`` validation images.
* Metrics: discriminator and generator losses, mean ``D`` output on real and generated
  images, and the kernel MMD^2 between generated and real validation images
  (:class:`spdnn.metrics.KernelMMD`; the best checkpoint has the lowest). Validation draws its
  ``z`` from a fixed private generator, so it does not disturb training.
* Outputs: ``samples.png`` (a grid of generated images from a fixed ``z``); ``spdnn predict``
  writes such a grid (``--num``, ``--seed``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from spdnn.errors import SpdnnError, SpecError
from spdnn.metrics import KernelMMD
from spdnn.tasks.common import sample_grid
from spdnn.tasks.registry import register_task
from spdnn.train.task import Task


class DigitsDataset(Dataset):
    """scikit-learn's real 8x8 digits as ``(image float32 (1, 8, 8) in [0, 1], label int64 ())``.

    ``split`` ``"train"`` takes the first ``n`` images of a permutation seeded by ``seed``,
    ``"val"`` the last ``n``; the two never overlap while ``n_train + n_val <= 1797``.
    """

    def __init__(self, split: str, n: int, seed: int = 0) -> None:
        from sklearn.datasets import load_digits

        d = load_digits()
        images = torch.from_numpy(d.images).float().div_(16.0).unsqueeze(1)
        labels = torch.from_numpy(d.target).long()
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
        idx = perm[:n] if split == "train" else perm[len(perm) - n:]
        self.images, self.labels = images[idx].contiguous(), labels[idx].contiguous()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


@register_task
class DCGANTask(Task):
    """Adversarial training of ``generator`` and ``discriminator`` (see the module docstring)."""

    name = "dcgan"
    model_names = ("generator", "discriminator")
    default_best_metric = "val_mmd"
    default_best_mode = "min"

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        g, d = netspecs["generator"], netspecs["discriminator"]
        if len(g.inputs) != 1 or len(g.inputs[0].shape) != 1:
            raise SpecError("the generator must take one latent vector input (features: N)",
                            field="models.generator")
        self.z_dim = g.inputs[0].shape[0]
        from spdnn.shapes import infer

        g_out = list(infer(g).output_shapes().values())[0]
        d_in = d.inputs[0].shape
        if tuple(g_out) != tuple(d_in):
            raise SpecError(f"the generator makes images of shape {tuple(g_out)}, the "
                            f"discriminator reads {tuple(d_in)}", field="models",
                            hint="make the discriminator's input the generator's output shape")
        last = {lay.name: lay for lay in d.layers}[d.outputs[0].from_]
        self.d_sigmoid = getattr(last, "activation", None) == "sigmoid"

    def datasets(self):
        d = self.recipe.data
        if d.source != "digits":
            raise SpdnnError(f"unknown dcgan data source '{d.source}'", field="data.source",
                             hint="use digits (scikit-learn's real 8x8 digits)")
        if d.train_size + d.val_size > 1797:
            raise SpdnnError(f"train_size + val_size = {d.train_size + d.val_size} exceeds the "
                             "1,797 digits", field="data.train_size")
        return DigitsDataset("train", d.train_size, d.seed), DigitsDataset("val", d.val_size, d.seed)

    # -- losses --------------------------------------------------------------------------------
    def _bce(self, out: torch.Tensor, real: bool) -> torch.Tensor:
        out = out.float().reshape(out.shape[0], -1)
        target = torch.full_like(out, 1.0 if real else 0.0)
        if self.d_sigmoid:
            return F.binary_cross_entropy(out.clamp(1e-7, 1 - 1e-7), target)
        return F.binary_cross_entropy_with_logits(out, target)

    def _prob(self, out: torch.Tensor) -> torch.Tensor:
        out = out.float().reshape(out.shape[0], -1)
        return out if self.d_sigmoid else torch.sigmoid(out)

    def sample_z(self, n: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, z_dim)`` standard normal latents (from ``generator`` when given)."""
        return torch.randn(n, self.z_dim, generator=generator, device="cpu").to(device)

    def training_step(self, trainer, batch):
        real = batch[0]
        G, D = trainer.train_models["generator"], trainer.train_models["discriminator"]
        z = self.sample_z(real.shape[0], real.device)
        with trainer.autocast():
            fake = G(z)
            d_real, d_fake = D(real), D(fake.detach())
        loss_d = self._bce(d_real, True) + self._bce(d_fake, False)
        trainer.backward_step(loss_d, "discriminator")
        with trainer.autocast():
            d_gen = D(fake)
        loss_g = self._bce(d_gen, True)
        trainer.backward_step(loss_g, "generator")
        return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach())}

    def new_metrics(self):
        # called once per validation pass: the pass draws its z from this fixed stream
        self._val_z = torch.Generator().manual_seed(self.recipe.seed)
        return KernelMMD()

    def validation_step(self, models, batch, metrics):
        real = batch[0]
        z = self.sample_z(real.shape[0], real.device, self._val_z)
        fake = models["generator"](z).float()
        d_real, d_fake = models["discriminator"](real), models["discriminator"](fake)
        if metrics is not None:
            metrics.update(fake, real)
        return {"loss_d": float(self._bce(d_real, True) + self._bce(d_fake, False)),
                "loss_g": float(self._bce(d_fake, True)),
                "d_real": float(self._prob(d_real).mean()),
                "d_fake": float(self._prob(d_fake).mean())}

    # -- outputs -------------------------------------------------------------------------------
    @torch.no_grad()
    def samples(self, models, n: int, seed: int, device) -> torch.Tensor:
        """``(n, C, H, W)`` generated images from ``z`` drawn with ``seed``."""
        z = self.sample_z(n, device, torch.Generator().manual_seed(seed))
        return models["generator"](z).float().clamp(0, 1).cpu()

    def figures(self, models, batch, outdir: Path) -> list[Path]:
        device = batch[0].device
        imgs = self.samples(models, 64, self.recipe.seed, device)
        return [sample_grid(imgs, outdir / "samples.png",
                            f"{self.recipe.name}: generated samples (fixed z)")]

    def predict_files(self, models, inputs, outdir, device, options):
        if inputs:
            raise SpdnnError("a generator takes no input files",
                             hint="spdnn predict RUN --num 64 --seed 0 -o OUT")
        n, seed = int(options.get("num", 64)), int(options.get("seed", 0))
        imgs = self.samples(models, n, seed, device)
        dest = outdir / f"samples_seed{seed}.png"
        sample_grid(imgs, dest, f"{self.recipe.name}: {n} samples, seed {seed}")
        return [(f"{n} generated images {tuple(imgs.shape[1:])}", dest)]

"""DCGAN: a generator and a discriminator trained against each other with the binary
cross-entropy GAN loss (thesis sec. 3.3, the adversarial game of Goodfellow et al. that BEGAN,
VAC+GAN and VAR+GAN build on; the layer layout of DCGAN, Radford et al., in thesis App. H
Tables 1-2 and 4-5).

* Models: ``generator`` (a latent vector ``z`` -> an image ``(C, H, W)``) and
  ``discriminator`` (that image -> one real/fake value per sample; its sigmoid is read as a
  logit, :mod:`spdnn.tasks.gan.base`).
* Loss: the non-saturating GAN loss, from logits in float32: the discriminator minimises
  ``BCE(D(x), 1) + BCE(D(G(z)), 0)``, the generator ``BCE(D(G(z)), 1)``; one update of the
  discriminator, then one of the generator, per iteration.
* Data: any :mod:`spdnn.data.images` source (``digits`` by default).
* Metrics: discriminator and generator losses, mean ``D`` probability on real and generated
  images, and the kernel MMD^2 between generated and real validation images
  (:class:`spdnn.metrics.KernelMMD`; the best checkpoint has the lowest). Validation draws its
  ``z`` from a fixed private generator, so it does not disturb training.
* Outputs: ``samples.png`` (a grid of generated images from a fixed ``z``); ``spdnn predict``
  writes such a grid (``--num``, ``--seed``); ``spdnn evaluate`` adds the GAN suite.
"""

from __future__ import annotations

import torch

from spdnn.tasks.gan.base import GANTask
from spdnn.tasks.registry import register_task


@register_task
class DCGANTask(GANTask):
    """Adversarial training of ``generator`` and ``discriminator`` (see the module docstring)."""

    name = "dcgan"
    model_names = ("generator", "discriminator")

    def adversarial_losses(self, trainer, real: torch.Tensor, fake: torch.Tensor):
        """Update the discriminator on ``real`` and ``fake`` (both ``(n, C, H, W)`` in the
        networks' range; ``fake`` is detached for this update). Returns ``(logs, loss_g)``:
        the values to log and the generator's adversarial loss, still to back-propagate
        (VAC+GAN and VAR+GAN add their terms to it: the contract of every GAN task)."""
        D = trainer.train_models["discriminator"]
        with trainer.autocast():
            d_real, d_fake = D(real), D(fake.detach())
        loss_d = self.bce_logits(d_real, True) + self.bce_logits(d_fake, False)
        trainer.backward_step(loss_d, "discriminator")
        with trainer.autocast():
            d_gen = D(fake)
        return {"loss_d": float(loss_d.detach())}, self.bce_logits(d_gen, True)

    def training_step(self, trainer, batch):
        real = self.to_net(batch[0])
        G = trainer.train_models["generator"]
        z = self.latent(real.shape[0], real.device)
        with trainer.autocast():
            fake = G(z)
        logs, loss_g = self.adversarial_losses(trainer, real, fake)
        trainer.backward_step(loss_g, "generator")
        return {**logs, "loss_g": float(loss_g.detach())}

    def adversarial_validation(self, models, real: torch.Tensor, fake: torch.Tensor
                               ) -> dict[str, float]:
        """Validation values of the adversarial game for ``real`` and ``fake`` (both in the
        networks' range): losses and the mean ``D`` probabilities (VAR+GAN reuses it)."""
        D = models["discriminator"]
        d_real, d_fake = D(real).float(), D(fake).float()
        return {"loss_d": float(self.bce_logits(d_real, True) + self.bce_logits(d_fake, False)),
                "loss_g": float(self.bce_logits(d_fake, True)),
                "d_real": float(torch.sigmoid(d_real).mean()),
                "d_fake": float(torch.sigmoid(d_fake).mean())}

    def validation_step(self, models, batch, metrics):
        real = batch[0]
        z = self.latent(real.shape[0], real.device, generator=self._val_z)
        fake = models["generator"](z).float()
        if metrics is not None:
            metrics.update(self.to_unit(fake), real)
        return self.adversarial_validation(models, self.to_net(real), fake)

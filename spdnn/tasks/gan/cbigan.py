"""cBiGAN: the conditional bidirectional GAN, the baseline VAR+GAN is compared with (thesis
App. I sec. 3.3.2, eqs. 17-18, and Fig. 1; thesis sec. 3.3.3 and Fig. 3.22, its reference
[101]: Wang, Shi, Ji, "A Hierarchical Generative Model for Eye Image Synthesis and Eye Gaze
Estimation", CVPR 2018). It mixes CGAN (Mirza & Osindero 2014: the generator and the
discriminator see the condition) and BiGAN (Donahue, Kraehenbuehl, Darrell, ICLR 2017: an
encoder learns the inverse mapping and the discriminator judges joint pairs).

In the thesis' form the encoder inverts the *condition*, not the noise: ``E(x) = s`` estimates
the attributes of an image, and the discriminator judges ``(attribute, image)`` pairs:

* ``p_r = D(y, x)`` (a real image with its real attributes), ``p_I = D(y, G(z|y))`` (a
  generated image with the attributes it was asked for), ``p_s = D(s, x)`` with ``s = E(x)``
  (a real image with the encoder's estimate);
* eq. 17: ``L_D = log p_r + log(1 - p_I) + log(1 - p_s)`` (maximised), ``L_G = log p_I``,
  ``L_E = log p_s`` and ``theta ||s - y||^2`` (the encoder fools the discriminator and matches
  the real attributes). Written as minimised binary cross-entropies on logits (float32):
  ``L_D = BCE(D(y, x), 1) + BCE(D(y, G(z|y)), 0) + BCE(D(s, x), 0)``, ``L_G = BCE(D(y, G(z|y)),
  1)`` (the non-saturating form of maximising ``log p_I``), ``L_E = BCE(D(s, x), 1) + theta
  mean_n sum_A (s - y)^2``; eq. 17 prints ``L_E`` with a plus sign between a term to maximise
  and one to minimise, which we read as above. ``theta = 0.8`` (``options.theta``).
* One iteration: ``s = E(x)``; ``fake = G(z | y)`` (the latent code of
  :class:`~spdnn.tasks.gan.var.AttributeConditional`, ``z[0:A] = 2 y - 1``, so both rows of the
  comparison use the same generator and input, as App. I sec. 3.3 keeps "the same architecture
  for generator network"); update D, then G and E against the updated D.
* Optimiser: Adam 1e-4 (0.5, 0.999) for all three networks (App. I sec. 3.3.2).

Models: ``generator`` (latent -> image), ``encoder`` (image -> ``A`` values; its ``sigmoid``
head, read as logits and applied in float32; the thesis' ``tanh`` for landmarks in [-1, 1] is
read as ``(1 + tanh) / 2``), ``discriminator`` with **two inputs**, the image then the attribute
vector ``(A,)`` (netspecs/gan/cbigan/: the encoder's convolutions, its 64-d code concatenated
with the attributes, one hidden dense layer, a sigmoid read as a logit).

Metrics: losses, ``d_real`` / ``d_fake`` / ``d_enc`` (mean D probabilities of the three pairs),
``enc_mae_real`` (the encoder's error on real images), ``attr_mae`` (the measured attribute of
generated images against the requested one; the best checkpoint has the lowest) and the
kernel MMD. ``samples.png`` sweeps the attribute as VAR+GAN's does.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from spdnn.errors import SpecError
from spdnn.tasks.gan.base import GANOptions, GANTask
from spdnn.tasks.gan.var import AttributeConditional, unit_head
from spdnn.tasks.registry import register_task


class CBiGANOptions(GANOptions):
    """``options:`` of ``cbigan`` (thesis App. I sec. 3.3.2)."""

    latent: Literal["normal", "uniform"] = "uniform"
    theta: float = Field(default=0.8, ge=0, le=1e3)
    """Weight of the encoder's squared attribute error (eq. 17: theta = 0.8)."""


@register_task
class CBiGANTask(AttributeConditional, GANTask):
    """cBiGAN (see the module docstring).

    Raises:
        SpecError: (besides the attribute checks) the discriminator does not take an image and
            an ``(A,)`` vector, or the encoder's output is not ``A`` values in (0, 1).
    """

    name = "cbigan"
    model_names = ("generator", "encoder", "discriminator")
    Options = CBiGANOptions
    logit_models = ("discriminator", "encoder")
    image_models: ClassVar[tuple[str, ...]] = ("encoder", "discriminator")

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        a = self.attribute_dim
        d_in = [tuple(i.shape) for i in netspecs["discriminator"].inputs]
        if len(d_in) != 2 or d_in[1] != (a,):
            raise SpecError(f"the cBiGAN discriminator judges (image, attribute) pairs: it must "
                            f"take two inputs, the image {self.image_shape} and a vector of the "
                            f"{a} attribute values; it takes {d_in}",
                            field="models.discriminator",
                            hint=f"declare inputs: [{{channels: ...}}, {{features: {a}}}]")
        self.check_attribute_head("encoder")

    def encode(self, E, images: torch.Tensor) -> torch.Tensor:
        """``s = E(images)``: ``(n, A)`` attribute estimates in (0, 1), float32."""
        return unit_head(E(images), self.heads["encoder"])

    def discriminator_loss(self, D, real, fake, y, s) -> tuple[torch.Tensor, dict[str, float]]:
        """``BCE(D(x, y), 1) + BCE(D(G(z|y), y), 0) + BCE(D(x, s), 0)`` (eq. 17) and the mean
        probabilities of the three pairs; ``fake`` and ``s`` should come detached."""
        n = real.shape[0]
        logits = D(torch.cat([real, fake, real]), torch.cat([y, y, s]).to(real.dtype)).float()
        lr, lf, ls = logits[:n], logits[n:2 * n], logits[2 * n:]
        loss = self.bce_logits(lr, True) + self.bce_logits(lf, False) + self.bce_logits(ls, False)
        probs = {k: float(torch.sigmoid(v.detach()).mean())
                 for k, v in (("d_real", lr), ("d_fake", lf), ("d_enc", ls))}
        return loss, probs

    def encoder_loss(self, d_enc_logits: torch.Tensor, s: torch.Tensor, y: torch.Tensor
                     ) -> torch.Tensor:
        """``BCE(D(x, s), 1) + theta mean_n ||s - y||^2`` (eq. 17, read as in the module
        docstring)."""
        return (self.bce_logits(d_enc_logits, True)
                + self.options.theta * (s.float() - y.float()).pow(2).sum(1).mean())

    def training_step(self, trainer, batch):
        real = self.to_net(batch[0])
        y = batch[2].float()
        G, E, D = (trainer.train_models[k] for k in ("generator", "encoder", "discriminator"))
        z = self.latent(real.shape[0], real.device, attributes=y)
        with trainer.autocast():
            fake = G(z)
            s = self.encode(E, real)
            loss_d, probs = self.discriminator_loss(D, real, fake.detach(), y, s.detach())
        trainer.backward_step(loss_d, "discriminator")
        with trainer.autocast():
            loss_g = self.bce_logits(D(fake, y.to(fake.dtype)), True)
        trainer.backward_step(loss_g, "generator")
        with trainer.autocast():
            loss_e = self.encoder_loss(D(real, s.to(real.dtype)), s, y)
        trainer.backward_step(loss_e, "encoder")
        return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()),
                "loss_e": float(loss_e.detach()), **probs}

    def validation_step(self, models, batch, metrics):
        real, y = batch[0], batch[2].float()
        G, E, D = (models[k] for k in ("generator", "encoder", "discriminator"))
        z = self.latent(real.shape[0], real.device, attributes=y, generator=self._val_z)
        fake = G(z).float()
        x = self.to_net(real)
        s = self.encode(E, x)
        y = y.to(s.device)
        loss_d, probs = self.discriminator_loss(D, x, fake, y, s)
        d_fake = D(fake, y).float()
        d_enc = D(x, s).float()
        fake_unit = self.to_unit(fake)
        if metrics is not None:
            metrics.update(fake_unit, real)
        return {"loss_d": float(loss_d), "loss_g": float(self.bce_logits(d_fake, True)),
                "loss_e": float(self.encoder_loss(d_enc, s, y)), **probs,
                "enc_mae_real": float((s - y).abs().mean()),
                **self.attribute_error(fake_unit, y)}

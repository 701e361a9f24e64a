"""ACGAN: Auxiliary Classifier GAN (Odena, Olah & Shlens 2017), the conditional GAN thesis
App. H compares VAC+GAN with (sec. 3.1 Fig. 4: "comparable"; sec. 3.2 CIFAR-10: 71.89% vs
74.49% classification accuracy) and App. G Fig. 1a draws (the classification term inside the
discriminator's loss).

* Models: ``generator`` (``z`` with the class code -> image) and ``discriminator`` with **two
  outputs** (netspecs/gan/acgan/): first the source head (one value: real/fake, ``sigmoid``),
  then the class head (``K`` values, ``softmax``; or one ``sigmoid`` value for two classes).
  Both heads are read as logits (their activations are dropped in the trained module, as for
  every GAN head: :mod:`spdnn.tasks.gan.base`).
* Latent: ``options.class_code: one_hot`` by default (Odena et al. sec. 3: "G receives both
  the class label c and the noise z"); ``thesis`` (the VAC+GAN sign code) also works.
* Losses (Odena et al. eqs. 2-3, ``L_S`` the source and ``L_C`` the class log-likelihood; D
  maximises ``L_S + L_C``, G maximises ``L_C - L_S``), written as minimised cross-entropies
  with the non-saturating generator loss, from logits in float32:

  - ``L_D = BCE(S(x), 1) + BCE(S(G(z|c)), 0) + w [CE(C(x), y) + CE(C(G(z|c)), c)]``
  - ``L_G = BCE(S(G(z|c)), 1) + w CE(C(G(z|c)), c)``

  with ``w = options.class_weight`` (1, as Odena et al.), CE the categorical cross-entropy (BCE
  for a one-value class head). ``c``: the labels of the real batch (as the other conditional
  tasks here). One D update, then one G update, per iteration.
* Metrics: the DCGAN ones (losses, mean D probabilities, kernel MMD) plus the class head's loss
  and accuracy on the real validation images (``val_loss_cls``, ``val_cls_acc``) and its
  accuracy on generated images of the requested classes (``val_gen_cls_acc``).

Raises (when the task is built): the discriminator does not have two outputs, one source value
and a class head (``models.discriminator``); see :class:`~spdnn.tasks.gan.cgan.ClassConditional`
for the class-count checks.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from spdnn.errors import SpecError
from spdnn.tasks.gan.base import GANOptions, GANTask
from spdnn.tasks.gan.cgan import ClassConditional
from spdnn.tasks.registry import register_task


class ACGANOptions(GANOptions):
    """``options:`` of ACGAN."""

    class_code: Literal["thesis", "one_hot"] = "one_hot"
    class_weight: float = Field(default=1.0, ge=0, le=1000)
    """Weight ``w`` of the class terms in both losses (Odena et al.: 1)."""


def without_activations(spec, layer_names: list[str]):
    """A copy of ``spec`` whose layers ``layer_names`` have ``activation: none``."""
    layers = [lay.model_copy(update={"activation": "none"}) if lay.name in layer_names else lay
              for lay in spec.layers]
    return spec.model_copy(update={"layers": layers})


@register_task
class ACGANTask(ClassConditional, GANTask):
    """ACGAN (see the module docstring)."""

    name = "acgan"
    model_names = ("generator", "discriminator")
    Options = ACGANOptions

    def __init__(self, recipe, netspecs) -> None:
        from spdnn.shapes import infer

        d = netspecs["discriminator"]
        field = "models.discriminator"
        hint = ("end the discriminator in two outputs: the real/fake value (dense 1, sigmoid) "
                "and the class probabilities (dense K, softmax): netspecs/gan/acgan/")
        if len(d.outputs) != 2:
            raise SpecError(f"an ACGAN discriminator has two outputs (source, class), this one "
                            f"has {len(d.outputs)}", field=field, hint=hint)
        shapes = list(infer(d).output_shapes().values())
        sizes = [math.prod(s) for s in shapes]
        if sizes[0] != 1:
            raise SpecError(f"the first output of an ACGAN discriminator is the real/fake value "
                            f"(1 per image), '{d.outputs[0].name}' has {sizes[0]}", field=field,
                            hint=hint)
        layers = {lay.name: lay for lay in d.layers}
        for out in d.outputs:
            if "activation" not in type(layers[out.from_]).model_fields:
                raise SpecError(f"the output layer '{out.from_}' has no activation field, so its "
                                "pre-activation cannot be read", field=field, hint=hint)
        self._class_outputs = sizes[1]
        self.source_output, self.class_output = d.outputs[0].name, d.outputs[1].name
        super().__init__(recipe, netspecs)
        self._module_specs["discriminator"] = without_activations(
            d, [out.from_ for out in d.outputs])
        self.heads["discriminator_class"] = layers[d.outputs[1].from_].activation or "none"

    def network_classes(self) -> dict[str, int]:
        k = self._class_outputs
        return {"models.discriminator": 2 if k == 1 else k}

    def discriminate(self, D, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(source logits (n, 1), class logits (n, K or 1))`` of images ``(n, C, H, W)``."""
        out = D(images)
        return out[self.source_output], out[self.class_output]

    def conditional_losses(self, trainer, real: torch.Tensor, fake: torch.Tensor,
                           labels: torch.Tensor):
        """Update the discriminator on ``L_D`` (module docstring); returns ``(logs, L_G)``,
        ``L_G`` still to back-propagate into the generator."""
        D, w = trainer.train_models["discriminator"], self.options.class_weight
        with trainer.autocast():
            s_real, c_real = self.discriminate(D, real)
            s_fake, c_fake = self.discriminate(D, fake.detach())
        loss_src = self.bce_logits(s_real, True) + self.bce_logits(s_fake, False)
        loss_cls = self.class_logits_loss(c_real, labels) + self.class_logits_loss(c_fake, labels)
        loss_d = loss_src + w * loss_cls
        trainer.backward_step(loss_d, "discriminator")
        with trainer.autocast():
            s_gen, c_gen = self.discriminate(D, fake)
        loss_g_cls = self.class_logits_loss(c_gen, labels)
        loss_g = self.bce_logits(s_gen, True) + w * loss_g_cls
        acc = (self.predicted_class(c_real.detach()) == labels).float().mean()
        return ({"loss_d": float(loss_d.detach()), "loss_d_cls": float(loss_cls.detach()),
                 "loss_g_cls": float(loss_g_cls.detach()), "cls_acc": float(acc)}, loss_g)

    def training_step(self, trainer, batch):
        real, labels = self.to_net(batch[0]), batch[1]
        z = self.latent(real.shape[0], real.device, labels=labels)
        with trainer.autocast():
            fake = trainer.train_models["generator"](z)
        logs, loss_g = self.conditional_losses(trainer, real, fake, labels)
        trainer.backward_step(loss_g, "generator")
        return {**logs, "loss_g": float(loss_g.detach())}

    def validation_step(self, models, batch, metrics):
        real, labels = batch[0], batch[1]
        z = self.latent(real.shape[0], real.device, labels=labels, generator=self._val_z)
        fake = models["generator"](z).float()
        s_real, c_real = (t.float() for t in self.discriminate(models["discriminator"],
                                                                self.to_net(real)))
        s_fake, c_fake = (t.float() for t in self.discriminate(models["discriminator"], fake))
        if metrics is not None:
            metrics.update(self.to_unit(fake), real)
        w = self.options.class_weight
        loss_cls = self.class_logits_loss(c_real, labels) + self.class_logits_loss(c_fake, labels)
        return {"loss_d": float(self.bce_logits(s_real, True) + self.bce_logits(s_fake, False)
                                + w * loss_cls),
                "loss_g": float(self.bce_logits(s_fake, True)
                                + w * self.class_logits_loss(c_fake, labels)),
                "loss_cls": float(self.class_logits_loss(c_real, labels)),
                "d_real": float(torch.sigmoid(s_real).mean()),
                "d_fake": float(torch.sigmoid(s_fake).mean()),
                "cls_acc": float((self.predicted_class(c_real) == labels).float().mean()),
                "gen_cls_acc": float((self.predicted_class(c_fake) == labels).float().mean())}

"""VAC+GAN: Versatile Auxiliary Classifier with GAN (thesis sec. 3.3.2; App. G for two classes,
App. H for many; the authors' code, architectures.md sec. 3): a ``classifier`` in parallel with
the discriminator whose classification error is back-propagated through the generator, so
the generator makes the requested class. Written once, as :class:`VACMixin`, for any GAN task
that implements ``adversarial_losses(trainer, real, fake) -> (logs, loss_g)``:

* ``vacgan`` -- VAC on DCGAN (:class:`~spdnn.tasks.gan.dcgan.DCGANTask`; App. H eq. 14, MNIST
  Tables 1-3: ``alpha = 0.2``, ``beta = 0.8``; CIFAR-10 eq. 15: 0.5 / 0.5).
* ``vacbegan`` -- VAC on BEGAN (:class:`~spdnn.tasks.gan.began.BEGANTask`; App. G eq. 15:
  ``theta L(G(z|c)) + zeta BCE``; the thesis prints ``theta = 0.997``, ``zeta = 0.003``, the
  authors' code uses ``alpha = 0.991``, ``beta = 0.009`` (architectures.md sec. 3.1), the
  defaults here).

One iteration (the order of the authors' simultaneous update written as alternating steps):

1. ``c``: the labels of the real batch (the authors' batches hold every class as often real as
   fake: "labels duplicated", architectures.md sec. 3.1-3.2); ``fake = G(z)`` with ``z``
   carrying the class code of ``c`` (``options.class_code``; ``thesis`` by default: for ``K >=
   3`` classes ``z[c] = +|u_c|`` and ``z[j] = -|u_j|`` for the other ``j < K``, for two classes
   the sign of ``z[0]``; App. H sec. 2 "the latent space Z is partitioned into Z_1 .. Z_N").
2. ``logs, L_adv = adversarial_losses(trainer, real, fake)``: the base GAN's discriminator
   update (DCGAN: ``BCE(D(x), 1) + BCE(D(G(z|c)), 0)``; BEGAN: ``L(x) - k_t L(G(z|c))`` and
   ``k_t``) and the generator's adversarial loss.
3. Classifier update: ``L_C = CE(C([G(z|c).detach(); x]), [c; y])``, categorical
   cross-entropy on the generated and the real images together (App. H; BCE for a one-output
   classifier, App. G), Nesterov SGD 0.01 / 0.9 in the authors' code (the recipe's per-model
   ``optim``).
4. Generator update: ``L_G = alpha L_adv + beta CE(C(G(z|c)), c)`` (App. H eq. 14, App. G
   eq. 15). The authors' code takes this CE over the concatenated fake and real batch; only its
   fake half reaches the generator, so their effective weight on the term here is ``beta / 2``;
   we follow the thesis' equations.

The classifier's sigmoid / softmax is read as logits (``"classifier"`` in ``logit_models``).
Validation adds the classifier's loss and accuracy on the real validation images
(``val_loss_cls``, ``val_cls_acc``) and its accuracy on generated images of the requested
classes (``val_gen_cls_acc``: how often the generator makes the class it is asked for, in the
eyes of its own classifier; the evaluation suite's ``cond_accuracy`` uses an independent one).

Raises (:class:`~spdnn.errors.SpecError`, when the task is built or the data loaded):
``options.alpha`` and ``options.beta`` both 0; the classifier's input differs from the
generator's image (``models.classifier``); the class-count and latent checks of
:class:`~spdnn.tasks.gan.cgan.ClassConditional`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator

from spdnn.tasks.gan.base import GANOptions, head_size
from spdnn.tasks.gan.began import BEGANOptions, BEGANTask
from spdnn.tasks.gan.cgan import ClassConditional
from spdnn.tasks.gan.dcgan import DCGANTask
from spdnn.tasks.registry import register_task


def _check_weights(options):
    """``options`` unless ``alpha`` and ``beta`` are both 0 (the generator would not learn)."""
    if options.alpha == 0 and options.beta == 0:
        raise ValueError("alpha and beta are both 0: the generator would not learn; give "
                         "beta > 0 (the classifier term) and usually alpha > 0")
    return options


class VACGANOptions(GANOptions):
    """``options:`` of VAC+GAN on DCGAN (defaults: the MNIST experiment, App. H eq. 14)."""

    alpha: float = Field(default=0.2, ge=0, le=1000)
    """Weight of the adversarial loss in the generator's loss (thesis: theta)."""
    beta: float = Field(default=0.8, ge=0, le=1000)
    """Weight of the classifier's cross-entropy in the generator's loss (thesis: zeta)."""

    @model_validator(mode="after")
    def _weights(self):
        return _check_weights(self)


class VACBEGANOptions(BEGANOptions):
    """``options:`` of VAC+GAN on BEGAN (defaults: the authors' binary CelebA code,
    architectures.md sec. 3.1; the thesis prints 0.997 / 0.003, App. G eq. 15)."""

    alpha: float = Field(default=0.991, ge=0, le=1000)
    """Weight of the adversarial loss in the generator's loss (thesis: theta)."""
    beta: float = Field(default=0.009, ge=0, le=1000)
    """Weight of the classifier's cross-entropy in the generator's loss (thesis: zeta)."""

    @model_validator(mode="after")
    def _weights(self):
        return _check_weights(self)


class VACMixin(ClassConditional):
    """VAC+GAN on a GAN task (see the module docstring). Put it first in the bases:
    ``class VACGANTask(VACMixin, DCGANTask)``; the concrete class adds ``"classifier"`` to
    ``model_names``, ``logit_models`` and ``image_models`` and gives ``Options`` with ``alpha``
    and ``beta``."""

    image_models: ClassVar[tuple[str, ...]] = ("discriminator", "classifier")

    def network_classes(self) -> dict[str, int]:
        k = head_size(self.netspecs["classifier"])
        return {"models.classifier": 2 if k == 1 else k}

    def training_step(self, trainer, batch):
        real, labels = self.to_net(batch[0]), batch[1]
        z = self.latent(real.shape[0], real.device, labels=labels)
        with trainer.autocast():
            fake = trainer.train_models["generator"](z)
        logs, loss_adv = self.adversarial_losses(trainer, real, fake)
        C = trainer.train_models["classifier"]
        with trainer.autocast():
            c_both = C(torch.cat([fake.detach(), real]))
        loss_c = self.class_logits_loss(c_both, torch.cat([labels, labels]))
        trainer.backward_step(loss_c, "classifier")
        with trainer.autocast():
            c_gen = C(fake)
        loss_g_cls = self.class_logits_loss(c_gen, labels)
        loss_g = self.options.alpha * loss_adv + self.options.beta * loss_g_cls
        trainer.backward_step(loss_g, "generator")
        return {**logs, "loss_c": float(loss_c.detach()), "loss_g_adv": float(loss_adv.detach()),
                "loss_g_cls": float(loss_g_cls.detach()), "loss_g": float(loss_g.detach())}

    def validation_step(self, models, batch, metrics):
        out = super().validation_step(models, batch, metrics)
        real, labels = batch[0], batch[1]
        C = models["classifier"]
        c_real = C(self.to_net(real)).float()
        z = self.latent(real.shape[0], real.device, labels=labels, generator=self._val_z)
        c_gen = C(models["generator"](z)).float()
        return {**out, "loss_cls": float(self.class_logits_loss(c_real, labels)),
                "cls_acc": float((self.predicted_class(c_real) == labels).float().mean()),
                "gen_cls_acc": float((self.predicted_class(c_gen) == labels).float().mean())}


@register_task
class VACGANTask(VACMixin, DCGANTask):
    """VAC+GAN on DCGAN: ``generator``, ``discriminator``, ``classifier`` (App. H)."""

    name = "vacgan"
    model_names = (*DCGANTask.model_names, "classifier")
    logit_models = (*DCGANTask.logit_models, "classifier")
    Options = VACGANOptions


@register_task
class VACBEGANTask(VACMixin, BEGANTask):
    """VAC+GAN on BEGAN: ``generator``, auto-encoder ``discriminator``, ``classifier``
    (App. G)."""

    name = "vacbegan"
    model_names = (*BEGANTask.model_names, "classifier")
    logit_models = (*BEGANTask.logit_models, "classifier")
    Options = VACBEGANOptions

"""Conditional GAN (CGAN, Mirza & Osindero 2014), the baseline of the thesis' conditional
generators (App. G sec. 1 and 3, App. H sec. 3.1 Fig. 2), on DCGAN (``cgan``) and on BEGAN
(``cbegan``, the "conditional BEGAN" of App. G eq. 13), and the class-conditional plumbing the
other conditional tasks share (:class:`ClassConditional`).

``cgan`` -- CGAN on the DCGAN game (Mirza & Osindero sec. 3.2: "both the generator and
discriminator are conditioned on" the label ``y``):

* Models: ``generator`` (``z`` -> image) and ``discriminator`` with **two inputs**, the image
  and the class index: ``inputs: [{image}, {name: label, features: 1, dtype: int64,
  num_classes: K}]``. How the netspec mixes them in is the netspec's business; the shipped one
  (netspecs/gan/cgan/) embeds the label as a learned image-sized map (``Embedding(K, H*W)``
  -> ``Reshape`` -> ``Concat`` with the image before the first convolution), the cDCGAN form of
  the CGAN code the thesis cites. This keeps the label path in the netspec (it renders,
  compiles and exports as an ``int64`` input) instead of hiding one-hot planes in the task.
* Generator input: ``options.class_code: one_hot`` (the default here): ``z = [noise (z_dim -
  K), one_hot(c) (K)]`` (:mod:`spdnn.tasks.gan.base`); ``thesis`` (the VAC+GAN sign code) also
  works.
* Loss: the DCGAN BCE game on the conditioned discriminator, from logits:
  ``L_D = BCE(D(x, y), 1) + BCE(D(G(z|y), y), 0)``, ``L_G = BCE(D(G(z|y), y), 1)``; one D
  update, then one G update. The generated images take the labels of the real batch (the
  authors' VAC+GAN code does the same: "labels duplicated", architectures.md sec. 3.2), so the
  discriminator sees each class as often real as fake.

``cbegan`` -- the conditional BEGAN that thesis App. G compares VAC+BEGAN with (sec. 3,
eq. 13): ``L_D = L(x) - k_t L(G(z|c))``, ``L_G = L(G(z|c))``, ``k_{t+1} = k_t + lambda_k
(gamma L(x) - L(G(z|c)))``: the class is only in the latent ("the first dimension is used to
partition the latent space in two subspaces": ``options.class_code: thesis``), the
auto-encoder sees no label (eq. 13 has ``L(x)``, not ``L(x|c)``). The thesis reports that this
generator "fails to correctly generate samples for a specific class" (App. G sec. 3).

Bad input (each a one-line :class:`~spdnn.errors.SpecError` naming the field, raised when the
task is built or, for the data, when the trainer loads it, before the first step): data with
fewer than two classes (``data.source``); networks built for another class count than the data
has (``models.<name>``); a latent too small for the class code (``models.generator``); a CGAN
discriminator without the label input (``models.discriminator``).
"""

from __future__ import annotations

from typing import Literal

import torch

from spdnn.errors import SpecError
from spdnn.tasks.gan.base import GANOptions, GANTask
from spdnn.tasks.gan.began import BEGANTask
from spdnn.tasks.registry import register_task

LABELLED_SOURCES = "digits, mnist, fashion_mnist, faces, or folder with one sub-folder per class"


class ClassConditional:
    """Mixin of the class-conditional GAN tasks (put it before the GAN task class in the bases):
    ``conditional = "class"``, the class count read from the networks when the task is built
    and checked against the data when the trainer loads it.

    Subclasses override :meth:`network_classes`. :attr:`GANTask.num_classes` is set in
    ``__init__`` from the networks where they fix it (CGAN, ACGAN, VAC+GAN), else in
    :meth:`datasets` from the data (CBEGAN), through :meth:`GANTask.check_classes`.

    Raises:
        SpecError: ``data.source`` has fewer than two classes; a network's class count differs
            from the data's (``models.<name>``) or from another network's; the latent cannot
            hold the class code (``models.generator``).
    """

    conditional = "class"

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        counts = self.network_classes()
        if len(set(counts.values())) > 1:
            desc = ", ".join(f"{f.removeprefix('models.')} {k}" for f, k in counts.items())
            raise SpecError(f"the networks are built for different class counts ({desc})",
                            field=list(counts)[-1], hint="give every network the data's "
                            "class count")
        if counts:
            field, k = next(iter(counts.items()))
            self.check_classes(k, field=field)

    def network_classes(self) -> dict[str, int]:
        """``{recipe field: class count}`` of the networks whose layers fix the class count
        (a classifier's outputs, a discriminator's label input); ``{}``: none does."""
        return {}

    def datasets(self):
        train, val = super().datasets()
        k, src = len(self.class_names), self.recipe.data.source
        if k < 2:
            raise SpecError(f"task '{self.name}' is class-conditional: it needs labelled data "
                            f"with at least two classes, data source '{src}' has {k}",
                            field="data.source", hint=f"use labelled data: {LABELLED_SOURCES}")
        for field, nk in self.network_classes().items():
            if nk != k:
                raise SpecError(f"the {field.removeprefix('models.')} is built for {nk} "
                                f"classes, data source '{src}' has {k}", field=field,
                                hint=f"give the {field.removeprefix('models.')} {k} classes "
                                f"(netspec), or use data with {nk}")
        self.check_classes(k)
        return train, val

    def batch_conditions(self, batch) -> dict[str, torch.Tensor]:
        """The latent's conditions for a batch: its real images' labels (generated images take
        the labels of the real batch, as the authors' code: architectures.md sec. 3.1-3.2)."""
        return {"labels": batch[1]}


def input_classes(spec, field: str) -> int:
    """The class count of a discriminator's class-index input (its second input).

    Raises:
        SpecError: the netspec lacks an ``int64`` class-index second input.
    """
    if len(spec.inputs) != 2 or spec.inputs[1].dtype != "int64":
        raise SpecError("a CGAN discriminator reads the image and the class label: it needs a "
                        "second input holding the class index", field=field,
                        hint="add '{name: label, features: 1, dtype: int64, num_classes: K}' "
                        "feeding an Embedding (netspecs/gan/cgan/)")
    return int(spec.inputs[1].num_classes)


class CGANOptions(GANOptions):
    """``options:`` of CGAN (the one-hot label concatenated to the noise by default)."""

    class_code: Literal["thesis", "one_hot"] = "one_hot"


@register_task
class CGANTask(ClassConditional, GANTask):
    """CGAN on the DCGAN game: the label enters the generator (in ``z``) and the
    discriminator (its second input); see the module docstring."""

    name = "cgan"
    model_names = ("generator", "discriminator")
    Options = CGANOptions

    def network_classes(self) -> dict[str, int]:
        return {"models.discriminator": input_classes(self.netspecs["discriminator"],
                                                      "models.discriminator")}

    @staticmethod
    def discriminate(D, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``D(images, labels)``: logits ``(n, 1)`` of images ``(n, C, H, W)`` given class
        indices ``(n,)`` (fed as the ``(n, 1)`` int64 label input)."""
        return D(images, labels.reshape(-1, 1).long())

    def conditional_losses(self, trainer, real: torch.Tensor, fake: torch.Tensor,
                           labels: torch.Tensor):
        """Update the discriminator on ``(real, labels)`` and ``(fake.detach(), labels)``;
        returns ``(logs, loss_g)``, ``loss_g = BCE(D(fake, labels), 1)`` still to
        back-propagate (the CGAN form of :meth:`DCGANTask.adversarial_losses`)."""
        D = trainer.train_models["discriminator"]
        with trainer.autocast():
            d_real = self.discriminate(D, real, labels)
            d_fake = self.discriminate(D, fake.detach(), labels)
        loss_d = self.bce_logits(d_real, True) + self.bce_logits(d_fake, False)
        trainer.backward_step(loss_d, "discriminator")
        with trainer.autocast():
            d_gen = self.discriminate(D, fake, labels)
        return {"loss_d": float(loss_d.detach())}, self.bce_logits(d_gen, True)

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
        D = models["discriminator"]
        d_real = self.discriminate(D, self.to_net(real), labels).float()
        d_fake = self.discriminate(D, fake, labels).float()
        if metrics is not None:
            metrics.update(self.to_unit(fake), real)
        return {"loss_d": float(self.bce_logits(d_real, True) + self.bce_logits(d_fake, False)),
                "loss_g": float(self.bce_logits(d_fake, True)),
                "d_real": float(torch.sigmoid(d_real).mean()),
                "d_fake": float(torch.sigmoid(d_fake).mean())}


@register_task
class CBEGANTask(ClassConditional, BEGANTask):
    """The conditional BEGAN of thesis App. G eq. 13: BEGAN with the class code in ``z``
    (``options.class_code``, default the thesis sign code), the auto-encoder unconditioned;
    training and validation generate with the labels of the real batch
    (:meth:`ClassConditional.batch_conditions`)."""

    name = "cbegan"

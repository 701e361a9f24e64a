"""VAR+GAN: Versatile Auxiliary Regressor with a GAN (thesis sec. 3.3.3 and App. I; the
authors' code, architectures.md sec. 4), a generator conditioned on continuous attributes.

A **regressor** ``R`` is placed in parallel with the discriminator; its regression error on
generated images is back-propagated into the generator, so ``G(z | y)`` learns to make images
whose attributes are ``y``. The method is a mixin (:class:`VARMixin`) on any GAN task that
implements ``adversarial_losses(trainer, real, fake) -> (logs, loss_g)``:

* ``vargan`` -- VAR on BEGAN (:class:`~spdnn.tasks.gan.began.BEGANTask`), as the thesis
  (App. I sec. 3.3.1);
* ``vardcgan`` -- VAR on DCGAN (:class:`~spdnn.tasks.gan.dcgan.DCGANTask`), the "versatile"
  claim (one class more).

Conditioning (:class:`AttributeConditional`, shared with the cBiGAN baseline,
:mod:`spdnn.tasks.gan.cbigan`):

* ``data.options.attribute`` names an attribute of :mod:`spdnn.data.attributes` (``A`` values
  per image in (0, 1)); items are ``(image, label, attribute float32 (A,))``, measured on
  each image by :mod:`spdnn.data.images`.
* **Code** (the authors' code, architectures.md sec. 4): ``z ~ U[-1, 1]`` and ``z[0:A]`` is
  overwritten with the attribute rescaled to the latent range, ``2 a - 1``. Training pairs each
  generated image with a real image of the batch: ``G`` is asked for the attributes of the
  batch's real images (one each), as the code does.

One iteration (the order of the authors' compiled step, made sequential):

1. ``fake = G(z | y)`` with ``y`` the real batch's attributes;
2. ``logs, L_adv = adversarial_losses(trainer, real, fake)`` updates the discriminator (BEGAN:
   also ``k_t``) and returns the generator's adversarial loss;
3. the regressor is updated on ``concat(fake.detach(), real)`` with targets ``concat(y, y)``
   (the code; ``options.regressor_data: real`` trains it on the real half only), with the
   regression loss below (App. I eq. 1 is the regressor's loss);
4. the generator is updated on ``alpha L_adv + beta L_R(R(G(z | y)), y)`` against the updated
   regressor (App. I eq. 15: ``L_g = theta L(G(z|y)) + zeta L_R``, theta 0.97, zeta 0.03:
   ``options.alpha``, ``options.beta``). ``L_R`` here averages over the generated half only
   (eq. 1 integrates over ``p_z``); the real half carries no gradient into ``G``.

**Regression loss** (thesis eq. 3.3 = App. I eq. 1, ``options.regression_loss: thesis``, the
default): ``L_R = mean(-log(1 - |y - R|))`` over samples and attributes, where ``R =
sigmoid(logit)`` is computed in float32 from the regressor's pre-activation and ``|y - R|``
is clamped to ``[0, 1 - REG_EPS]`` with ``REG_EPS = 1e-6``, so the loss stays finite (at most
``-log(1e-6) = 13.8``; the clamp's gradient is 0 where it binds). With ``y`` and ``R`` in
(0, 1) ``|y - R| < 1`` already; the clamp guards float rounding when the sigmoid saturates.
App. I prints ``1 - (y - R)`` without the absolute value and asks for inputs "kept in range";
the absolute value makes the minimum ``R = y`` from both sides. ``options.regression_loss:
code`` is the loss of the authors' code instead, ``mean(log(|y - R| + 1 + REG_EPS))``.

**Deviation from the thesis**: its regressor ends in ``tanh`` for landmarks in [-1, 1]
(Table 1); our attributes lie in (0, 1), so the regressor netspecs end in a **sigmoid**. A
netspec ending in ``tanh`` is read as ``(1 + tanh(logit)) / 2``, the same map into (0, 1).

* Models: ``generator``, ``discriminator`` (the GAN's), ``regressor`` (image -> ``A`` values;
  its optimiser Nesterov SGD 0.01 / 0.9 as App. I, per-model ``optim`` in the recipe).
* Metrics: the GAN's validation values, ``loss_r`` (regression loss on real and generated
  images), ``reg_mae_real`` / ``reg_mae_fake`` (the regressor's mean absolute error),
  ``attr_mae`` (mean ``|y - measure(G(z | y))|`` over the validation set's real attributes ``y``:
  does the generator obey the condition, by the fixed measure rather than the learnt
  regressor; per component as ``attr_mae_<name>`` when ``A > 1``; the best checkpoint has the
  lowest) and the kernel MMD.
* ``samples.png``: rows of one fixed noise each, the attribute swept from 0.1 to 0.9 along the
  columns, one block of rows per attribute component (the others at 0.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch.utils.data import Dataset

from spdnn.errors import SpecError
from spdnn.tasks.common import sample_grid
from spdnn.tasks.gan.base import GANOptions, head_size
from spdnn.tasks.gan.began import BEGANOptions, BEGANTask
from spdnn.tasks.gan.dcgan import DCGANTask
from spdnn.tasks.registry import register_task

REG_EPS = 1e-6
"""Clamp of the regression error: ``|y - R|`` is kept in ``[0, 1 - REG_EPS]``."""
SWEEP = (0.1, 0.9)
"""Range of the attribute sweep along the columns of ``samples.png``."""
SWEEP_COLS = 8


# --------------------------------------------------------------------------------------------
# attribute data and conditioning (VAR+GAN and cBiGAN)
# --------------------------------------------------------------------------------------------
def check_attribute_items(ds: Dataset, name: str) -> Dataset:
    """``ds`` itself, after checking that its items are ``(image, label, attribute (A,))``
    with ``A`` the size of attribute ``name`` (:func:`spdnn.data.images.image_datasets`
    attaches it for ``data.options.attribute``).

    Raises:
        SpecError: the items carry no attribute, or one of another size.
    """
    from spdnn.data.attributes import attribute_dim

    if len(ds) == 0:
        return ds
    first, a = ds[0], attribute_dim(name)
    if len(first) < 3 or tuple(first[2].shape) != (a,):
        got = tuple(first[2].shape) if len(first) >= 3 else "none"
        raise SpecError(f"the data items carry attributes of shape {got}; attribute '{name}' "
                        f"has {a} values", field="data.options.attribute",
                        hint="use an image data source (spdnn.data.images)")
    return ds


def unit_head(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Values in (0, 1) from a head's pre-activation ``(n, ...)`` -> ``(n, A)`` float32:
    ``sigmoid(logit)`` for a ``sigmoid`` head, ``(1 + tanh(logit)) / 2`` for a ``tanh`` head."""
    x = logits.float().reshape(logits.shape[0], -1)
    return (1 + torch.tanh(x)) / 2 if activation == "tanh" else torch.sigmoid(x)


class AttributeConditional:
    """Mixin of the attribute-conditional GAN tasks (put it before the
    :class:`~spdnn.tasks.gan.base.GANTask` subclass): ``data.options.attribute``, the latent
    code ``z[0:A] = 2 a - 1``, datasets with attributes, the attribute sweep of
    ``samples.png`` and ``spdnn predict``, ``attr_mae``.

    Raises:
        SpecError: no or an unknown ``data.options.attribute``; a generator latent with no
            more values than the attribute (``models.generator``).
    """

    conditional: ClassVar[str] = "attribute"
    default_best_metric = "val_attr_mae"
    default_best_mode = "min"

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        from spdnn.data.attributes import ATTRIBUTES, get_attribute

        options = recipe.data.options or {}
        name = options.get("attribute")
        if not isinstance(name, str):
            raise SpecError(f"task '{self.name}' generates images with given continuous "
                            "attributes; the recipe names none", field="data.options.attribute",
                            hint=f"add data: {{options: {{attribute: NAME}}}} with NAME one of: "
                            f"{', '.join(sorted(ATTRIBUTES))}")
        attr = get_attribute(name)
        self.attribute_name: str = name
        self.attribute_dim: int = attr.dim
        self.attribute_components: tuple[str, ...] = attr.components
        if self.z_dim <= attr.dim:
            raise SpecError(f"the generator reads {self.z_dim} latent values; attribute "
                            f"'{name}' takes {attr.dim} of them and leaves no noise",
                            field="models.generator",
                            hint=f"give the generator's input more than {attr.dim} features")

    def check_attribute_head(self, model: str) -> None:
        """Check that network ``model`` (a regressor or encoder of images) estimates the
        attribute: ``A`` outputs ending in ``sigmoid`` or ``tanh`` (:func:`unit_head` maps both
        into (0, 1), the attributes' range).

        Raises:
            SpecError: another output count or output activation (``models.<model>``).
        """
        out = head_size(self.netspecs[model])
        if out != self.attribute_dim:
            raise SpecError(f"the {model} has {out} outputs, attribute "
                            f"'{self.attribute_name}' has {self.attribute_dim} values",
                            field=f"models.{model}",
                            hint=f"end the {model} in a layer of {self.attribute_dim} outputs "
                            "or choose another data.options.attribute")
        if self.heads[model] not in ("sigmoid", "tanh"):
            raise SpecError(f"the {model} ends in '{self.heads[model]}'; its outputs "
                            "must lie in (0, 1) like the attributes", field=f"models.{model}",
                            hint=f"end the {model} in 'activation: sigmoid'")

    # -- data and code ------------------------------------------------------------------------
    def datasets(self):
        train, val = super().datasets()
        return (check_attribute_items(train, self.attribute_name),
                check_attribute_items(val, self.attribute_name))

    def batch_conditions(self, batch) -> dict[str, torch.Tensor]:
        """``{"attributes": (n, A)}`` of a batch's real images (the third item element)."""
        return {"attributes": batch[2]}

    def attribute_error(self, fake_unit: torch.Tensor, attributes: torch.Tensor
                        ) -> dict[str, float]:
        """``attr_mae``: mean ``|a - measure(image)|`` of generated images in [0, 1] ``(n, C,
        H, W)`` asked for ``attributes`` ``(n, A)``; per component as ``attr_mae_<name>``
        when ``A > 1``."""
        from spdnn.data.attributes import measure

        err = (measure(self.attribute_name, fake_unit) - attributes.float().to(fake_unit.device)
               ).abs()
        out = {"attr_mae": float(err.mean())}
        if self.attribute_dim > 1:
            for j, comp in enumerate(self.attribute_components):
                out[f"attr_mae_{comp}"] = float(err[:, j].mean())
        return out

    # -- sample grids -----------------------------------------------------------------------
    def sweep(self, n: int) -> tuple[torch.Tensor, int]:
        """The attributes of an ``n``-sample sweep grid and its row count: :data:`SWEEP_COLS`
        columns from 0.1 to 0.9 of one component (the others 0.5), ``max(1, n // (8 A))``
        rows per component; ``(rows * 8, A)``."""
        a_dim = self.attribute_dim
        per = max(1, n // (SWEEP_COLS * a_dim))
        values = torch.linspace(*SWEEP, SWEEP_COLS)
        rows = []
        for j in range(a_dim):
            block = torch.full((per, SWEEP_COLS, a_dim), 0.5)
            block[:, :, j] = values
            rows.append(block.reshape(-1, a_dim))
        return torch.cat(rows), per * a_dim

    def sample_conditions(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"attributes": self.sweep(n)[0]}

    @torch.no_grad()
    def samples(self, models, n: int, seed: int, device) -> torch.Tensor:
        """Sweep-grid images (:meth:`sweep`) in [0, 1]: one fixed noise per row, drawn with
        ``seed``, shared by the row's columns, so only the attribute changes along a row."""
        g = torch.Generator().manual_seed(seed)
        attrs, rows = self.sweep(n)
        noise = self.sample_noise(rows, g).repeat_interleave(SWEEP_COLS, 0)
        z = self.encode_attributes(noise, attrs).to(device)
        return self.to_unit(models["generator"](z)).cpu()

    def sweep_title(self, head: str, n: int) -> str:
        """Title of an ``n``-sample sweep grid: which attribute varies along the columns of
        which rows."""
        comps = self.attribute_components
        per = self.sweep(n)[1] // len(comps)
        parts = []
        for j, comp in enumerate(comps):
            rows = f"row {j + 1}" if per == 1 else f"rows {j * per + 1}-{(j + 1) * per}"
            others = ", ".join(f"{c} 0.5" for c in comps if c != comp)
            parts.append(f"{rows}: {comp} {SWEEP[0]} -> {SWEEP[1]}"
                         + (f" ({others})" if others else ""))
        return f"{head}: one fixed z per row, along the columns\n{'; '.join(parts)}"

    def sweep_labels(self, n: int) -> list[str]:
        """Row labels of an ``n``-sample sweep grid: the component each row sweeps."""
        per = self.sweep(n)[1] // self.attribute_dim
        return [comp for comp in self.attribute_components for _ in range(per)]

    def samples_figure(self, models, device, dest: Path) -> Path:
        """``samples.png``: the labelled 64-sample sweep grid (:meth:`sweep`)."""
        imgs = self.samples(models, 64, self.recipe.seed, device)
        return sample_grid(imgs, dest, self.sweep_title(self.recipe.name, 64), cols=SWEEP_COLS,
                           row_labels=self.sweep_labels(64))

    def predict_grid(self, models, n: int, seed: int, device, dest: Path) -> tuple[str, Path]:
        """``spdnn predict``'s grid: the labelled ``n``-sample sweep drawn with ``seed``."""
        imgs = self.samples(models, n, seed, device)
        sample_grid(imgs, dest, self.sweep_title(f"{self.recipe.name}, seed {seed}", n),
                    cols=SWEEP_COLS, row_labels=self.sweep_labels(n))
        return (f"{imgs.shape[0]} generated images {tuple(imgs.shape[1:])} sweeping "
                f"'{self.attribute_name}'", dest)


# --------------------------------------------------------------------------------------------
# the regression loss
# --------------------------------------------------------------------------------------------
def regression_loss(pred: torch.Tensor, target: torch.Tensor, form: str = "thesis"
                    ) -> torch.Tensor:
    """The VAR+GAN regression loss of predictions ``pred`` and targets ``target``, both
    ``(n, A)`` in (0, 1); a float32 scalar (mean over samples and attributes).

    * ``thesis`` (thesis eq. 3.3, App. I eq. 1): ``-log(1 - e)`` with ``e = |target - pred|``
      clamped to ``[0, 1 - REG_EPS]`` (``REG_EPS = 1e-6``), so it is finite everywhere (at most
      ``-log(REG_EPS)``);
    * ``code`` (the authors' attempt3NewLoss.py, architectures.md sec. 4): ``log(e + 1 +
      REG_EPS)``.
    """
    e = (target.float() - pred.float()).abs()
    if form == "code":
        return torch.log(e + 1 + REG_EPS).mean()
    return -torch.log1p(-e.clamp(0, 1 - REG_EPS)).mean()


class VARFields(GANOptions):
    """The VAR+GAN fields of ``options:`` (App. I eq. 15; architectures.md sec. 4)."""

    latent: Literal["normal", "uniform"] = "uniform"
    alpha: float = Field(default=0.97, ge=0, le=1e3)
    """Weight of the GAN's generator loss (App. I eq. 15: theta = 0.97)."""
    beta: float = Field(default=0.03, ge=0, le=1e3)
    """Weight of the regression loss in the generator's loss (App. I eq. 15: zeta = 0.03)."""
    regression_loss: Literal["thesis", "code"] = "thesis"
    """``thesis``: -log(1 - |y - R|) (eq. 3.3); ``code``: log(|y - R| + 1) (the authors' code)."""
    regressor_data: Literal["fake_and_real", "real"] = "fake_and_real"
    """What the regressor trains on: generated and real images with duplicated targets (the
    code) or the real images only."""


class VARMixin(AttributeConditional):
    """VAR+GAN on a GAN task (module docstring): put it before the GAN class, e.g.
    ``class VARBEGANTask(VARMixin, BEGANTask)``; the GAN class supplies
    ``adversarial_losses`` and :meth:`adversarial_validation` values.

    Raises:
        SpecError: (besides :class:`AttributeConditional`'s) the regressor's output size is not
            the attribute's ``A``, its input is not the generator's image, or its output
            activation is not ``sigmoid`` or ``tanh`` (``models.regressor``).
    """

    image_models: ClassVar[tuple[str, ...]] = ("discriminator", "regressor")

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        self.check_attribute_head("regressor")

    def regress(self, R, images: torch.Tensor) -> torch.Tensor:
        """``R(images)`` as attribute values ``(n, A)`` in (0, 1), float32 (:func:`unit_head`)."""
        return unit_head(R(images), self.heads["regressor"])

    def reg_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """:func:`regression_loss` in the form of ``options.regression_loss``."""
        return regression_loss(pred, target, self.options.regression_loss)

    def training_step(self, trainer, batch):
        real = self.to_net(batch[0])
        y = batch[2].float()
        z = self.latent(real.shape[0], real.device, attributes=y)
        with trainer.autocast():
            fake = trainer.train_models["generator"](z)
        logs, loss_adv = self.adversarial_losses(trainer, real, fake)
        R = trainer.train_models["regressor"]
        with trainer.autocast():
            if self.options.regressor_data == "real":
                pred, target = self.regress(R, real), y
            else:
                pred, target = self.regress(R, torch.cat([fake.detach(), real])), torch.cat([y, y])
        loss_r = self.reg_loss(pred, target)
        trainer.backward_step(loss_r, "regressor")
        with trainer.autocast():
            pred_fake = self.regress(R, fake)
        loss_reg = self.reg_loss(pred_fake, y)
        loss_g = self.options.alpha * loss_adv.float() + self.options.beta * loss_reg
        trainer.backward_step(loss_g, "generator")
        return {**logs, "loss_r": float(loss_r.detach()), "loss_g_adv": float(loss_adv.detach()),
                "loss_g_reg": float(loss_reg.detach()), "loss_g": float(loss_g.detach())}

    def validation_step(self, models, batch, metrics):
        real, y = batch[0], batch[2].float()
        z = self.latent(real.shape[0], real.device, attributes=y, generator=self._val_z)
        fake = models["generator"](z).float()
        x = self.to_net(real)
        out = self.adversarial_validation(models, x, fake)
        fake_unit = self.to_unit(fake)
        if metrics is not None:
            metrics.update(fake_unit, real)
        R = models["regressor"]
        pr, pf = self.regress(R, x), self.regress(R, fake)
        y = y.to(pr.device)
        out["loss_r"] = float(self.reg_loss(torch.cat([pf, pr]), torch.cat([y, y])))
        out["reg_mae_real"] = float((pr - y).abs().mean())
        out["reg_mae_fake"] = float((pf - y).abs().mean())
        return {**out, **self.attribute_error(fake_unit, y)}


class VARBEGANOptions(BEGANOptions, VARFields):
    """``options:`` of ``vargan``: BEGAN's (gamma, lambda_k, k_init) and VAR's."""


@register_task
class VARBEGANTask(VARMixin, BEGANTask):
    """VAR+GAN on BEGAN, as thesis App. I sec. 3.3.1 (module docstring)."""

    name = "vargan"
    model_names = ("generator", "discriminator", "regressor")
    Options = VARBEGANOptions
    logit_models = ("regressor",)


class VARDCGANOptions(VARFields):
    """``options:`` of ``vardcgan``."""


@register_task
class VARDCGANTask(VARMixin, DCGANTask):
    """VAR+GAN on DCGAN (BCE GAN loss): the same regressor on another GAN (module docstring)."""

    name = "vardcgan"
    model_names = ("generator", "discriminator", "regressor")
    Options = VARDCGANOptions
    logit_models = ("discriminator", "regressor")


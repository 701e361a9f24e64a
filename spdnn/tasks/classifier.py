"""The generic image classifier (thesis App. C = Bazrafkan et al., "Facial expression
classification ...", ICCE 2017): one network from an image to class logits, trained with the
mean categorical cross-entropy and Nesterov momentum (App. C sec. IV), on any image source of
:mod:`spdnn.data.images` (``folder`` for RaFD / CK+ / JAFFE laid out one folder per expression,
``mixture`` for the multi-database network of App. C sec. III.B).

* Model: ``net`` (``(N, C, H, W)`` images in [0, 1] -> ``(N, K)`` logits; a softmax output
  layer is read as logits, :func:`spdnn.tasks.gan.base.without_output_activation`). ``K`` must
  be the data's class count (checked before the first step).
* Loss: ``cross_entropy(logits, label)`` in float32.
* Traditional augmentation (``options.augment: traditional``; the baseline "B with traditional
  augmentation" of App. E sec. VI.B and App. C sec. II.C's "database expansion" by flips and
  small rotations): a random horizontal flip (``flip``, p = 0.5) and a random affine transform
  of at most ``rotation`` degrees and ``shift`` of the width / height, bilinear, zero padding,
  drawn per image on the fly by ``kornia.augmentation`` (:func:`traditional_augmentation`).
* Metrics: ``val_loss``, ``val_accuracy`` (micro), ``val_error`` = 1 - accuracy and
  ``val_balanced_accuracy`` (macro over classes), by torchmetrics' ``MulticlassAccuracy``; the
  best checkpoint has the highest ``val_accuracy`` (App. E sec. V: "the network that had the
  highest score on the validation set").
* ``spdnn evaluate`` (:meth:`ClassifierTask.report`): with ``options.eval_sources`` the error
  on the held-out test split (:func:`spdnn.data.images.test_dataset`, ``options.test_size``
  images) of every named source, one row of App. C Table 5.
* ``spdnn predict RUN image.png ...``: ``predictions.csv`` (file, class, probability).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from spdnn.errors import SpdnnError, SpecError
from spdnn.metrics import Metric
from spdnn.tasks.common import validate_options
from spdnn.tasks.gan.base import head_size, without_output_activation
from spdnn.tasks.registry import register_task
from spdnn.train.task import Task


class AugmentOptions(BaseModel):
    """Traditional augmentation settings (shared by the classifier and Smart Augmentation)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    flip: bool = True
    """Random horizontal flip, p = 0.5 (faces, clothes; off for digits, whose mirror images are
    no digits)."""
    rotation: float = Field(default=10.0, ge=0, le=180)
    """Largest rotation, degrees (uniform in [-rotation, rotation])."""
    shift: float = Field(default=0.1, ge=0, lt=1)
    """Largest translation, as a fraction of the width / height."""


class ClassifierOptions(AugmentOptions):
    """``options:`` of a ``classifier`` recipe."""

    augment: Literal["none", "traditional"] = "none"
    """``traditional``: flips / shifts / rotations on the training images (module docstring)."""
    eval_sources: list[str] = Field(default_factory=list)
    """Sources whose test split :meth:`ClassifierTask.report` evaluates (App. C Table 5)."""
    test_size: int = Field(default=300, ge=1, le=10**7)
    """Images in each held-out test split of :meth:`ClassifierTask.report`."""


def traditional_augmentation(options: AugmentOptions) -> torch.nn.Module:
    """A ``kornia.augmentation`` pipeline for ``(N, C, H, W)`` float images in [0, 1]: a random
    horizontal flip (p = 0.5, if ``options.flip``) and a random affine transform (rotation
    uniform in +-``options.rotation`` degrees, translation up to ``options.shift`` of the size;
    bilinear, zeros outside), drawn per image from torch's global generator (so the trainer's
    seed and checkpointed RNG state make runs repeatable). Output: same shape, in [0, 1]."""
    import kornia.augmentation as K

    steps = []
    if options.flip:
        steps.append(K.RandomHorizontalFlip(p=0.5))
    if options.rotation or options.shift:
        steps.append(K.RandomAffine(degrees=options.rotation,
                                    translate=(options.shift, options.shift), p=1.0,
                                    padding_mode="zeros"))
    return K.AugmentationSequential(*steps) if steps else torch.nn.Identity()


class ClassAccuracy(Metric):
    """Accuracy over a pass: ``update(logits (N, K), labels (N,))``; ``compute()`` gives
    ``accuracy`` (micro), ``error`` (1 - accuracy) and ``balanced_accuracy`` (mean of the
    per-class recalls of the classes present), by torchmetrics' ``MulticlassAccuracy``."""

    def __init__(self, num_classes: int) -> None:
        from torchmetrics.classification import MulticlassAccuracy

        self.micro = MulticlassAccuracy(num_classes, average="micro")
        self.macro = MulticlassAccuracy(num_classes, average="macro")

    def update(self, pred, target, mask=None) -> None:
        p, t = pred.detach().float().cpu(), target.detach().long().cpu()
        self.micro.update(p, t)
        self.macro.update(p, t)

    def compute(self) -> dict[str, float]:
        acc = float(self.micro.compute())
        return {"accuracy": acc, "error": 1.0 - acc, "balanced_accuracy": float(self.macro.compute())}

    def reset(self) -> None:
        self.micro.reset()
        self.macro.reset()


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, dataset, device: torch.device | str = "cpu",
                        batch_size: int = 256) -> dict[str, float]:
    """``{"error": fraction in [0, 1] misclassified, "loss": mean cross-entropy}`` of ``model``
    (images -> logits ``(N, K)``) on ``dataset`` (a :class:`spdnn.data.images.TensorImages`:
    ``images`` ``(N, C, H, W)``, ``labels`` ``(N,)``), in eval mode (restored afterwards)."""
    was = model.training
    model.eval()
    wrong, loss, n = 0, 0.0, 0
    try:
        for s in range(0, len(dataset), batch_size):
            x = dataset.images[s:s + batch_size].to(device)
            y = dataset.labels[s:s + batch_size].to(device)
            logits = model(x).float()
            wrong += int((logits.argmax(1) != y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            n += len(y)
    finally:
        model.train(was)
    return {"error": wrong / max(1, n), "loss": loss / max(1, n)}


class ImageClassifierBase(Task):
    """What the classifier and Smart Augmentation share: the classifier network ``B`` read as
    logits (:attr:`classifier_model`), the image data, the class count check, the loss, the
    accuracy metrics and the validation step (B alone, App. E: "network A is cut out ... and
    network B is used in the test process")."""

    classifier_model: ClassVar[str] = "net"
    default_best_metric = "val_accuracy"
    default_best_mode = "max"
    summary_metrics = ("val_accuracy", "val_error", "val_balanced_accuracy", "val_loss")

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        name = self.classifier_model
        spec = netspecs[name]
        if len(spec.inputs) != 1 or len(spec.inputs[0].shape) != 3:
            raise SpecError("the classifier must take one image input (channels, height, width)",
                            field=f"models.{name}")
        self.image_shape: tuple[int, int, int] = tuple(spec.inputs[0].shape)
        self._logit_spec, _ = without_output_activation(spec)
        self.num_classes = head_size(spec)
        self._data: tuple | None = None

    def module_netspec(self, name: str):
        return self._logit_spec if name == self.classifier_model else self.netspecs[name]

    def datasets(self):
        """The recipe's image data (cached on the task), its class count checked against the
        classifier's outputs.

        Raises:
            SpecError: the classifier has a different number of outputs than the data classes.
        """
        if self._data is None:
            from spdnn.data.images import image_datasets

            train, val = image_datasets(self.recipe.data, self.image_shape)
            k = len(train.class_names)
            if k != self.num_classes:
                raise SpecError(f"the classifier has {self.num_classes} outputs, the data "
                                f"'{self.recipe.data.source}' has {k} classes "
                                f"({', '.join(train.class_names[:10])})",
                                field=f"models.{self.classifier_model}",
                                hint=f"end the classifier in a layer of {k} outputs")
            self.class_names = list(train.class_names)
            self._data = (train, val)
        return self._data

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean categorical cross-entropy of logits ``(N, K)`` and labels ``(N,)``, float32."""
        return F.cross_entropy(logits.float(), labels.long())

    def new_metrics(self):
        return ClassAccuracy(self.num_classes)

    def validation_step(self, models, batch, metrics):
        x, y = batch[0], batch[1]
        logits = models[self.classifier_model](x).float()
        if metrics is not None:
            metrics.update(logits, y)
        return {"loss": float(self.loss(logits, y))}

    def prediction_outputs(self, inputs, outdir, options):
        """``predictions.csv`` in ``outdir``."""
        return [outdir / "predictions.csv"]

    def predict_files(self, models, inputs, outdir, device, options):
        """Classify image files: ``predictions.csv`` with the file, the predicted class and its
        softmax probability (images brought to the input shape as the data sources do:
        :func:`spdnn.data.images.fit_images`).

        Raises:
            SpdnnError: no inputs, or an unreadable image (naming it).
        """
        from spdnn.data.images import class_names_of, fit_images, read_image

        if not inputs:
            raise SpdnnError("no input images given", hint="spdnn predict RUN image.png ...")
        try:
            names = class_names_of(self.recipe.data)
        except SpdnnError:  # the training data is not here: class indices instead
            names = [str(k) for k in range(self.num_classes)]
        rows = []
        model = models[self.classifier_model]
        for path in inputs:
            try:
                x = fit_images(read_image(Path(path)), self.image_shape)
            except SpdnnError as e:
                raise SpdnnError(e.message, file=str(path)) from None
            with torch.no_grad():
                p = torch.softmax(model(x.to(device)).float(), 1)[0].cpu()
            k = int(p.argmax())
            rows.append((str(path), names[k] if k < len(names) else str(k), f"{float(p[k]):.4f}"))
        import io

        from spdnn.io import write_atomic

        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([("file", "class", "probability"), *rows])
        outdir.mkdir(parents=True, exist_ok=True)
        dest = self.prediction_outputs(inputs, outdir, options)[0]
        write_atomic(dest, buf.getvalue())
        return [(f"{len(rows)} image(s) classified", dest)]


@register_task
class ClassifierTask(ImageClassifierBase):
    """A classifier on image data (see the module docstring)."""

    name = "classifier"
    model_names = ("net",)

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        self.options: ClassifierOptions = validate_options(ClassifierOptions,
                                                           getattr(recipe, "options", {}))
        self._augment = (traditional_augmentation(self.options)
                         if self.options.augment == "traditional" else None)

    def training_step(self, trainer, batch):
        x, y = batch[0], batch[1]
        if self._augment is not None:
            with torch.no_grad():
                x = self._augment(x).clamp_(0, 1)
        with trainer.autocast():
            logits = trainer.train_models["net"](x)
        loss = self.loss(logits, y)
        trainer.backward_step(loss, "net")
        return {"loss": float(loss.detach())}

    def report(self, models, outdir: Path, device) -> dict[str, float]:
        """The error on the held-out test split of each of ``options.eval_sources`` (each
        source split with the recipe's data sizes, seed and stratify), as ``error_<source>``:
        one row of App. C Table 5 for this network.

        Raises:
            SpdnnError: a source that cannot be split so (sizes, classes), or whose classes
                differ from the training data's.
        """
        from spdnn.data.images import test_dataset

        out: dict[str, float] = {}
        names = self.datasets()[0].class_names
        for src in self.options.eval_sources:
            data = self.recipe.data.model_copy(update={"source": src, "root": None, "options": {
                k: v for k, v in self.recipe.data.options.items() if k == "stratify"}})
            test = test_dataset(data, self.image_shape, self.options.test_size)
            if test.class_names != names:
                raise SpdnnError(f"source '{src}' has the classes {test.class_names}, the "
                                 f"network was trained on {names}", field="options.eval_sources")
            out[f"error_{src}"] = evaluate_classifier(models["net"], test, device)["error"]
        return out

"""Smart Augmentation (thesis App. E = Lemley, Bazrafkan & Corcoran, "Smart Augmentation:
Learning an Optimal Data Augmentation Strategy", IEEE Access 2017): a network A learns to blend
``k`` images of one class into a new sample of that class, trained together with the classifier
B it feeds; A is discarded at test time and B alone is evaluated.

Per training image ``x`` of class ``c`` (the batch's images are the paper's targets):

1. ``k`` other images of class ``c`` are drawn at random, without replacement and never ``x``
   itself ("this image should not be any of those images selected in step 1", sec. V.A), and
   stacked as ``k`` inputs of network A (``img0`` -> channel 0, ...);
2. ``L_A = MSE(A(img0, ..., img_k-1), x)``, the mean squared pixel error to ``x``;
3. B sees A's output and ``x`` "as separate inputs", both labelled ``c``: ``L_B`` is the mean
   categorical cross-entropy over the ``2 n`` images of a batch of ``n``;
4. the whole model minimises ``alpha * L_A + beta * L_B`` (sec. III.B: ``f(L_A, L_B; alpha,
   beta)``, "a linear combination"): one Nesterov-SGD step over the parameters of A and B
   together (the gradient of ``L_B`` reaches A through its output).

``options.per_class: true`` gives one network A per class (sec. V.B, Fig. 10): A_c blends the
images of class ``c`` only, and ``L_A`` is the mean over the classes in the batch of each A_c's
MSE on its own samples ("it is important to separate out the loss functions for each network").
The copies share the netspec; copy ``c`` is initialised from seed ``recipe.seed + c``.

Hyper-parameters: lr 0.005, momentum 0.9, Nesterov (sec. V.B: "using a learning rate above
0.005 led to the dying ReLU problem"; sec. V.D; sec. V.A used 0.01 with one network A), taken
from ``models.network_b.optim`` or the recipe's ``optim`` (A joins B's optimizer; a
``models.network_a.optim`` sets A's learning rate, momentum and weight decay as a parameter
group). ``alpha`` / ``beta``: the paper's Table 1 (not in the text) varies them; the defaults
0.3 / 0.7 are the third-party re-implementation's (architectures.md sec. 8 (a), a hint only).

Logged: ``loss`` = ``alpha L_A + beta L_B`` (the paper's Fig. 12 plots this combined training
loss), ``loss_a``, ``loss_b`` and ``loss_b_real`` (B's cross-entropy on the real images alone,
the quantity comparable with a classifier trained without A). Validation (and the best
checkpoint, ``val_accuracy``) is B alone on real images, as the classifier task
(:class:`spdnn.tasks.classifier.ImageClassifierBase`). Figures: ``blends.png``, rows of ``k``
same-class inputs and A's output (the paper's Figs. 13-14).

Errors (one line, exit 2): a class with fewer than ``k + 1`` training images (``k`` inputs and
a different target); network A's inputs or output not of B's input shape.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from spdnn.errors import SpecError
from spdnn.tasks.classifier import AugmentOptions, ImageClassifierBase, traditional_augmentation
from spdnn.tasks.common import validate_options
from spdnn.tasks.registry import register_task
from spdnn.train.task import make_optimizer


class SmartAugmentationOptions(AugmentOptions):
    """``options:`` of a ``smart_augmentation`` recipe (flip / rotation / shift: the
    traditional augmentation used with ``traditional: true``)."""

    alpha: float = Field(default=0.3, ge=0)
    """Weight of network A's MSE ``L_A``."""
    beta: float = Field(default=0.7, gt=0)
    """Weight of network B's cross-entropy ``L_B``."""
    per_class: bool = False
    """One network A per class (App. E sec. V.B, Fig. 10) instead of one for all (Fig. 9)."""
    traditional: bool = False
    """Also apply traditional augmentation to the real images (App. E experiments 20 and 22)."""
    blend_rows: int = Field(default=8, ge=1, le=64)
    """Rows of ``blends.png``."""


class IndexedImages(torch.utils.data.Dataset):
    """A labelled image dataset whose items also carry their index: ``(image, label, index
    int64 ())``, so a training step knows which image is its target."""

    def __init__(self, base) -> None:
        self.base = base
        self.images, self.labels, self.class_names = base.images, base.labels, base.class_names

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, label = self.base[i][:2]
        return image, label, torch.tensor(i, dtype=torch.long)


class PerClassNetworkA(nn.Module):
    """One network A per class (App. E Fig. 10): ``forward(labels (n,), img0, ...)`` runs copy
    ``c`` on the samples of class ``c``; returns ``(n, C, H, W)``."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, labels: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        out = None
        for c in labels.unique().tolist():
            sel = labels == c
            part = self.nets[c](*(x[sel] for x in inputs))
            if out is None:
                out = part.new_zeros((len(labels), *part.shape[1:]))
            out[sel] = part
        return out


def sample_partners(members: torch.Tensor, position: torch.Tensor, labels: torch.Tensor,
                    index: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(n, k)`` of ``k`` distinct training images of each target's class, never the
    target itself, drawn uniformly at random (torch's generator of the device).

    Args:
        members: ``(K, M)`` int64, the training indices of each class, padded with -1.
        position: ``(N,)`` int64, each training image's column in its class row of ``members``.
        labels: ``(n,)`` the targets' classes; ``index``: ``(n,)`` their training indices.
        k: images per blend; every class in ``labels`` must have at least ``k + 1`` members.
    """
    rows = members[labels]                                    # (n, M)
    scores = torch.rand(rows.shape, device=rows.device)
    scores = scores.masked_fill(rows < 0, -1.0)
    scores[torch.arange(len(labels), device=rows.device), position[index]] = -1.0
    return rows.gather(1, scores.topk(k, dim=1).indices)


@register_task
class SmartAugmentationTask(ImageClassifierBase):
    """Network A + classifier B trained jointly (see the module docstring)."""

    name = "smart_augmentation"
    model_names = ("network_a", "network_b")
    classifier_model: ClassVar[str] = "network_b"

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        self.options: SmartAugmentationOptions = validate_options(
            SmartAugmentationOptions, getattr(recipe, "options", {}))
        a = netspecs["network_a"]
        self.k = len(a.inputs)
        from spdnn.shapes import infer

        out = tuple(list(infer(a).output_shapes().values())[0])
        for inp in a.inputs:
            if tuple(inp.shape) != self.image_shape:
                raise SpecError(f"network A's input '{inp.name}' has shape {tuple(inp.shape)}, "
                                f"network B reads {self.image_shape}", field="models.network_a",
                                hint="give network A k inputs of network B's image shape")
        if out != self.image_shape:
            raise SpecError(f"network A makes images of shape {out}, network B reads "
                            f"{self.image_shape}", field="models.network_a",
                            hint="end network A in one image of network B's input shape")
        self._augment = (traditional_augmentation(self.options) if self.options.traditional
                         else None)
        self._pool: torch.Tensor | None = None
        self._indexed: tuple | None = None

    # -- data ---------------------------------------------------------------------------------
    def datasets(self):
        """Training items ``(image, label, index)`` (:class:`IndexedImages`) and validation
        items ``(image, label)``; the class table network A samples its inputs from.

        Raises:
            SpecError: a class with fewer than ``k + 1`` training images (``data.train_size``).
        """
        if self._indexed is None:
            train, val = super().datasets()
            counts = torch.bincount(train.labels, minlength=self.num_classes)
            for c, n in enumerate(counts.tolist()):
                if n < self.k + 1:
                    raise SpecError(
                        f"class '{train.class_names[c]}' has {n} training image(s); network A "
                        f"blends k = {self.k} and needs k + 1 = {self.k + 1} of every class (k "
                        f"inputs and a different target, App. E sec. V.A)",
                        field="data.train_size", hint="train on more images per class (with "
                        "data.options.stratify: true), or give network A fewer inputs")
            m = int(counts.max())
            members = torch.full((self.num_classes, m), -1, dtype=torch.long)
            position = torch.empty(len(train), dtype=torch.long)
            for c in range(self.num_classes):
                idx = (train.labels == c).nonzero().flatten()
                members[c, :len(idx)] = idx
                position[idx] = torch.arange(len(idx))
            self._members, self._position = members, position
            self._indexed = (IndexedImages(train), val)
        return self._indexed

    def _on(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The training images, class table and positions on ``device`` (moved once)."""
        if self._pool is None or self._pool.device != torch.device(device):
            train = self.datasets()[0]
            self._pool = train.images.to(device)
            self._members_d = self._members.to(device)
            self._position_d = self._position.to(device)
        return self._pool, self._members_d, self._position_d

    # -- models -------------------------------------------------------------------------------
    def build_models(self, nets):
        """With ``per_class``: ``network_a`` becomes :class:`PerClassNetworkA` of one copy per
        class (copy ``c`` re-initialised from seed ``recipe.seed + c``)."""
        if not self.options.per_class:
            return nets
        copies = [nets["network_a"]]
        for c in range(1, self.num_classes):
            net = copy.deepcopy(nets["network_a"])
            torch.manual_seed(self.recipe.seed + c)
            for mod in net.modules():
                if mod is not net and hasattr(mod, "reset_parameters"):
                    mod.reset_parameters()
            copies.append(net)
        return {**nets, "network_a": PerClassNetworkA(copies)}

    def configure_optimizers(self, models):
        """One optimizer over A and B (the combined loss trains "the whole model", App. E
        sec. V.A), under B's name, with A's parameters as a second group (its own ``optim``
        lr / momentum / weight decay when the recipe gives network A one)."""
        ob, oa = self.recipe.model_optim("network_b"), self.recipe.model_optim("network_a")
        group = {"params": list(models["network_a"].parameters()), "lr": oa.lr,
                 "weight_decay": oa.weight_decay}
        if ob.name == "sgd":
            group["momentum"] = oa.momentum
        return {"network_b": make_optimizer(ob, [{"params": list(models["network_b"].parameters())},
                                                 group])}

    def blend(self, network_a, labels: torch.Tensor, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Network A's output ``(n, C, H, W)`` for ``k`` input batches of class ``labels``."""
        if self.options.per_class:
            return network_a(labels, *inputs)
        return network_a(*inputs)

    # -- steps ----------------------------------------------------------------------------------
    def training_step(self, trainer, batch):
        x, y, index = batch[0], batch[1], batch[2]
        pool, members, position = self._on(x.device)
        partners = sample_partners(members, position, y, index, self.k)  # (n, k)
        inputs = [trainer.to_device(pool[partners[:, j]]) for j in range(self.k)]
        if self._augment is not None:
            with torch.no_grad():
                x = self._augment(x).clamp_(0, 1)
        A, B = trainer.train_models["network_a"], trainer.train_models["network_b"]
        with trainer.autocast():
            out = self.blend(A, y, inputs)
            logits = B(torch.cat([out, x]))
        out = out.float()
        if self.options.per_class:
            loss_a = torch.stack([F.mse_loss(out[y == c], x[y == c].float())
                                  for c in y.unique().tolist()]).mean()
        else:
            loss_a = F.mse_loss(out, x.float())
        loss_b = self.loss(logits, torch.cat([y, y]))
        loss = self.options.alpha * loss_a + self.options.beta * loss_b
        trainer.backward_step(loss, "network_b")
        with torch.no_grad():
            real = self.loss(logits[len(y):], y)
        return {"loss": float(loss.detach()), "loss_a": float(loss_a.detach()),
                "loss_b": float(loss_b.detach()), "loss_b_real": float(real)}

    # -- outputs --------------------------------------------------------------------------------
    @torch.no_grad()
    def blends(self, models, rows: int, seed: int, device) -> tuple[torch.Tensor, list[str]]:
        """``(rows * (k + 1), C, H, W)`` images in [0, 1]: per row ``k`` training images of one
        class (classes in turn, drawn with ``seed``) then A's blend of them (clamped for
        display), and the row labels (class names)."""
        train = self.datasets()[0]
        g = torch.Generator().manual_seed(seed)
        tiles, names = [], []
        A = models["network_a"]
        for r in range(rows):
            c = r % self.num_classes
            row = self._members[c][self._members[c] >= 0]
            pick = row[torch.randperm(len(row), generator=g)[:self.k]]
            ins = [train.images[i:i + 1].to(device) for i in pick.tolist()]
            out = self.blend(A, torch.tensor([c], device=device), ins).float().cpu()
            tiles += [t.cpu() for t in ins] + [out.clamp(0, 1)]
            names.append(train.class_names[c])
        return torch.cat(tiles), names

    def figures(self, models, batch, outdir: Path) -> list[Path]:
        from spdnn.tasks.common import sample_grid

        imgs, names = self.blends(models, self.options.blend_rows, self.recipe.seed,
                                  batch[0].device)
        title = f"{self.recipe.name}\n{self.k} inputs | A's blend"
        return [sample_grid(imgs, outdir / "blends.png", title, cols=self.k + 1,
                            row_labels=names)]

"""The offline GAN evaluation suite (``spdnn evaluate``, ``spdnn compare``): FID on a domain
feature extractor, conditional accuracy by an independent classifier, diversity within and
between classes (thesis App. G, "Appendix A"), and the attribute error of attribute-conditional
generators (App. I).

No Inception or LPIPS weights can be downloaded, so every learned measure here uses a network
trained once on the run's own **real training split** and cached in the evaluation folder:

* **Referee** (FID features): :func:`referee_netspec`, two conv-BN-ReLU pairs, each followed
  by 2x2 max pooling (16, 16, then 32, 64 channels), global average pooling to 64 features, a linear layer
  to the classes. FID (Heusel et al. 2017) between generated and real validation images is
  torchmetrics' :class:`~torchmetrics.image.fid.FrechetInceptionDistance` on those 64-d
  penultimate features (``feature=<module with num_features>``; no torch-fidelity needed).
  ``fid_real_floor`` is the FID between two disjoint halves of the real validation images: what
  a perfect generator scores at that sample count (FID is biased upwards by ``~1/n``).
* **Judge** (conditional accuracy): :func:`judge_netspec`, a different architecture (5x5
  convolutions without batch norm, a flattened dense head with dropout) and a different seed
  from the referee and from any VAC+GAN classifier (those start from the recipe seed). It labels
  ``eval_samples`` images generated for equal counts of each requested class; the confusion
  matrix (rows: requested, columns: predicted, normalised per row) is ``confusion.png``, as the
  confusion matrices of thesis App. H Figs. 8-9.
* **Diversity** (App. G sec. 3 and its "Appendix A", Figs. 5-6): UQI (Wang & Bovik 2002), SSIM
  (Wang et al. 2004), both torchmetrics' with a Gaussian window 11, sigma 1.5 (smaller for
  images under 22 pixels: :func:`window`), data range 1, averaged where the window lies inside
  the image (as scikit-image and the authors' reference code), MSE, RMSE and MAE between random pairs of images of the
  same class (``within``) and of different classes (``between``), averaged over the pairs,
  for generated images (``div_*``) and for real validation images (``real_*``, the reference).
  Lower UQI/SSIM and higher MSE/RMSE/MAE mean more varied samples. ``diversity.png``. For
  an attribute-conditional generator the groups are requests instead of classes: 20 real
  validation attributes, each generated 10 times with different noise; ``within`` compares
  images made for the same attribute (the variation App. I sec. 3.4 claims for VAR+GAN over
  cBiGAN), ``between`` images made for different attributes.
* **Attribute error** (attribute-conditional tasks, App. I): images generated for the real
  validation attributes are measured again with :func:`spdnn.data.attributes.measure`;
  ``attr_mae`` is the mean ``|requested - measured|``, ``attr_mae_chance`` the same for
  requests shuffled against real images (what ignoring the request costs).

Cache: ``<eval dir>/referee_<hash>.pt`` and ``judge_<hash>.pt``, the hash over the netspec
(as dumped), the data section (source, root, sizes, seed, options), a digest of the training
images and labels, the image shape, the training budget and the seed; written with
:func:`spdnn.io.save_checkpoint` (atomic), read with :func:`spdnn.io.load_checkpoint`
(``weights_only=True``). A changed key trains a new classifier; an unreadable file is replaced.

Cost (2 shared CPU cores, 28x28 MNIST, 4,000 training / 1,000 validation images,
``eval_samples`` 1000): about 26 s the first time, nearly all of it training the referee and
the judge (400 Adam steps of 64 each), about 2 s once they are cached.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spdnn.errors import SpdnnError
from spdnn.io import save_figure

REFEREE_STEPS = 400
"""Adam steps (batch :data:`CLASSIFIER_BATCH`) that train the FID referee."""
JUDGE_STEPS = 400
"""Adam steps that train the conditional-accuracy judge."""
CLASSIFIER_BATCH = 64
CLASSIFIER_LR = 2e-3
DIVERSITY_PAIRS = 200
"""Random pairs per diversity group (within, between; generated, real)."""
REFEREE_SEED = 0x5EED_F1D
"""Seed of the referee's initialisation and batches (fixed: every run on the same data gets
the same referee, so FIDs of different runs compare)."""
JUDGE_SEED = 0x5EED_1D6E
"""Seed of the judge (differs from the referee's and from any recipe's usual seeds)."""
EVAL_SEED = 0x5EED_E7A1
"""Seed of the real-image subsets and the diversity pairs."""
FEATURES = 64
"""Width of the referee's penultimate layer (the FID features)."""
CACHE_VERSION = 1
"""Bumped when training or the netspecs change in a way the key does not see."""
REFEREE_CHANNELS = ((16, 16), (32, FEATURES))
"""Channels of the referee's two pairs of conv-BN-ReLU layers (the last gives the features)."""
JUDGE_WIDTHS = (16, 32)
"""Channels of the judge's two 5x5 convolutions."""
MEASURES = ("uqi", "ssim", "mse", "rmse", "mae")
GEN_CHUNK = 256


# --------------------------------------------------------------------------------------------
# the two classifiers
# --------------------------------------------------------------------------------------------
def _input(image_shape: tuple[int, int, int]) -> dict[str, Any]:
    c, h, w = (int(v) for v in image_shape)
    return {"name": "image", "channels": c, "height": h, "width": w}


def _shrink(image_shape: tuple[int, int, int]) -> tuple[list[dict], int]:
    """An average pool that brings images over 32 pixels to 32 or less (``(layers, side)``)."""
    side = min(image_shape[1:])
    f = max(1, side // 32)
    if f == 1:
        return [], side
    return [{"name": "shrink", "op": "AvgPool2d", "kernel_size": f}], side // f


def referee_netspec(image_shape: tuple[int, int, int], num_classes: int):
    """The FID feature extractor for images ``(C, H, W)`` and ``num_classes`` classes.

    Layers: [an average pool to at most 32 pixels] -> (conv 3x3 16 + BN, ReLU) x2 -> max pool 2
    -> conv 3x3 32 + BN, ReLU -> conv 3x3 64 + BN, ReLU -> max pool 2 -> global average pool
    (output ``features``, 64 values) -> linear to ``num_classes`` (output ``logits``). A max pool is left out where
    the map is under 4 pixels. Paddings ``same``.

    Raises:
        SpdnnError: fewer than two classes (``data.source``).
    """
    from spdnn import spec as S

    _need_classes(num_classes)
    layers, side = _shrink(image_shape)
    for b, pair in enumerate(REFEREE_CHANNELS, start=1):
        for i, ch in enumerate(pair, start=1):
            layers.append({"name": f"conv{b}_{i}", "op": "Conv2d", "kernel_size": 3,
                           "padding": "same", "out_channels": ch, "batch_norm": True,
                           "activation": "relu"})
        if side >= 4:
            layers.append({"name": f"pool{b}", "op": "MaxPool2d", "kernel_size": 2})
            side //= 2
    layers += [{"name": "gap", "op": "GlobalAvgPool2d"},
               {"name": "fc", "op": "Linear", "out_features": int(num_classes)}]
    return S.from_data({
        "name": "gan_eval_referee",
        "description": f"FID feature extractor: {FEATURES} features, {num_classes} classes",
        "input": _input(image_shape), "layers": layers,
        "outputs": [{"name": "features", "from": "gap"}, {"name": "logits", "from": "fc"}]})


def judge_netspec(image_shape: tuple[int, int, int], num_classes: int):
    """The conditional-accuracy classifier (independent of :func:`referee_netspec`).

    Layers: [an average pool to at most 32 pixels] -> conv 5x5 16, ReLU -> max pool 2 -> conv
    5x5 32, ReLU -> max pool 2 -> flatten -> dropout 0.25 -> dense 128, ReLU -> dense
    ``num_classes`` (logits). No batch norm. A max pool is left out where the map is under 4
    pixels. Paddings ``same``.

    Raises:
        SpdnnError: fewer than two classes.
    """
    from spdnn import spec as S

    _need_classes(num_classes)
    layers, side = _shrink(image_shape)
    for b, ch in enumerate(JUDGE_WIDTHS, start=1):
        layers.append({"name": f"conv{b}", "op": "Conv2d", "kernel_size": 5, "padding": "same",
                       "out_channels": ch, "activation": "relu"})
        if side >= 4:
            layers.append({"name": f"pool{b}", "op": "MaxPool2d", "kernel_size": 2})
            side //= 2
    layers += [{"name": "flat", "op": "Flatten"}, {"name": "drop", "op": "Dropout", "p": 0.25},
               {"name": "fc1", "op": "Linear", "out_features": 128, "activation": "relu"},
               {"name": "fc2", "op": "Linear", "out_features": int(num_classes)}]
    return S.from_data({
        "name": "gan_eval_judge",
        "description": f"conditional-accuracy judge, {num_classes} classes",
        "input": _input(image_shape), "layers": layers,
        "outputs": [{"name": "logits", "from": "fc2"}]})


def _need_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise SpdnnError(f"the GAN evaluation trains its feature extractor as a classifier and "
                         f"needs labelled data with at least two classes, got {num_classes}",
                         field="data.source", hint="evaluate on a labelled image source "
                         "(digits, mnist, fashion_mnist, faces, folder)")


CL = torch.channels_last
"""Memory layout of the classifiers and their inputs (faster convolutions on CPU)."""


def _batch(images: torch.Tensor, device) -> torch.Tensor:
    return images.to(device).float().contiguous(memory_format=CL)


def _logits(out) -> torch.Tensor:
    return (out["logits"] if isinstance(out, dict) else out).float()


@dataclass
class Classifier:
    """A classifier of the suite: the module (eval mode, on the device), its accuracy on the
    real validation split, the cache file and whether this call trained it."""

    module: nn.Module
    accuracy: float
    path: Path
    trained: bool


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def cache_key(kind: str, spec, data_key: dict[str, Any], train, steps: int, seed: int) -> dict:
    """What a cached classifier depends on (see the module docstring), as plain data."""
    from spdnn import spec as S

    return {"version": CACHE_VERSION, "kind": kind, "netspec": S.dump(spec), "data": data_key,
            "train_digest": _digest(train.images, train.labels),
            "image_shape": list(train.images.shape[1:]), "steps": int(steps),
            "batch": CLASSIFIER_BATCH, "lr": CLASSIFIER_LR, "seed": int(seed)}


def trained_classifier(kind: str, spec, train, val, steps: int, seed: int, cache_dir: Path,
                       data_key: dict[str, Any], device) -> Classifier:
    """The classifier ``spec`` trained on ``train`` (``.images`` ``(N, C, H, W)`` in [0, 1],
    ``.labels`` ``(N,)``) with Adam for ``steps`` steps of :data:`CLASSIFIER_BATCH`, seeded by
    ``seed`` (the global RNG is left as it was), or read from ``cache_dir/<kind>_<hash>.pt``
    when a file with the same key exists. Its accuracy is measured on ``val``.

    Raises:
        SpdnnError: the cache file cannot be written.
    """
    from spdnn.codegen.build import build_module
    from spdnn.io import CheckpointError, load_checkpoint, save_checkpoint

    key = cache_key(kind, spec, data_key, train, steps, seed)
    text = json.dumps(key, sort_keys=True)
    path = Path(cache_dir) / f"{kind}_{hashlib.sha256(text.encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        try:
            st = load_checkpoint(path, run=False)
            if st.get("key") == text:
                with torch.random.fork_rng(devices=[]):  # initialisation draws, then replaced
                    module = build_module(spec)
                module.load_state_dict(st["state_dict"])
                return Classifier(module.to(device, memory_format=CL).eval(),
                                  float(st["val_accuracy"]), path, False)
        except (CheckpointError, KeyError, RuntimeError):
            pass  # unreadable or foreign: train it again and replace the file
    module = _fit(spec, train.images, train.labels, steps, seed, device)
    acc = accuracy(module, val.images, val.labels, device)
    save_checkpoint({"key": text, "kind": kind, "val_accuracy": acc,
                     "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()}},
                    path)
    return Classifier(module, acc, path, True)


def _fit(spec, images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int,
         device) -> nn.Module:
    from spdnn.codegen.build import build_module

    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        torch.manual_seed(seed)
        net = build_module(spec).to(device, memory_format=CL).train()
        opt = torch.optim.Adam(net.parameters(), lr=CLASSIFIER_LR)
        g = torch.Generator().manual_seed(seed)
        n, bs = len(images), min(CLASSIFIER_BATCH, len(images))
        order, pos = torch.randperm(n, generator=g), 0
        for _ in range(steps):
            if pos + bs > n:
                order, pos = torch.randperm(n, generator=g), 0
            idx = order[pos:pos + bs]
            pos += bs
            x, y = _batch(images[idx], device), labels[idx].to(device)
            loss = F.cross_entropy(_logits(net(x)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def predict(module: nn.Module, images: torch.Tensor, device, batch: int = 500) -> torch.Tensor:
    """Predicted classes ``(N,)`` (CPU) of images ``(N, C, H, W)`` in [0, 1]."""
    out = [_logits(module(_batch(images[i:i + batch], device))).argmax(1).cpu()
           for i in range(0, len(images), batch)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def accuracy(module: nn.Module, images: torch.Tensor, labels: torch.Tensor, device) -> float:
    """Fraction of ``images`` whose predicted class is ``labels``."""
    return float((predict(module, images, device) == labels.cpu()).float().mean())


# --------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------
class RefereeFeatures(nn.Module):
    """The referee's 64-d ``features`` output as a torchmetrics FID feature extractor
    (``num_features`` set; always in eval mode, whatever ``train()`` is called with)."""

    def __init__(self, referee: nn.Module) -> None:
        super().__init__()
        self.referee = referee
        self.num_features = FEATURES

    def train(self, mode: bool = True) -> RefereeFeatures:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.referee(x)["features"].float()


@torch.no_grad()
def fid(features: nn.Module, fake: torch.Tensor, real: torch.Tensor, device,
        batch: int = 500) -> float:
    """FID between two image sets ``(N, C, H, W)`` in [0, 1] on ``features`` (an
    :class:`~torch.nn.Module` with ``num_features``), with torchmetrics' FID in float64.

    Raises:
        SpdnnError: a set has fewer than two images.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(fake) < 2 or len(real) < 2:
        raise SpdnnError(f"FID needs at least two images per side, got {len(fake)} and "
                         f"{len(real)}", field="data.val_size", hint="use val_size >= 4")
    m = FrechetInceptionDistance(feature=features, normalize=True).to(device)
    m.eval()
    for imgs, real_side in ((real, True), (fake, False)):
        for i in range(0, len(imgs), batch):
            m.update(_batch(imgs[i:i + batch], device), real=real_side)
    return float(m.compute())


# --------------------------------------------------------------------------------------------
# diversity
# --------------------------------------------------------------------------------------------
def window(image_shape: tuple[int, int, int]) -> tuple[int, float]:
    """``(size, sigma)`` of the Gaussian window of UQI and SSIM: ``(11, 1.5)`` (Wang et al.
    2004) for images of 22 pixels or more; for smaller ones the largest odd size up to
    ``min(H, W) // 2 + 1`` with sigma scaled alike (``1.5 * size / 11``; 8x8: ``(5, 0.68)``),
    so that the region where the window fits inside the image is not empty."""
    side = min(image_shape[1:])
    if side >= 22:
        return 11, 1.5
    k = side // 2 + 1
    k = max(1, k if k % 2 else k - 1)
    return k, 1.5 * k / 11


def pairs(labels: torch.Tensor, count: int, between: bool,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random index pairs ``(i, j)``, ``i != j``: both of one class (a class drawn
    uniformly among those with two or more images), or, ``between``, of two different classes
    (drawn uniformly). Empty when no such pair exists."""
    classes = [int(c) for c in labels.unique()]
    members = {c: torch.nonzero(labels == c).flatten() for c in classes}
    ii, jj = [], []
    pool = [c for c in classes if len(members[c]) >= (1 if between else 2)]
    if len(pool) < (2 if between else 1):
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    for _ in range(count):
        if between:
            a, b = torch.randperm(len(pool), generator=generator)[:2].tolist()
            ma, mb = members[pool[a]], members[pool[b]]
            ii.append(ma[torch.randint(len(ma), (1,), generator=generator)].item())
            jj.append(mb[torch.randint(len(mb), (1,), generator=generator)].item())
        else:
            c = pool[torch.randint(len(pool), (1,), generator=generator).item()]
            m = members[c]
            a, b = torch.randperm(len(m), generator=generator)[:2].tolist()
            ii.append(m[a].item())
            jj.append(m[b].item())
    return torch.tensor(ii, dtype=torch.long), torch.tensor(jj, dtype=torch.long)


def pair_measures(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Mean UQI, SSIM, MSE, RMSE and MAE over image pairs ``a[k], b[k]`` (``(P, C, H, W)`` in
    [0, 1]; thesis App. G "Appendix A", eqs. 16-18): each measure is computed per pair, then
    averaged (RMSE is the root of each pair's MSE). NaN for no pairs."""
    from torchmetrics.functional.image import (
        structural_similarity_index_measure,
        universal_image_quality_index,
    )

    if len(a) == 0:
        return {m: float("nan") for m in MEASURES}
    a, b = a.float(), b.float()  # float64 convolutions are ~8x slower on CPU
    k, sigma = window(tuple(a.shape[1:]))
    uqi = universal_image_quality_index(a, b, kernel_size=(k, k), sigma=(sigma, sigma),
                                        reduction="none").flatten(1).mean(1)
    # torchmetrics averages SSIM over the reflect-padded border too; Wang et al.'s reference
    # code and scikit-image average where the window lies inside the image: crop to that
    full = structural_similarity_index_measure(a, b, sigma=sigma, data_range=1.0,
                                               reduction="none", return_full_image=True)[1]
    p = (k - 1) // 2
    ssim = (full[..., p:full.shape[-2] - p, p:full.shape[-1] - p]).flatten(1).mean(1)
    d = (a.double() - b.double()).flatten(1)
    mse = d.square().mean(1)
    return {"uqi": float(uqi.mean()), "ssim": float(ssim.mean()), "mse": float(mse.mean()),
            "rmse": float(mse.sqrt().mean()), "mae": float(d.abs().mean(1).mean())}


ATTR_GROUPS, ATTR_REPEATS = 20, 10
"""Attribute requests and images per request for the diversity of attribute-conditional GANs."""


def diversity(images: torch.Tensor, labels: torch.Tensor | None, count: int,
              generator: torch.Generator) -> dict[str, dict[str, float]]:
    """``{"within": {measure: value}, "between": {...}}`` of :func:`pair_measures` over
    ``count`` random pairs each (:func:`pairs`); ``labels=None``: one class, within only."""
    labels = torch.zeros(len(images), dtype=torch.long) if labels is None else labels.cpu()
    out = {}
    for group, between in (("within", False), ("between", True)):
        if between and labels.unique().numel() < 2:
            continue
        i, j = pairs(labels, count, between, generator)
        out[group] = pair_measures(images[i], images[j])
    return out


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------
def _save_png(fig, path: Path, layout: bool = True) -> Path:
    if layout:
        fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(matrix, class_names: list[str], path: Path, title: str) -> Path:
    """``confusion.png``: a row-normalised confusion matrix ``(K, K)`` (rows: requested class,
    columns: predicted) with its values in the cells (thesis App. H Figs. 8-9)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    size = max(3.5, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    im = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the requested class")
    ax.set_xticks(range(k), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0)
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class (judge)")
    ax.set_ylabel("requested class")
    for r in range(k):
        for c in range(k):
            v = float(matrix[r][c])
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7 if k > 6 else 9,
                    color="white" if v > 0.5 else "black")
    ax.set_title(title, fontsize=9)
    return _save_png(fig, path)


def plot_diversity(gen: dict, real: dict, path: Path, title: str,
                   groups_of: str = "class") -> Path:
    """``diversity.png``: one panel per measure, grouped bars (within / between class, or
    ``groups_of="attribute"``: same / different attribute request; generated vs real) with the
    values on the bars (as thesis App. G Figs. 5-6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = [g for g in ("within", "between") if g in gen]
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(2.7 * len(MEASURES), 3.4), squeeze=False)
    x = np.arange(len(groups))
    for ax, m in zip(axes[0], MEASURES):
        for off, (who, src, color) in zip((-0.2, 0.2), (("generated", gen, "tab:blue"),
                                                        ("real", real, "tab:orange"))):
            vals = [src.get(g, {}).get(m, float("nan")) for g in groups]
            bars = ax.bar(x + off, vals, 0.4, label=who, color=color)
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
        names = ({"within": "same\nattribute", "between": "different\nattributes"}
                 if groups_of == "attribute" else
                 {"within": "within\nclass", "between": "between\nclasses"})
        ax.set_xticks(x, [names[g] for g in groups], fontsize=8)
        ax.set_title(m.upper(), fontsize=9)
        ax.set_ylabel(m.upper() + (" (lower: more diverse)" if m in ("uqi", "ssim")
                                   else " (higher: more diverse)"), fontsize=8)
        ax.margins(y=0.15)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=9, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.legend(handles, labels, loc="upper right", ncol=2, fontsize=8, frameon=False)
    return _save_png(fig, path, layout=False)


# --------------------------------------------------------------------------------------------
# the suite
# --------------------------------------------------------------------------------------------
def _generate(task, models, device, n: int, g: torch.Generator, **cond) -> torch.Tensor:
    out = []
    for i in range(0, n, GEN_CHUNK):
        part = {k: v[i:i + GEN_CHUNK] for k, v in cond.items()}
        out.append(task.generate(models, min(GEN_CHUNK, n - i), device, generator=g, **part))
    return torch.cat(out).float().clamp(0, 1)


def _data_key(task) -> dict[str, Any]:
    data = getattr(task.recipe, "data", None)
    if data is None:
        return {}
    return {k: getattr(data, k, None) for k in ("source", "root", "train_size", "val_size",
                                                "seed", "options")}


def _val_attributes(val, idx: torch.Tensor) -> torch.Tensor | None:
    attrs = getattr(val, "attributes", None)
    if attrs is not None:
        return attrs[idx].float()
    first = val[int(idx[0])] if len(idx) else ()
    if len(first) < 3:
        return None
    return torch.stack([val[int(i)][2] for i in idx]).float()


@torch.no_grad()
def evaluate_gan(task, models: dict[str, nn.Module], outdir: Path, device, *,
                 referee_steps: int | None = None, judge_steps: int | None = None,
                 diversity_pairs: int | None = None) -> dict[str, float]:
    """Run the GAN evaluation suite (module docstring) on a GAN task's trained ``models`` (the
    evaluation models, in eval mode) and write its plots and cached classifiers in ``outdir``.

    Args:
        task: a :class:`~spdnn.tasks.gan.base.GANTask` (``datasets()``, ``generate()``,
            ``conditional``, ``options.eval_samples``, ``recipe``; attribute tasks also
            ``attribute_name``).
        models: ``{"generator": ..., ...}``.
        outdir: the evaluation folder (created).
        device: where the generator and the classifiers run.
        referee_steps, judge_steps, diversity_pairs: budgets (default :data:`REFEREE_STEPS`,
            :data:`JUDGE_STEPS`, :data:`DIVERSITY_PAIRS`).

    Returns:
        Flat ``{name: float}``: ``fid``, ``fid_real_floor``, ``fid_samples``,
        ``fid_floor_samples``, ``referee_accuracy``; class-conditional: ``cond_accuracy``,
        ``judge_accuracy``; ``div_within_<m>``/``real_within_<m>`` for ``m`` in UQI, SSIM, MSE,
        RMSE, MAE (and ``div_between_<m>``/``real_between_<m>`` for class-conditional tasks);
        attribute tasks: ``attr_mae``, ``attr_mae_chance``.

    Raises:
        SpdnnError: data with fewer than two classes, fewer than four validation images, or
            an attribute task whose validation items carry no attribute.
    """
    referee_steps = REFEREE_STEPS if referee_steps is None else int(referee_steps)
    judge_steps = JUDGE_STEPS if judge_steps is None else int(judge_steps)
    n_pairs = DIVERSITY_PAIRS if diversity_pairs is None else int(diversity_pairs)
    outdir = Path(outdir)
    device = torch.device(device)
    train, val = task.datasets()
    names = list(getattr(task, "class_names", None) or getattr(train, "class_names", []) or [])
    k = max(len(names), int(train.labels.max()) + 1 if len(train.labels) else 0)
    names = names if len(names) == k else [str(i) for i in range(k)]
    shape = tuple(train.images.shape[1:])
    if len(val) < 4:
        raise SpdnnError(f"the GAN evaluation needs at least 4 validation images, got "
                         f"{len(val)}", field="data.val_size", hint="use val_size >= 4")
    run = getattr(task.recipe, "name", "run")
    key = _data_key(task)
    n = min(int(task.options.eval_samples), len(val))
    g_real = torch.Generator().manual_seed(EVAL_SEED)
    perm = torch.randperm(len(val), generator=g_real)
    real_idx = perm[:n]
    real = val.images[real_idx].float()
    real_labels = val.labels[real_idx]
    seed = int(getattr(task.recipe, "seed", 0))
    g_gen = torch.Generator().manual_seed(seed)
    res: dict[str, float] = {}

    # FID on the referee's features
    referee = trained_classifier("referee", referee_netspec(shape, k), train, val,
                                 referee_steps, REFEREE_SEED, outdir, key, device)
    feats = RefereeFeatures(referee.module)
    attrs = None
    if task.conditional == "class":
        fake = _generate(task, models, device, n, g_gen, labels=real_labels)
    elif task.conditional == "attribute":
        attrs = _val_attributes(val, real_idx)
        if attrs is None:
            raise SpdnnError("an attribute-conditional GAN is evaluated on validation items "
                             "that carry the attribute (image, label, attribute)",
                             field="data.options.attribute", hint="name the attribute")
        fake = _generate(task, models, device, n, g_gen, attributes=attrs)
    else:
        fake = _generate(task, models, device, n, g_gen)
    res["fid"] = fid(feats, fake, real, device)
    half = min(n, len(val) // 2)
    res["fid_real_floor"] = fid(feats, val.images[perm[:half]].float(),
                                val.images[perm[half:2 * half]].float(), device)
    res["fid_samples"] = float(n)
    res["fid_floor_samples"] = float(half)
    res["referee_accuracy"] = referee.accuracy

    # conditional accuracy
    div_images, div_labels = fake, None
    if task.conditional == "class":
        judge = trained_classifier("judge", judge_netspec(shape, k), train, val, judge_steps,
                                   JUDGE_SEED, outdir, key, device)
        per = max(1, int(task.options.eval_samples) // k)  # not bounded by the real images
        want = torch.arange(k).repeat_interleave(per)
        imgs = _generate(task, models, device, len(want), g_gen, labels=want)
        got = predict(judge.module, imgs, device)
        res["cond_accuracy"] = float((got == want).float().mean())
        res["judge_accuracy"] = judge.accuracy
        from sklearn.metrics import confusion_matrix

        cm = confusion_matrix(want.numpy(), got.numpy(), labels=list(range(k)), normalize="true")
        plot_confusion(cm, names, outdir / "confusion.png",
                       f"{run}: judge's classes of generated samples (accuracy "
                       f"{res['cond_accuracy']:.3f}; on real val {judge.accuracy:.3f})")
        div_images, div_labels = imgs, want

    # attribute error
    if attrs is not None:
        from spdnn.data.attributes import measure

        name = getattr(task, "attribute_name", None) or getattr(val, "attribute_name", None)
        got = measure(name, fake).float()
        res["attr_mae"] = float((got - attrs).abs().mean())
        shuffled = attrs[torch.randperm(len(attrs), generator=g_real)]
        res["attr_mae_chance"] = float((measure(name, real).float() - shuffled).abs().mean())
        groups, reps = min(ATTR_GROUPS, len(attrs)), ATTR_REPEATS
        want = torch.arange(groups).repeat_interleave(reps)
        div_images = _generate(task, models, device, len(want), g_gen, attributes=attrs[want])
        div_labels = want

    # diversity
    g_pairs = torch.Generator().manual_seed(EVAL_SEED + 1)
    gen_div = diversity(div_images, div_labels, n_pairs, g_pairs)
    real_div = diversity(real, real_labels if task.conditional == "class" else None, n_pairs,
                         g_pairs)
    for prefix, d in (("div", gen_div), ("real", real_div)):
        for group, vals in d.items():
            for m, v in vals.items():
                res[f"{prefix}_{group}_{m}"] = v
    plot_diversity(gen_div, real_div, outdir / "diversity.png",
                   f"{run}: mean over {n_pairs} random image pairs per bar "
                   "(thesis App. G, Appendix A)",
                   groups_of="attribute" if attrs is not None else "class")
    return {k_: float(v) if v is not None and math.isfinite(float(v)) else float("nan")
            for k_, v in res.items()}

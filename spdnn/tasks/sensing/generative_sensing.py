"""Generative Sensing (Karam et al., seed 000): rank the filters most hurt by blur, insert
generative units on those channels only, train the units with the base frozen, and compare the
baseline with the generative-sensing network as deep-feature extractors on unseen targets.

Steps (the task ``generative_sensing``; the baseline phi is pre-trained by
``sensing_classifier``, ``recipes/sensing/gs_source.yaml``):

1. **Ranking** (sec. 3, the DeepCorrect ranking of its [15]): for each chosen layer and each of
   its filters j, the top-1 accuracy drop on source images when the clean feature map j is
   replaced by the co-located feature map of the same images blurred (each image at a level
   drawn from ``rank_levels``), all other features clean. Ties (a single channel often moves
   no prediction on a few hundred images) are broken by the increase of the cross-entropy.
   :func:`rank_filters`.
2. **Insertion**: the top ``top[layer]`` filters (a fraction in (0, 1] or a count) get a
   generative unit (``netspecs/blocks/generative_sensing.yaml``: DeepCorrect's residual unit
   on the FIRST n channels, before the layer's ReLU). The filters are permuted so the ranked
   ones come first (and the next layer's input channels with them: the network function is
   unchanged), and spdnn writes the resulting netspec (:func:`generative_netspec`; saved as
   ``generative.yaml`` in the run), so the network stays a compiled artefact.
3. **Training**: CE + lambda * L2 of the unit weights (sec. 3 eq. 1, rho = l2 norm squared)
   on source images blurred at a level drawn from 0..6 per image (the "augmented by adding
   degraded versions", sec. 4), the base network frozen. Each unit's last 1x1 conv starts at
   zero, so phi_gen = phi at step 0.
4. **Tables 1-2 in kind** (:meth:`GenerativeSensingTask.report`): per target data set a linear
   (softmax) classifier on the second FC layer's features (``feature_layer``, default
   ``fc7``) of the clean target training images of the baseline; top-1 accuracy of that same
   classifier on the test images blurred at sigma_b 0..6, for the baseline and for phi_gen.

Errors: a ranked layer that is not in the netspec, not a Conv2d with a ReLU, or a unit count
larger than its channels: one line at ``options.top.<layer>``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from spdnn.data.degrade import (
    BLUR_LEVELS,
    blur_mixed,
    check_blur_level,
    gaussian_blur,
    random_levels,
)
from spdnn.data.images import image_datasets
from spdnn.errors import SpdnnError, SpecError
from spdnn.ops.imaging import gaussian_size
from spdnn.tasks.common import validate_options
from spdnn.tasks.registry import register_task
from spdnn.tasks.sensing.common import accuracy, load_weights, step_generator
from spdnn.train.task import Task

UNIT_LIBRARY = "netspecs/blocks/generative_sensing.yaml"
"""The block library that defines ``GenerativeUnit``."""

DEEPCORRECT_TOP = {"conv1": 0.75, "conv2": 0.75, "conv3": 0.5, "conv4": 0.5, "conv5": 0.5}
"""DeepCorrect's AlexNet corrects the top 75% of conv1-2 and 50% of conv3-5 (its public code)."""

SOURCE_SIZES = {"mnist": 5_000, "digits": 1_797, "faces": 200, "fashion_mnist": 70_000}
"""Images in each target source of :mod:`spdnn.data.images` (split half / half at most)."""

TARGETS = ("mnist", "digits", "faces")
"""The target data sets of Table 1-2 in kind (``spdnn.data.images`` sources, real images)."""


class GSOptions(BaseModel):
    """``options`` of ``generative_sensing`` (module docstring)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    pretrained: str | None = None
    """The baseline phi: a ``sensing_classifier`` run of the same netspec. None: the netspec's
    seeded initialisation (only meaningful for tests)."""
    top: dict[str, StrictInt | StrictFloat] = Field(default_factory=lambda: dict(DEEPCORRECT_TOP))
    """Per ranked layer: a fraction of its filters (float in (0, 1]) or a count (int)."""
    unit_kernel: dict[str, int] = Field(default_factory=lambda: {"conv1": 5})
    """Inner kernel size of a layer's unit (DeepCorrect: 5 after conv1, else 3)."""
    lambda_l2: float = Field(default=1e-4, ge=0.0)
    """lambda of eq. 1 (rho = sum of squared unit weights)."""
    rank_images: int = Field(default=256, ge=1, le=100_000)
    rank_levels: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    train_levels: tuple[int, ...] = BLUR_LEVELS
    feature_layer: str = "fc7"
    targets: tuple[Literal["mnist", "digits", "faces", "fashion_mnist"], ...] = TARGETS
    target_train: int = Field(default=500, ge=2)
    target_test: int = Field(default=500, ge=2)


def check_levels(opts: GSOptions, shape: tuple[int, ...]) -> None:
    """Every blur level of ``opts`` is in 0..6 and its kernel fits the ``(C, H, W)`` input.

    Raises:
        SpdnnError: at ``options.rank_levels[i]`` / ``options.train_levels[i]``.
    """
    for name in ("rank_levels", "train_levels"):
        for i, lev in enumerate(getattr(opts, name)):
            field = f"options.{name}[{i}]"
            check_blur_level(lev, field)
            k = gaussian_size(float(lev))
            if k // 2 >= min(shape[1:]):
                raise SpdnnError(f"a blur kernel of {k}x{k} (sigma_b = {lev}) does not fit the "
                                 f"network's {shape[1]}x{shape[2]} input", field=field)


# -- ranking ----------------------------------------------------------------------------------
def _capture(module: torch.nn.Module, layers: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` (module attributes) for input ``x``."""
    out: dict[str, torch.Tensor] = {}
    hooks = [getattr(module, n).register_forward_hook(
        lambda m, i, o, n=n: out.__setitem__(n, o.detach())) for n in layers]
    try:
        module(x)
    finally:
        for h in hooks:
            h.remove()
    return out


@torch.no_grad()
def rank_filters(module: torch.nn.Module, layers: list[str], clean: torch.Tensor,
                 degraded: torch.Tensor, labels: torch.Tensor, batch: int = 128
                 ) -> dict[str, dict[str, torch.Tensor]]:
    """Generative Sensing sec. 3 / DeepCorrect filter ranking.

    Args:
        module: the baseline network (eval mode), layers addressable as attributes.
        layers: the layers to rank (their outputs ``(N, C, H, W)``).
        clean, degraded: the same images ``(N, C0, H0, W0)`` clean and degraded.
        labels: ``(N,)`` int64.

    Returns:
        ``{layer: {"acc_drop": (C,), "ce_rise": (C,), "order": (C,) int64}}``: the top-1
        accuracy drop (in [−1, 1]) and the mean cross-entropy increase when filter j's clean
        output is replaced by its degraded one, and the filters from most to least hurt
        (accuracy drop first, cross-entropy rise breaking ties).
    """
    module.eval()
    result: dict[str, dict[str, torch.Tensor]] = {}
    chunks = [slice(s, s + batch) for s in range(0, len(clean), batch)]
    deg = [_capture(module, layers, degraded[c]) for c in chunks]
    base_logits = torch.cat([module(clean[c]) for c in chunks]).float()
    base_acc = accuracy(base_logits, labels)
    base_ce = float(F.cross_entropy(base_logits, labels))
    for name in layers:
        channels = deg[0][name].shape[1]
        acc_drop, ce_rise = torch.zeros(channels), torch.zeros(channels)
        for j in range(channels):
            logits = []
            for c, d in zip(chunks, deg):
                def swap(m, i, o, j=j, d=d[name]):
                    o = o.clone()
                    o[:, j] = d[:, j]
                    return o
                h = getattr(module, name).register_forward_hook(swap)
                try:
                    logits.append(module(clean[c]).float())
                finally:
                    h.remove()
            lg = torch.cat(logits)
            acc_drop[j] = base_acc - accuracy(lg, labels)
            ce_rise[j] = float(F.cross_entropy(lg, labels)) - base_ce
        # lexicographic: accuracy drop, then cross-entropy rise (both descending)
        order = sorted(range(channels), key=lambda k: (-float(acc_drop[k]), -float(ce_rise[k])))
        result[name] = {"acc_drop": acc_drop, "ce_rise": ce_rise,
                        "order": torch.tensor(order, dtype=torch.long)}
    return result


# -- the generative netspec ----------------------------------------------------------------------
def unit_counts(spec, top: dict[str, int | float]) -> dict[str, int]:
    """The number of corrected channels per layer from fractions / counts.

    Raises:
        SpecError: a layer not in ``spec``, not a Conv2d with a ReLU, a fraction outside
            (0, 1], or a count above the layer's channels (at ``options.top.<layer>``).
    """
    names = {lay.name: lay for lay in spec.layers}
    out: dict[str, int] = {}
    for name, value in top.items():
        field = f"options.top.{name}"
        lay = names.get(name)
        if lay is None:
            raise SpecError(f"layer '{name}' is not in the netspec '{spec.name}'", field=field,
                            hint=f"rank one of its conv layers: "
                                 f"{', '.join(n for n, x in names.items() if x.op == 'Conv2d')}")
        if lay.op != "Conv2d" or getattr(lay, "activation", None) != "relu":
            raise SpecError(f"layer '{name}' is a {lay.op} with activation "
                            f"{getattr(lay, 'activation', None)}; a generative unit sits between "
                            f"a conv and its ReLU", field=field)
        c = lay.out_channels
        if isinstance(value, float):
            if not 0.0 < value <= 1.0:
                raise SpecError(f"fraction {value} is outside (0, 1]", field=field)
            n = max(1, round(value * c))
        else:
            n = value
        if not 1 <= n <= c:
            raise SpecError(f"{n} generative-unit channels asked for, but '{name}' has {c} "
                            f"channels", field=field, hint=f"use 1..{c} or a fraction")
        out[name] = n
    return out


def generative_netspec(spec, counts: dict[str, int], kernels: dict[str, int]):
    """The netspec phi_gen: ``spec`` with each ranked conv made linear and followed by a
    ``GenerativeUnit`` (corrected = counts[layer]) and a ReLU; layers that read the conv read
    the ReLU. Returns a validated :class:`spdnn.spec.Netspec`."""
    from spdnn.spec import from_data

    data = spec.to_data()
    rename = {n: f"{n}_relu" for n in counts}
    layers = []
    for lay in data["layers"]:
        lay = dict(lay)
        if lay.get("inputs"):
            lay["inputs"] = [rename.get(i, i) for i in lay["inputs"]]
        name = lay["name"]
        if name in counts:
            lay.pop("activation")
            layers += [lay, {"name": f"{name}_gen", "op": "GenerativeUnit",
                             "corrected": counts[name], "kernel_size": kernels.get(name, 3)},
                       {"name": f"{name}_relu", "op": "ReLU"}]
        else:
            layers.append(lay)
    data["layers"] = layers
    for key in ("output", "outputs"):
        if key in data:
            outs = data[key] if isinstance(data[key], list) else [data[key]]
            for o in outs:
                o["from"] = rename.get(o["from"], o["from"])
    data["name"] = f"{spec.name}_generative"
    data["description"] = (f"{spec.name} with generative units on the top-ranked channels of "
                           + ", ".join(f"{n} ({k})" for n, k in counts.items()))
    data["imports"] = [UNIT_LIBRARY]
    return from_data(data, file="<generative netspec>")


def permuted_state(base_state: dict[str, torch.Tensor], spec, orders: dict[str, torch.Tensor]
                   ) -> dict[str, torch.Tensor]:
    """The baseline's weights with each ranked layer's filters in ``orders[layer]`` order and
    the next parametrized layer's input channels permuted alike (Conv2d: ``weight[:, order]``;
    Linear after a flatten: the ``H W`` blocks of each channel), with the baseline's keys.

    Raises:
        SpecError: a ranked layer's output is read by something else than a Conv2d / Linear
            after channel-wise layers.
    """
    from spdnn.shapes import infer

    state = {k: v.clone() for k, v in base_state.items()}

    def key(layer: str, what: str) -> str | None:
        """A layer's own weight / bias key: ``conv1.weight``, or inside the Sequential of a
        layer with an activation (``conv1.0.weight``) or a flatten first (``fc6.1.weight``)."""
        pattern = re.compile(rf"{re.escape(layer)}(\.\d+)?\.{what}")
        return next((k for k in state if pattern.fullmatch(k)), None)

    info = infer(spec)
    names = [lay.name for lay in spec.layers]
    for name, order in orders.items():
        for what in ("weight", "bias"):
            k = key(name, what)
            if k is not None:
                state[k] = state[k][order]
        nxt = next((lay for lay in spec.layers[names.index(name) + 1:]
                    if key(lay.name, "weight") is not None), None)
        if nxt is None or nxt.op not in ("Conv2d", "Linear"):
            raise SpecError(f"the output of '{name}' feeds {getattr(nxt, 'op', 'nothing')}; "
                            "filters can be permuted only before a Conv2d or Linear",
                            field=f"options.top.{name}")
        k = key(nxt.name, "weight")
        w = state[k]
        if nxt.op == "Conv2d":
            state[k] = w[:, order]
        else:
            c = info.shapes[name][0]
            state[k] = w.view(w.shape[0], c, -1)[:, order].reshape(w.shape)
    return state


def unit_modules(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The generative units of a phi_gen module by layer name."""
    return {n: m for n, m in module.named_children() if n.endswith("_gen")}


class _Bypass:
    """Context: every generative unit returns its input, so phi_gen computes the baseline phi
    exactly (the permutation leaves the function unchanged)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.units = unit_modules(module)
        self.hooks: list = []

    def __enter__(self):
        self.hooks = [u.register_forward_hook(lambda m, i, o: i[0]) for u in self.units.values()]
        return self

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()


def features(module: torch.nn.Module, layer: str, x: torch.Tensor, baseline: bool,
             batch: int = 256) -> torch.Tensor:
    """``(N, F)`` outputs of ``layer`` (after its activation) for images ``x``; ``baseline``
    bypasses the generative units."""
    rows = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            if baseline:
                with _Bypass(module):
                    rows.append(_capture(module, [layer], x[s:s + batch])[layer].flatten(1))
            else:
                rows.append(_capture(module, [layer], x[s:s + batch])[layer].flatten(1))
    return torch.cat(rows).float()


# -- the task -----------------------------------------------------------------------------------
@register_task
class GenerativeSensingTask(Task):
    """Ranking, generative-unit insertion and training, and the linear-probe tables (module
    docstring). Data: the recipe's ``data`` (the source set, e.g. ``fashion_mnist``) at the
    netspec's input size; the ranking uses the first ``rank_images`` validation images."""

    name = "generative_sensing"
    default_best_metric = "val_acc_blur"
    default_best_mode = "max"
    summary_metrics = ("val_acc_s0", "val_acc_blur", "val_base_acc_s0", "val_base_acc_blur",
                       "unit_params")

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        self.opts: GSOptions = validate_options(GSOptions, recipe.options)
        spec = netspecs["net"]
        self.ranking: dict[str, dict[str, torch.Tensor]] = {}
        self._base_state: dict[str, torch.Tensor] | None = None
        self.base_spec = None
        if any(lay.op == "GenerativeUnit" for lay in spec.layers):
            return  # a restored phi_gen: weights and ranking come from the checkpoint
        names = {lay.name for lay in spec.layers}
        if self.opts.feature_layer not in names:
            raise SpecError(f"feature layer '{self.opts.feature_layer}' is not in the netspec "
                            f"'{spec.name}'", field="options.feature_layer")
        check_levels(self.opts, spec.inputs[0].shape)
        counts = unit_counts(spec, self.opts.top)
        self.base_spec = spec
        base = self._baseline_module(spec)
        self.ranking = self._rank(base, list(counts))
        self._base_state = permuted_state(base.state_dict(), spec,
                                          {n: r["order"] for n, r in self.ranking.items()})
        self.netspecs = {"net": generative_netspec(spec, counts, self.opts.unit_kernel)}

    def _baseline_module(self, spec) -> torch.nn.Module:
        from spdnn.codegen import build_module

        torch.manual_seed(self.recipe.seed)
        base = build_module(spec)
        if self.opts.pretrained:
            load_weights(self.opts.pretrained, base, "options.pretrained")
        return base.eval()

    def _rank(self, base, layers: list[str]) -> dict[str, dict[str, torch.Tensor]]:
        _, val = image_datasets(self.recipe.data, self.netspecs["net"].inputs[0].shape)
        n = min(self.opts.rank_images, len(val))
        x, y = val.images[:n], val.labels[:n]
        g = torch.Generator().manual_seed(self.recipe.data.seed + 7)
        xd = blur_mixed(x, random_levels(n, g, self.opts.rank_levels))
        return rank_filters(base, layers, x, xd, y)

    def datasets(self):
        return image_datasets(self.recipe.data, self.netspecs["net"].inputs[0].shape)

    def build_models(self, nets):
        net = nets["net"]
        units = unit_modules(net)
        if self._base_state is not None:
            own = net.state_dict()
            state = {}
            for k, v in self._base_state.items():  # a ranked conv lost its activation (.0.)
                state[k if k in own else re.sub(r"^([^.]+)\.0\.", r"\1.", k)] = v
            missing, unexpected = net.load_state_dict(state, strict=False)
            bad = [k for k in missing if k.split(".")[0] not in units] + list(unexpected)
            if bad:
                raise SpdnnError(f"the baseline weights do not fit phi_gen ({', '.join(bad[:4])})")
            with torch.no_grad():
                for u in units.values():
                    u.conv_out.weight.zero_()
                    u.conv_out.bias.zero_()
        for name, p in net.named_parameters():
            p.requires_grad_(name.split(".")[0] in units)
        return nets

    def configure_optimizers(self, models):
        from spdnn.train.task import make_optimizer

        params = [p for p in models["net"].parameters() if p.requires_grad]
        return {"net": make_optimizer(self.recipe.model_optim("net"), params)}

    def l2(self, net) -> torch.Tensor:
        """rho(W_gen) of eq. 1: the sum of squared unit conv weights."""
        return sum((m.weight ** 2).sum() for u in unit_modules(_unwrap(net)).values()
                   for m in u.modules() if isinstance(m, torch.nn.Conv2d))

    def training_step(self, trainer, batch):
        x, y = batch[0], batch[1]
        g = step_generator(self.recipe.seed, trainer.step)
        xd = blur_mixed(x, random_levels(len(x), g, self.opts.train_levels).to(x.device))
        net = trainer.train_models["net"]
        with trainer.autocast():
            logits = net(xd)
        ce = F.cross_entropy(logits.float(), y)
        loss = ce + self.opts.lambda_l2 * self.l2(net)
        trainer.backward_step(loss, "net")
        return {"loss": float(loss.detach()), "ce": float(ce.detach())}

    def validation_step(self, models, batch, metrics):
        x, y = batch[0], batch[1]
        net = models["net"]
        out: dict[str, float] = {}
        for lev in BLUR_LEVELS:
            xb = gaussian_blur(x, lev)
            logits = net(xb).float()
            out[f"acc_s{lev}"] = accuracy(logits, y)
            if lev == 0:
                out["loss"] = float(F.cross_entropy(logits, y))
            with _Bypass(net):
                out[f"base_acc_s{lev}"] = accuracy(net(xb).float(), y)
        for p in ("acc", "base_acc"):
            out[f"{p}_blur"] = sum(out[f"{p}_s{k}"] for k in BLUR_LEVELS[1:]) / 6
        return out

    def state_dict(self):
        return {"ranking": self.ranking}

    def load_state_dict(self, state):
        self.ranking = state.get("ranking", {}) or {}

    def figures(self, models, batch, outdir: Path) -> list[Path]:
        """``generative.yaml`` (phi_gen as spdnn wrote it), ``ranking.json`` and
        ``ranking.png`` (per layer, the accuracy drop of every filter, most hurt first, the
        corrected ones highlighted)."""
        from spdnn import spec as S
        from spdnn.io import write_atomic

        outdir.mkdir(parents=True, exist_ok=True)
        written = [write_atomic(outdir / "generative.yaml", S.dump(
            self.netspecs["net"], header="written by spdnn (generative_sensing): the baseline "
            "with generative units on its top-ranked filters"))]
        if self.ranking:
            counts = {lay.name.removesuffix("_gen"): lay.corrected
                      for lay in self.netspecs["net"].layers if lay.op == "GenerativeUnit"}
            data = {n: {"order": r["order"].tolist(), "acc_drop": r["acc_drop"].tolist(),
                        "ce_rise": r["ce_rise"].tolist(), "corrected": counts.get(n)}
                    for n, r in self.ranking.items()}
            written.append(write_atomic(outdir / "ranking.json", json.dumps(data, indent=1)))
            written.append(ranking_plot(data, outdir / "ranking.png", self.recipe.name))
        return written

    def report(self, models, outdir: Path, device) -> dict[str, float]:
        """Tables 1-2 in kind (module docstring, step 4): ``<target>_<base|gs>_s<k>`` top-1
        accuracies, ``<target>_<base|gs>_avg``, ``unit_params`` and ``base_params``; also
        ``<target>_gs_own_*``: phi_gen with a probe fitted on its own clean features (a
        diagnostic, not the paper's protocol); writes
        ``probe.json`` under ``outdir``."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from spdnn.io import write_atomic
        from spdnn.train.recipe import DataSpec

        net = models["net"].eval()
        shape = self.netspecs["net"].inputs[0].shape
        units = unit_modules(net)
        n_units = sum(p.numel() for u in units.values() for p in u.parameters())
        n_all = sum(p.numel() for p in net.parameters())
        out: dict[str, float] = {"unit_params": n_units, "base_params": n_all - n_units}
        for target in self.opts.targets:
            total = SOURCE_SIZES[target]
            n_tr = min(self.opts.target_train, total // 2)
            n_te = min(self.opts.target_test, total - n_tr)
            data = DataSpec(source=target, train_size=n_tr, val_size=n_te,
                            seed=self.recipe.data.seed, options={"stratify": True})
            tr, te = image_datasets(data, shape)
            layer = self.opts.feature_layer
            f_tr = features(net, layer, tr.images.to(device), baseline=True).cpu().numpy()
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            clf.fit(f_tr, tr.labels.numpy())
            # not the paper's protocol, a diagnostic: a probe fitted on phi_gen's own clean
            # features tells feature drift at sigma_b = 0 apart from lost information
            own = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            own.fit(features(net, layer, tr.images.to(device), baseline=False).cpu().numpy(),
                    tr.labels.numpy())
            accs: dict[str, list[float]] = {"base": [], "gs": [], "gs_own": []}
            for lev in BLUR_LEVELS:
                xb = gaussian_blur(te.images, lev).to(device)
                f_base = features(net, layer, xb, baseline=True).cpu().numpy()
                f_gs = features(net, layer, xb, baseline=False).cpu().numpy()
                for method, probe, f in (("base", clf, f_base), ("gs", clf, f_gs),
                                         ("gs_own", own, f_gs)):
                    acc = float((probe.predict(f) == te.labels.numpy()).mean())
                    out[f"{target}_{method}_s{lev}"] = acc
                    accs[method].append(acc)
            for method, values in accs.items():
                out[f"{target}_{method}_avg"] = sum(values) / len(values)
            out[f"{target}_train"], out[f"{target}_test"] = n_tr, n_te
        outdir.mkdir(parents=True, exist_ok=True)
        write_atomic(outdir / "probe.json", json.dumps(out, indent=1))
        return out


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return getattr(net, "module", net)  # DDP


def ranking_plot(data: dict, path: Path, title: str) -> Path:
    """One column per ranked layer, filters in rank order (most hurt first), the corrected ones
    in colour: top, the top-1 drop (points) when a filter's clean output is replaced by the
    blurred one; bottom, the cross-entropy rise that breaks the (frequent) ties."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spdnn.io import save_figure

    fig, axes = plt.subplots(2, len(data), figsize=(3.0 * len(data), 4.4), squeeze=False,
                             layout="constrained")
    for col, (name, r) in enumerate(data.items()):
        n = r.get("corrected") or 0
        for row, (key, scale) in enumerate((("acc_drop", 100.0), ("ce_rise", 1.0))):
            ax = axes[row][col]
            vals = [r[key][k] * scale for k in r["order"]]
            ax.bar(range(len(vals)), vals, width=1.0,
                   color=["tab:red" if i < n else "0.6" for i in range(len(vals))])
            ax.axhline(0, color="0.3", lw=0.5)
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(f"{name}: {n} of {len(vals)} corrected (red)", fontsize=9)
            else:
                ax.set_xlabel("filter (ranked)", fontsize=8)
    axes[0][0].set_ylabel("top-1 drop (points)", fontsize=8)
    axes[1][0].set_ylabel("cross-entropy rise", fontsize=8)
    fig.suptitle(f"{title}: filters ranked by the harm of replacing their clean feature by the "
                 "blurred one (DeepCorrect ranking)", fontsize=9)
    return save_figure(fig, path, dpi=120)

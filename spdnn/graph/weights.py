"""Weight-carrying SPDNN merge: the merged network starts as the exact ensemble of its trained
parents (issue 15 item 4; the thesis' explanation of why SPDNN works, App. B sec. A.3: the merged
network holds every parent's path, and training lets the paths learn from each other).

With the widths of every merged node set to the sum of its members' widths (``--params sum``
with weights), every merged node holds each parent's channels side by side and reads only that
parent's channels of its inputs: the weights between different parents' channels are zero
(block-diagonal layers). The parents' last layers, which feed one shared head in the merged
network, keep their parent's pre-activation output ``z`` as two channels ``relu(z)`` and
``relu(-z)`` (``z = relu(z) - relu(-z)``; for LeakyReLU with slope ``a`` the difference is
``(1 + a) z``), and the head averages them: ``act(mean_p z_p)``, the logit-averaged ensemble. A
single merged output layer averages its members' weights instead (a convolution is linear).

Which parent channel sits where is found by tracing channel provenance through both networks
(:func:`trace`): every channel of every tensor is named by the compute layer and channel it came
from and the non-compute layers it went through; a merged layer's weights are copied where a
parent layer's input channel has the same name in the merged layer's input. Where a name is
missing (a node that merges layers of different strides or pools, a recalled pooling of another
quality, an activation that differs between members), the merge is not exact and says so.

Batch norm is per channel, so a member's BN statistics are copied channel by channel (exact in
training and evaluation mode); the last layers feeding the shared head are built without BN
(:meth:`~spdnn.graph.rebuild.Rebuild.build` with ``carry``), so a network whose members all have
their own BN and no dropout is the ensemble in training mode too and fine-tuning starts from
it. A member without BN in a merged BN layer gets an identity BN (running variance
``1 - eps``), and a member's BN in a merged layer without BN is folded into its convolution:
both are exact in evaluation mode only (noted). Grouped convolutions and block instances that
merge several parents' layers are not carried (noted).

Identical trained layers (issue 15 item 6: the same op, the same weights and the same input
channels, e.g. a common pretrained stem) keep one copy; the other parent reads that copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spdnn.errors import MergeError, SpdnnError

if TYPE_CHECKING:
    import torch

    from spdnn.graph.merge import MergeResult
    from spdnn.shapes import NetInfo
    from spdnn.spec.models import Netspec

__all__ = ["CarriedMerge", "carry_weights", "ensemble_forward", "load_weights", "trace",
           "verify"]

_EVAL_IDENTITY = ("Dropout", "GaussianNoise")
"""Non-compute ops that are the identity in evaluation mode (provenance passes through)."""

_CARRIED = ("Conv2d", "ConvTranspose2d", "Linear")
"""The ops whose merged nodes hold their members' channels side by side."""

_ODD_ACTS = {"relu": 0.0, "leaky_relu": None}  # activations with f(z) - f(-z) linear in z


@dataclass
class CarriedMerge:
    """The merged network initialised from its parents' weights.

    Attributes:
        spec: the merged netspec at the carrying widths (each node: its members' widths
            summed; the parents' last layers twice their width).
        state_dict: weights for ``build_module(spec)`` (float32 tensors).
        exact: whether the merged network computes the logit-averaged ensemble (in evaluation
            mode); ``notes`` say why not, or under which condition.
        notes: one line each: what is not exact and why, eval-mode-only conditions, deduped
            layers.
        deduped: ``(kept, dropped)`` member names of identical trained layers kept once.
        params: parameters of the merged network (zeros included).
        nonzero_params: of those, the ones that are not zero.
        max_abs_err: ``max |merged - ensemble|`` on random inputs (set by :func:`verify`).
    """

    spec: Netspec
    state_dict: dict
    exact: bool
    notes: list[str] = field(default_factory=list)
    deduped: list[tuple[str, str]] = field(default_factory=list)
    params: int = 0
    nonzero_params: int = 0
    max_abs_err: float | None = None


# --------------------------------------------------------------------------------------------
# weights files
# --------------------------------------------------------------------------------------------
def load_weights(path: str | Path, spec: Netspec) -> dict:
    """Read the trained weights of ``spec`` from ``path``: a state dict of the compiled module
    (``torch.save(module.state_dict())``) or a checkpoint of ``spdnn train`` holding one
    network; read with ``torch.load(weights_only=True)`` only.

    Raises:
        SpdnnError: the file is missing or unreadable, holds objects other than tensors, or its
            keys or shapes do not match the netspec (one line naming the file and the key).
    """
    import torch

    from spdnn.codegen import build_module
    from spdnn.io import load_torch_file

    path = Path(path)
    if not path.is_file():
        raise SpdnnError("weights file not found", file=str(path),
                         hint="give the state dict (.pt) of each parent, in the parents' order")
    state = load_torch_file(path, what="weights file",
                            hint="save module.state_dict() with torch.save",
                            unsafe_hint="save module.state_dict() with torch.save")
    if isinstance(state, dict) and isinstance(state.get("models"), dict):  # spdnn train
        models = state["models"]
        if len(models) != 1:
            raise SpdnnError(f"the checkpoint holds {len(models)} networks "
                             f"({', '.join(sorted(models))})", file=str(path),
                             hint="save the state dict of the one network to merge")
        state = next(iter(models.values()))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpdnnError("not a state dict (a mapping of names to tensors)", file=str(path),
                         hint="save module.state_dict() with torch.save")
    want = build_module(spec).state_dict()
    for k, v in want.items():
        if k not in state:
            raise SpdnnError(f"key '{k}' of netspec '{spec.name}' is missing", file=str(path),
                             hint="these weights belong to another network; give the parents' "
                                  "weights in the parents' order")
        if tuple(state[k].shape) != tuple(v.shape):
            raise SpdnnError(f"key '{k}' has shape {tuple(state[k].shape)}, netspec "
                             f"'{spec.name}' needs {tuple(v.shape)}", file=str(path),
                             hint="these weights belong to another network")
    extra = sorted(set(state) - set(want))
    if extra:
        raise SpdnnError(f"key '{extra[0]}' is not in netspec '{spec.name}'"
                         + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""),
                         file=str(path), hint="these weights belong to another network")
    return {k: state[k].detach().to(torch.float32) if state[k].is_floating_point() else state[k]
            for k in want}


# --------------------------------------------------------------------------------------------
# channel provenance
# --------------------------------------------------------------------------------------------
def _sig(op) -> str:
    return json.dumps(op.model_dump(mode="json", exclude={"name", "inputs", "merged_from"}),
                      sort_keys=True)


def _flat(prov: list, shape: tuple) -> list:
    """Provenance of ``torch.flatten(x, 1)`` of a ``(C, H, W)`` map (C-major)."""
    hw = shape[1] * shape[2]
    return [("flat", p, k) for p in prov for k in range(hw)]


def trace(info: NetInfo, produce) -> dict[str, list]:
    """Channel provenance of every tensor of a network (inputs and layer outputs).

    ``produce(layer_info, inputs_provenance) -> list`` names the output channels of compute
    layers; a network input's channel ``c`` is ``("in", name, c)``. Concatenations join lists,
    eval-identity ops pass them on, other channel-preserving ops wrap each name with their
    own signature (``("op", signature, name)``), flattening and vector -> map reshapes regroup
    them; anything else gets names no other network has.

    Returns:
        layer or input name -> one provenance entry per channel (maps) or feature (vectors).
    """
    env: dict[str, list] = {}
    for i in info.spec.inputs:
        env[i.name] = [("in", i.name, c) for c in range(i.shape[0])]
    for lay in info.layers:
        op = lay.op
        ins = [env[s] for s in lay.inputs]
        out = lay.out_shape
        if op.is_spdnn_node() or op.kind == "compute":
            env[lay.name] = produce(lay, ins)
        elif op.op_name == "Concat":
            env[lay.name] = [p for x in ins for p in x]
        elif op.op_name in _EVAL_IDENTITY:
            env[lay.name] = ins[0]
        elif (op.kind == "reshape" and len(lay.in_shapes) == 1 and len(lay.in_shapes[0]) == 3
              and len(out) == 1 and out[0] == len(ins[0]) * lay.in_shapes[0][1] * lay.in_shapes[0][2]):
            env[lay.name] = _flat(ins[0], lay.in_shapes[0])
        elif (op.kind == "reshape" and len(lay.in_shapes) == 1 and len(lay.in_shapes[0]) == 1
              and len(out) == 3):
            hw = out[1] * out[2]
            env[lay.name] = [("grp", tuple(ins[0][c * hw:(c + 1) * hw])) for c in range(out[0])]
        elif len(ins) == 1 and len(out) == len(lay.in_shapes[0]) and out[0] == len(ins[0]):
            sig = _sig(op)
            env[lay.name] = [("op", sig, p) for p in ins[0]]
        else:
            env[lay.name] = [("?", id(info), lay.name, k) for k in range(out[0])]
    return env


def _node_input(lay, ins: list) -> list:
    """What a compute layer reads, channel by channel (a Linear flattens a map)."""
    prov = ins[0]
    if len(lay.in_shapes[0]) == 3 and len(lay.out_shape) == 1:
        prov = _flat(prov, lay.in_shapes[0])
    return prov


# --------------------------------------------------------------------------------------------
# layer weights as (W, b, BN)
# --------------------------------------------------------------------------------------------
def _parts(module) -> tuple[str | None, str | None]:
    """``(prefix of the conv/linear, prefix of the batch norm)`` inside a layer's module."""
    from torch import nn

    lin = bn = None
    for name, m in module.named_modules():
        if lin is None and isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            lin = name
        if bn is None and isinstance(m, nn.modules.batchnorm._BatchNorm):
            bn = name
    return lin, bn


def _key(ident: str, sub: str | None, leaf: str) -> str:
    return ".".join(x for x in (ident, sub, leaf) if x)


class _Layer:
    """One layer's affine parts in the (out, in, ...) layout, read from a state dict."""

    def __init__(self, op, ident: str, module, state: dict) -> None:
        import torch

        self.op = op
        lin, bn = _parts(module)
        if lin is None:
            raise MergeError(f"layer '{op.name}' ({op.op_name}) has no convolution or linear "
                             "part; the weight-carrying merge handles Conv2d, ConvTranspose2d "
                             "and Linear nodes")
        self.transposed = op.op_name == "ConvTranspose2d"
        w = state[_key(ident, lin, "weight")]
        self.w = w.transpose(0, 1) if self.transposed else w  # (out, in, ...)
        b = state.get(_key(ident, lin, "bias"))
        self.b = b if b is not None else torch.zeros(self.w.shape[0])
        self.bn = None
        if bn is not None:
            bnm = module.get_submodule(bn)
            self.bn = {k: state[_key(ident, bn, k)] for k in
                       ("weight", "bias", "running_mean", "running_var")}
            self.bn["eps"] = bnm.eps
        self.act = getattr(op, "activation", None)
        self.slope = float(getattr(op, "negative_slope", 0.01))

    def folded(self):
        """``(W, b)`` with the batch norm folded in (evaluation-mode arithmetic)."""
        if self.bn is None:
            return self.w, self.b
        bn = self.bn
        s = bn["weight"] / (bn["running_var"] + bn["eps"]).sqrt()
        shape = (-1,) + (1,) * (self.w.dim() - 1)
        return self.w * s.view(shape), (self.b - bn["running_mean"]) * s + bn["bias"]


def _put(w: torch.Tensor, rows: list[int], cols: list[int], value: torch.Tensor,
         add: bool = False) -> None:
    """``w[rows][:, cols] = value`` (or ``+=``) in place, for index lists."""
    import torch

    r = torch.tensor(rows, dtype=torch.long)[:, None]
    c = torch.tensor(cols, dtype=torch.long)[None, :]
    if add:
        w[r, c] += value
    else:
        w[r, c] = value


def _module_parts(spec: Netspec):
    """``(module, layer name -> attribute identifier)`` of a netspec (random weights)."""
    from spdnn.codegen import build_module
    from spdnn.codegen.names import layer_identifiers

    return build_module(spec), layer_identifiers(spec)[1]


# --------------------------------------------------------------------------------------------
# the carrying merge
# --------------------------------------------------------------------------------------------
def carry_weights(result: MergeResult, states: list[dict], dedupe: bool = True) -> CarriedMerge:
    """Initialise a merged network from its parents' trained weights (see the module
    docstring).

    Args:
        result: a merge (:func:`spdnn.graph.merge`); its topology is kept, its widths are
            replaced by the carrying widths.
        states: the parents' state dicts, in ``result.parents`` order (merge order).
        dedupe: keep one copy of identical trained layers (same op, weights and inputs).

    Returns:
        A :class:`CarriedMerge` (not yet verified: see :func:`verify`).

    Raises:
        MergeError: the merge has no builder, a node is not a convolution or linear layer and
            does not come from one parent unchanged, or the carrying widths do not fit.
    """
    import torch

    from spdnn.errors import ShapeError
    from spdnn.ops.layers import Linear
    from spdnn.shapes import infer

    b = result.rebuild
    if b is None:
        raise MergeError("this merge result has no builder; merge again with spdnn.graph.merge")
    g, letters = result.backward, result.letters
    pinfos = result.parent_infos
    pmods = [_module_parts(p) for p in result.parents]
    notes: list[str] = []
    member_name = g.graph["member_name"]

    # parents' provenance (raw names; aliases of deduped layers are applied when comparing)
    penv = [trace(info, lambda lay, ins, t=t: [("ch", t, lay.name, c)
                                                for c in range(lay.out_shape[0])])
            for t, info in enumerate(pinfos)]
    alias: dict[tuple, tuple] = {}

    def canon(p):
        if isinstance(p, tuple):
            if p and p[0] == "ch":
                t, lay = alias.get((p[1], p[2]), (p[1], p[2]))
                return ("ch", t, lay, p[3])
            return tuple(canon(x) for x in p)
        return p

    def reads(m) -> list:
        tag, layer = m
        lay = pinfos[tag][layer]
        return _node_input(lay, [penv[tag][s] for s in lay.inputs])

    def layer_of(m) -> _Layer:
        tag, layer = m
        mod, idents = pmods[tag]
        return _Layer(pinfos[tag][layer].op, idents[layer], mod.get_submodule(idents[layer]),
                      states[tag])

    def same_layer(m, k) -> bool:
        (tm, lm), (tk, lk) = m, k
        om, ok = pinfos[tm][lm].op, pinfos[tk][lk].op
        if _sig(om) != _sig(ok):
            return False
        im, ik = pmods[tm][1][lm], pmods[tk][1][lk]
        sm = {k2[len(im) + 1:]: v for k2, v in states[tm].items() if k2.startswith(im + ".")}
        sk = {k2[len(ik) + 1:]: v for k2, v in states[tk].items() if k2.startswith(ik + ".")}
        return bool(sm) and sm.keys() == sk.keys() and all(torch.equal(sm[x], sk[x]) for x in sm)

    # 1. kept members per node (dedupe in topological order) and carrying widths
    # the nodes that hold their members side by side: convolutions and Linear layers (Linear
    # widens too when carrying, see Rebuild.build); block instances keep their parents' width
    base = {n: w for n, w in b.widths().items() if g.nodes[n]["op"].op_name in _CARRIED}
    for n in letters:
        if n not in base and isinstance(g.nodes[n]["op"], Linear):
            base[n] = g.nodes[n]["op"].out_features
    kept: dict = {}
    deduped: list[tuple[str, str]] = []
    for n in b.topo:
        d = g.nodes[n]
        if d["kind"] != "compute":
            continue
        members = sorted(d["members"])
        keep: list = []
        for m in members:
            twin = None
            if dedupe and n not in b.freed and n not in b.fixed_width:
                twin = next((k for k in keep if same_layer(m, k)
                             and [canon(p) for p in reads(m)] == [canon(p) for p in reads(k)]),
                            None)
            if twin is None:
                keep.append(m)
            else:
                alias[m] = alias.get(twin, twin)
                deduped.append((member_name[twin], member_name[m]))
        kept[n] = keep
    widths = {}
    for n in base:
        ws = [pinfos[t][lay].out_shape[0] for t, lay in kept[n]]
        widths[n] = 2 * sum(ws) if n in b.freed else sum(ws)
    try:
        spec = b.build(widths, carry=True)
        info = infer(spec)
    except ShapeError as exc:
        raise MergeError(f"the carrying widths do not fit: {exc.one_line()}",
                         hint="merge these parents without weights") from None

    # 2. the merged network's provenance: member channels side by side
    node_of = {letters[n]: n for n in letters}
    slots: dict = {}

    def produce(lay, ins):
        n = node_of.get(lay.name)
        if n is None:  # a projection or the shared head: channels of their own
            return [("new", lay.name, c) for c in range(lay.out_shape[0])]
        if n in b.fixed_width:
            slots[n] = None
            return [("out", lay.name, c) for c in range(lay.out_shape[0])]
        keep = kept.get(n, [])
        if n not in base:  # a node the budget cannot widen: one parent's layer as it was
            slots[n] = None
            if len(keep) == 1 and pinfos[keep[0][0]][keep[0][1]].out_shape == lay.out_shape:
                return [("ch", *keep[0], c) for c in range(lay.out_shape[0])]
            return [("new", lay.name, c) for c in range(lay.out_shape[0])]
        out, pos = [], {}
        for t, layer in keep:
            w = pinfos[t][layer].out_shape[0]
            signs = ("+", "-") if n in b.freed else ("ch",)
            for sg in signs:
                for c in range(w):
                    pos[(sg, t, layer, c)] = len(out)
                    out.append((sg, t, layer, c))
        slots[n] = pos
        return out

    menv = trace(info, produce)
    module, idents = _module_parts(spec)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    exact = True

    def fail(text: str) -> None:
        nonlocal exact
        exact = False
        notes.append("not exact: " + text)

    eval_only: list[str] = []
    head_scale: dict = {}  # freed member -> 1 / (f(z) - f(-z) slope)
    for lay in info.layers:
        n = node_of.get(lay.name)
        if n is None:
            continue
        d = g.nodes[n]
        ident = idents[lay.name]
        mmod = module.get_submodule(ident)
        mins = _node_input(lay, [menv[s] for s in lay.inputs])
        where: dict = {}
        for i, p in enumerate(mins):
            where.setdefault(p, []).append(i)
        keep = kept[n]
        if n not in base:
            # a node the budget cannot widen (a block instance): copy it when it stands for one
            # parent layer that reads exactly its parent's channels
            (t, layer), = keep if len(keep) == 1 else [(None, None)]
            if t is not None and [canon(p) for p in reads((t, layer))] == mins:
                pid = pmods[t][1][layer]
                for k in state:
                    if k.startswith(ident + "."):
                        state[k] = states[t][pid + k[len(ident):]].clone()
                continue
            if len(d["members"]) > 1:
                fail(f"{lay.name} ({d['structure']}, merged from "
                     f"{', '.join(member_name[m] for m in d['members'])}) cannot hold its "
                     "members side by side (its channels are shared); it keeps its default "
                     "initialisation")
            else:
                fail(f"{lay.name} ({d['structure']}, from {member_name[d['members'][0]]}) "
                     "reads channels an earlier shared layer mixes; it keeps its default "
                     "initialisation")
            continue
        mlin, mbn = _parts(mmod)
        if mlin is None:
            fail(f"{lay.name} ({lay.op.op_name}) is not a convolution or linear layer")
            continue
        mop = lay.op
        if getattr(mop, "groups", 1) != 1:
            fail(f"{lay.name}: grouped convolutions (groups {mop.groups}) are not carried; it "
                 "keeps its default initialisation")
            continue
        transposed = mop.op_name == "ConvTranspose2d"
        wkey = _key(ident, mlin, "weight")
        W = torch.zeros_like(state[wkey].transpose(0, 1) if transposed else state[wkey])
        bkey = _key(ident, mlin, "bias")
        has_b = bkey in state
        B = torch.zeros(W.shape[0])
        bn = None
        if mbn is not None:
            eps = mmod.get_submodule(mbn).eps
            bn = {"weight": torch.ones(W.shape[0]), "bias": torch.zeros(W.shape[0]),
                  "running_mean": torch.zeros(W.shape[0]),
                  "running_var": torch.full((W.shape[0],), 1.0 - eps)}
        fixed = n in b.fixed_width
        share = len(result.parents)
        for m in keep:
            src = layer_of(m)
            rows = (list(range(W.shape[0])) if fixed else
                    [slots[n][("ch", m[0], m[1], c)] for c in range(src.w.shape[0])]
                    if n not in b.freed else None)
            cols, seen = [], {}
            for p in reads(m):
                p = canon(p)
                hits = where.get(p, [])
                k = seen.get(p, 0)
                if k >= len(hits):
                    cols = None
                    break
                seen[p] = k + 1
                cols.append(hits[k])
            if cols is None:
                fail(f"{lay.name}: {member_name[m]} reads channels the merged layer does not "
                     "get unchanged (a pooling, stride or recalled layer differs between the "
                     "parents)")
                continue
            if n in b.freed or fixed:
                w, bias = src.folded()
                if src.bn is not None:
                    eval_only.append(member_name[m])
                act = mop.activation if n in b.freed else src.act
                if n in b.freed:
                    if act not in _ODD_ACTS:
                        fail(f"{lay.name}: its hidden activation {act} cannot carry "
                             f"{member_name[m]}'s signed output")
                    scale = 1.0 + (float(mop.negative_slope) if act == "leaky_relu" else 0.0)
                    plus = [slots[n][("+", m[0], m[1], c)] for c in range(w.shape[0])]
                    minus = [slots[n][("-", m[0], m[1], c)] for c in range(w.shape[0])]
                    for r, sg in ((plus, 1.0), (minus, -1.0)):
                        _put(W, r, cols, sg * w)
                        B[r] = sg * bias
                    head_scale[m] = 1.0 / scale
                    if bn is not None:
                        eval_only.append(member_name[m])
                    elif not has_b:
                        fail(f"{lay.name} has no bias for {member_name[m]}'s")
                else:  # one output layer for all parents: the mean of their layers
                    _put(W, rows, cols, w / share, add=True)
                    B[rows] += bias / share
                    if src.act != mop.activation:
                        fail(f"{lay.name}: {member_name[m]} has activation {src.act}, the "
                             f"merged layer {mop.activation}")
                continue
            # a hidden node: the member's rows, its own input columns
            if src.act != mop.activation or (src.act == "leaky_relu"
                                              and src.slope != float(mop.negative_slope)):
                fail(f"{lay.name}: {member_name[m]} has activation {src.act}, the merged layer "
                     f"{mop.activation}")
            if bn is not None and src.bn is not None:
                w, bias = src.w, src.b
                for k in ("weight", "bias", "running_var"):
                    bn[k][rows] = src.bn[k]
                bn["running_mean"][rows] = src.bn["running_mean"] - (0 if has_b else bias)
                if not has_b:
                    bias = torch.zeros_like(bias)
            elif bn is not None:  # member without BN in a BN layer: identity BN
                w, bias = src.w, src.b
                eval_only.append(member_name[m])
                if not has_b:
                    bn["bias"][rows] = bias
                    bias = torch.zeros_like(bias)
            else:
                w, bias = src.folded()
                if src.bn is not None:
                    eval_only.append(member_name[m])
                if not has_b and bool(bias.abs().max() > 0):
                    fail(f"{lay.name} has no bias for {member_name[m]}'s")
            _put(W, rows, cols, w)
            B[rows] = bias
        state[wkey] = W.transpose(0, 1).contiguous() if transposed else W
        if has_b:
            state[bkey] = B
        elif bn is not None:  # biases ride on the batch norm's shift
            bn["bias"] = bn["bias"] + B
            if fixed:
                eval_only.append(lay.name)
        elif bool(B.abs().max() > 0):
            fail(f"{lay.name} has no bias for its members' biases")
        if bn is not None:
            for k, v in bn.items():
                state[_key(ident, mbn, k)] = v

    # 3. the shared heads: average the parents' signed outputs
    for o in spec.outputs:
        lay = info[o.from_]
        if node_of.get(lay.name) is not None:
            continue  # a single output layer (averaged above) or a parent's own
        ident = idents[lay.name]
        mmod = module.get_submodule(ident)
        mlin, mbn = _parts(mmod)
        if mlin is None or mbn is not None:
            fail(f"output head {lay.name} is not a plain convolution or linear layer")
            continue
        wkey, bkey = _key(ident, mlin, "weight"), _key(ident, mlin, "bias")
        W = torch.zeros_like(state[wkey])
        mins = menv[lay.inputs[0]]
        where = {p: i for i, p in enumerate(mins)}
        conv = W.dim() == 4
        if conv:
            kh, kw = W.shape[-2:]
            pad = getattr(lay.op, "pad", lambda: (0, 0))()
            if kh % 2 == 0 or kw % 2 == 0 or tuple(pad) != (kh // 2, kw // 2):
                fail(f"output head {lay.name} has no centre tap (kernel {kh}x{kw})")
                continue
        owners = [m for m in head_scale]
        n_par = len({m[0] for m in owners}) or 1
        if n_par != len(result.parents):
            fail(f"output head {lay.name} sees {n_par} of {len(result.parents)} parents")
        for m in owners:
            for c in range(W.shape[0]):
                ip, im = where.get(("+", m[0], m[1], c)), where.get(("-", m[0], m[1], c))
                if ip is None or im is None:
                    fail(f"output head {lay.name} does not read {member_name[m]}'s output "
                         "unchanged")
                    break
                v = head_scale[m] / n_par
                if conv:
                    W[c, ip, kh // 2, kw // 2] += v
                    W[c, im, kh // 2, kw // 2] -= v
                else:
                    W[c, ip] += v
                    W[c, im] -= v
        state[wkey] = W
        if bkey in state:
            state[bkey] = torch.zeros_like(state[bkey])
        acts = {getattr(p.layer(next(x.from_ for x in p.outputs if x.name == o.name)),
                        "activation", None) for p in result.parents}
        if len(acts) > 1:
            fail(f"the parents' output activations differ ({', '.join(sorted(map(str, acts)))}); "
                 f"the head applies {lay.op.activation}")

    # layers with weights of their own that no node stands for (input projections)
    for lay in info.layers:
        if node_of.get(lay.name) is None and lay.name not in {o.from_ for o in spec.outputs} \
                and lay.params:
            fail(f"{lay.name} ({lay.op.op_name}) joins several parents' channels and keeps its "
                 "default initialisation")
    if eval_only:
        notes.append("exact in evaluation mode only: batch norm is an identity or folded for "
                     + ", ".join(sorted(set(eval_only))) + " (training mode renormalises them)")
    for kept_name, dropped in deduped:
        notes.append(f"identical trained layers: {dropped} is {kept_name} (same op, weights and "
                     "inputs), kept once")
    params = info.params
    nonzero = int(sum(int((v != 0).sum()) for k, v in state.items()
                      if v.is_floating_point() and "running" not in k))
    return CarriedMerge(spec, state, exact, notes, deduped, params, nonzero)


# --------------------------------------------------------------------------------------------
# the ensemble and the check
# --------------------------------------------------------------------------------------------
def ensemble_forward(specs: list[Netspec], states: list[dict], *inputs: torch.Tensor,
                     train: bool = False):
    """The logit-averaged ensemble of trained networks in evaluation mode (``train``: in
    training mode, batch norm on batch statistics): for each output, the output layer's
    activation applied to the mean of the parents' pre-activation outputs.

    Returns one tensor for a single output, else a dict ``{output name: tensor}``.
    """
    import torch

    from spdnn.codegen import build_module
    from spdnn.codegen.names import layer_identifiers

    sums: dict[str, torch.Tensor] = {}
    acts: dict[str, Any] = {}
    for spec, st in zip(specs, states):
        net = build_module(spec)
        net.load_state_dict(st)
        net.train(train)
        idents = layer_identifiers(spec)[1]
        caught: dict[str, torch.Tensor] = {}
        hooks = []
        for o in spec.outputs:
            mod = net.get_submodule(idents[o.from_]) if hasattr(net, idents[o.from_]) else None
            last = list(mod.children())[-1] if mod is not None and list(mod.children()) else None
            if last is not None and not list(last.parameters()) and \
                    getattr(spec.layer(o.from_), "activation", None):
                acts.setdefault(o.name, last)
                hooks.append(last.register_forward_hook(
                    lambda m, i, out, name=o.name, c=caught: c.__setitem__(name, i[0])))
        with torch.no_grad():
            out = net(*inputs)
        for h in hooks:
            h.remove()
        outs = out if isinstance(out, dict) else {spec.outputs[0].name: out}
        for name, t in outs.items():
            z = caught.get(name, t)
            sums[name] = sums.get(name, 0) + z
    res = {}
    for name, s in sums.items():
        mean = s / len(specs)
        res[name] = acts[name](mean) if name in acts else mean
    return next(iter(res.values())) if len(res) == 1 else res


def verify(carried: CarriedMerge, result: MergeResult, states: list[dict], batch: int = 2,
           seed: int = 0, train: bool = False) -> float:
    """``max |merged - ensemble|`` over the outputs on ``batch`` random inputs, in evaluation
    mode (``train``: both in training mode, for networks without dropout); stored in
    ``carried.max_abs_err`` (evaluation mode only) and returned."""
    import torch

    from spdnn.codegen import build_module
    from spdnn.spec import example_inputs

    g = torch.Generator().manual_seed(seed)
    xs = example_inputs(carried.spec, batch=batch, generator=g)
    net = build_module(carried.spec)
    net.load_state_dict(carried.state_dict)
    net.train(train)
    with torch.no_grad():
        got = net(*xs)
    want = ensemble_forward(result.parents, states, *xs, train=train)
    if not isinstance(got, dict):
        got, want = {"": got}, {"": want}
    err = max(float((got[k] - want[k]).abs().max()) for k in got)
    if not train:
        carried.max_abs_err = err
    return err


def merge_with_weights(paths: list, weight_paths: list, distance: str = "longest",
                       head_kernel: int | None = None, name: str | None = None,
                       dedupe: bool = True) -> tuple[MergeResult, CarriedMerge]:
    """``spdnn merge a.yaml b.yaml --weights a.pt b.pt --params sum``: merge the netspec files,
    initialise the merged network from the weights files (one per netspec, in the same order),
    check it against the parents' logit-averaged ensemble on random inputs and put what the
    carrying did into the merge report (its sizes become the carried network's).

    Raises:
        SpdnnError: as :func:`load_weights`; a different number of weights files than netspecs.
        MergeError, SpecError: as :func:`~spdnn.graph.merge_files` and :func:`carry_weights`.
    """
    from spdnn.graph.merge import merge
    from spdnn.spec import load_inferred

    if len(weight_paths) != len(paths):
        raise SpdnnError(f"{len(paths)} netspecs but {len(weight_paths)} weights files",
                         field="--weights", hint="give one weights file per netspec, in order")
    loaded = [load_inferred(p) for p in paths]
    given = [s for s, _ in loaded]
    states_in = [load_weights(w, s) for w, s in zip(weight_paths, given)]
    # the carrying widths replace the budget's, so the budget search is skipped ("keep")
    result = merge(given, params="keep", distance=distance, head_kernel=head_kernel, name=name,
                   infos=[i for _, i in loaded], files=[str(p) for p in paths])
    by_id = {id(s): i for i, s in enumerate(given)}
    states = [states_in[by_id[id(p)]] for p in result.parents]
    carried = carry_weights(result, states, dedupe=dedupe)
    err = verify(carried, result, states)
    r = result.report
    r.merged_params, r.merged_macs = carried.params, _macs(carried.spec)
    total = sum(p["params"] for p in r.parents)
    r.target_mode, r.target_params = "sum", total
    r.notes.append(f"weights: every merged node holds each parent's channels side by side, "
                   f"{carried.params:,} parameters of which {carried.nonzero_params:,} are not "
                   f"zero (the parents have {total:,})")
    r.notes.extend("weights: " + n for n in carried.notes)
    verdict = "the exact" if carried.exact and err <= 1e-5 else "NOT the exact"
    r.notes.append(f"weights: the merged network is {verdict} logit-averaged ensemble of the "
                   f"parents: max |merged - ensemble| = {err:.1e} on 2 random inputs "
                   "(evaluation mode)")
    return result, carried


def _macs(spec: Netspec) -> int:
    from spdnn.shapes import infer

    return infer(spec).macs

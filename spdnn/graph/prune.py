"""Structured channel pruning of a (merged) network with its weights: shrink a weight-carrying
merge from its exact ``sum`` start to a smaller parameter budget (issue 15 item 5).

Which channels go is the L1 filter saliency of ``torch.nn.utils.prune.ln_structured`` (Li et
al., "Pruning Filters for Efficient ConvNets", ICLR 2017: the output channels with the smallest
L1 norm of their filter); the physical removal is spdnn's: the netspec's widths shrink, the
layer's filter rows and batch-norm entries and every reader's input columns are sliced, found by
the channel provenance of :func:`spdnn.graph.weights.trace`. Every ``Conv2d`` and
``ConvTranspose2d`` layer is prunable except those that produce a network output and those
named in ``frozen`` (a merge's signed shared-head inputs, say).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spdnn.errors import MergeError

if TYPE_CHECKING:

    from spdnn.spec.models import Netspec

__all__ = ["prunable", "prune_channels", "prune_to"]


def prunable(spec: Netspec, frozen: set[str] = frozenset()) -> dict[str, int]:
    """Prunable layers and their widths: convolutions that do not produce an output and are not
    ``frozen``."""
    outs = {o.from_ for o in spec.outputs}
    return {lay.name: lay.out_channels for lay in spec.layers
            if lay.op_name in ("Conv2d", "ConvTranspose2d") and lay.name not in outs
            and lay.name not in frozen}


def _widths_for(spec: Netspec, fraction: float, frozen: set[str]) -> dict[str, int]:
    return {n: max(1, round(w * (1.0 - fraction))) for n, w in prunable(spec, frozen).items()}


def _with_widths(spec: Netspec, widths: dict[str, int]) -> Netspec:
    from spdnn.spec import from_data

    data = spec.to_data()
    for lay in data["layers"]:
        if lay["name"] in widths:
            lay["out_channels"] = int(widths[lay["name"]])
    return from_data(data, file=f"<{spec.name} pruned>")


def prune_channels(spec: Netspec, state: dict, widths: dict[str, int]
                   ) -> tuple[Netspec, dict]:
    """Remove the least salient output channels of each layer in ``widths`` down to its width
    there, with the weights.

    Args:
        spec: the network; ``state``: its state dict (``build_module(spec)``).
        widths: layer name -> new output channels (at most its current width).

    Returns:
        ``(pruned netspec, its state dict)``: every kept channel keeps its weights, every
        reader keeps its weights for the kept channels (a network whose pruned channels had
        zero weights computes the same function).

    Raises:
        MergeError: a width above the layer's, or a reader that cannot be sliced.
    """
    import torch
    from torch.nn.utils import prune

    from spdnn.codegen import build_module
    from spdnn.codegen.names import layer_identifiers
    from spdnn.graph.weights import _key, _node_input, _parts, trace
    from spdnn.shapes import infer

    old_info = infer(spec)
    net = build_module(spec)
    net.load_state_dict(state)
    idents = layer_identifiers(spec)[1]
    kept: dict[str, list[int]] = {}
    for name, w in widths.items():
        have = old_info[name].out_shape[0]
        if w > have:
            raise MergeError(f"cannot prune layer '{name}' from {have} to {w} channels")
        lin, _ = _parts(net.get_submodule(idents[name]))
        conv = net.get_submodule(idents[name]).get_submodule(lin)
        dim = 1 if isinstance(conv, torch.nn.ConvTranspose2d) else 0
        prune.ln_structured(conv, "weight", amount=have - w, n=1, dim=dim)
        mask = conv.weight_mask.transpose(0, dim).reshape(have, -1)[:, 0]
        prune.remove(conv, "weight")
        kept[name] = [int(i) for i in torch.nonzero(mask, as_tuple=False).flatten()]
    new_spec = _with_widths(spec, widths)
    new_info = infer(new_spec)
    old_env = trace(old_info, lambda lay, ins: [("ch", lay.name, c)
                                                 for c in range(lay.out_shape[0])])
    new_env = trace(new_info, lambda lay, ins: [("ch", lay.name, c) for c in
                                                 kept.get(lay.name, range(lay.out_shape[0]))])
    new_net = build_module(new_spec)
    new_state = {k: v.clone() for k, v in new_net.state_dict().items()}
    new_idents = layer_identifiers(new_spec)[1]
    for lay in new_info.layers:
        if not lay.params:
            continue
        ident, nid = idents[lay.name], new_idents[lay.name]
        prefix = ident + "."
        sub_old = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if lay.op.op_name not in ("Conv2d", "ConvTranspose2d", "Linear"):
            if tuple(old_info[lay.name].in_shapes[0]) != tuple(lay.in_shapes[0]):
                raise MergeError(f"cannot prune the input of layer '{lay.name}' "
                                 f"({lay.op.op_name})")
            for k, v in sub_old.items():
                new_state[f"{nid}.{k}"] = v.clone()
            continue
        old_in = _node_input(old_info[lay.name], [old_env[s] for s in lay.inputs])
        new_in = _node_input(lay, [new_env[s] for s in lay.inputs])
        pos = {p: i for i, p in enumerate(old_in)}
        cols = torch.tensor([pos[p] for p in new_in], dtype=torch.long)
        rows = torch.tensor(kept.get(lay.name, range(lay.out_shape[0])), dtype=torch.long)
        lin, bn = _parts(new_net.get_submodule(nid))
        wk = _key("", lin, "weight")
        w = sub_old[wk]
        if lay.op.op_name == "ConvTranspose2d":
            w = w[cols][:, rows]
        else:
            w = w[rows][:, cols]
        new_state[f"{nid}.{wk}"] = w.clone()
        for k, v in sub_old.items():
            if k == wk:
                continue
            if v.dim() == 1:  # bias and batch-norm entries: one per output channel
                new_state[f"{nid}.{k}"] = v[rows].clone()
            else:  # num_batches_tracked
                new_state[f"{nid}.{k}"] = v.clone()
    return new_spec, new_state


def prune_to(spec: Netspec, state: dict, target: int, frozen: set[str] = frozenset()
             ) -> tuple[Netspec, dict]:
    """Prune every prunable layer by one fraction of its channels (found by bisection) so
    that the parameter count comes closest to ``target``; see :func:`prune_channels`.

    Raises:
        MergeError: ``target`` above the network's parameters, or nothing to prune.
    """
    from spdnn.shapes import infer

    have = infer(spec).params
    if target > have:
        raise MergeError(f"the network has {have:,} parameters, fewer than the target "
                         f"{target:,}", hint="prune to a smaller budget")
    if not prunable(spec, frozen):
        raise MergeError(f"network '{spec.name}' has no prunable convolution")
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if infer(_with_widths(spec, _widths_for(spec, mid, frozen))).params > target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda f: abs(infer(_with_widths(
        spec, _widths_for(spec, f, frozen))).params - target))
    return prune_channels(spec, state, _widths_for(spec, best, frozen))

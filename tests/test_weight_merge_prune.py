"""Shrinking a weight-carrying merge to a budget (issue 15 item 5): structured channel pruning
with torch.nn.utils.prune's L1 saliency and spdnn's physical removal of channels."""

from __future__ import annotations

import pytest
import torch

from spdnn.codegen import build_module
from spdnn.errors import MergeError
from spdnn.graph import merge_files
from spdnn.graph.prune import prunable, prune_channels, prune_to
from spdnn.graph.weights import carry_weights
from spdnn.shapes import infer
from tests.helpers import ROOT, randomize_norms


@pytest.fixture(scope="module")
def carried():
    result = merge_files(sorted(ROOT.glob("netspecs/iris/appendix_a/*.yaml")), params="keep")
    states = []
    for i, p in enumerate(result.parents):
        torch.manual_seed(i)
        m = build_module(p)
        randomize_norms(m, i)
        states.append(m.state_dict())
    return result, carry_weights(result, states)


def _run(spec, state, x):
    net = build_module(spec)
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        return net(x)


def test_pruning_dead_channels_keeps_the_function(carried):
    """Channels whose filter and BN shift are zero output zero after ReLU: the L1 saliency
    removes exactly those, and the pruned network computes the same outputs."""
    result, c = carried
    state = {k: v.clone() for k, v in c.state_dict.items()}
    layer = "B"
    w = state[f"{layer.lower()}.0.weight"]
    dead = [1, 4, 6]
    w[dead] = 0
    state[f"{layer.lower()}.1.weight"][dead] = 0  # BN gamma 0, beta 0: BN output 0
    state[f"{layer.lower()}.1.bias"][dead] = 0
    x = torch.rand(2, 1, 96, 128)
    want = _run(c.spec, state, x)
    width = infer(c.spec).shapes[layer][0]
    spec, st = prune_channels(c.spec, state, {layer: width - len(dead)})
    assert infer(spec).shapes[layer][0] == width - len(dead)
    assert infer(spec).params < infer(c.spec).params
    torch.testing.assert_close(_run(spec, st, x), want, atol=1e-6, rtol=0)
    # pruning a live channel changes the function
    spec2, st2 = prune_channels(c.spec, state, {layer: width - len(dead) - 1})
    assert (_run(spec2, st2, x) - want).abs().max() > 1e-6


def test_prune_to_like_each_reaches_the_target(carried):
    result, c = carried
    target = round(sum(i.params for i in result.parent_infos) / 3)
    frozen = {result.letters[n] for n in result.rebuild.freed}
    spec, st = prune_to(c.spec, c.state_dict, target, frozen)
    assert abs(infer(spec).params / target - 1) < 0.05
    for name in frozen:  # the signed shared-head inputs keep their widths
        assert infer(spec).shapes[name] == infer(c.spec).shapes[name]
    out = _run(spec, st, torch.rand(1, 1, 96, 128))
    assert out.shape == (1, 1, 96, 128) and torch.isfinite(out).all()
    assert set(prunable(spec, frozen)) == set(prunable(c.spec, frozen))
    with pytest.raises(MergeError, match="fewer than the target"):
        prune_to(c.spec, c.state_dict, infer(c.spec).params + 1)

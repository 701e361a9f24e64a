"""The weight-carrying merge (issue 15 items 4 and 6): at the ``sum`` widths the merged network,
initialised from its parents' weights, computes their logit-averaged ensemble exactly; identical
trained layers are kept once; where a merge cannot be exact it says so.

Parents get random weights and random batch-norm statistics (the construction does not depend
on what the weights are, so this is as strict as trained weights; the benchmark
``benchmarks/bench_weight_merge.py`` uses trained ones).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import spdnn.spec as S
from spdnn.cli import main
from spdnn.codegen import build_module
from spdnn.graph import merge, merge_files
from spdnn.graph.weights import carry_weights, ensemble_forward, load_weights, verify
from spdnn.shapes import infer
from tests.helpers import ROOT, randomize_norms


def _states(specs, seed=0):
    out = []
    for i, s in enumerate(specs):
        torch.manual_seed(seed + i)
        m = build_module(s)
        randomize_norms(m, seed + i)
        out.append({k: v.clone() for k, v in m.state_dict().items()})
    return out


def _conv(name, k, c, **kw):
    return {"name": name, "op": "Conv2d", "kernel_size": k, "out_channels": c, "padding": "same",
            "activation": "relu", **kw}


def _net(name, layers):
    return S.from_data({"name": name, "input": {"name": "image", "channels": 3, "height": 16,
                                                "width": 16},
                        "layers": layers, "output": {"name": "logits", "from": layers[-1]["name"]}})


def small_a(pool="MaxPool2d"):
    """Conv-pool-conv-strided conv-Linear classifier."""
    return _net("small_a" if pool == "MaxPool2d" else "small_a_avg", [
        _conv("conv1", 3, 8, batch_norm=True), {"name": "pool", "op": pool, "kernel_size": 2},
        _conv("conv2", 3, 12, batch_norm=True),
        {"name": "conv3", "op": "Conv2d", "kernel_size": 3, "stride": 2, "padding": 1,
         "out_channels": 16, "activation": "relu"},
        {"name": "fc", "op": "Linear", "out_features": 10}])


def small_b():
    """Another classifier: a 5x5 conv, BN on the strided conv, two Linear layers."""
    return _net("small_b", [
        _conv("conv1", 3, 8, batch_norm=True), {"name": "pool", "op": "MaxPool2d", "kernel_size": 2},
        _conv("conv2", 5, 10, batch_norm=True),
        {"name": "conv3", "op": "Conv2d", "kernel_size": 3, "stride": 2, "padding": 1,
         "out_channels": 8, "activation": "relu", "batch_norm": True},
        {"name": "fc1", "op": "Linear", "out_features": 32, "activation": "relu"},
        {"name": "drop", "op": "Dropout", "p": 0.5},
        {"name": "fc2", "op": "Linear", "out_features": 10}])


def _carry(result, states_by_parent):
    carried = carry_weights(result, states_by_parent)
    return carried, verify(carried, result, states_by_parent)


def _in_merge_order(result, specs, states):
    return [states[next(i for i, s in enumerate(specs) if s is p)] for p in result.parents]


@pytest.mark.parametrize("pattern", ["netspecs/iris/appendix_a/*.yaml",
                                     "netspecs/depth/parent_*.yaml"])
def test_carried_merge_is_the_exact_ensemble_of_paper_parents(pattern):
    paths = sorted(ROOT.glob(pattern))
    result = merge_files(paths, params="keep")  # the carrying widths replace the budget's
    states = _states(result.parents)
    carried, err = _carry(result, states)
    assert carried.exact, carried.notes
    assert err < 1e-5
    if "iris" in pattern:  # no dropout: the same in training mode (batch statistics), so
        # fine-tuning starts from the ensemble
        assert verify(carried, result, states, batch=4, train=True) < 1e-5
    # every parent's channels are held side by side: each hidden node is its members' sum
    info = infer(carried.spec)
    b = result.rebuild
    for n, letter in result.letters.items():
        if n in b.freed or n in b.fixed_width or letter not in info.shapes:
            continue
        members = result.backward.nodes[n]["members"]
        want = sum(result.parent_infos[t][lay].out_shape[0] for t, lay in members)
        assert info.shapes[letter][0] == want
    # the weights between different parents' channels are zero: the non-zero weights are the
    # parents' own (the shared-head layers twice, signed) and the head's taps
    assert carried.nonzero_params < carried.params
    assert carried.nonzero_params >= sum(i.params for i in result.parent_infos) * 0.9


def test_two_small_conv_nets_merge_exactly_with_a_shared_output_layer():
    a, b = small_a(), small_b()
    result = merge([a, b], params="keep")
    states = _in_merge_order(result, [a, b], _states([a, b]))
    carried, err = _carry(result, states)
    assert carried.exact and err < 1e-5, carried.notes
    # the two 10F output layers are one node: its weights are the mean of the parents'
    x = torch.rand(3, 3, 16, 16)
    net = build_module(carried.spec)
    net.load_state_dict(carried.state_dict)
    net.eval()
    torch.testing.assert_close(net(x), ensemble_forward(result.parents, states, x),
                               atol=1e-5, rtol=0)
    # and not the output of either parent alone
    alone = build_module(result.parents[0])
    alone.load_state_dict(states[0])
    alone.eval()
    assert (net(x) - alone(x)).abs().max() > 1e-3


def test_identical_trained_stem_is_kept_once():
    a, b = small_a(), small_b()
    sa, sb = _states([a, b])
    for k in list(sb):
        if k.startswith("conv1."):
            sb[k] = sa[k].clone()  # a common pretrained stem
    result = merge([a, b], params="keep")
    states = _in_merge_order(result, [a, b], [sa, sb])
    carried, err = _carry(result, states)
    assert carried.exact and err < 1e-5, carried.notes
    assert [sorted(x.split(":")[0] for x in pair) for pair in carried.deduped] == [["small_a",
                                                                                   "small_b"]]
    assert any("identical trained layers" in n and "conv1" in n for n in carried.notes)
    stem = result.letters[next(n for n in result.letters
                               if result.backward.nodes[n]["structure"] == "3C"
                               and result.backward.nodes[n]["fwd"] == 1)]
    assert infer(carried.spec).shapes[stem][0] == 8  # one copy, not 16
    # without dedupe the stem holds both copies and the network is as exact
    both = carry_weights(result, states, dedupe=False)
    assert infer(both.spec).shapes[stem][0] == 16 and both.deduped == []
    assert both.params > carried.params
    # a stem whose weights differ in one value is not deduped
    sb2 = {k: v.clone() for k, v in sb.items()}
    sb2["conv1.0.weight"][0, 0, 0, 0] += 1e-3
    states2 = _in_merge_order(result, [a, b], [sa, sb2])
    assert carry_weights(result, states2).deduped == []


def test_merge_of_different_pools_is_reported_not_exact():
    a, c = small_a(), small_a("AvgPool2d")
    result = merge([a, c], params="keep")
    states = _in_merge_order(result, [a, c], _states([a, c]))
    carried, err = _carry(result, states)
    assert not carried.exact and err > 1e-4
    assert any("not exact" in n and "pooling" in n for n in carried.notes)


def _files(tmp_path: Path, specs, states):
    out = []
    for s, st in zip(specs, states):
        y, w = tmp_path / f"{s.name}.yaml", tmp_path / f"{s.name}.pt"
        y.write_text(S.dump(s))
        torch.save(st, w)
        out.append((y, w))
    return out


def test_cli_writes_the_exact_merged_network_and_weights(tmp_path: Path, capsys):
    a, b = small_a(), small_b()
    (ya, wa), (yb, wb) = _files(tmp_path, [a, b], _states([a, b]))
    m, mw = tmp_path / "m.yaml", tmp_path / "m.pt"
    assert main(["merge", str(ya), str(yb), "--weights", str(wa), str(wb), "--params", "sum",
                 "-o", str(m), "--out-weights", str(mw)]) == 0
    text = capsys.readouterr().out
    assert "the exact logit-averaged ensemble" in text
    spec = S.load(m)
    net = build_module(spec)
    net.load_state_dict(torch.load(mw, weights_only=True))
    net.eval()
    x = torch.rand(2, 3, 16, 16)
    want = ensemble_forward([a, b], [load_weights(wa, a), load_weights(wb, b)], x)
    torch.testing.assert_close(net(x), want, atol=1e-5, rtol=0)


def test_cli_weight_errors_are_one_line(tmp_path: Path, capsys):
    a, b = small_a(), small_b()
    (ya, wa), (yb, wb) = _files(tmp_path, [a, b], _states([a, b]))
    m, mw = tmp_path / "m.yaml", tmp_path / "m.pt"
    base = ["merge", str(ya), str(yb), "-o", str(m), "--out-weights", str(mw)]
    bad = tmp_path / "evil.pt"
    torch.save({"conv1.0.weight": torch.nn.ReLU()}, bad)  # an object: refused by weights_only
    cases = [
        (base + ["--weights", str(wb), str(wa), "--params", "sum"], str(wb)),  # swapped
        (base + ["--weights", str(wa), "--params", "sum"], "2 netspecs but 1 weights"),
        (base + ["--weights", str(wa), str(wb)], "--params sum"),
        (base + ["--weights", str(bad), str(wb), "--params", "sum"], "refusing to load"),
        (["merge", str(ya), str(yb), str(wa), "-o", str(m)], "weights file among"),
        (base + ["--weights", str(wa), str(m), "--params", "sum"], "m.yaml"),  # overwrite
    ]
    for args, needle in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
        assert not mw.exists()
    torch.save(states := _states([a])[0], wa)
    states["extra.weight"] = torch.zeros(1)
    torch.save(states, wa)
    assert main(base + ["--weights", str(wa), str(wb), "--params", "sum"]) == 2
    assert "'extra.weight' is not in netspec" in capsys.readouterr().err


def test_two_imported_torch_networks_merge_into_their_exact_ensemble():
    """Two torch modules imported with spdnn.from_module (torch.fx), merged with their
    weights: the merged network computes the mean of the original modules' logits."""
    from torch import nn

    from spdnn import from_module

    torch.manual_seed(0)
    one = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16),
                        nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    two = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(12, 8, 5, padding=2), nn.BatchNorm2d(8),
                        nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 32), nn.ReLU(),
                        nn.Linear(32, 10))
    for i, m in enumerate((one, two)):
        randomize_norms(m, i)
        m.eval()
    x = torch.rand(2, 3, 16, 16)
    imported = [from_module(m, x, name=n) for m, n in ((one, "torch_one"), (two, "torch_two"))]
    specs = [r.spec for r in imported]
    result = merge(specs, params="keep")
    states = _in_merge_order(result, specs, [r.state_dict for r in imported])
    carried, err = _carry(result, states)
    assert carried.exact and err < 1e-5, carried.notes
    net = build_module(carried.spec)
    net.load_state_dict(carried.state_dict)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), (one(x) + two(x)) / 2, atol=1e-5, rtol=0)

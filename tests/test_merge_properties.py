"""Property tests of the SPDNN merge (MISSION "The SPDNN algorithm") and of the YAML round trip.

Random valid parents are built as plain dicts and validated with ``spdnn.spec.from_data``:

* ``chains()``: Conv2d layers (kernel 1/3/5/7, 1..8 channels, ``padding: same``, optional
  batch norm and activation) with 2x2 pooling / 2x unpooling between them, on a 1x16x16 input;
  the sticky pooling factor stays between 1/2 and 16 and is brought back to 1 before the last
  1-channel conv.
* ``dags()``: branches from the input or from any earlier layer, resampled, joined by Concat
  layers of equal resolution; every dangling branch is joined in a last Concat that feeds one
  1-channel conv.

All parents share ``input: {name: x, channels: 1, height: 16, width: 16}`` and output ``out``
of shape (1, 16, 16), so any list of them is a valid merge.
"""

from __future__ import annotations

import itertools
import os
from fractions import Fraction
from pathlib import Path

import networkx as nx
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import spdnn.spec as S
from spdnn.codegen import build_module
from spdnn.errors import SpdnnError
from spdnn.graph import check_embedding, merge, parent_graph
from spdnn.shapes import infer
from spdnn.spec.blocks import netspec_paths

pytestmark = pytest.mark.filterwarnings("ignore:The hashes produced for directed graphs changed")

ROOT = Path(__file__).resolve().parents[1]
INPUT = {"name": "x", "channels": 1, "height": 16, "width": 16}
OUT_SHAPE = (1, 16, 16)
KERNELS = [1, 3, 5, 7]
ACTIVATIONS = [None, "relu", "leaky_relu", "elu", "sigmoid", "tanh"]
MAX_FACTOR = Fraction(16)  # 16x16 pooled by 16 is 1x1
MIN_FACTOR = Fraction(1, 2)  # unpooled once above the input resolution: 32x32

# SPDNN_HYPOTHESIS_SCALE=20 multiplies every example count (a deeper, slower search).
SCALE = max(1, int(os.environ.get("SPDNN_HYPOTHESIS_SCALE", "1")))
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------
@st.composite
def conv(draw, name: str, inputs: list[str] | None = None, out_channels: int | None = None):
    d = {"name": name, "op": "Conv2d", "kernel_size": draw(st.sampled_from(KERNELS)),
         "out_channels": out_channels or draw(st.integers(1, 8)), "padding": "same"}
    if draw(st.booleans()):
        d["batch_norm"] = True
    act = draw(st.sampled_from(ACTIVATIONS))
    if act is not None:
        d["activation"] = act
    if inputs is not None:
        d["inputs"] = inputs
    return d


def _pool(draw, name: str, inputs: list[str] | None = None) -> dict:
    d = {"name": name, "op": draw(st.sampled_from(["MaxPool2d", "MaxPool2d", "AvgPool2d"])),
         "kernel_size": 2}
    if inputs is not None:
        d["inputs"] = inputs
    return d


def _restore(draw, names, src: str | None, factor: Fraction, explicit: bool) -> tuple[list, str | None]:
    """Layers bringing ``factor`` back to 1 (unpool by the whole factor, or 2x steps)."""
    out: list[dict] = []
    while factor != 1:
        inputs = [src] if explicit and src is not None else None
        name = next(names)
        if factor > 1:
            s = int(factor) if draw(st.booleans()) else 2
            out.append({"name": name, "op": "Unpool", "scale_factor": s, **(
                {"inputs": inputs} if inputs else {})})
            factor /= s
        else:
            out.append({"name": name, "op": "MaxPool2d", "kernel_size": 2,
                        **({"inputs": inputs} if inputs else {})})
            factor *= 2
        src = name
    return out, src


def _netspec(name: str, layers: list[dict]) -> dict:
    return {"name": name, "input": dict(INPUT), "layers": layers,
            "output": {"name": "out", "from": layers[-1]["name"]}}


@st.composite
def chain_data(draw, name: str | None = None):
    """A chain as plain data (layers read the previous one; no ``inputs`` fields)."""
    name = name or draw(st.sampled_from(["alpha", "beta", "gamma", "delta"]))
    names = (f"l{i}" for i in itertools.count())
    layers: list[dict] = []
    factor = Fraction(1)
    for _ in range(draw(st.integers(0, 7))):
        what = draw(st.sampled_from(["conv", "conv", "conv", "pool", "unpool"]))
        if what == "pool" and factor < MAX_FACTOR:
            layers.append(_pool(draw, next(names)))
            factor *= 2
        elif what == "unpool" and factor > MIN_FACTOR:
            layers.append({"name": next(names), "op": "Unpool", "scale_factor": 2})
            factor /= 2
        else:
            layers.append(draw(conv(next(names))))
    more, _ = _restore(draw, names, None, factor, explicit=False)
    layers += more
    layers.append(draw(conv(next(names), out_channels=1)))
    return _netspec(name, layers)


@st.composite
def dag_data(draw, name: str | None = None):
    """A DAG as plain data: every layer names its inputs."""
    name = name or draw(st.sampled_from(["alpha", "beta", "gamma", "delta"]))
    names = (f"n{i}" for i in itertools.count())
    tensors: list[tuple[str, Fraction]] = [("x", Fraction(1))]
    used: set[str] = set()
    layers: list[dict] = []
    first = draw(conv(next(names), inputs=["x"]))
    layers.append(first)
    used.add("x")
    tensors.append((first["name"], Fraction(1)))
    for _ in range(draw(st.integers(0, 7))):
        what = draw(st.sampled_from(["conv", "conv", "conv", "pool", "unpool", "concat",
                                     "concat"]))
        src, f = tensors[draw(st.integers(0, len(tensors) - 1))]
        if what == "concat":
            by_factor: dict[Fraction, list[str]] = {}
            for t, tf in tensors:
                by_factor.setdefault(tf, []).append(t)
            groups = sorted((g for g in by_factor.values() if len(g) >= 2), key=lambda g: g[0])
            if groups:
                group = draw(st.sampled_from(groups))
                picked = draw(st.lists(st.sampled_from(group), min_size=2,
                                       max_size=min(3, len(group)), unique=True))
                nm = next(names)
                layers.append({"name": nm, "op": "Concat", "inputs": picked})
                used.update(picked)
                tensors.append((nm, by_factor_key(by_factor, picked[0])))
                continue
            what = "conv"
        nm = next(names)
        if what == "pool" and f < MAX_FACTOR:
            layers.append(_pool(draw, nm, inputs=[src]))
            f = f * 2
        elif what == "unpool" and f > MIN_FACTOR:
            layers.append({"name": nm, "op": "Unpool", "scale_factor": 2, "inputs": [src]})
            f = f / 2
        else:
            layers.append(draw(conv(nm, inputs=[src])))
        used.add(src)
        tensors.append((nm, f))
    ends = []
    for t, f in tensors:
        if t in used:
            continue
        more, end = _restore(draw, names, t, f, explicit=True)
        layers += more
        ends.append(end)
    if len(ends) > 1:
        nm = next(names)
        layers.append({"name": nm, "op": "Concat", "inputs": ends})
        ends = [nm]
    layers.append(draw(conv(next(names), inputs=ends, out_channels=1)))
    return _netspec(name, layers)


def by_factor_key(by_factor: dict, tensor: str) -> Fraction:
    return next(f for f, ts in by_factor.items() if tensor in ts)


def chains(name: str | None = None):
    return chain_data(name).map(S.from_data)


def dags(name: str | None = None):
    return dag_data(name).map(S.from_data)


def nets(name: str | None = None):
    return st.one_of(chains(name), dags(name))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def node_match(x: dict, y: dict) -> bool:
    return x.get("structure") == y.get("structure") and x["kind"] == y["kind"]


def iso(g: nx.DiGraph, h: nx.DiGraph) -> bool:
    return nx.is_isomorphic(g, h, node_match=node_match)


def compute_layers(spec) -> int:
    return sum(1 for lay in spec.layers if lay.kind == "compute")


def check_forward(spec) -> None:
    info = infer(spec)
    assert info.output_shapes() == {"out": OUT_SHAPE}
    net = build_module(spec).eval()
    with torch.no_grad():
        y = net(torch.randn(2, *INPUT_SHAPE))
    assert tuple(y.shape) == (2, *OUT_SHAPE)
    assert torch.isfinite(y).all()


INPUT_SHAPE = (1, 16, 16)


def unreported_pairs(g: nx.DiGraph, stage: str, skipped) -> list:
    """Pairs of compute nodes of ``g`` with equal ``stage`` labels that no SkippedMerge of
    ``stage`` accounts for (a skipped merge names the members of both nodes at the time).

    ``label`` is overwritten by backward labelling, so the labels are rebuilt from
    ``structure`` and the ``fwd``/``bwd`` distances."""
    names = g.graph["member_name"]
    dist = "fwd" if stage == "forward" else "bwd"
    members = {n: {names[m] for m in d["members"]} for n, d in g.nodes(data=True)
               if d["kind"] == "compute"}
    out = []
    for u, v in itertools.combinations(sorted(members, key=str), 2):
        lu = (g.nodes[u]["structure"], g.nodes[u][dist])
        lv = (g.nodes[v]["structure"], g.nodes[v][dist])
        if lu != lv:
            continue
        ok = any(s.stage == stage and tuple(s.label) == tuple(lu) and (
            (set(s.kept) <= members[u] and set(s.other) <= members[v])
            or (set(s.kept) <= members[v] and set(s.other) <= members[u])) for s in skipped)
        if not ok:
            out.append((lu, sorted(members[u]), sorted(members[v])))
    return out


# --------------------------------------------------------------------------------------------
# the strategies themselves
# --------------------------------------------------------------------------------------------
@settings(max_examples=60 * SCALE, **SETTINGS)
@given(nets())
def test_generated_parents_are_valid(spec):
    check_forward(spec)


# --------------------------------------------------------------------------------------------
# merge properties
# --------------------------------------------------------------------------------------------
@settings(max_examples=25 * SCALE, **SETTINGS)
@given(st.lists(nets(), min_size=1, max_size=3))
def test_merge_never_raises_and_is_sound(parents):
    """Merging compatible parents raises nothing; the result is a DAG, every parent embeds in
    it, and the merged netspec infers shapes and runs with the parents' output shape."""
    try:
        result = merge(parents)
    except SpdnnError as exc:  # a user-facing error on valid, compatible parents is still a bug
        pytest.fail(f"merge raised {type(exc).__name__}: {exc.one_line()}")
    assert nx.is_directed_acyclic_graph(result.backward)
    assert check_embedding(result) == []
    check_forward(result.spec)
    assert S.loads(S.dump(result.spec)) == result.spec


@settings(max_examples=30 * SCALE, **SETTINGS)
@given(nets())
def test_merge_of_one_is_the_parent(a):
    result = merge([a], params="keep")
    assert iso(parent_graph(a), result.backward)
    assert check_embedding(result) == []
    check_forward(result.spec)


@settings(max_examples=30 * SCALE, **SETTINGS)
@given(chains())
def test_merge_of_one_chain_keeps_layers_and_params(a):
    result = merge([a], params="keep")
    assert compute_layers(result.spec) == compute_layers(a)
    assert infer(result.spec).params == infer(a).params
    assert result.report.merged_params == infer(a).params
    assert result.report.skipped == []


def single_path_edges(g: nx.DiGraph) -> bool:
    return all(len(d["paths"]) == 1 for _, _, d in g.edges(data=True))


@settings(max_examples=30 * SCALE, **SETTINGS)
@given(dags())
def test_merge_of_one_dag_keeps_layers_and_params(a):
    """Where no two parent paths join the same pair of graph nodes, merge([a]) rebuilds a."""
    assume(single_path_edges(parent_graph(a)))
    result = merge([a], params="keep")
    assert compute_layers(result.spec) == compute_layers(a)
    assert infer(result.spec).params == infer(a).params


PARALLEL_PATHS = {
    "name": "skip_twice",
    "input": INPUT,
    "layers": [
        {"name": "c1", "op": "Conv2d", "kernel_size": 3, "out_channels": 4, "padding": "same"},
        {"name": "p1", "op": "MaxPool2d", "kernel_size": 2, "inputs": ["c1"]},
        {"name": "u1", "op": "Unpool", "scale_factor": 2, "inputs": ["p1"]},
        {"name": "cat", "op": "Concat", "inputs": ["c1", "u1"]},
        {"name": "c2", "op": "Conv2d", "kernel_size": 3, "out_channels": 1, "padding": "same",
         "inputs": ["cat"]},
    ],
    "output": {"name": "out", "from": "c2"},
}


def test_merge_of_one_keeps_parallel_paths():
    a = S.from_data(PARALLEL_PATHS)
    result = merge([a], params="keep")
    assert infer(result.spec).params == infer(a).params
    assert infer(result.spec)["B"].in_shapes == infer(a)["c2"].in_shapes


@settings(max_examples=20 * SCALE, **SETTINGS)
@given(nets())
def test_merge_is_idempotent(a):
    one, two = merge([a], params="keep"), merge([a, a], params="keep")
    assert iso(one.backward, two.backward)
    assert one.report.merged_params == two.report.merged_params
    assert check_embedding(two) == []


@settings(max_examples=20 * SCALE, **SETTINGS)
@given(nets("alpha"), nets("beta"))
def test_merge_is_order_independent_for_two(a, b):
    for params in ("keep", "like-each"):
        ab, ba = merge([a, b], params=params), merge([b, a], params=params)
        assert iso(ab.backward, ba.backward)
        assert ab.report.merged_params == ba.report.merged_params
        assert S.dump(ab.spec) == S.dump(ba.spec)


@settings(max_examples=8 * SCALE, **SETTINGS)
@given(nets("alpha"), nets("beta"), nets("gamma"))
def test_merge_is_order_independent_for_three(a, b, c):
    for params in ("keep", "like-each"):
        results = [merge(list(p), params=params) for p in itertools.permutations([a, b, c])]
        first = results[0]
        for r in results[1:]:
            assert iso(first.backward, r.backward)
            assert r.report.merged_params == first.report.merged_params
            assert S.dump(r.spec) == S.dump(first.spec)


@settings(max_examples=20 * SCALE, **SETTINGS)
@given(st.lists(nets(), min_size=2, max_size=3), st.sampled_from(["longest", "shortest"]))
def test_every_unmerged_label_pair_is_reported(parents, rule):
    """With either distance rule the result is a DAG in which every parent embeds, and two
    nodes that keep equal labels after a contraction appear in the report's skipped merges."""
    result = merge(parents, params="keep", distance=rule)
    assert result.report.rule == rule
    assert nx.is_directed_acyclic_graph(result.forward)
    assert nx.is_directed_acyclic_graph(result.backward)
    assert check_embedding(result) == []
    assert unreported_pairs(result.forward, "forward", result.report.skipped) == []
    assert unreported_pairs(result.backward, "backward", result.report.skipped) == []
    check_forward(result.spec)


@settings(max_examples=15 * SCALE, **SETTINGS)
@given(st.lists(nets(), min_size=1, max_size=3), st.sampled_from(["longest", "shortest"]))
def test_merge_is_deterministic(parents, rule):
    first = merge(parents, distance=rule)
    again = merge(parents, distance=rule)
    assert S.dump(first.spec) == S.dump(again.spec)
    assert first.report.merged_params == again.report.merged_params
    assert first.report.skipped == again.report.skipped


def test_shortest_rule_reports_skips_on_the_iris_d_parents():
    """The App. D parents are the documented case where the shortest rule would close a cycle
    (spdnn.graph.label docstring): the merge must still succeed, stay acyclic, and say so."""
    parents = [S.load(p) for p in sorted((ROOT / "netspecs/iris/appendix_d").glob("parent_*.yaml"))]
    result = merge(parents, params="keep", distance="shortest")
    assert nx.is_directed_acyclic_graph(result.backward)
    assert check_embedding(result) == []
    assert result.report.skipped, "expected skipped merges with the shortest-distance rule"
    assert unreported_pairs(result.backward, "backward", result.report.skipped) == []


# --------------------------------------------------------------------------------------------
# YAML round trip
# --------------------------------------------------------------------------------------------
@settings(max_examples=100 * SCALE, **SETTINGS)
@given(nets())
def test_dump_loads_round_trip_random(spec):
    assert S.loads(S.dump(spec)) == spec
    assert S.loads(S.dump(spec, header="a header\nover two lines")) == spec


NETSPEC_FILES = netspec_paths(ROOT / "netspecs")  # block libraries left out


def test_there_are_netspec_files():
    assert len(NETSPEC_FILES) >= 10


@pytest.mark.parametrize("path", NETSPEC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dump_loads_round_trip_files(path):
    spec = S.load(path)
    text = S.dump(spec)
    assert S.loads(text) == spec
    assert S.dump(S.loads(text)) == text


# --------------------------------------------------------------------------------------------
# merges do not depend on string hashing (the emitted netspec is committed and diffed)
# --------------------------------------------------------------------------------------------
SEED_SCRIPT = """
import glob, hashlib, sys, warnings
warnings.filterwarnings("ignore")
import spdnn.spec as S
from spdnn.graph import merge
out = []
for pat in ["netspecs/iris/appendix_a/*.yaml", "netspecs/iris/appendix_d/parent_*.yaml",
            "netspecs/depth/parent_*.yaml"]:
    ps = [S.load(p) for p in sorted(glob.glob(pat))]
    for rule in ("longest", "shortest"):
        r = merge(ps, distance=rule)
        out.append(S.dump(r.spec) + repr(r.report.skipped) + repr(r.report.labels)
                   + repr(r.report.notes))
print(hashlib.sha256("".join(out).encode()).hexdigest())
"""


def test_merge_does_not_depend_on_the_hash_seed():
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    def run(seed):
        return subprocess.run([sys.executable, "-c", SEED_SCRIPT], capture_output=True,
                              text=True, timeout=300, cwd=ROOT,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)})

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(run, (0, 2)))
    for p in procs:
        assert p.returncode == 0, p.stderr
    assert procs[0].stdout == procs[1].stdout

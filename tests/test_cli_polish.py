"""The command line and figures as a new user meets them (issue 18, items 5, 6, 10, 11): validate
on folders, help that names values in words, full op descriptions, inspect --json/--batch and its
cross-check against torch, --set errors that name --set, PNG resolution, the layout direction,
the parents' order and legends of the merge diagrams, and the compare table's names."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import spdnn.spec as S
from spdnn import render as R
from spdnn.cli import main
from spdnn.cli.console import plural
from spdnn.graph import merge_files
from spdnn.shapes import infer
from tests.helpers import NETSPECS, NOT_BUILT, ROOT

IRIS_A = sorted(str(p) for p in (NETSPECS / "iris/appendix_a").glob("*.yaml"))
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz 'dot' is not installed")
BAD_FIELD = ("name: bad_field\ninput: {channels: 1, height: 8, width: 8}\nlayers:\n"
             "  - {name: c, op: Conv2d, kernel_size: 3, out_chanels: 2}\n")
BAD_SHAPE = ("name: bad_shape\ninput: {channels: 1, height: 4, width: 4}\nlayers:\n"
             "  - {name: c, op: Conv2d, kernel_size: 9, out_channels: 2}\n")


def _chain(n: int) -> S.Netspec:
    layers = [{"name": f"c{i}", "op": "Conv2d", "kernel_size": 3, "out_channels": 4,
               "padding": "same"} for i in range(n)]
    return S.from_data({"name": "chain", "input": {"channels": 1, "height": 8, "width": 8},
                        "layers": layers})


def _wide(n: int) -> S.Netspec:
    layers = [{"name": f"b{i}", "op": "Conv2d", "kernel_size": 3, "out_channels": 4,
               "padding": "same", "inputs": ["x"]} for i in range(n)]
    layers.append({"name": "cat", "op": "Concat", "inputs": [f"b{i}" for i in range(n)]})
    return S.from_data({"name": "wide", "input": {"name": "x", "channels": 1, "height": 8,
                                                  "width": 8}, "layers": layers})


# --------------------------------------------------------------------------------------------
# validate (item 5)
# --------------------------------------------------------------------------------------------
def test_validate_a_folder_reports_every_bad_file_and_a_summary(tmp_path: Path, capsys):
    shutil.copy(IRIS_A[0], tmp_path / "good.yaml")
    (tmp_path / "bad_field.yaml").write_text(BAD_FIELD)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad_shape.yml").write_text(BAD_SHAPE)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "ignored.yaml").write_text("not: [a netspec")
    shutil.copy(NETSPECS / "blocks/squeezenet.yaml", tmp_path / "sub" / "blocks.yaml")
    (tmp_path / "notes.txt").write_text("not yaml")
    assert main(["validate", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 2, err  # one line per bad file, the first did not stop the second
    assert lines[0] == (f"error: {tmp_path / 'bad_field.yaml'}:4: layers[0](c).out_chanels: "
                        "unknown field 'out_chanels' (did you mean 'out_channels'?)")
    assert lines[1].startswith(f"error: {tmp_path / 'sub' / 'bad_shape.yml'}:4: layers[0](c): ")
    assert "does not fit an input of size 4" in lines[1]
    assert f"ok  {tmp_path / 'good.yaml'}: iris_a_parent_1, 8 layers, 19,713 parameters" in out
    assert f"ok  {tmp_path / 'sub' / 'blocks.yaml'}: block library (Fire)" in out
    assert out.strip().splitlines()[-1] == "4 files: 2 valid, 2 with errors"


def test_validate_quiet_missing_path_and_all_shipped_netspecs(tmp_path: Path, capsys):
    assert main(["validate", str(tmp_path / "nope"), IRIS_A[0], "-q"]) == 2
    out, err = capsys.readouterr()
    assert err == f"error: {tmp_path / 'nope'}: no such file or folder\n"
    assert out == "2 files: 1 valid, 1 with errors\n"
    assert main(["validate", str(NETSPECS), "-q", IRIS_A[0]]) == 0  # a file once, also twice
    out, err = capsys.readouterr()
    n = sum(1 for _ in NETSPECS.rglob("*.yaml"))
    assert err == "" and out == f"{n} files: {n} valid, 0 with errors\n"
    assert main(["validate", IRIS_A[0]]) == 0
    assert capsys.readouterr().out.endswith("1 file: 1 valid, 0 with errors\n")


def test_validate_folder_does_not_import_torch():
    from tests.test_architecture import run_cli_probe

    code, torch_loaded, output = run_cli_probe(["validate", "netspecs", "-q"], ROOT)
    assert code in (0, None), output
    assert not torch_loaded and "valid, 0 with errors" in output, output


# --------------------------------------------------------------------------------------------
# command line (item 10)
# --------------------------------------------------------------------------------------------
def test_merge_needs_two_files(capsys):
    assert main(["merge", IRIS_A[0]]) == 2
    err = capsys.readouterr().err
    assert err == ("error: merge needs two or more parent netspecs, got 1 (e.g. spdnn merge "
                   "netspecs/iris/appendix_a/*.yaml -o merged.yaml; check one netspec with "
                   "spdnn validate or spdnn inspect)\n")


COMMANDS = ["merge", "validate", "inspect", "compile", "render", "ops", "export", "bench",
            "train", "evaluate", "predict", "compare", "demo"]


def test_help_names_values_in_words(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    texts = {}
    for cmd in [None, *COMMANDS]:
        assert main([cmd, "--help"] if cmd else ["--help"]) == 0
        texts[cmd] = capsys.readouterr().out
    for cmd, text in texts.items():
        for python_type in ("<list[", "<bool>", "<path>", "<str>", "<int", "<float",
                            "<longest"):
            assert python_type not in text, (cmd, python_type)
    merge = texts["merge"]
    assert "Usage: spdnn merge [OPTIONS] FILE..." in merge
    assert re.search(r"--distance\s+longest\|shortest\s", merge)
    assert re.search(r"--head-kernel\s+N \[x>=1\]", merge)
    assert re.search(r"--output\s+-o\s+FILE\s", merge)
    assert re.search(r"--set\s+KEY=VALUE\s", texts["train"])
    assert re.search(r"--batch\s+N\s", texts["inspect"])
    assert re.search(r"--dpi\s+N\s", texts["render"])
    # prose is one paragraph (wrapped by the terminal), examples keep their own lines
    bench = texts["bench"]
    assert "for --min-time seconds and reports p50/p90/p99 latency" in bench
    assert re.search(r"^ +spdnn bench merged\.yaml --vs netspecs/iris/appendix_a/\*\.yaml *$",
                     bench, re.M)
    assert "set OMP_WAIT_POLICY=PASSIVE for stable" not in bench  # the CLI sets it itself
    evaluate = texts["evaluate"]
    assert "steps=50" not in evaluate and "--set data.val_size=512" in evaluate
    # the command list shows each first paragraph on its own row, without a hard break
    assert re.search(r"predict +Run a trained model: the task decides what that means "
                     r"\(segmentation and depth networks", texts[None])


def test_ops_prints_whole_descriptions(capsys):
    from spdnn.cli.netspec import _description
    from spdnn.ops import OPS

    assert main(["ops"]) == 0
    text = capsys.readouterr().out
    flat = " ".join(re.sub(r"[│┃|]", " ", text).split())
    unpool = _description(OPS["Unpool"].__doc__)
    assert unpool == ("Value-repeating unpooling (thesis App. B sec. 2.1.1, Fig. 3): every "
                      "value is repeated scale_factor x scale_factor times, i.e. "
                      "nearest-neighbour upsampling.")
    for name, cls in OPS.items():
        words = _description(cls.__doc__).split()
        assert words, name
        assert words[-1] in flat, (name, words[-1])  # the end of the paragraph is there
    assert "nearest-neighbour upsampling." in flat


def test_inspect_json_matches_the_table(capsys):
    f = str(NETSPECS / "depth/parent_6.yaml")
    assert main(["inspect", f, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(["inspect", f]) == 0
    table = capsys.readouterr().out
    info = infer(S.load(f))
    assert data["name"] == info.spec.name and data["batch"] == 1
    assert [lay["name"] for lay in data["layers"]] == [lay.name for lay in info.layers]
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if "│" in line}
    for lay in data["layers"]:
        cells = [c.strip() for c in rows[lay["name"]].split("│")[1:-1]]
        assert cells[1] == lay["op"] and cells[4] == "x".join(map(str, lay["output_shape"]))
        assert cells[5] == (f"{lay['params']:,}" if lay["params"] else "")
        assert cells[6] == (f"{lay['macs']:,}" if lay["macs"] else "")
    assert data["total"]["params"] == info.params == 70_784
    assert data["total"]["macs"] == info.macs
    total = [c.strip() for c in rows["total"].split("│")[1:-1]]
    assert total[5:] == [f"{info.params:,}", f"{info.macs:,}"]
    assert data["total"]["activations"] == 1 * 80 * 264 + sum(  # the input is 1x80x264
        __import__("math").prod(lay.out_shape) for lay in info.layers)


def test_inspect_batch_scales_macs_and_activations_not_params(capsys):
    f = str(NETSPECS / "iris/appendix_a/parent_3_3to11.yaml")
    assert main(["inspect", f, "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert main(["inspect", f, "--json", "--batch", "4"]) == 0
    four = json.loads(capsys.readouterr().out)
    assert four["batch"] == 4
    assert four["total"]["params"] == one["total"]["params"] == 23_977
    assert four["total"]["macs"] == 4 * one["total"]["macs"]
    assert four["total"]["activations"] == 4 * one["total"]["activations"]
    assert main(["inspect", f, "--batch", "4"]) == 0
    table = capsys.readouterr().out
    assert "batch 4" in table and "4x12x96x128" in table
    assert f"{4 * one['total']['macs']:,}" in table
    assert main(["inspect", f, "--batch", "0"]) == 2


def test_set_of_an_unknown_field_names_the_override(capsys, tmp_path: Path):
    recipe = str(ROOT / "recipes/iris_a_merged.yaml")
    assert main(["train", recipe, "--set", "stpes=30", "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --set stpes=30: stpes: unknown field 'stpes' (did you mean "
                   "'steps'?)\n")
    assert main(["train", recipe, "--set", "optim.lr=-1", "-o", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith("error: --set optim.lr=-1: optim.lr: ")
    assert not (tmp_path / "run").exists()


def test_unknown_task_names_the_recipe_line(tmp_path: Path, capsys):
    from spdnn.errors import SpecError
    from spdnn.tasks import build_task
    from spdnn.train import load_recipe

    f = tmp_path / "r.yaml"
    f.write_text(f"name: r\ntask: irsi\nmodel: {{netspec: {IRIS_A[0]}}}\nsteps: 1\n")
    with pytest.raises(SpecError) as exc:
        build_task(load_recipe(f))
    line = exc.value.one_line()
    assert line.startswith(f"{f}:2: task: unknown task 'irsi' (known tasks: ")
    assert "iris" in line
    assert main(["train", str(f), "-o", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {f}:2: task: unknown task 'irsi'")
    with pytest.raises(SpecError) as exc:
        build_task(load_recipe(f, ["task=nope"]))
    assert exc.value.one_line().startswith("--set task=nope: task: unknown task 'nope'")


def test_plural():
    assert plural(1, "step") == "1 step"
    assert [plural(n, "step") for n in (0, 2)] == ["0 steps", "2 steps"]
    assert plural(1024, "parameter") == "1,024 parameters"
    assert plural(2, "batch size") == "2 batch sizes"
    assert plural(3, "batch", "batches") == "3 batches"


def test_compare_table_keeps_names_and_numbers_whole(tmp_path: Path):
    """Rows already finished are reused (no training here); the table printed to a pipe
    keeps the network names and every number."""
    import hashlib

    from rich.console import Console

    from spdnn.cli.console import _pipe_width
    from spdnn.runs import compare_recipes
    from spdnn.train import load_recipe

    metrics = ["val_loss", "val_accuracy", "val_sensitivity", "val_specificity",
               "val_precision", "val_npv", "val_f1", "val_mcc", "val_informedness",
               "val_markedness", "val_fnr"]
    paths = [ROOT / f"recipes/iris_a_{n}.yaml" for n in ("parent_1", "parent_2", "merged")]
    for k, p in enumerate(paths):
        r = load_recipe(p, ["steps=1"])
        key = hashlib.sha256(json.dumps([r.model_dump(mode="json"), False],
                                        sort_keys=True).encode()).hexdigest()[:16]
        row = {"name": r.name, "task": "iris", "params": 19_713 + k, "macs": 240_000_000,
               "train_s": 1.0, "steps": 1, **{m: 0.123456 + k for m in metrics},
               "columns": metrics, "recipe_hash": key}
        (tmp_path / r.name).mkdir()
        (tmp_path / r.name / "compare_row.json").write_text(json.dumps(row))
    table = compare_recipes(paths, ["steps=1"], tmp_path, console=Console(file=io.StringIO()),
                            report=False)
    for width in (_pipe_width(), 140):
        buf = io.StringIO()
        Console(file=buf, width=width).print(table)
        text = buf.getvalue()
        for name in ("iris_a_parent_1", "iris_a_parent_2", "iris_a_merged"):
            assert re.search(rf"│ {name} +│", text), (width, text)
        assert "Comparison (1 step each, same seed)" in text
        if width == _pipe_width():
            assert "…" not in text and text.count("2.1235") == 11, text


# --------------------------------------------------------------------------------------------
# diagrams (item 6)
# --------------------------------------------------------------------------------------------
def _png_dpi(path: Path) -> tuple[float, float]:
    from PIL import Image

    with Image.open(path) as im:
        return im.info["dpi"]


@needs_dot
def test_render_png_resolution(tmp_path: Path):
    out = tmp_path / "p.png"
    assert main(["render", IRIS_A[2], "-o", str(out)]) == 0
    assert min(_png_dpi(out)) >= 150
    data = out.read_bytes()
    assert data.count(b"pHYs") == 1 and data[8 + 25 + 4:8 + 25 + 8] == b"pHYs"  # after IHDR
    width_150 = struct.unpack(">I", data[16:20])[0]
    out300 = tmp_path / "p300.png"
    assert main(["render", IRIS_A[2], "-o", str(out300), "--dpi", "300"]) == 0
    assert min(_png_dpi(out300)) >= 300
    width_300 = struct.unpack(">I", out300.read_bytes()[16:20])[0]
    assert abs(width_300 / width_150 - 2) < 0.05
    assert main(["render", IRIS_A[2], "-o", str(tmp_path / "x.png"), "--dpi", "5"]) == 2


@needs_dot
def test_rankdir_follows_the_graph_shape():
    chain = R.build_view("netspec", _chain(16))
    wide = R.build_view("netspec", _wide(8))
    assert "rankdir=TB" in chain.source and "rankdir=LR" not in chain.source
    assert "rankdir=LR" in wide.source and "rankdir=TB" not in wide.source
    # the chosen layout is the one nearer a page's proportions
    for spec in (_chain(16), _wide(8)):
        sizes = {rd: R.layout_size(R.netspec_diagram(spec, rankdir=rd)) for rd in ("LR", "TB")}
        score = {rd: abs(__import__("math").log(max(s) / min(s) / R.PAGE_ASPECT))
                 for rd, s in sizes.items()}
        best = min(score, key=score.get)
        assert R.auto_rankdir(lambda rd, s=spec: R.netspec_diagram(s, rankdir=rd))[0] == best
    assert "rankdir=TB" in R.build_view("netspec", _wide(8), rankdir="TB").source


def test_rankdir_without_dot_is_lr(monkeypatch):
    monkeypatch.setattr(R.shutil, "which", lambda name: None)
    assert "rankdir=LR" in R.build_view("netspec", _chain(16)).source


def _parent_positions(dot_source: str, rankdir: str) -> list[str]:
    """The parents' cluster tags, ordered as a reader meets them: top to bottom (LR) or left
    to right (TB), from the positions of each parent's input node."""
    plain = subprocess.run(["dot", "-Tplain"], input=dot_source, capture_output=True,
                           text=True, check=True).stdout
    pos = {}
    for line in plain.splitlines():
        f = line.split()
        m = re.fullmatch(r"p(\d+)_0", f[1]) if f[0] == "node" else None
        if m:
            pos[m.group(1)] = -float(f[3]) if rankdir == "LR" else float(f[2])
    return sorted(pos, key=pos.get)


@needs_dot
@pytest.mark.parametrize("rankdir", ["LR", "TB"])
def test_side_by_side_orders_the_parents_as_given(rankdir: str):
    result = merge_files(IRIS_A)
    names = [p["name"] for p in result.report.parents]  # the merge's canonical order
    tag = {n: str(i) for i, n in enumerate(names)}
    given = ["iris_a_parent_1", "iris_a_parent_2", "iris_a_parent_3"]
    assert names != given  # the merge reorders them: the figure must not
    for order in (given, given[::-1], None):
        want = [tag[n] for n in (order or given)]
        dot = R.side_by_side(result, rankdir=rankdir, order=order)
        assert _parent_positions(dot.source, rankdir) == want, order
        par = R.parallel_diagram(result, rankdir=rankdir, order=order).source
        assert re.findall(r"subgraph cluster_p(\d+)", par) == want


def test_merge_diagrams_have_legends_and_whole_titles():
    result = merge_files(IRIS_A)
    sbs = R.side_by_side(result).source
    assert "the forward label" in sbs and "the backward label" in sbs
    assert "dashed boxes" in sbs and "solid box" in sbs
    assert f"<b>{result.spec.name}</b>" in sbs  # the merged box's title is not cut
    assert len(result.spec.name) > 48
    colours = R._group_colours(result)
    con = R.contracted_diagram(result).source
    caption = con[con.index("label=<<table"):].split("\n", 1)[0]
    assert "filled: layers of several parents merged into one node" in caption
    assert "white: a layer of one parent only" in caption
    assert next(iter(colours.values())) in caption and "border: convolution" in caption
    assert "the backward label" in caption
    net = R.netspec_diagram(S.load(NETSPECS / "squeezenet/squeezenet_1_1.yaml"),
                            expand_blocks=True).source
    for text in ("convolution", "pooling / unpooling", "dashed box: a block instance"):
        assert text in net


@needs_dot
def test_render_cli_side_by_side_png(tmp_path: Path):
    out = tmp_path / "sbs.png"
    assert main(["render", IRIS_A[2], IRIS_A[0], IRIS_A[1], "--view", "side-by-side",
                 "-o", str(out)]) == 0
    assert min(_png_dpi(out)) >= 150


# --------------------------------------------------------------------------------------------
# inspect cross-checked against torch (item 11)
# --------------------------------------------------------------------------------------------
TORCH_COUNTS_ALL = {"Conv2d", "ConvTranspose2d", "Linear", "FixedConv2d",
                    "MinibatchDiscrimination", "Embedding"}
"""Ops whose MACs ``inspect`` counts exactly as torch's FlopCounterMode does (FLOPs / 2): the
convolutions (transposed ones on the input grid, groups included), the matrix products of
Linear and MinibatchDiscrimination's projection, and an Embedding's lookup (0). Neither counts
a bias add, a fused batch norm or an activation."""


def _torch_macs(op, in_shapes, out_shape, macs: int) -> int:
    """The MACs torch's FlopCounterMode should see for one layer, from inspect's ``macs``.

    FlopCounterMode counts only matrix products, convolutions and attention. So:

    * the ops of :data:`TORCH_COUNTS_ALL`: the same as inspect;
    * SPADE: its three convolutions; inspect adds 2*C*H*W (normalize and modulate);
    * a block: the sum over its body's layers, by these rules;
    * every other op: 0. inspect counts its own estimate for them: pooling k*k per output
      value, GlobalAvgPool2d one per input value, BatchNorm2d/InstanceNorm2d one or two per
      value, bilinear Upsample 4 per value, Mul (n-1) per value, (Inverse)Anscombe 2 per value,
      InverseFilter an FFT estimate (torch counts no FFT); activations, Add, Dropout,
      reshapes 0.
    """
    from spdnn.spec.blocks import BlockOp

    if isinstance(op, BlockOp):
        _, body = op.body(list(in_shapes))
        return sum(_torch_macs(lay.op, lay.in_shapes, lay.out_shape, lay.macs)
                   for lay in body.layers)
    if op.op_name in TORCH_COUNTS_ALL:
        return macs
    if op.op_name == "SPADE":
        c, h, w = out_shape
        return macs - 2 * c * h * w
    return 0


@pytest.mark.slow
def test_inspect_agrees_with_torch_on_every_netspec():
    """Per layer of every shipped netspec: inspect's parameters equal torch's trainable
    parameters of the built module, and its MACs equal FlopCounterMode's FLOPs / 2 up to the
    conventions written out in :func:`_torch_macs` (one sample, eval mode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from spdnn.codegen.build import build_module
    from spdnn.report import layer_json
    from spdnn.spec.blocks import netspec_paths

    torch.manual_seed(0)
    paths = [p for p in netspec_paths(NETSPECS)  # VGG-11 is too big to build (NOT_BUILT)
             if p.relative_to(NETSPECS).as_posix() not in NOT_BUILT]
    assert len(paths) >= 70
    differ = 0
    for path in paths:
        spec = S.load(path)
        info = infer(spec)
        shown = {lay["name"]: lay for lay in layer_json(info)["layers"]}  # what inspect prints
        module = build_module(spec, info).eval()
        assert sum(p.numel() for p in module.parameters() if p.requires_grad) == info.params
        env = dict(zip((i.name for i in spec.inputs), S.example_inputs(spec)))
        with torch.no_grad():
            for name, attr, srcs in module._plan:
                sub = getattr(module, attr) if attr is not None else None
                with FlopCounterMode(display=False) as counter:
                    env[name] = module._ops[name].apply(sub, [env[s] for s in srcs])
                lay = info[name]
                params = sum(p.numel() for p in sub.parameters() if p.requires_grad) if sub else 0
                where = f"{path.relative_to(NETSPECS)}: {name} ({lay.op.op_name})"
                assert shown[name]["params"] == params, where
                flops = counter.get_total_flops()
                assert flops % 2 == 0, where
                expected = _torch_macs(lay.op, lay.in_shapes, lay.out_shape, shown[name]["macs"])
                assert flops // 2 == expected, (where, flops // 2, shown[name]["macs"])
                differ += expected != shown[name]["macs"]
    assert differ > 0  # the conventions above are exercised (pooling, norms, SPADE)


def test_expanded_blocks_hold_only_their_own_layers():
    """An edge into a block's box is written outside the box: written inside, it pulled the
    layer it comes from (SqueezeNet's maxpool1) into the box of fire2."""
    spec = S.load(NETSPECS / "squeezenet/squeezenet_1_0.yaml")
    src = R.netspec_diagram(spec, expand_blocks=True).source
    ids = {m.group(2): m.group(1) for m in re.finditer(r"^\s*(\w+) \[label=<<b>(\w+)</b>", src,
                                                        re.M)}
    inside, depth = [], 0
    for line in src.splitlines():
        if line.strip().startswith("subgraph cluster_"):
            depth += 1
        elif line.strip() == "}" and depth:
            depth -= 1
        elif depth:
            inside.append(line)
    body = "\n".join(inside)
    for outer in ("conv1", "maxpool1", "maxpool4", "maxpool8", "drop9", "conv10", "pool10"):
        assert not re.search(rf"\b{ids[outer]}\b", body), outer
    assert re.search(rf"\b{ids['squeeze']}\b", body)

"""ONNX export: every netspec and merged network exports, passes the full ONNX check and
matches torch on onnxruntime; failures are one line naming the layer and op."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import spdnn.export as E
import spdnn.export.diagnose as D
import spdnn.export.onnx as EO
import spdnn.spec as S
from spdnn import __version__
from spdnn.cli import main
from spdnn.codegen import build_module
from spdnn.errors import SpdnnError
from spdnn.graph import merge
from spdnn.io import CheckpointError, save_checkpoint
from tests.helpers import NOT_EXPORTED, ROOT, load_glob, netspec_paths_except

TINY = """
name: tiny_concat
input: {name: image, channels: 1, height: 16, width: 20}
layers:
- {name: a, op: Conv2d, kernel_size: 3, out_channels: 4, padding: same, batch_norm: true, activation: relu}
- {name: b, op: Conv2d, kernel_size: 5, out_channels: 3, padding: same, activation: relu, inputs: [image]}
- {name: join, op: Concat, inputs: [a, b]}
- {name: pool, op: MaxPool2d, kernel_size: 2}
- {name: up, op: Unpool, scale_factor: 2}
- {name: out, op: Conv2d, kernel_size: 3, out_channels: 1, padding: same, activation: sigmoid}
output: {name: mask, from: out}
"""


def _check_file(path: Path, spec: S.Netspec, dynamic: bool) -> onnx.ModelProto:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["spdnn.version"] == __version__
    assert meta["spdnn.netspec_hash"] == S.spec_hash(spec)
    assert meta["spdnn.netspec"] == spec.name
    ins = json.loads(meta["spdnn.inputs"])
    outs = json.loads(meta["spdnn.outputs"])
    assert list(ins) == [i.name for i in spec.inputs]
    assert list(outs) == [o.name for o in spec.outputs]
    assert [i.name for i in model.graph.input] == list(ins)
    assert [o.name for o in model.graph.output] == list(outs)
    batch = "N" if dynamic else 1
    for name, shape in ins.items():
        assert shape[0] == batch
        assert tuple(shape[1:]) == next(i.shape for i in spec.inputs if i.name == name)
    first = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert (first.dim_param == "N") if dynamic else (first.dim_value == 1)
    return model


@pytest.mark.parametrize("path", netspec_paths_except(NOT_EXPORTED),  # reasons: NOT_EXPORTED
                         ids=lambda p: str(p.relative_to(ROOT / "netspecs")))
def test_every_netspec_exports_with_parity(path: Path, tmp_path: Path):
    spec = S.load(path)
    rep = E.export_onnx(path, tmp_path / "m.onnx")
    assert rep.ok and rep.max_abs_err <= 1e-4
    photos = any(len(i.shape) == 3 and i.shape[0] in (1, 3) for i in spec.inputs)
    # real photographs go to 1- and 3-channel image inputs; other networks get random inputs
    want = {"random", "camera", "astronaut"} if photos else {"random"}
    assert {c.input for c in rep.checks} == want
    assert rep.exporter == "dynamo" and rep.opset == E.DEFAULT_OPSET
    _check_file(tmp_path / "m.onnx", spec, dynamic=False)


@pytest.mark.parametrize("family", ["iris_a", "depth_keep"])
def test_merged_networks_export_with_dynamic_batch(family: str, tmp_path: Path):
    if family == "iris_a":
        spec = merge(load_glob("netspecs/iris/appendix_a/*.yaml")).spec
    else:
        spec = merge(load_glob("netspecs/depth/parent_*.yaml"), params="keep").spec
    rep = E.export_onnx(spec, tmp_path / "merged.onnx", dynamic_batch=True)
    assert rep.ok and rep.max_abs_err <= 1e-4
    assert any(c.batch > 1 for c in rep.checks)
    _check_file(tmp_path / "merged.onnx", spec, dynamic=True)


def test_fp16_opset_and_torchscript_paths(tmp_path: Path):
    spec = S.loads(TINY)
    rep = E.export_onnx(spec, tmp_path / "h.onnx", fp16=True)
    assert rep.ok and rep.atol == 1e-2 and rep.inputs[0].dtype == "float16"
    model = onnx.load(str(tmp_path / "h.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    rep = E.export_onnx(spec, tmp_path / "o13.onnx", opset=13, dynamic_batch=True)
    assert rep.ok and rep.opset == 13 and rep.exporter == "torchscript" and rep.notes
    rep = E.export_onnx(spec, tmp_path / "ts.onnx", exporter="torchscript")
    assert rep.ok and rep.exporter == "torchscript"
    _check_file(tmp_path / "ts.onnx", spec, dynamic=False)


def test_real_inputs_are_photographs_in_unit_range():
    gray = E.real_inputs((1, 96, 128))
    rgb = E.real_inputs((3, 40, 30))
    assert set(gray) == {"camera", "astronaut"} == set(rgb)
    assert gray["camera"].shape == (1, 1, 96, 128) and rgb["astronaut"].shape == (1, 3, 40, 30)
    for a in [*gray.values(), *rgb.values()]:
        assert a.dtype == np.float32 and 0.0 <= a.min() < a.max() <= 1.0 and a.std() > 0.05
    assert E.real_inputs((5, 8, 8)) == {} and E.real_inputs((10,)) == {}


def test_checkpoint_weights_are_exported(tmp_path: Path):
    spec = S.loads(TINY)
    torch.manual_seed(123)
    net = build_module(spec).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    ckpt = tmp_path / "run" / "best.pt"
    save_checkpoint({"netspecs": {"net": S.dump(spec)}, "models": {"net": net.state_dict()}},
                    ckpt)
    rep = E.export_onnx(ckpt.parent, tmp_path / "c.onnx")  # a run folder works too
    assert rep.ok
    x = torch.rand(1, 1, 16, 20)
    sess = E.ort_session(tmp_path / "c.onnx")
    got = sess.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - net(x).numpy()).max() < 1e-5


# --------------------------------------------------------------------------------------------
# failures: one line, naming the layer and the op
# --------------------------------------------------------------------------------------------
def _one_line(exc: SpdnnError) -> str:
    text = str(exc)
    assert "\n" not in text and len(text) < 600
    return text


def test_unexportable_op_names_layer_and_op(tmp_path: Path, monkeypatch):
    from spdnn.ops import layers

    def svd_concat(self, mod, xs):  # an op torch.onnx has no ONNX function for
        return torch.cat(xs, 1) + torch.linalg.svdvals(xs[0][:, 0]).sum()

    monkeypatch.setattr(layers.Concat, "apply", svd_concat)
    with pytest.raises(E.ExportError) as info:
        E.export_onnx(S.loads(TINY), tmp_path / "x.onnx")
    text = _one_line(info.value)
    assert "layer 'join' (Concat)" in text and "svd" in text


def test_exporter_crash_is_one_line(tmp_path: Path, monkeypatch):
    def fake(*args, **kwargs):
        try:
            raise RuntimeError("Unsupported: ONNX export of operator aten::grid_sampler\n"
                               "  with a long\n\n  multi-line explanation")
        except RuntimeError as inner:
            raise RuntimeError("export failed\nsee above") from inner

    monkeypatch.setattr(EO, "_torch_export", fake)
    with pytest.raises(SpdnnError) as info:
        E.export_onnx(S.loads(TINY), tmp_path / "x.onnx")
    text = _one_line(info.value)
    assert "grid_sampler" in text


def _patched_export(monkeypatch, layer: str, mutate):
    real = EO._torch_export

    def patched(*args, **kwargs):
        model = real(*args, **kwargs)
        node = next(n for n in model.graph.node
                    if n.op_type == "Relu" and D.node_layer(n, {layer: layer}) == layer)
        mutate(model, node)
        return model

    monkeypatch.setattr(EO, "_torch_export", patched)


def test_parity_failure_names_first_differing_layer(tmp_path: Path, monkeypatch):
    def to_sigmoid(model, node):
        node.op_type = "Sigmoid"

    _patched_export(monkeypatch, "b", to_sigmoid)
    with pytest.raises(E.ExportError) as info:
        E.export_onnx(S.loads(TINY), tmp_path / "x.onnx")
    text = _one_line(info.value)
    assert "onnxruntime differs from torch" in text
    assert "first differing layer: 'b' (Conv2d, ONNX Sigmoid" in text
    assert (tmp_path / "x.onnx").exists()  # kept for inspection


def test_onnxruntime_failure_names_op_and_layer(tmp_path: Path, monkeypatch):
    def to_unknown(model, node):
        node.op_type, node.domain = "FancyRelu", "com.example"
        model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))

    _patched_export(monkeypatch, "a", to_unknown)
    with pytest.raises(E.ExportError) as info:
        E.export_onnx(S.loads(TINY), tmp_path / "x.onnx")
    text = _one_line(info.value)
    assert "ONNX op FancyRelu" in text and "layer 'a' (Conv2d)" in text


def test_bad_sources_are_one_line_errors(tmp_path: Path):
    with pytest.raises(SpdnnError):
        E.export_onnx(tmp_path / "missing.yaml", tmp_path / "x.onnx")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as info:  # read by spdnn.io.load_checkpoint
        E.export_onnx(junk, tmp_path / "x.onnx")
    assert _one_line(info.value).startswith(f"{junk}: ")
    torch.save({"models": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint written by 'spdnn train'"):
        E.export_onnx(tmp_path / "foreign.pt", tmp_path / "x.onnx")
    save_checkpoint({"models": {}}, tmp_path / "nospec.pt")
    with pytest.raises(CheckpointError, match="checkpoint.netspecs: Field required"):
        E.export_onnx(tmp_path / "nospec.pt", tmp_path / "x.onnx")
    save_checkpoint({"models": {}, "netspecs": {}}, tmp_path / "nospec.pt")
    with pytest.raises(E.ExportError, match="holds no netspec"):
        E.export_onnx(tmp_path / "nospec.pt", tmp_path / "x.onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in this folder"):
        E.export_onnx(tmp_path / "empty", tmp_path / "x.onnx")


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------
def test_cli_export(tmp_path: Path, capsys):
    src = tmp_path / "tiny.yaml"
    src.write_text(TINY)
    out, rep = tmp_path / "tiny.onnx", tmp_path / "rep.json"
    assert main(["export", str(src), "-o", str(out), "--dynamic-batch", "--report", str(rep)]) == 0
    text = capsys.readouterr().out
    assert "max abs error" in text and "camera" in text and "Nx1x16x20" in text
    data = json.loads(rep.read_text())
    assert data["ok"] and data["metadata"]["spdnn.netspec_hash"] == S.spec_hash(S.loads(TINY))
    assert main(["export", str(src)]) == 0 and (tmp_path / "tiny.onnx").exists()
    assert main(["export", str(tmp_path / "nope.yaml")]) == 2
    assert "error: " in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# multi-network checkpoints, outputs that would overwrite inputs
# --------------------------------------------------------------------------------------------
def _tiny_dcgan_run(tmp_path: Path) -> Path:
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "gan" / "dcgan_digits.yaml", [
        "steps=2", "batch_size=4", "data.train_size=8", "data.val_size=4", "eval_every=2",
        "checkpoint_every=2", "log_every=1", "samples=4"])
    run = tmp_path / "gan"
    trainer_for(recipe, outdir=run, progress=False).run()
    return run


def test_export_generator_of_a_two_network_run(tmp_path: Path, capsys):
    run = _tiny_dcgan_run(tmp_path)
    onnx_path, rep_path = tmp_path / "g.onnx", tmp_path / "g.json"
    # two networks and no --model: one line listing them
    assert main(["export", str(run), "-o", str(onnx_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{run / 'best.pt'}: this checkpoint holds 2 networks" in err
    assert "discriminator" in err and "generator" in err and not onnx_path.exists()
    assert main(["export", str(run), "--model", "critic", "-o", str(onnx_path)]) == 2
    assert "no network 'critic'" in capsys.readouterr().err and not onnx_path.exists()
    assert main(["export", str(run), "--model", "generator", "-o", str(onnx_path),
                 "--report", str(rep_path)]) == 0
    data = json.loads(rep_path.read_text())
    assert data["ok"] and data["netspec"] == "dcgan_digits_generator"
    # the file holds the generator's EMA weights (as evaluation and sampling use them)
    ckpt = torch.load(run / "best.pt", weights_only=True)
    spec = S.loads(ckpt["netspecs"]["generator"])
    ema = build_module(spec).eval()
    ema.load_state_dict({k.removeprefix("module."): v for k, v in
                         ckpt["ema"]["generator"].items() if k != "n_averaged"})
    raw = build_module(spec).eval()
    raw.load_state_dict(ckpt["models"]["generator"])
    z = torch.randn(1, 32, generator=torch.Generator().manual_seed(0))
    got = E.ort_session(onnx_path).run(None, {"z": z.numpy()})[0]
    with torch.no_grad():
        want, trained = ema(z).numpy(), raw(z).numpy()
    assert got.shape == (1, 1, 8, 8) and np.abs(got - want).max() < 1e-5
    assert np.abs(got - trained).max() > 1e-5
    # the default output name carries the model's name
    assert main(["export", str(run), "--model", "discriminator"]) == 0
    assert (tmp_path / "gan_discriminator.onnx").exists()
    # bench picks the network the same way (a netspec given beside it ignores --model)
    capsys.readouterr()
    disc = ROOT / "netspecs/gan/dcgan/digits_discriminator.yaml"
    assert main(["bench", str(run), "--vs", str(disc), "--model", "discriminator",
                 "--runtime", "torch", "--batch", "1", "--min-time", "0", "--warmup", "0",
                 "--no-ceiling", "-o", ""]) == 0
    assert "dcgan_digits_discriminator" in capsys.readouterr().out
    assert main(["bench", str(run), "--runtime", "torch", "--batch", "1", "-o", ""]) == 2
    assert "--model" in capsys.readouterr().err


def test_load_source_picks_a_model(tmp_path: Path):
    spec = S.loads(TINY)
    net = build_module(spec)
    ckpt = tmp_path / "one.pt"
    save_checkpoint({"netspecs": {"net": S.dump(spec)}, "models": {"net": net.state_dict()}},
                    ckpt)
    got, states, file = E.load_source(ckpt)  # one network: no model needed
    assert got.name == spec.name and len(states) == 1 and file == str(ckpt)
    assert E.load_source(ckpt, model="net")[0].name == spec.name
    with pytest.raises(E.ExportError, match="no network 'generator'"):
        E.load_source(ckpt, model="generator")
    with pytest.raises(E.ExportError, match="--model"):  # a netspec has one network
        E.load_source(spec, model="net")
    assert E.default_path(tmp_path / "run", model="generator") == tmp_path / "run_generator.onnx"
    assert E.default_path(tmp_path / "m.yaml") == tmp_path / "m.onnx"


def test_outputs_never_overwrite_inputs(tmp_path: Path, capsys):
    src = tmp_path / "tiny.yaml"
    src.write_text(TINY)
    spec = S.loads(TINY)
    run = tmp_path / "run"
    save_checkpoint({"netspecs": {"net": TINY}, "models": {"net": build_module(spec).state_dict()}},
                    run / "best.pt")
    save_checkpoint({"netspecs": {"net": TINY}, "models": {"net": build_module(spec).state_dict()}},
                    run / "last.pt")
    before = {p: p.read_bytes() for p in (src, run / "best.pt", run / "last.pt")}
    cases = [
        ["export", str(src), "-o", str(src)],
        ["export", str(src), "-o", str(tmp_path / "x.onnx"), "--report", str(src)],
        ["export", str(src), "-o", str(tmp_path / "x.onnx"), "--report",
         str(tmp_path / "x.onnx")],
        ["export", str(run), "-o", str(run / "best.pt")],
        ["export", str(run), "-o", str(tmp_path / "x.onnx"), "--report", str(run / "last.pt")],
        ["export", str(run / "best.pt"), "-o", str(run / "sub" / ".." / "best.pt")],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and ("would overwrite the input" in err
                                    or "two outputs name the same file" in err), err
    with pytest.raises(SpdnnError, match="would overwrite the input"):
        E.export_onnx(src, src)
    assert all(p.read_bytes() == data for p, data in before.items())
    assert not (tmp_path / "x.onnx").exists()

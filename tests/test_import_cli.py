"""``spdnn import`` end to end: ONNX file and FILE.py:NAME -> netspec + weights that load
strictly into the compiled netspec; bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import io
import textwrap
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

from spdnn.cli import main  # noqa: E402
from spdnn.codegen import build_module  # noqa: E402
from spdnn.errors import SpdnnError  # noqa: E402
from spdnn.graph.weights import load_weights  # noqa: E402
from spdnn.spec import load_checked  # noqa: E402


def _small():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(4, 2, 1), nn.Sigmoid()).eval()


def _onnx(tmp_path):
    path = tmp_path / "small.onnx"
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_small(), (torch.rand(1, 1, 16, 16),), buf, dynamo=False,
                          opset_version=17, training=torch.onnx.TrainingMode.PRESERVE,
                          input_names=["image"], output_names=["mask"])
    path.write_bytes(buf.getvalue())
    return path


def test_import_onnx_writes_netspec_and_weights(tmp_path, capsys):
    src = _onnx(tmp_path)
    yaml, pt = tmp_path / "net.yaml", tmp_path / "net.pt"
    assert main(["import", str(src), "-o", str(yaml), "--weights", str(pt)]) == 0
    text = capsys.readouterr().out
    assert "3 layers, 58 parameters" in text and "Parity with onnxruntime" in text
    spec = load_checked(yaml)
    assert [lay.op for lay in spec.layers] == ["Conv2d", "MaxPool2d", "Conv2d"]
    assert spec.layers[0].batch_norm and spec.layers[2].activation == "sigmoid"
    assert spec.inputs[0].name == "image" and spec.outputs[0].name == "mask"
    state = load_weights(pt, spec)
    module = build_module(spec)
    module.load_state_dict(state, strict=True)
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(module.eval()(x), _small()(x), atol=1e-6)


def test_import_factory(tmp_path, capsys):
    src = tmp_path / "models.py"
    src.write_text(textwrap.dedent("""
        from torch import nn

        def make():
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    """))
    yaml = tmp_path / "net.yaml"
    assert main(["import", f"{src}:make", "--shape", "3,8,8", "-o", str(yaml)]) == 0
    assert "Parity with the torch module: max |difference| random 0" in capsys.readouterr().out
    spec = load_checked(yaml)
    assert [lay.op for lay in spec.layers] == ["Conv2d", "Linear"]  # the flatten is Linear's
    assert main(["import", f"{src}:make", "-o", str(tmp_path / "b.yaml")]) == 2
    assert "no example input for make" in capsys.readouterr().err


def test_weights_that_do_not_match(tmp_path):
    src = _onnx(tmp_path)
    yaml, pt = tmp_path / "net.yaml", tmp_path / "net.pt"
    assert main(["import", str(src), "-o", str(yaml), "--weights", str(pt), "--no-check"]) == 0
    spec = load_checked(yaml)
    state = torch.load(pt, weights_only=True)
    renamed = {("x" + k if i == 0 else k): v for i, (k, v) in enumerate(state.items())}
    torch.save(renamed, tmp_path / "renamed.pt")
    with pytest.raises(SpdnnError, match=r"key '.*' of netspec '.*' is missing"):
        load_weights(tmp_path / "renamed.pt", spec)
    first = next(iter(state))
    state[first] = torch.zeros(7)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(SpdnnError, match=r"has shape \(7,\), netspec"):
        load_weights(tmp_path / "shape.pt", spec)
    (tmp_path / "cut.pt").write_bytes(pt.read_bytes()[:100])
    with pytest.raises(SpdnnError, match="not a readable weights file"):
        load_weights(tmp_path / "cut.pt", spec)


def test_cli_bad_input(tmp_path, capsys):
    src = _onnx(tmp_path)
    cases = [
        (["import", str(src), "-o", str(src)], "would overwrite the input"),
        (["import", str(src), "-o", str(tmp_path / "n.txt")], "must be a .yaml file"),
        (["import", str(src), "-o", str(tmp_path / "n.yaml"), "--shape", "3,x"],
         "--shape must be C,H,W"),
        (["import", f"{tmp_path / 'nope.py'}:make", "-o", str(tmp_path / "n.yaml")],
         "file not found"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, err
    assert not (tmp_path / "n.yaml").exists()

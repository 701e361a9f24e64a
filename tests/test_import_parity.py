"""Import parity on standard architectures (tests/torch_models.py, from the published layer
tables): torch module -> (ONNX ->) spdnn import -> compile -> the same outputs within 1e-5 on
a random input and on two real photographs (scikit-image's camera and astronaut, resized),
with exact parameter counts; by the ONNX path (TorchScript exporter, batch norms kept) and by
the torch.fx path."""

from __future__ import annotations

import io
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

import torch_models as tm  # noqa: E402

from spdnn import from_module  # noqa: E402
from spdnn.codegen import build_module  # noqa: E402
from spdnn.importers import import_onnx, parity  # noqa: E402

ATOL = 1e-5

# name -> (factory, input shape, exact parameter count: the published ones where the issue
# gives them, else torch's own count of the module)
MODELS = {
    "resnet18": (lambda: tm.resnet18(1000), (3, 32, 32), 11_689_512),
    "vgg11_reduced": (lambda: tm.vgg11(num_classes=10, hidden=64, pool=1), (3, 32, 32), None),
    "mobilenet_v2": (lambda: tm.mobilenet_v2(1000), (3, 32, 32), 3_504_872),
    "unet": (lambda: tm.unet(1, 2, base=8, depth=3), (1, 32, 32), None),
}


@pytest.fixture(scope="module")
def models():
    out = {}
    for name, (make, _shape, _) in MODELS.items():
        torch.manual_seed(0)
        out[name] = tm.randomize_bn(make(), seed=1)
    return out


def _export(module, shape, path) -> None:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.rand(1, *shape),), buf, dynamo=False, opset_version=17,
                          training=torch.onnx.TrainingMode.PRESERVE, input_names=["image"],
                          output_names=["out"], dynamic_axes={"image": {0: "N"}})
    path.write_bytes(buf.getvalue())


def _expected_params(name, module) -> int:
    n = sum(p.numel() for p in module.parameters())
    published = MODELS[name][2]
    if published is not None:
        assert n == published, "the test model disagrees with its published table"
    return n


@pytest.mark.parametrize("name", list(MODELS))
def test_fx_import_parity(models, name):
    module = models[name]
    shape = MODELS[name][1]
    result = from_module(module, torch.rand(1, *shape))
    assert result.params == _expected_params(name, module)
    errors = parity(result, module)
    assert set(errors) == {"random", "camera", "astronaut"}
    assert max(errors.values()) <= ATOL, errors
    # the state dict is the compiled module's own: it loads strictly
    build_module(result.spec).load_state_dict(result.state_dict, strict=True)


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_import_parity(models, name, tmp_path):
    module = models[name]
    shape = MODELS[name][1]
    path = tmp_path / f"{name}.onnx"
    _export(module, shape, path)
    result = import_onnx(path)
    assert result.params == _expected_params(name, module)
    assert result.spec.inputs[0].shape == shape
    errors = parity(result, module)
    assert max(errors.values()) <= ATOL, errors
    if name == "unet":  # and against onnxruntime running the file itself
        assert max(parity(result, path).values()) <= 1e-4


def test_batch_norms_fold_into_their_convolutions(models, tmp_path):
    """ResNet-18: every BN folds into its conv (20 convs with batch_norm), the residual Adds
    and the final FC are layers; names are the module paths."""
    result = from_module(models["resnet18"], torch.rand(1, 3, 32, 32))
    ops = [lay.op for lay in result.spec.layers]
    assert ops.count("Conv2d") == 20 and ops.count("Add") == 8 and ops.count("Linear") == 1
    assert "BatchNorm2d" not in ops
    convs = [lay for lay in result.spec.layers if lay.op == "Conv2d"]
    assert all(c.batch_norm for c in convs)
    assert result.spec.layer("layer2.0.downsample").stride == 2  # Sequential(conv, BN)
    assert result.spec.layer("conv1").activation == "relu"
    # depthwise convolutions keep their groups
    mnv2 = from_module(models["mobilenet_v2"], torch.rand(1, 3, 32, 32), weights=False)
    groups = [lay.groups for lay in mnv2.spec.layers if lay.op == "Conv2d"]
    assert max(groups) == 960 and sum(g > 1 for g in groups) == 17
    assert {lay.activation for lay in mnv2.spec.layers if lay.op == "Conv2d"} == {"relu6", None}


def test_vgg11_full_size_parameter_count():
    """VGG-11 at 224x224 and 1,000 classes (132,863,336 parameters) is imported without
    allocating its weights (meta tensors; shape inference only)."""
    with torch.device("meta"):
        module = tm.vgg11()
    result = from_module(module, torch.empty(1, 3, 224, 224, device="meta"), weights=False)
    assert result.state_dict is None
    assert result.params == 132_863_336
    assert result.spec.layer("avgpool").op == "AdaptiveAvgPool2d"


@pytest.mark.slow
def test_dynamo_exported_file(models, tmp_path):
    """A file of torch's default (dynamo) exporter, optimized as it ships (batch norms folded
    into the convolutions, which then carry a bias): names come from the exporter's recorded
    module scopes, outputs match to 1e-5; the parameter count is the folded network's."""
    module = models["unet"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, (torch.rand(1, 1, 32, 32),), None, dynamo=True,
                                 opset_version=20, verbose=False)
    path = tmp_path / "unet_dynamo.onnx"
    prog.save(str(path))
    result = import_onnx(path)
    assert max(parity(result, module).values()) <= ATOL
    convs = [lay for lay in result.spec.layers if lay.op in ("Conv2d", "ConvTranspose2d")]
    assert convs and not any(c.batch_norm for c in convs)
    names = {lay.name for lay in result.spec.layers}
    # a folded conv carries the scope of its batch norm (down.0.1), the exporter's record
    assert {"up.0", "head"} <= names and any(n.startswith("down.0.") for n in names)
    bn = sum(m.num_features for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert result.params == sum(p.numel() for p in module.parameters()) - bn

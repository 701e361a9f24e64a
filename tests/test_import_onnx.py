"""ONNX import op by op: small graphs written with onnx.helper, imported, compiled and run
against onnxruntime on the same file (parity), and the bad inputs (one-line errors)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
torch = pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from spdnn.cli import main  # noqa: E402
from spdnn.importers import ModelImportError, import_onnx, parity  # noqa: E402

RNG = np.random.default_rng(0)


def _t(name: str, *shape: int, scale: float = 0.3, positive: bool = False):
    a = RNG.standard_normal(shape).astype(np.float32) * scale
    if positive:
        a = np.abs(a) + 0.5
    return numpy_helper.from_array(a, name)


def _write(tmp_path, nodes, inits, in_shape, out_shape, opset=17, name="g", in_dims=None,
           extra_inputs=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_dims or [1, *in_shape])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, *out_shape])
    graph = helper.make_graph(nodes, name, [x, *extra_inputs], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 19 else 9
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def _imported(path):
    result = import_onnx(path)
    errors = parity(result, path)
    assert max(errors.values()) <= 1e-5, errors
    return result


def test_conv_bn_act_pool_gemm_chain(tmp_path):
    """Conv (groups, dilation, auto_pad SAME_UPPER) + BatchNormalization + Relu fold into one
    layer; Clip(0, 6) is ReLU6; MaxPool with pads, AveragePool with ceil_mode;
    GlobalAveragePool + Flatten is one GlobalAvgPool2d; MatMul + Add is a Linear with bias;
    Gemm (transB 0, alpha, beta) a Linear; Softmax over axis 1."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", auto_pad="SAME_UPPER",
                         kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", group=2, dilations=[2, 2],
                         pads=[2, 2, 2, 2]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="relu6"),
        helper.make_node("MaxPool", ["r2"], ["p1"], name="pool1", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["p1"], ["p2"], name="pool2", kernel_shape=[2, 2],
                         strides=[2, 2], ceil_mode=1),
        helper.make_node("GlobalAveragePool", ["p2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat", axis=1),
        helper.make_node("MatMul", ["f", "wm"], ["mm"], name="fc1"),
        helper.make_node("Add", ["mm", "bm"], ["a"], name="fc1_bias"),
        helper.make_node("LeakyRelu", ["a"], ["l"], name="lrelu", alpha=0.2),
        helper.make_node("Gemm", ["l", "wg", "bg"], ["o"], name="fc2", alpha=0.5, beta=2.0),
        helper.make_node("Softmax", ["o"], ["y"], name="softmax", axis=1),
    ]
    inits = [_t("w1", 8, 3, 3, 3), _t("b1", 8), _t("s", 8, positive=True), _t("bb", 8),
             _t("m", 8), _t("v", 8, positive=True), _t("w2", 8, 4, 3, 3),
             numpy_helper.from_array(np.array(0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6, np.float32), "hi"),
             _t("wm", 8, 6), _t("bm", 6), _t("wg", 6, 5), _t("bg", 5)]
    path = _write(tmp_path, nodes, inits, (3, 20, 20), (5,))
    spec = _imported(path).spec
    lay = {x.name: x for x in spec.layers}
    assert [x.op for x in spec.layers] == ["Conv2d", "Conv2d", "MaxPool2d", "AvgPool2d",
                                           "GlobalAvgPool2d", "Linear", "Linear"]
    c1 = lay["conv1"]
    assert (c1.padding, c1.batch_norm, c1.bias, c1.activation) == (1, True, True, "relu")
    c2 = lay["conv2"]
    assert (c2.groups, c2.dilation, c2.padding, c2.activation, c2.use_bias) == (
        2, 2, 2, "relu6", False)
    assert (lay["pool1"].stride, lay["pool1"].padding) == (2, 1)
    assert lay["pool2"].ceil_mode is True
    assert (lay["fc1"].out_features, lay["fc1"].use_bias, lay["fc1"].activation,
            lay["fc1"].negative_slope) == (6, True, "leaky_relu", 0.2)
    assert (lay["fc2"].out_features, lay["fc2"].activation) == (5, "softmax")


def test_junctions_resize_transposed_conv_and_silu(tmp_path):
    """Concat, Add, Mul of layer outputs; x * Sigmoid(x) is SiLU; HardSwish; Resize nearest
    and linear (half_pixel) by 2 are Upsample nearest / bilinear; ConvTranspose with stride,
    output_padding and groups; DepthToSpace (CRD) is PixelShuffle; Dropout stays a layer."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="a", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["a"], ["sa"], name="sig"),
        helper.make_node("Mul", ["a", "sa"], ["silu"], name="silu"),
        helper.make_node("Conv", ["x", "w2"], ["b"], name="b"),
        helper.make_node("HardSwish", ["b"], ["hb"], name="hswish"),
        helper.make_node("Concat", ["silu", "hb"], ["cat"], name="cat", axis=1),
        helper.make_node("Add", ["silu", "hb"], ["sum"], name="sum"),
        helper.make_node("Mul", ["cat", "cat"], ["sq"], name="square"),
        helper.make_node("Resize", ["sq", "", "sc"], ["up"], name="up", mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Resize", ["sum", "", "sc"], ["upl"], name="upl", mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Concat", ["up", "upl"], ["cat2"], name="cat2", axis=1),
        helper.make_node("Dropout", ["cat2"], ["d"], name="drop"),
        helper.make_node("ConvTranspose", ["d", "wt", "bt"], ["t"], name="deconv", strides=[2, 2],
                         pads=[1, 1, 1, 1], output_padding=[1, 1], group=2),
        helper.make_node("DepthToSpace", ["t"], ["y"], name="shuffle", blocksize=2, mode="CRD"),
    ]
    sc = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")
    inits = [_t("w1", 4, 3, 3, 3), _t("w2", 4, 3, 1, 1), sc, _t("wt", 12, 4, 3, 3), _t("bt", 8)]
    path = _write(tmp_path, nodes, inits, (3, 6, 6), (2, 48, 48))
    spec = _imported(path).spec
    lay = {x.name: x for x in spec.layers}
    assert lay["a"].activation == "silu" and lay["b"].activation == "hardswish"
    assert (lay["up"].op, lay["up"].mode, lay["upl"].mode) == ("Upsample", "nearest", "bilinear")
    assert [lay[n].op for n in ("cat", "sum", "square", "shuffle")] == [
        "Concat", "Add", "Mul", "PixelShuffle"]
    assert "Dropout" not in {x.op for x in spec.layers}  # the optimizer drops it (inference)
    d = lay["deconv"]
    assert (d.op, d.stride, d.padding, d.output_padding, d.groups, d.out_channels) == (
        "ConvTranspose2d", 2, 1, 1, 2, 8)


def test_gelu_opset20_and_reshape(tmp_path):
    """Gelu (opset 20; tanh approximation too), Reshape to a (C, H, W) map and back."""
    shape = numpy_helper.from_array(np.array([1, 2, 4, 4], np.int64), "shape")
    flat = numpy_helper.from_array(np.array([1, -1], np.int64), "flat")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Gelu", ["c"], ["g"], name="gelu", approximate="tanh"),
        helper.make_node("Reshape", ["g", "flat"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wl"], ["l"], name="fc", transB=1),
        helper.make_node("Gelu", ["l"], ["gl"], name="gelu2"),
        helper.make_node("Reshape", ["gl", "shape"], ["y"], name="to_map"),
    ]
    inits = [_t("w", 4, 3, 1, 1), shape, flat, _t("wl", 32, 4 * 25)]
    path = _write(tmp_path, nodes, inits, (3, 5, 5), (2, 4, 4), opset=20)
    spec = _imported(path).spec
    assert [x.op for x in spec.layers] == ["Conv2d", "Linear", "Reshape"]
    assert spec.layers[0].activation == "gelu_tanh" and spec.layers[1].activation == "gelu"
    assert spec.layers[2].shape == [2, 4, 4]


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def _error(fn, *args, **kw) -> str:
    with pytest.raises(ModelImportError) as exc:
        fn(*args, **kw)
    line = exc.value.one_line()
    assert "\n" not in line
    return line


def test_unsupported_op_names_node_type_and_alternative(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("PRelu", ["c", "slope"], ["y"], name="act/prelu")]
    path = _write(tmp_path, nodes, [_t("w", 4, 3, 1, 1), _t("slope", 4, 1, 1)], (3, 4, 4),
                  (4, 4, 4))
    line = _error(import_onnx, path)
    assert "node 'act/prelu' (PRelu): unsupported op" in line
    assert "nearest supported: LeakyRelu" in line
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Erf", ["c"], ["y"], name="erf")]
    line = _error(import_onnx, _write(tmp_path, nodes, [_t("w", 4, 3, 1, 1)], (3, 4, 4),
                                      (4, 4, 4)))
    assert "(Erf)" in line and "Gelu" in line


def test_control_flow_is_refused(tmp_path):
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 3, 4, 4])])
    other = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT,
                                                             [1, 3, 4, 4])])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    nodes = [helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then,
                              else_branch=other)]
    path = _write(tmp_path, nodes, [], (3, 4, 4), (3, 4, 4), extra_inputs=[cond])
    line = _error(import_onnx, path)
    assert "node 'branch' (If)" in line and "control flow" in line


def test_dynamic_axes(tmp_path):
    """A symbolic batch is fine; a symbolic height is an error unless its size is given."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    dims = ["N", 3, "H", 8]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "H", 8])
    model = helper.make_model(helper.make_graph(nodes, "dyn", [x], [y], [_t("w", 4, 3, 3, 3)]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "dyn.onnx"
    onnx.save(model, path)
    line = _error(import_onnx, path)
    assert "input 'x' has a dynamic axis 2 ('H')" in line and "--shape" in line
    result = import_onnx(path, input_shapes={"x": (3, 6, 8)})
    assert result.spec.inputs[0].shape == (3, 6, 8)


def test_truncated_and_invalid_files(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    good = _write(tmp_path, nodes, [_t("w", 4, 3, 1, 1)], (3, 4, 4), (4, 4, 4))
    data = good.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    line = _error(import_onnx, cut)
    assert line.startswith(f"{cut}: onnx.checker: ")
    # structurally invalid: a node reads a value nothing defines
    bad = [helper.make_node("Relu", ["nowhere"], ["y"], name="relu")]
    line = _error(import_onnx, _write(tmp_path, bad, [], (3, 4, 4), (3, 4, 4), name="bad"))
    assert "onnx.checker:" in line and "nowhere" in line
    line = _error(import_onnx, tmp_path / "missing.onnx")
    assert "file not found" in line
    # custom-domain ops
    custom = [helper.make_node("FusedConv", ["x", "w"], ["y"], name="fc", domain="com.microsoft")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])
    model = helper.make_model(helper.make_graph(custom, "c", [x], [y], [_t("w", 4, 3, 1, 1)]),
                              opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "custom.onnx")
    line = _error(import_onnx, tmp_path / "custom.onnx")
    assert "com.microsoft" in line


def test_forms_without_netspec_equivalent(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[0, 0, 1, 1],
                              kernel_shape=[2, 2])]
    line = _error(import_onnx, _write(tmp_path, nodes, [_t("w", 4, 3, 2, 2)], (3, 4, 4),
                                      (4, 4, 4)))
    assert "node 'conv' (Conv): asymmetric pads [0, 0, 1, 1]" in line
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", auto_pad="SAME_UPPER",
                              kernel_shape=[2, 2])]
    line = _error(import_onnx, _write(tmp_path, nodes, [_t("w", 4, 3, 2, 2)], (3, 4, 4),
                                      (4, 4, 4), name="same"))
    assert "SAME_UPPER" in line and "not symmetric" in line
    # before opset 13, Softmax(axis=1) of a map is over C*H*W, not over the channels
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Softmax", ["c"], ["y"], name="sm", axis=1)]
    line = _error(import_onnx, _write(tmp_path, nodes, [_t("w", 4, 3, 1, 1)], (3, 4, 4),
                                      (4, 4, 4), opset=11, name="sm11"))
    assert "node 'sm' (Softmax): softmax over axis 1" in line
    # nearest with half-pixel coordinates and floor rounding is not torch's nearest
    sc = numpy_helper.from_array(np.array([1, 1, 3, 3], np.float32), "sc")
    nodes = [helper.make_node("Resize", ["x", "", "sc"], ["y"], name="up", mode="nearest",
                              nearest_mode="floor")]
    line = _error(import_onnx, _write(tmp_path, nodes, [sc], (3, 4, 4), (3, 12, 12),
                                      name="resize"))
    assert "nearest interpolation with half_pixel coordinates and floor rounding" in line
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 1, 1])
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    line = _error(import_onnx, _write(tmp_path, nodes, [], (3, 4, 4), (4, 4, 4), name="rt",
                                      extra_inputs=[w]))
    assert "computed at run time" in line


def test_cli_bad_onnx_exits_2(tmp_path, capsys):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(b"\x08\x07garbage")
    assert main(["import", str(cut), "-o", str(tmp_path / "n.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "onnx.checker" in err
    assert not (tmp_path / "n.yaml").exists()


def test_half_pixel_nearest_resize_by_three(tmp_path):
    """ONNX's default Resize (half-pixel, round_prefer_floor) by an integer factor is torch's
    nearest upsampling (checked against onnxruntime)."""
    sc = numpy_helper.from_array(np.array([1, 1, 3, 3], np.float32), "sc")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Resize", ["c", "", "sc"], ["y"], name="up", mode="nearest")]
    spec = _imported(_write(tmp_path, nodes, [_t("w", 2, 3, 1, 1), sc], (3, 5, 4),
                            (2, 15, 12))).spec
    assert (spec.layers[1].op, spec.layers[1].scale_factor) == ("Upsample", 3)

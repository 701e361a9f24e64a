"""The standard architectures of ``netspecs/standard/`` (issue 15): exact parameter counts from
shape inference against the published / torchvision numbers, the MACs against the papers'
multiply-add counts, the headers' stated counts, and ResNet-18 and MobileNetV2 compiled and run
(in-process, emitted source and committed generator) on small inputs.

VGG-11 (132,863,336 parameters) is only counted, never built (see ``tests.helpers.NOT_BUILT``).
"""

from __future__ import annotations

import importlib
import re

import pytest
import torch
from torch import nn

import spdnn.spec as S
from spdnn.codegen import build_module, emit_module
from spdnn.codegen.names import class_name
from spdnn.shapes import infer
from tests.helpers import NETSPECS, ROOT, exec_class, randomize_norms

STD = NETSPECS / "standard"

# name -> (parameters at 1,000 classes and 224x224: torchvision's counts, which the issue
# quotes; the papers' multiply-adds where they state them, and the relative tolerance of that
# rounded figure)
PUBLISHED = {
    "resnet18": (11_689_512, 1.8e9, 0.05),  # He et al. 2016, Table 1: 1.8 x 10^9 FLOPs
    "resnet34": (21_797_672, 3.6e9, 0.05),  # Table 1: 3.6 x 10^9
    "mobilenet_v2": (3_504_872, 300e6, 0.01),  # Sandler et al. 2018, Table 4: 300M MAdds
    "vgg11": (132_863_336, None, None),
}


def _load(name: str, size: int | None = None) -> S.Netspec:
    spec = S.load(STD / f"{name}.yaml")
    if size is None:
        return spec
    inp = spec.inputs[0].model_copy(update={"height": size, "width": size})
    return spec.model_copy(update={"inputs": [inp]})


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_parameter_counts(name):
    params, macs, tol = PUBLISHED[name]
    info = infer(_load(name))
    assert info.params == params
    assert info.output_shapes() == {"logits": (1000,)}
    if macs is not None:
        assert abs(info.macs - macs) / macs < tol, info.macs


@pytest.mark.parametrize("path", sorted(STD.glob("*.yaml")), ids=lambda p: p.stem)
def test_headers_state_the_inferred_count(path):
    header = " ".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    m = re.search(r"Parameters: ([\d,]+)", header)
    assert m, f"{path.name}: the header states no parameter count"
    assert int(m.group(1).replace(",", "")) == infer(S.load(path)).params
    assert re.search(r"(CVPR|ICLR|MICCAI) 20\d\d|Proc\. IEEE 19\d\d", header), "the header cites the paper"


def test_vgg11_layer_table():
    """Configuration A: eight 3x3 convs, five pools, 512x7x7 = 25,088 features into FC-4096."""
    spec = _load("vgg11")
    info = infer(spec)
    convs = [lay for lay in spec.layers if lay.op_name == "Conv2d"]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert sum(lay.op_name == "MaxPool2d" for lay in spec.layers) == 5
    assert info.shapes["pool5"] == info.shapes["avgpool"] == (512, 7, 7)
    assert info["fc1"].params == 25_088 * 4096 + 4096
    assert info["fc3"].params == 4096 * 1000 + 1000


def test_mobilenet_v2_structure():
    """Table 2's bottleneck sequence: 17 bottlenecks, the expansion width t * in_channels
    computed by the block, 17 depthwise convolutions, 10 residual joins, ReLU6."""
    spec = _load("mobilenet_v2")
    info = infer(spec)
    blocks = [lay for lay in spec.layers if lay.op_name.startswith("InvertedResidual")]
    assert len(blocks) == 17
    assert sum(lay.op_name == "InvertedResidualRes" for lay in blocks) == 10
    hidden = {}
    depthwise = 0
    for lay in blocks:
        body = lay.shaped_body(list(info[lay.name].in_shapes))[1]
        for inner in body.layers:
            if inner.op.op_name == "InvertedResidual":  # the residual block's nested body
                inner = next(x for x in inner.op.shaped_body(list(inner.in_shapes))[1].layers
                             if x.name == "depthwise")
            if inner.name == "depthwise":
                assert inner.op.groups == inner.in_shapes[0][0] == inner.out_shape[0]
                assert inner.op.activation == "relu6"
                hidden[lay.name] = inner.out_shape[0]
                depthwise += 1
    assert depthwise == 17
    assert hidden["block1_0"] == 32 and hidden["block2_0"] == 16 * 6
    assert hidden["block4_3"] == 64 * 6 and hidden["block7_0"] == 160 * 6
    assert info.shapes["block7_0"] == (320, 7, 7)


def test_resnet_structure_codes():
    spec = _load("resnet18")
    codes = [lay.structure() for lay in spec.layers if lay.kind == "compute"]
    assert codes == ["7C(s2)", "Res(64)", "Res(64)", "ResDown(128,s2)", "Res(128)",
                     "ResDown(256,s2)", "Res(256)", "ResDown(512,s2)", "Res(512)", "1000F"]
    assert infer(_load("resnet34")).shapes["layer4_2"] == (512, 7, 7)


def _three_ways(name: str, size: int):
    """In-process module, emitted source and the committed generator, same weights, eval."""
    spec = _load(name, size)
    torch.manual_seed(0)
    ref = build_module(spec)
    randomize_norms(ref)
    ref.eval()
    emitted = exec_class(emit_module(spec), spec)()
    mod = importlib.import_module(f"generators.standard.{name}")
    committed = getattr(mod, class_name(spec.name))()
    for m in (emitted, committed):
        m.load_state_dict(ref.state_dict(), strict=True)
        m.eval()
    return spec, ref, emitted, committed


@pytest.mark.parametrize("name,size", [("resnet18", 64), ("mobilenet_v2", 32)])
def test_compiles_and_runs_on_a_small_input(name, size, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    torch.manual_seed(0)  # an unseeded init could leave a ReLU6 unit dead on 2 samples
    spec, ref, emitted, committed = _three_ways(name, size)
    assert sum(p.numel() for p in ref.parameters()) == PUBLISHED[name][0]  # size-independent
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(x)
        assert want.shape == (2, 1000) and torch.isfinite(want).all()
        assert torch.equal(emitted(x), want)
        assert torch.equal(committed(x), want)
    # one training step reaches every parameter (the graph is differentiable end to end)
    ref.train()
    nn.functional.cross_entropy(ref(x), torch.tensor([3, 7])).backward()
    grads = [p.grad for p in ref.parameters()]
    assert all(g is not None for g in grads)
    # on 2 samples a ReLU6 unit can be saturated or dead (seen in CI): nearly every tensor
    # still gets a gradient
    assert sum(bool(g.abs().sum() > 0) for g in grads) >= 0.95 * len(grads)


class _TorchUNet(nn.Module):
    """The small U-Net written directly in torch (Ronneberger et al. 2015, Fig. 1; widths
    16..256, padding 1), for an independent parameter count and output shape."""

    def __init__(self, widths=(16, 32, 64, 128, 256), cin=1, classes=2):
        super().__init__()

        def double(a, b):
            return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(b, b, 3, padding=1), nn.ReLU())

        self.down = nn.ModuleList()
        c = cin
        for w in widths:
            self.down.append(double(c, w))
            c = w
        self.up_dec = nn.ModuleList(  # (up-convolution, double conv) per decoder level
            nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2),
                           double(2 * widths[i], widths[i])])
            for i in reversed(range(len(widths) - 1)))
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x):
        skips = []
        for k, d in enumerate(self.down):
            x = d(x)
            if k < len(self.down) - 1:
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
        for up, dec in self.up_dec:
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def test_unet_matches_a_torch_unet():
    spec = _load("unet_small")
    info = infer(spec)
    ref = _TorchUNet()
    assert info.params == sum(p.numel() for p in ref.parameters()) == 1_940_834
    ours = build_module(spec).eval()
    # same layer order, same shapes: copy the torch weights over and compare outputs
    src = list(ref.state_dict().values())
    dst = ours.state_dict()
    assert [tuple(t.shape) for t in dst.values()] == [tuple(t.shape) for t in src]
    ours.load_state_dict(dict(zip(dst, src)), strict=True)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref.eval()(x), rtol=1e-5, atol=1e-6)
    assert info.output_shapes() == {"logits": (2, 64, 64)}


def test_mobilenet_v2_onnx_export_parity(tmp_path):
    """MobileNetV2 (nested blocks, computed widths, depthwise convs, ReLU6, adaptive pool)
    exports with onnxruntime parity; at 32x32 (the graph and weights are the full ones)."""
    import onnx

    from spdnn.export import export_onnx

    rep = export_onnx(_load("mobilenet_v2", 32), tmp_path / "m.onnx")
    assert rep.ok and rep.max_abs_err <= 1e-4
    graph = onnx.load(tmp_path / "m.onnx").graph
    groups = [a.i for n in graph.node if n.op_type == "Conv" for a in n.attribute
              if a.name == "group" and a.i > 1]
    assert len(groups) == 17 and groups[0] == 32 and max(groups) == 960

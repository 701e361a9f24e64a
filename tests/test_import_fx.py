"""torch.fx import: functional calls and methods, parity, and one-line errors for what the
netspec cannot express; the FILE.py:NAME factory form."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import spdnn  # noqa: E402
from spdnn.importers import ModelImportError, load_factory, parity  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Functional(nn.Module):
    """Squeeze-and-excitation gating (x * sigmoid(fc(mean))), functional activations,
    torch.cat, x.view(x.size(0), -1), F.interpolate and a transposed conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding="same", bias=False)
        self.bn = nn.BatchNorm2d(8, eps=1e-3)
        self.se = nn.Conv2d(8, 8, 1)
        self.side = nn.Conv2d(3, 8, 1)
        self.up = nn.ConvTranspose2d(16, 4, 4, stride=2, padding=1)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.head = nn.Linear(4 * 32 * 32, 6)
        self.drop = nn.Dropout(0.25)

    def forward(self, x):
        a = F.silu(self.bn(self.conv(x)))
        g = torch.sigmoid(self.se(a.mean((2, 3), keepdim=True)))
        a = a * g
        b = F.leaky_relu(self.side(x), 0.1)
        c = torch.cat([a, b], dim=1)
        c = F.avg_pool2d(F.max_pool2d(c, 3, 1, 1), 2, ceil_mode=True)
        u = self.pool(F.gelu(self.up(F.interpolate(c, scale_factor=4))))
        return F.softmax(self.head(self.drop(u).view(u.size(0), -1)), dim=1)


def test_functional_module_parity():
    torch.manual_seed(0)
    m = Functional().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.8, 1.2)
    result = spdnn.from_module(m, torch.rand(1, 3, 8, 8), name="functional")
    assert result.spec.name == "functional"
    errors = parity(result, m)
    assert max(errors.values()) <= 1e-5, errors
    lay = {x.name: x for x in result.spec.layers}
    # eps 1e-3 is not the fused option's 1e-5: the norm stays a layer
    assert lay["bn"].op == "BatchNorm2d" and lay["bn"].eps == 1e-3
    assert lay["conv"].padding == 1 and lay["side"].activation == "leaky_relu"
    assert lay["se"].activation == "sigmoid" and lay["up"].activation == "gelu"
    assert lay["head"].activation == "softmax"
    # the keep-dims mean is a 1x1 adaptive pool; x.view(x.size(0), -1) before the Linear is
    # dropped (Linear flattens)
    assert {x.op for x in result.spec.layers} == {
        "Conv2d", "BatchNorm2d", "SiLU", "AdaptiveAvgPool2d", "Mul", "Concat", "Upsample",
        "ConvTranspose2d", "AvgPool2d", "MaxPool2d", "Dropout", "Linear"}
    assert (lay["max_pool2d"].stride, lay["max_pool2d"].padding) == (1, 1)
    assert lay["avg_pool2d"].ceil_mode is True and lay["interpolate"].scale_factor == 4
    assert lay["pool"].count_include_pad is False
    assert result.params == sum(p.numel() for p in m.parameters())


def test_interpolate_by_a_fraction_is_refused():
    class Down(nn.Module):
        def forward(self, x):
            return F.interpolate(nn.functional.relu(x), scale_factor=0.5)

    with pytest.raises(ModelImportError) as exc:
        spdnn.from_module(Down(), torch.rand(1, 3, 8, 8))
    line = exc.value.one_line()
    assert "interpolate" in line and "integer factor" in line


def _line(fn, *args) -> str:
    with pytest.raises(ModelImportError) as exc:
        fn(*args)
    line = exc.value.one_line()
    assert "\n" not in line
    return line


def test_unsupported_module_and_parameter_use():
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.PReLU())
    line = _line(spdnn.from_module, m, torch.rand(1, 3, 4, 4))
    assert line == ("module '1' (PReLU): unsupported module (nearest supported: nn.LeakyReLU)")

    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.gain

    assert "used directly in forward" in _line(spdnn.from_module, Scale(), torch.rand(1, 3, 4, 4))

    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    assert "torch.fx cannot trace Branchy" in _line(spdnn.from_module, Branchy(),
                                                     torch.rand(1, 3, 4, 4))
    assert "does not run on the example input" in _line(
        spdnn.from_module, nn.Conv2d(3, 4, 1), torch.rand(1, 5, 4, 4))


def test_factory_errors(tmp_path):
    src = tmp_path / "models.py"
    src.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def good():
            return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        good.example_input = lambda: torch.rand(1, 1, 8, 8)

        def raises():
            raise ValueError("no such weights")

        def not_a_module():
            return 3
    """))
    module, example = load_factory(f"{src}:good")
    assert isinstance(module, nn.Module) and tuple(example.shape) == (1, 1, 8, 8)
    assert str(tmp_path) not in sys.path  # the file's folder is not put on the path
    assert "has no 'missing' (it defines: good, not_a_module, raises)" in _line(
        load_factory, f"{src}:missing")
    assert "raises() raised ValueError: no such weights" in _line(load_factory, f"{src}:raises")
    assert "returned a int, not a torch.nn.Module" in _line(load_factory, f"{src}:not_a_module")
    assert "file not found" in _line(load_factory, f"{tmp_path / 'nope.py'}:good")
    assert "not FILE.py:Factory" in _line(load_factory, str(src))
    broken = tmp_path / "broken.py"
    broken.write_text("import nonexistent_module_xyz\n")
    assert "running the file raised ModuleNotFoundError" in _line(load_factory,
                                                                 f"{broken}:good")


def test_import_spdnn_stays_light():
    """spdnn.from_module is there, and importing spdnn (and spdnn.importers) loads no torch."""
    code = ("import sys, spdnn, spdnn.importers; assert callable(spdnn.from_module); "
            "print(sorted(m for m in sys.modules if m in ('torch', 'onnx', 'onnxscript')))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"

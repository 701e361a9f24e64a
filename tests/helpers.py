"""Shared helpers for the tests (no fixtures with hidden behaviour)."""

from __future__ import annotations

import glob
from pathlib import Path

import torch
from torch import nn

import spdnn.spec as S

ROOT = Path(__file__).resolve().parents[1]
NETSPECS = ROOT / "netspecs"


def load_glob(pattern: str) -> list[S.Netspec]:
    """Load the netspecs matching a glob under the repository root, sorted by path."""
    paths = sorted(glob.glob(str(ROOT / pattern)))
    assert paths, f"no netspecs match {pattern}"
    return [S.load(p) for p in paths]


def all_netspec_paths() -> list[Path]:
    from spdnn.spec.blocks import netspec_paths  # block libraries are not netspecs

    return netspec_paths(NETSPECS)


NOT_BUILT = {
    "standard/vgg11.yaml": "VGG-11 has 132,863,336 parameters (530 MB of float32 weights) and "
    "7.6 GMACs at 224x224; tests/test_netspecs_standard.py counts it by shape inference",
}
"""Netspecs the per-netspec loops that *build* every network leave out, with the reason."""
NOT_EXPORTED = {
    **NOT_BUILT,
    "standard/resnet18.yaml": "ImageNet-size (11.7 M parameters, 1.8 GMACs); its ops (conv, "
    "BN, ReLU, Add in blocks, adaptive pool, linear) are exported by the other netspecs",
    "standard/resnet34.yaml": "ImageNet-size (21.8 M parameters, 3.7 GMACs); the ops of "
    "ResNet-18",
    "standard/mobilenet_v2.yaml": "ImageNet-size (3.5 M parameters); exported at 32x32 by "
    "tests/test_netspecs_standard.py",
}
"""Netspecs the per-netspec ONNX export loop leaves out (about 4 s each on 2 cores)."""


def netspec_paths_except(skip: dict[str, str]) -> list[Path]:
    """:func:`all_netspec_paths` without those named (relative to ``netspecs/``) in ``skip``."""
    return [p for p in all_netspec_paths() if p.relative_to(NETSPECS).as_posix() not in skip]


def exec_class(src: str, spec: S.Netspec) -> type[nn.Module]:
    """The network class of emitted source ``src`` (executed in a fresh namespace)."""
    from spdnn.codegen.names import class_name

    ns: dict = {"__name__": "spdnn_generated"}
    exec(compile(src, f"<generated {spec.name!r}>", "exec"), ns)  # noqa: S102 - our own output
    return ns[class_name(spec.name)]


def randomize_norms(module: nn.Module, seed: int = 0) -> None:
    """Give batch-norm layers non-trivial statistics so that eval-mode parity means something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.affine:  # parameter-free norms (SPADE's, affine: false) have none
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                if m.running_mean is None:
                    continue
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)

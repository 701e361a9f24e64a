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

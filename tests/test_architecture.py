"""The package's shape: no import cycles, and the commands that only compile networks start
without importing torch (the architecture issue's "done means")."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

from tests.helpers import ROOT

PKG = ROOT / "spdnn"


def import_graph(root: Path = PKG) -> nx.DiGraph:
    """Module -> imported spdnn module, for every import statement at any depth (function-level
    ones included, ``if TYPE_CHECKING:`` blocks excluded); ``from a import b`` counts as an
    import of ``a.b`` when that is a module, else of ``a``."""
    mods: dict[str, Path] = {}
    for f in root.rglob("*.py"):
        rel = f.relative_to(root.parent).with_suffix("")
        name = ".".join(rel.parts[:-1]) if rel.name == "__init__" else ".".join(rel.parts)
        mods[name] = f

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    g = nx.DiGraph()
    for name, f in mods.items():
        g.add_node(name)
        tree = ast.parse(f.read_text())
        skip = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                if t.split(".")[0] != root.name:
                    continue
                r = resolve(t)
                # a module importing its own package's face is how packages work, not a cycle
                if r and r != name and not name.startswith(r + "."):
                    g.add_edge(name, r)
    return g


def test_the_import_graph_sees_imports():
    g = import_graph()
    assert g.has_edge("spdnn.cli.app", "spdnn.cli.netspec")
    assert g.has_edge("spdnn.train.trainer", "spdnn.io")


def test_no_import_cycles_in_the_package():
    cycles = sorted((c for c in nx.simple_cycles(import_graph()) if len(c) > 1), key=len)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c + [c[0]]) for c in cycles[:10])


def test_a_cycle_is_found_when_there_is_one(tmp_path: Path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n")
    cycles = [c for c in nx.simple_cycles(import_graph(pkg)) if len(c) > 1]
    assert sorted(cycles[0]) == ["pkg.a", "pkg.b"]


IRIS_A = sorted(str(p) for p in (ROOT / "netspecs/iris/appendix_a").glob("*.yaml"))
PROBE = """
import runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_module("spdnn", run_name="__main__")
except SystemExit as e:
    code = e.code
print("EXIT", code, "TORCH", "torch" in sys.modules)
"""


def run_cli_probe(args: list[str], cwd: Path) -> tuple[int, bool, str]:
    """Run ``spdnn ARGS`` in a fresh interpreter; return (exit code, torch imported?, output)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-c", PROBE.format(argv=["spdnn", *args])], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=env)
    last = proc.stdout.strip().splitlines()[-1].split()
    return int(last[1]), last[3] == "True", proc.stdout + proc.stderr


@pytest.mark.parametrize("args", [
    ["--help"],
    ["validate", *IRIS_A],
    ["inspect", IRIS_A[0]],
    ["merge", *IRIS_A, "-o", "{tmp}/merged.yaml"],
    ["render", *IRIS_A, "-o", "{tmp}/contracted.dot"],
    ["render", IRIS_A[0], "--view", "labels", "-o", "{tmp}/labels.dot"],
    ["ops"],
], ids=["help", "validate", "inspect", "merge", "render-contracted", "render-labels", "ops"])
def test_compiler_commands_do_not_import_torch(args: list[str], tmp_path: Path):
    code, torch_loaded, output = run_cli_probe([a.format(tmp=tmp_path) for a in args], ROOT)
    assert code in (0, None), output
    assert not torch_loaded, f"spdnn {' '.join(args)} imported torch"


def test_the_probe_sees_torch_when_a_command_needs_it(tmp_path: Path):
    code, torch_loaded, output = run_cli_probe(
        ["export", IRIS_A[0], "-o", str(tmp_path / "n.onnx"), "--exporter", "torchscript"], ROOT)
    assert code in (0, None), output
    assert torch_loaded


NETSPECS = sorted(p for p in (ROOT / "netspecs").rglob("*.yaml")
                  if "blocks" not in p.relative_to(ROOT / "netspecs").parts)


def test_execution_order_is_networkx_lexicographic_topological_order():
    """shapes.execution_order avoids importing networkx on the validation path; networkx is the
    oracle for its order on every shipped netspec (and on a merged one)."""
    from spdnn import spec as S
    from spdnn.graph import merge_files
    from spdnn.shapes import execution_order

    specs = [S.load(p) for p in NETSPECS]
    specs.append(merge_files(IRIS_A).spec)
    for spec in specs:
        g = nx.DiGraph()
        index = {lay.name: i for i, lay in enumerate(spec.layers)}
        g.add_nodes_from(range(len(spec.layers)))
        g.add_edges_from((index[s], index[d]) for s, d in spec.edges() if s in index)
        assert execution_order(spec) == list(nx.lexicographical_topological_sort(g)), spec.name


def test_validation_does_not_import_networkx():
    code = ("import sys\nfrom spdnn import spec as S\nfrom spdnn.shapes import infer\n"
            f"infer(S.load_checked({IRIS_A[0]!r}))\nprint('networkx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stdout + out.stderr

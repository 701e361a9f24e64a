"""The compiler stages (spec, shapes, graph, render, report, source emission) run without torch.

``import torch`` costs about two seconds; only building or running a module needs it. The check
runs in a fresh interpreter, so modules other tests imported do not hide a torch import.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import glob, sys, tempfile, warnings
    from pathlib import Path

    import spdnn.ops, spdnn.spec, spdnn.shapes, spdnn.graph, spdnn.render, spdnn.report
    import spdnn.codegen
    from spdnn import render as R
    from spdnn.codegen import emit_module
    from spdnn.graph import merge, parent_graph
    from spdnn.report import layer_table, merge_markdown
    from spdnn.shapes import infer
    from spdnn.spec import dump, load, load_checked

    warnings.filterwarnings("ignore")
    paths = sorted(glob.glob("netspecs/iris/appendix_a/*.yaml"))
    assert len(paths) == 3, paths
    specs = [load_checked(p) for p in paths]
    infos = [infer(s) for s in specs]
    assert all(i.params > 0 for i in infos)
    result = merge([load(p) for p in paths])
    assert result.report.merged_params > 0 and dump(result.spec)
    layer_table(infer(result.spec))
    merge_markdown(result.report)
    out = Path(tempfile.mkdtemp())
    for view in R.VIEWS:
        R.save(R.build_view(view, result), out / f"{view}.dot")
    R.save(R.labelled_diagram(parent_graph(specs[0])), out / "labels.dot")
    assert "class " in emit_module(result.spec)
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print("TORCH:" + ",".join(loaded))
""")


def test_compiler_stages_do_not_import_torch():
    run = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("TORCH:"))
    assert line == "TORCH:", f"torch was imported: {line[6:200]}"


def test_module_attribute_list_matches_torch():
    """Layer attributes must not shadow ``nn.Module`` attributes: the torch-free list that
    identifiers avoid covers every attribute of the installed torch."""
    import torch

    from spdnn.codegen.names import MODULE_ATTRS

    missing = {n for n in dir(torch.nn.Module) if not n.startswith("__")} - MODULE_ATTRS
    assert not missing, f"add to spdnn.codegen.names.MODULE_ATTRS: {sorted(missing)}"


def test_build_module_still_builds_lazily():
    from spdnn.codegen import SpdnnModule, build_module
    from spdnn.codegen.build import build_module as direct

    assert build_module is direct and SpdnnModule.__name__ == "SpdnnModule"

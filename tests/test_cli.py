"""The command line as a user meets it: exit codes, one-line errors, files written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import spdnn.spec as S
from spdnn.cli import main
from spdnn.shapes import infer
from tests.helpers import ROOT

IRIS_A = sorted(str(p) for p in (ROOT / "netspecs/iris/appendix_a").glob("*.yaml"))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spdnn", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_merge_writes_netspec_and_report(tmp_path: Path, capsys):
    out, rep = tmp_path / "merged.yaml", tmp_path / "report.md"
    assert main(["merge", *IRIS_A, "-o", str(out), "--report", str(rep)]) == 0
    text = capsys.readouterr().out
    assert "fewer parameters" in text and "(11C, 5)" in text
    merged = S.load(out)
    assert infer(merged).output_shapes() == {"mask": (1, 96, 128)}
    md = rep.read_text()
    assert "| A | 3C | (3C, 1) |" in md
    assert "## Skipped merges" in md


def test_merge_params_number_and_keep(tmp_path: Path):
    out = tmp_path / "m.yaml"
    assert main(["merge", *IRIS_A, "-o", str(out), "--params", "40k"]) == 0
    assert abs(infer(S.load(out)).params / 40_000 - 1) < 0.02
    assert main(["merge", *IRIS_A, "-o", str(out), "--params", "keep"]) == 0


def test_bad_params_value_is_one_line_error():
    r = run("merge", *IRIS_A, "--params", "lots")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "--params" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_missing_file_and_usage_errors_exit_2():
    r = run("inspect", "no/such/file.yaml")
    assert r.returncode == 2 and "no/such/file.yaml" in r.stderr and r.stderr.count("\n") == 1
    r = run("merge")
    assert r.returncode == 2 and r.stderr.startswith("error: ")


def test_debug_shows_traceback():
    r = run("--debug", "inspect", "no/such/file.yaml")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_inspect_compile_validate(tmp_path: Path, capsys):
    spec = str(ROOT / "netspecs/depth/parent_6.yaml")
    assert main(["inspect", spec]) == 0
    text = capsys.readouterr().out
    assert "70,784" in text and "6x10x33" in text
    out = tmp_path / "net.py"
    assert main(["compile", spec, "-o", str(out)]) == 0
    src = out.read_text()
    compile(src, str(out), "exec")
    assert "class DepthParent6(nn.Module):" in src
    assert main(["validate", *IRIS_A]) == 0


@pytest.mark.parametrize("view", ["netspec", "labels"])
def test_render_one_netspec_dot(tmp_path: Path, view: str):
    out = tmp_path / "d.dot"
    assert main(["render", IRIS_A[2], "--view", view, "-o", str(out)]) == 0
    assert "digraph" in out.read_text()


def test_render_merge_views_dot(tmp_path: Path):
    for view in ("parallel", "forward", "contracted", "side-by-side"):
        out = tmp_path / f"{view}.dot"
        assert main(["render", *IRIS_A, "--view", view, "-o", str(out)]) == 0
        assert out.read_text().strip().endswith("}")


def test_ops_lists_every_registered_op(capsys):
    from spdnn.ops import OPS

    assert main(["ops"]) == 0
    text = capsys.readouterr().out
    for name in OPS:
        assert name in text


def test_demo_runs(tmp_path: Path, capsys):
    from rich.console import Console

    from spdnn.cli.demo import run_demo

    summary = run_demo(tmp_path / "demo", ROOT, Console(file=open(tmp_path / "log.txt", "w")),
                       train=False)
    assert summary["output_shape"] == (1, 1, 96, 128)
    for name in ("merged.yaml", "merge_report.md", "merged_net.py", "camera_96x128.png",
                 "merged_output.png"):
        assert (tmp_path / "demo" / name).is_file()
    assert len(summary["files"]) == 7


def test_validate_every_netspec_and_block_library(capsys):
    paths = sorted(str(p) for p in (ROOT / "netspecs").rglob("*.yaml"))
    assert main(["validate", *paths]) == 0
    text = capsys.readouterr().out
    assert "block library (Fire)" in text
    assert text.count("ok  ") == len(paths)


@pytest.mark.parametrize("argv", [
    ["predict", "no_run", "--seed", "99999999999999999999999"],
    ["predict", "no_run", "--num", "1000000"],
    ["bench", "{net}", "--min-time", "inf", "-o", ""],
    ["bench", "{net}", "--batch", "100000000", "-o", ""],
    ["bench", "{net}", "--threads", "1000000", "-o", ""],
    ["bench", "{net}", "--warmup", "1000000000", "-o", ""],
    ["export", "{net}", "--atol", "nan", "-o", "{tmp}/x.onnx"],
    ["export", "{net}", "--opset", "1000", "-o", "{tmp}/x.onnx"],
], ids=lambda a: " ".join(a[:1] + a[2:4]))
def test_extreme_command_line_numbers_are_one_line_errors(argv, tmp_path, capsys):
    """Numbers that would overflow, run forever or exhaust memory are refused up front."""
    net = str(Path(__file__).parents[1] / "netspecs/iris/appendix_a/parent_1_8x7x7.yaml")
    code = main([a.format(net=net, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "internal" not in err

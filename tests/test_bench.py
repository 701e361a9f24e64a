"""Benchmarks: rows with sane numbers, the tables' columns, the SPDNN comparison modules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import spdnn.bench as B
import spdnn.spec as S
from spdnn.cli import main
from spdnn.codegen import build_module
from tests.helpers import load_glob

TINY = """
name: {name}
input: {{name: image, channels: 1, height: 12, width: 16}}
layers:
- {{name: c1, op: Conv2d, kernel_size: {k}, out_channels: 4, padding: same, batch_norm: true, activation: relu}}
- {{name: c2, op: Conv2d, kernel_size: 3, out_channels: 1, padding: same, activation: sigmoid}}
output: {{name: mask, from: c2}}
"""


def tiny(name: str = "tiny_a", k: int = 3) -> S.Netspec:
    return S.loads(TINY.format(name=name, k=k))


FAST = dict(warmup=1, min_time=0.0, min_runs=3)


def test_tiny_bench_rows_are_positive(tmp_path: Path):
    rows = B.bench({"a": tiny()}, batches=(1,), runtimes=("torch", "torch-inference", "ort"),
                   threads=1, workdir=tmp_path, **FAST)
    assert [(r.model, r.runtime, r.batch) for r in rows] == [
        ("a", "torch", 1), ("a", "torch-inference", 1), ("a", "ort", 1)]
    for r in rows:
        assert r.ok and r.runs >= 3 and r.threads == 1
        assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms
        assert r.throughput > 0 and r.gmacs > 0 and r.params > 0 and r.macs > 0
        assert r.peak_mem_mb is not None and r.peak_mem_mb >= 0
        assert math.isclose(r.throughput, 1e3 / r.p50_ms)


def test_markdown_json_and_plot(tmp_path: Path):
    rows = B.bench({"a": tiny(), "b": tiny("tiny_b", 5)}, batches="1,2", runtimes="torch",
                   **FAST)
    ceil = B.matmul_ceiling(n=128, min_time=0.0)
    assert ceil["gflops"] > 0 and ceil["gmacs"] == pytest.approx(ceil["gflops"] / 2)
    md = B.to_markdown(rows, ceil)
    header = md.splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == B.COLUMNS
    assert {"p50 ms", "p90 ms", "p99 ms", "img/s", "peak MB", "params", "GMAC/s"} <= set(B.COLUMNS)
    assert len(md.splitlines()) >= 2 + len(rows) and "GFLOP/s" in md
    rat = B.ratios(rows, "a")
    assert [(r["model"], r["batch"]) for r in rat] == [("b", 1), ("b", 2)]
    assert rat[0]["params"] == pytest.approx(rows[2].params / rows[0].params)
    assert "latency ratio" in B.ratios_markdown(rat)
    data = B.to_json(rows, tmp_path / "b.json", ceiling=ceil, ratios=rat)
    assert json.loads((tmp_path / "b.json").read_text())["rows"][0]["model"] == "a"
    assert data["machine"]["torch"] == torch.__version__
    png = B.plot(rows, tmp_path / "b.png")
    if png is not None:  # matplotlib is optional
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_parallel_parents_concatenate_each_parent():
    parents = load_glob("netspecs/iris/appendix_a/*.yaml")
    torch.manual_seed(0)
    mods = [build_module(p).eval() for p in parents]
    par = B.ParallelParents(mods).eval()
    seq = B.SequentialParents(mods).eval()
    x = torch.rand(2, 1, 96, 128)
    with torch.inference_mode():
        each = [m(x) for m in mods]
        got = par(x)
        listed = seq(x)
    assert got.shape == (2, len(mods), 96, 128)
    assert torch.equal(got, torch.cat(each, dim=1))
    assert all(torch.equal(a, b) for a, b in zip(listed, each))


def test_spdnn_targets_and_every_kind_runs_on_ort(tmp_path: Path):
    parents = [tiny("p1", 3), tiny("p2", 5)]
    targets = B.spdnn_targets(parents)
    assert list(targets) == ["merged", "p1", "p2", "parents-sequential", "parents-parallel"]
    assert targets["parents-parallel"].kind == "parallel"
    assert targets["parents-sequential"].params == sum(targets[p].params for p in ("p1", "p2"))
    rows = B.bench(targets, batches=(2,), runtimes=("ort",), workdir=tmp_path, **FAST)
    assert all(r.ok and r.p50_ms > 0 for r in rows) and len(rows) == 5
    rat = B.ratios(rows, "merged")
    assert {r["model"] for r in rat} == {"p1", "p2", "parents-sequential", "parents-parallel"}


def test_unavailable_runtimes_are_marked(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no C++ compiler\nfound")

    monkeypatch.setattr(torch, "compile", broken)
    rows = B.bench({"a": tiny()}, batches=(1,), runtimes=("torch-compile",), **FAST)
    assert rows[0].status.startswith("unavailable: no C++ compiler") and not rows[0].ok
    if not torch.cuda.is_available():
        rows = B.bench({"a": tiny()}, batches=(1,), runtimes=("torch",), device="cuda", **FAST)
        assert rows[0].status == "unavailable: no CUDA device"
    assert "unavailable" in B.to_markdown(rows)


def test_bad_arguments_raise_bench_error():
    with pytest.raises(B.BenchError, match="unknown runtime"):
        B.bench({"a": tiny()}, runtimes="tensorflow")
    with pytest.raises(B.BenchError, match="positive"):
        B.bench({"a": tiny()}, batches=(0,))
    with pytest.raises(B.BenchError, match="unknown device"):
        B.bench({"a": tiny()}, device="tpu")


def test_cli_bench_spdnn_and_vs(tmp_path: Path, capsys):
    files = []
    for name, k in (("p1", 3), ("p2", 5)):
        f = tmp_path / f"{name}.yaml"
        f.write_text(TINY.format(name=name, k=k))
        files.append(str(f))
    out = tmp_path / "res"
    common = ["--batch", "1", "--min-time", "0", "--warmup", "0", "--no-ceiling"]
    assert main(["bench", "--spdnn", *files, "--runtime", "torch,ort", "-o", str(out),
                 *common]) == 0
    text = capsys.readouterr().out
    assert "parents-parallel" in text and "ratios against merged" in text
    assert (out / "bench.md").exists() and (out / "bench.json").exists()
    data = json.loads((out / "bench.json").read_text())
    assert {r["model"] for r in data["rows"]} == {"merged", "p1", "p2", "parents-sequential",
                                                  "parents-parallel"}
    assert data["ratios"]
    assert main(["bench", files[0], "--vs", files[1], "--runtime", "torch", "-o", "",
                 *common]) == 0
    assert "ratios against p1" in capsys.readouterr().out
    assert main(["bench", files[0], *common, "--runtime", "jax"]) == 2
    assert main(["bench", files[0], *common, "--batch", "x"]) == 2
    assert main(["bench", "--spdnn", files[0], *common]) == 2


def test_cli_bench_never_overwrites_an_input(tmp_path: Path, capsys):
    out = tmp_path / "res"
    out.mkdir()
    victim = out / "bench.json"  # a netspec that happens to be named like an output
    victim.write_text(TINY.format(name="p1", k=3))
    other = tmp_path / "p2.yaml"
    other.write_text(TINY.format(name="p2", k=5))
    common = ["--batch", "1", "--min-time", "0", "--warmup", "0", "--no-ceiling",
              "--runtime", "torch"]
    before = victim.read_bytes()
    for argv in (["bench", str(victim), "-o", str(out), *common],
                 ["bench", str(other), "--vs", str(victim), "-o", str(out), *common],
                 ["bench", "--spdnn", str(other), str(other), "--merged", str(victim), "-o",
                  str(out), *common]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"{victim}: the output would overwrite the input" in err
    assert victim.read_bytes() == before and not (out / "bench.md").exists()

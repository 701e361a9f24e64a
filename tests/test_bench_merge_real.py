"""Smoke test of benchmarks/bench_merge_real.py (issue 24 part 4): ``--quick`` on one family into
a temporary folder writes the table with every row, the verdict and the cited iris family, and
a rerun reuses every cached row."""

from __future__ import annotations

import importlib.util
import re

import pytest

from spdnn.data.images import FASHION_MNIST_DIR
from tests.helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(), reason="Fashion-MNIST (dataset-fashion-mnist) not installed")]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_merge_real",
                                                  ROOT / "benchmarks" / "bench_merge_real.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_table_structure_and_resume(tmp_path):
    bench = _bench()
    args = ["--quick", "--family", "classifiers", "--seeds", "0", "--quiet",
            "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    assert bench.main(args) == 0
    md = (tmp_path / "out" / "merge_real_quick.md").read_text()
    rows_file = tmp_path / "out" / "merge_real_quick_rows.jsonl"
    assert (tmp_path / "out" / "merge_real_quick.json").is_file()
    assert "real Fashion-MNIST" in md and "500 training, 200 validation and 500 test" in md
    assert "## (a) small classifiers" in md and "## (c) iris App. A (cited" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| row | params | MACs | latency ms")
    names = [line.split(" | ")[0][2:] for line in table]
    for row in ["lenet5", "smart_augmentation_network_b_28_10class", "vgg2_28",
                "merged like-each (scratch)", "parents' ensemble (logit mean)",
                "exact init (weights carried, params sum)",
                "exact init pruned to like-each + fine-tuned"]:
        assert row in names, row
    assert any(n.startswith("best parent (") and "widened" in n for n in names)
    for line in table[2:9]:  # every row: one seed, an error mean +- sd
        assert re.search(r"\| \d+\.\d\d \+- \d+\.\d\d \| 1 \|$", line) or "n/a" in line, line
    assert re.search(r"\*\*Verdict\.\*\* SPDNN (won|did not win|lost)", md)
    n_rows = len(rows_file.read_text().splitlines())
    assert bench.main(args) == 0  # a rerun trains nothing
    assert len(rows_file.read_text().splitlines()) == n_rows

"""Fuzzing the command line with broken netspecs: only clean outcomes.

Hypothesis mutates the shipped netspecs (``netspecs/**``): it deletes keys, swaps values for
other types, extreme numbers and hostile strings, duplicates layers, wires cycles, renames
outputs like inputs, and garbles the text itself. Each mutant goes through ``spdnn validate``,
``spdnn inspect`` and ``spdnn compile -o`` (in process, through :func:`spdnn.cli.main`), and
every run must end cleanly: exit 0, or exit 2 with exactly one stderr line starting with
``error: `` -- never ``internal error``, never a traceback -- and fast.

The default suite runs :data:`DEFAULT_EXAMPLES` derandomized examples; ``pytest -m fuzz`` runs
``SPDNN_FUZZ_EXAMPLES`` (default 3,000) random ones. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spdnn.spec.blocks import netspec_paths

ROOT = Path(__file__).resolve().parents[1]
SEEDS = netspec_paths(ROOT / "netspecs")
DEFAULT_EXAMPLES = 150
SLOW_CASE_S = 5.0  # a case (three commands) must finish well inside this

EXTREME = [0, -1, 1, 2, 3, 7, 255, 2**31, 2**63 - 1, 2**63, 2**64, 10**9, 10**12, 10**30,
           -(10**12), 0.5, -0.0, 1e-308, 1e308, 1.5, float("inf"), float("-inf"),
           float("nan")]
HOSTILE = ["", " ", "x", "$x", "$", "conv2d", "relu", "image", "out", "x" * 300,
           "__import__('os').system('true')", "a\nb", "\x00", "é", "{}", "[]", "*", "&a",
           "!!python/name:os.system", "same", "valid", "Conv2d", "Linear", "Fire", "-1"]
VALUES = st.one_of(
    st.sampled_from(EXTREME), st.sampled_from(HOSTILE), st.booleans(), st.none(),
    st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.lists(st.integers(-3, 300), max_size=4),
    st.dictionaries(st.sampled_from(["name", "op", "inputs", "from", "x"]),
                    st.sampled_from([1, "x", None, [1]]), max_size=3),
)

STATS = {"cases": 0, "runs": 0, "accepted": 0, "errors": 0, "crashes": 0, "slowest": 0.0,
         "slowest_case": ""}


def _data(path: Path) -> dict:
    """The seed's data with imports made absolute (the mutant is written elsewhere)."""
    data = yaml.safe_load(path.read_text())
    imports = data.get("imports")
    if isinstance(imports, str):
        imports = [imports]
    if imports:
        data["imports"] = [str((path.parent / i).resolve()) for i in imports]
    return data


SEED_DATA = {p: _data(p) for p in SEEDS}


def _paths(obj, prefix=()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def _names(data) -> list[str]:
    names = [lay.get("name") for lay in data.get("layers", []) if isinstance(lay, dict)]
    return [n for n in names if isinstance(n, str)] or ["x"]


@st.composite
def mutants(draw) -> tuple[str, str]:
    """``(description, text)`` of one mutant of one shipped netspec."""
    seed = draw(st.sampled_from(SEEDS))
    data = yaml.safe_load(yaml.safe_dump(SEED_DATA[seed]))  # a deep copy
    did = [seed.relative_to(ROOT).as_posix()]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["delete", "replace", "replace", "duplicate", "cycle",
                                     "rename", "output", "swap_layers", "wrap"]))
        paths = [p for p in _paths(data) if p]
        layers = data.get("layers") if isinstance(data, dict) else None
        layers = layers if isinstance(layers, list) and layers else None
        if kind in ("delete", "replace", "wrap") and paths:
            path = draw(st.sampled_from(paths))
            parent = _get(data, path[:-1])
            if kind == "delete":
                del parent[path[-1]]
            elif kind == "wrap":
                parent[path[-1]] = draw(st.sampled_from([[parent[path[-1]]],
                                                         {"x": parent[path[-1]]}]))
            else:
                parent[path[-1]] = draw(VALUES)
            did.append(f"{kind} {'.'.join(map(str, path))}")
        elif kind == "duplicate" and layers:
            i = draw(st.integers(0, len(layers) - 1))
            layers.insert(draw(st.integers(0, len(layers))), yaml.safe_load(
                yaml.safe_dump(layers[i])))
            did.append(f"duplicate layers[{i}]")
        elif kind == "cycle" and layers and len(layers) > 1:
            i = draw(st.integers(0, len(layers) - 2))
            j = draw(st.integers(i, len(layers) - 1))
            if isinstance(layers[i], dict):
                layers[i]["inputs"] = [_names(data)[min(j, len(_names(data)) - 1)]]
            did.append(f"cycle layers[{i}] <- layers[{j}]")
        elif kind == "rename" and layers:
            i = draw(st.integers(0, len(layers) - 1))
            if isinstance(layers[i], dict):
                layers[i]["name"] = draw(st.sampled_from(_names(data) + HOSTILE))
            did.append(f"rename layers[{i}]")
        elif kind == "output" and isinstance(data, dict):
            ins = data.get("input") or (data.get("inputs") or [{}])[0]
            iname = ins.get("name", "x") if isinstance(ins, dict) else "x"
            data["output"] = {"name": draw(st.sampled_from([iname, "conv2d", "out", ""])),
                              "from": draw(st.sampled_from(_names(data) + [iname]))}
            data.pop("outputs", None)
            did.append("output renamed")
        elif kind == "swap_layers" and layers and len(layers) > 1:
            i, j = draw(st.integers(0, len(layers) - 1)), draw(st.integers(0, len(layers) - 1))
            layers[i], layers[j] = layers[j], layers[i]
            did.append(f"swap layers[{i}], layers[{j}]")
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    garble = draw(st.sampled_from(["none", "none", "none", "insert", "truncate", "line"]))
    if garble == "insert":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["[", "]", "{", ":", "- ", "&a ", "*a", "!!",
                                                  "\t", "'", '"', "#", "\x07", "\ufeff",
                                                  "? ", "<<: ", "%YAML 1.1\n"])) + text[at:]
    elif garble == "truncate":
        text = text[:draw(st.integers(0, len(text)))]
    elif garble == "line":
        lines = text.splitlines(keepends=True)
        k = draw(st.integers(0, max(0, len(lines) - 1)))
        lines.insert(k, lines[k] if lines else "x\n")
        text = "".join(lines)
    if garble != "none":
        did.append(f"text {garble}")
    return "; ".join(did), text


def _run(argv: list[str]) -> tuple[int, str, str]:
    from spdnn.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _check_case(desc: str, text: str, tmp: Path) -> None:
    f = tmp / "mutant.yaml"
    f.write_text(text, encoding="utf-8", errors="surrogatepass")
    t0 = time.perf_counter()
    STATS["cases"] += 1
    for argv in (["validate", str(f)], ["inspect", str(f)],
                 ["compile", str(f), "-o", str(tmp / "mutant_net.py")]):
        rc, out, err = _run(argv)
        STATS["runs"] += 1
        clean = (rc == 0 and "internal error" not in err) or (
            rc == 2 and err.startswith("error: ") and err.count("\n") == 1
            and err.endswith("\n"))
        clean = clean and "Traceback" not in out + err and "internal error" not in out + err
        if not clean:
            STATS["crashes"] += 1
        assert clean, f"{argv[0]} on mutant ({desc}): rc={rc}\nstderr: {err[-2000:]}"
        STATS["accepted" if rc == 0 else "errors"] += 1
        if rc == 2 and argv[0] == "validate":
            # validate and inspect/compile load the same way: once refused, always refused
            break
    dt = time.perf_counter() - t0
    if dt > STATS["slowest"]:
        STATS["slowest"], STATS["slowest_case"] = dt, desc
    assert dt < SLOW_CASE_S, f"mutant ({desc}) took {dt:.2f} s"


@pytest.fixture(scope="module", autouse=True)
def _figures():
    yield
    if STATS["cases"]:
        print(f"\nfuzz: {STATS['cases']} cases, {STATS['runs']} command runs: "
              f"{STATS['errors']} clean errors, {STATS['accepted']} accepted, "
              f"{STATS['crashes']} crashes; slowest case {STATS['slowest']:.3f} s "
              f"({STATS['slowest_case']})")


COMMON = {"deadline": timedelta(seconds=SLOW_CASE_S), "print_blob": True,
          "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                    HealthCheck.function_scoped_fixture]}


@settings(max_examples=DEFAULT_EXAMPLES, derandomize=True, database=None, **COMMON)
@given(case=mutants())
def test_mutated_netspecs_fail_cleanly(case, tmp_path):
    _check_case(*case, tmp_path)


@pytest.fixture
def _asked_for(pytestconfig):
    if "fuzz" not in (pytestconfig.getoption("markexpr") or ""):
        pytest.skip("the long fuzz run: pytest -m fuzz")


@pytest.mark.fuzz
@pytest.mark.usefixtures("_asked_for")
@settings(max_examples=int(os.environ.get("SPDNN_FUZZ_EXAMPLES", "3000")), **COMMON)
@given(case=mutants())
def test_mutated_netspecs_fail_cleanly_many(case, tmp_path):
    _check_case(*case, tmp_path)


def test_the_seeds_themselves_pass(tmp_path):
    """Every unmutated seed (imports made absolute) validates."""
    for p in SEEDS[:: max(1, math.ceil(len(SEEDS) / 12))]:
        _check_case(p.name, yaml.safe_dump(SEED_DATA[p], sort_keys=False), tmp_path)
        rc, _, err = _run(["validate", str(tmp_path / "mutant.yaml")])
        assert rc == 0, err

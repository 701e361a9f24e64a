"""Bad netspecs: every one is refused with one clear line naming the file (and the line).

``tests/bad_inputs/`` holds one bad file per problem; :data:`CASES` says, for each, at which
stage it fails (``load``: YAML/fields/graph in :func:`spdnn.spec.load`; ``shape``: shape
inference), the exact line of the error where the line is knowable, and words the message
must hold. Each file is checked through the API and through ``python -m spdnn validate``
(exit code 2, exactly one ``error: ...`` line on stderr, no traceback).
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import spdnn.spec as S
from spdnn.errors import ShapeError, SpdnnError, SpecError
from spdnn.shapes import infer
from spdnn.spec.yaml_io import read_yaml

ROOT = Path(__file__).resolve().parents[1]
BAD = Path(__file__).resolve().parent / "bad_inputs"
HAS_CLI = importlib.util.find_spec("spdnn.cli") is not None


@dataclass(frozen=True)
class Case:
    stage: str  # "load" (spec.load raises) or "shape" (spec.load passes, shapes.infer raises)
    line: int | None  # exact 1-based line the error must name (None: not asserted)
    says: tuple[str, ...] = ()  # substrings of one_line()
    bug: str | None = None  # a known spdnn bug: the API/CLI checks are strict xfails
    extra: dict = field(default_factory=dict)


BUG_READER = ("yaml.SafeLoader(text) runs the reader's printable-character check in its "
              "constructor, outside load_yaml's try block, so yaml.reader.ReaderError escapes "
              "(CLI: 'internal error', exit 1)")
BUG_RECURSION = ("PyYAML's composer recurses once per nesting level; RecursionError is not a "
                 "YAMLError and escapes load_yaml (CLI: 'internal error', exit 1)")
BUG_ALIAS = ("yaml_io._walk re-walks every alias (the same node object) under every path, so "
             "a 450-byte 'billion laughs' file builds a 10^6-entry line map (1 s, ~150 MB); "
             "one level more: 10^7 entries, 20 s, 1 GB; two more: minutes and OOM")
BUG_DUPKEY = "PyYAML's SafeLoader keeps the last of duplicate mapping keys without a word"
BUG_NAN = ("float fields (negative_slope) accept .nan/.inf; validate says ok, then compile "
           "fails with TypeError 'cannot emit value nan' (CLI: internal error)")

CASES: dict[str, Case] = {
    # ---- not YAML / not a netspec ---------------------------------------------------------
    "binary_garbage.yaml": Case("load", None, ("not a UTF-8 text file",)),
    "control_characters.yaml": Case("load", 4, ("#x0007",)),
    "broken_yaml_syntax.yaml": Case("load", 6, ("fix the YAML syntax",)),
    "bad_indentation.yaml": Case("load", 6, ("mapping values are not allowed",)),
    "tab_indentation.yaml": Case("load", 4, ("'\\t'",)),
    "two_documents.yaml": Case("load", 5, ("another document",)),
    "empty.yaml": Case("load", 1, ("empty",)),
    "only_a_comment.yaml": Case("load", 1, ("empty",)),
    "top_level_list.yaml": Case("load", 1, ("must be a YAML mapping", "got list")),
    "top_level_scalar.yaml": Case("load", 1, ("must be a YAML mapping", "got str")),
    "deeply_nested_lists.yaml": Case("load", None, ()),
    "alias_bomb.yaml": Case("load", 7, ("aliases expand to more than 100,000", "'*a3'")),
    "duplicate_key.yaml": Case("load", 9, ("kernel_size",)),
    "alias_bomb_in_block_params.yaml": Case("load", 11, ("aliases expand to more than",
                                                         "'*a3'")),
    "recursive_alias.yaml": Case("load", 6, ("'*loop'", "refers to the node that holds it")),
    "alias_expands_too_deep.yaml": Case("load", 6, ("more than 64 levels", "'*d' expanded")),
    "deeply_nested_block_params.yaml": Case("load", 6, ("more than 64 levels",)),
    "deeply_nested_mappings.yaml": Case("load", 66, ("more than 64 levels",)),
    "integer_with_5000_digits.yaml": Case("load", 5, ("5001 digits", "too large")),
    # ---- imports ----------------------------------------------------------------------------
    "blocks_not_a_mapping_with_imports.yaml": Case("load", 4, ("blocks", "valid dictionary")),
    "import_path_too_long.yaml": Case("load", 3, ("imports[0]", "cannot be opened",
                                                  "too long")),
    "import_path_with_nul.yaml": Case("load", 3, ("imports[0]", "cannot be opened",
                                                  "null byte")),
    # ---- unsafe tags ------------------------------------------------------------------------
    "python_object_apply_tag.yaml": Case("load", 6, ("not allowed", "python/object/apply")),
    "python_name_tag.yaml": Case("load", 6, ("not allowed", "python/name")),
    # ---- fields -----------------------------------------------------------------------------
    "unknown_op.yaml": Case("load", 6, ("unknown op 'Banana'", "layers[1]", "spdnn ops")),
    "misspelled_op_cnov2d.yaml": Case("load", 11, ("unknown op 'Cnov2d'", "did you mean 'Conv2d'")),
    "layer_without_op.yaml": Case("load", 5, ("no 'op' field",)),
    "layer_is_a_string.yaml": Case("load", 5, ("layers[0]",)),
    "missing_kernel_size.yaml": Case("load", 6, ("kernel_size", "missing")),
    "unknown_field_kernal_size.yaml": Case("load", 7, ("unknown field 'kernal_size'",
                                                       "did you mean 'kernel_size'")),
    "misspelled_top_level_layer.yaml": Case("load", 4, ("unknown field 'layer'",
                                                        "did you mean 'layers'")),
    "kernel_size_string.yaml": Case("load", 8, ("kernel_size", "'big'")),
    "kernel_size_bool.yaml": Case("load", 8, ("kernel_size", "True")),
    "kernel_size_float.yaml": Case("load", 5, ("kernel_size", "3.0")),
    "negative_kernel_size.yaml": Case("load", 7, ("kernel_size", "greater than 0", "-3")),
    "zero_out_channels.yaml": Case("load", 9, ("out_channels", "greater than 0")),
    "zero_stride.yaml": Case("load", 5, ("stride", "greater than 0")),
    "negative_padding.yaml": Case("load", 5, ("padding",)),
    "dropout_p_too_large.yaml": Case("load", 8, ("layers[1](d1).p", "1.5")),
    "same_padding_even_kernel.yaml": Case("load", 5, ("same", "odd kernel_size")),
    "unknown_activation.yaml": Case("load", 6, ("activation", "'rleu'")),
    "nan_negative_slope.yaml": Case("load", 11, ("negative_slope",)),
    "reshape_two_wildcards.yaml": Case("load", 6, ("-1",)),
    "input_without_width.yaml": Case("load", 3, ("width",)),
    "input_and_inputs.yaml": Case("load", None, ("either 'input' or 'inputs'",)),
    "no_layers.yaml": Case("load", None, ("'layers' is missing",)),
    "empty_layers_list.yaml": Case("load", 4, ("layers", "at least 1")),
    "empty_inputs_list.yaml": Case("load", 11, ("inputs", "at least one")),
    # ---- graph ------------------------------------------------------------------------------
    "cycle_between_layers.yaml": Case("load", 6, ("cycle", "a -> b")),
    "layer_reads_itself.yaml": Case("load", 6, ("reads itself",)),
    "dangling_input_name.yaml": Case("load", 12, ("'conv11'", "did you mean 'conv1'")),
    "duplicate_layer_name.yaml": Case("load", 7, ("duplicate name 'conv1'",)),
    "layer_named_like_the_input.yaml": Case("load", 6, ("duplicate name 'x'", "an input")),
    "concat_of_one_input.yaml": Case("load", 6, ("Concat", "at least 2")),
    "output_from_missing_layer.yaml": Case("load", 8, ("'c9'", "not a layer")),
    "output_from_the_input.yaml": Case("load", 6, ("'x'", "not a layer")),
    "unused_second_input.yaml": Case("load", None, ("input 'y' is not read",)),
    "output_named_like_the_input.yaml": Case("load", 6, ("output.name", "'image'",
                                                         "name of an input")),
    # ---- shapes -----------------------------------------------------------------------------
    "concat_resolution_mismatch.yaml": Case("shape", None, ("'cat'", "(4, 16, 16)", "(4, 8, 8)"),
                                            extra={"layer_line": 8}),
    "linear_then_conv.yaml": Case("shape", None, ("'c1'", "(64,)", "Reshape"),
                                  extra={"layer_line": 6}),
    "kernel_larger_than_input.yaml": Case("shape", None, ("'c2'", "kernel_size 7", "size 4"),
                                          extra={"layer_line": 6}),
    "reshape_does_not_fit.yaml": Case("shape", None, ("'r1'", "(1, 10, 33)", "30"),
                                      extra={"layer_line": 6}),
    "pool_larger_than_input.yaml": Case("shape", None, ("'p2'", "kernel_size 8"),
                                        extra={"layer_line": 6}),
    # ---- size limits (spdnn.shapes.Limits) --------------------------------------------------
    "huge_out_channels.yaml": Case("shape", None, ("layers[1](c2)", "73,000,000,000 parameters",
                                                   "limit of 1,000,000,000", "--limits params="),
                                   extra={"layer_line": 6}),
    "huge_input.yaml": Case("shape", None, ("inputs[0]", "1,000,000,000,000 activation",
                                            "--limits activations="), extra={"layer_line": 3}),
    "huge_linear.yaml": Case("shape", None, ("'fc'", "1,000,001,000,000 parameters",
                                             "params=2e12"), extra={"layer_line": 5}),
    "huge_upsample.yaml": Case("shape", None, ("'up'", "activation values"),
                               extra={"layer_line": 6}),
    "huge_macs.yaml": Case("shape", None, ("'c1'", "MACs per sample", "macs=4e13"),
                           extra={"layer_line": 5}),
}

FILES = sorted(p.name for p in BAD.iterdir() if p.is_file())


def _param(name: str):
    why = CASES[name].bug
    marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
    return pytest.param(name, marks=marks, id=name.removesuffix(".yaml"))


def _api_error(path: Path, case: Case) -> SpecError:
    if case.stage == "shape":
        spec = S.load(path)  # must load: the problem is only in the shapes
        with pytest.raises(ShapeError) as info:
            infer(spec, file=str(path))
        return info.value
    with pytest.raises(SpecError) as info:
        S.load(path)
    return info.value


# --------------------------------------------------------------------------------------------
# the corpus itself
# --------------------------------------------------------------------------------------------
def test_corpus_table_matches_the_folder():
    assert sorted(CASES) == FILES
    assert len(FILES) >= 24
    assert sum(1 for c in CASES.values() if c.line is not None and not c.bug) >= 10


# --------------------------------------------------------------------------------------------
# (a) the API: spec.load / shapes.infer
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [_param(n) for n in FILES])
def test_api_refuses_with_one_located_line(name):
    path, case = BAD / name, CASES[name]
    err = _api_error(path, case)
    text = err.one_line()
    assert "\n" not in text and "\r" not in text
    assert err.file == str(path)
    assert text.startswith(str(path))
    if case.line is not None:
        assert err.line == case.line, text
        assert text.startswith(f"{path}:{case.line}: "), text
    for words in case.says:
        assert words in text, text
    assert str(err) == text


def test_aliases_are_not_expanded_in_the_line_map():
    """alias_bomb.yaml is 8 lines; refusing it is fine, a line map entry per expanded value is not."""
    try:
        _, lines = read_yaml(BAD / "alias_bomb.yaml")
    except SpecError:
        return
    assert len(lines) < 1000, f"{len(lines):,} line-map entries for an 8-line file"


# --------------------------------------------------------------------------------------------
# (b) the command line: python -m spdnn validate FILE
# --------------------------------------------------------------------------------------------
# Every start of ``python -m spdnn`` imports torch (1.5-3 s), so every file goes through the
# CLI entry point in process (same exit code and stderr), and a sample of them -- one per kind
# of problem, and every file that crashed the CLI -- through a real ``python -m spdnn``
# subprocess. SPDNN_CLI_ALL=1 sends every file through a subprocess.
SUBPROCESS_SAMPLE = {
    "binary_garbage.yaml", "broken_yaml_syntax.yaml", "python_object_apply_tag.yaml",
    "misspelled_op_cnov2d.yaml", "dangling_input_name.yaml", "concat_resolution_mismatch.yaml",
    "control_characters.yaml", "deeply_nested_lists.yaml", "alias_bomb_in_block_params.yaml",
    "huge_linear.yaml", "import_path_too_long.yaml",
}
SUBPROCESS_FILES = FILES if os.environ.get("SPDNN_CLI_ALL") else sorted(SUBPROCESS_SAMPLE)


def _validate(path: Path, timeout: float = 120) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run([sys.executable, "-m", "spdnn", "validate", str(path)],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env={**os.environ, "COLUMNS": "80", "NO_COLOR": "1"})
    except subprocess.TimeoutExpired:
        return None


@pytest.fixture(scope="module")
def cli_runs() -> dict[str, subprocess.CompletedProcess | None]:
    """The subprocess runs, all at once in parallel."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(zip(SUBPROCESS_FILES, pool.map(lambda n: _validate(BAD / n),
                                                   SUBPROCESS_FILES), strict=True))


def _check_cli(rc: int | None, stdout: str, stderr: str, path: Path, line: int | None) -> str:
    assert rc is not None, "spdnn validate did not finish in time"
    both = stdout + stderr
    assert "Traceback" not in both, both
    assert "internal error" not in both, both
    assert rc == 2, both
    assert stderr.endswith("\n") and stderr.count("\n") == 1, repr(stderr)
    assert stderr.startswith("error: "), stderr
    assert str(path) in stderr, stderr
    if line is not None:
        assert f"{path}:{line}: " in stderr, stderr
    return stderr


def _check_proc(proc, path: Path, line: int | None) -> str:
    if proc is None:
        return _check_cli(None, "", "", path, line)
    return _check_cli(proc.returncode, proc.stdout, proc.stderr, path, line)


needs_cli = pytest.mark.skipif(not HAS_CLI, reason="spdnn.cli is not written yet")


@needs_cli
@pytest.mark.parametrize("name", [_param(n) for n in FILES])
def test_cli_main_validate_refuses_with_one_line(name, capsys):
    from spdnn.cli import main

    path, case = BAD / name, CASES[name]
    rc = main(["validate", str(path)])
    out = capsys.readouterr()
    err = _check_cli(rc, out.out, out.err, path, case.line)
    for words in case.says:
        assert words in err, err


@needs_cli
@pytest.mark.parametrize("name", [_param(n) for n in SUBPROCESS_FILES])
def test_python_m_spdnn_validate_refuses_with_one_line(name, cli_runs):
    case = CASES[name]
    err = _check_proc(cli_runs[name], BAD / name, case.line)
    for words in case.says:
        assert words in err, err


@needs_cli
def test_python_m_spdnn_validate_accepts_a_good_file():
    proc = _validate(ROOT / "netspecs/iris/appendix_a/parent_2_6x3x3.yaml")
    assert proc is not None and proc.returncode == 0, proc
    assert proc.stderr == ""
    assert "iris_a_parent_2" in proc.stdout


BUG_SHAPE_LINE = ("shape errors carry no line: shapes.infer(spec, file) has no line map, so "
                  "'error: FILE: layers[3]: ...' instead of 'FILE:8: layers[3](cat): ...'")


@needs_cli
@pytest.mark.parametrize("name", [n for n in FILES if CASES[n].stage == "shape"])
def test_cli_shape_errors_name_the_layer_line(name, capsys):
    from spdnn.cli import main

    rc = main(["validate", str(BAD / name)])
    out = capsys.readouterr()
    _check_cli(rc, out.out, out.err, BAD / name, CASES[name].extra["layer_line"])


def test_unused_input_names_its_line():
    err = _api_error(BAD / "unused_second_input.yaml", CASES["unused_second_input.yaml"])
    assert err.line == 5, err.one_line()


@pytest.mark.parametrize("name,tag", [("python_name_tag.yaml", "!!python/name:os.system"),
                                      ("python_object_apply_tag.yaml",
                                       "!!python/object/apply:os.system")])
def test_unsafe_tag_is_named_as_written(name, tag):
    err = _api_error(BAD / name, CASES[name])
    assert f"'{tag}'" in err.one_line(), err.one_line()


def test_unsafe_tags_build_nothing(tmp_path):
    assert not Path("/tmp/spdnn_pwned").exists() or pytest.skip("marker left by someone else")
    for name in ("python_object_apply_tag.yaml", "python_name_tag.yaml"):
        with pytest.raises(SpecError):
            S.load(BAD / name)
    assert not Path("/tmp/spdnn_pwned").exists()


# --------------------------------------------------------------------------------------------
# valid but hostile: names that are Python code
# --------------------------------------------------------------------------------------------
PAYLOAD = "__import__('builtins').__dict__.setdefault('SPDNN_PWNED', 1)"
HOSTILE = f"""\
name: "{PAYLOAD}"
description: "\\"\\"\\" ; {PAYLOAD} #"
input: {{name: "{PAYLOAD} #in", channels: 1, height: 8, width: 8}}
layers:
  - {{name: "{PAYLOAD}", op: Conv2d, kernel_size: 3, out_channels: 2, padding: same}}
  - {{name: "x); {PAYLOAD}; (", op: Conv2d, kernel_size: 3, out_channels: 1, padding: same}}
output: {{name: "{PAYLOAD}\\n", from: "x); {PAYLOAD}; ("}}
"""


def test_layer_names_that_are_python_code_validate_and_stay_data():
    spec = S.loads(HOSTILE, file="hostile.yaml")
    assert spec.layers[0].name == PAYLOAD
    assert infer(spec).output_shapes() == {PAYLOAD + "\n": (1, 8, 8)}
    from spdnn.codegen import build_module, emit_module
    from spdnn.codegen.names import class_name

    src = emit_module(spec)
    tree = ast.parse(src)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name) and n.func.id == "__import__"]
    assert calls == []
    ns: dict = {"__name__": "hostile_net"}
    exec(compile(tree, "hostile_net.py", "exec"), ns)  # noqa: S102 - checking it is inert
    net = ns[class_name(spec.name)]().eval()
    with torch.no_grad():
        y = net(torch.zeros(1, 1, 8, 8))
    assert tuple(y.shape) == (1, 1, 8, 8)
    assert tuple(build_module(spec).eval()(torch.zeros(1, 1, 8, 8)).shape) == (1, 1, 8, 8)
    assert not hasattr(builtins, "SPDNN_PWNED")


# --------------------------------------------------------------------------------------------
# the same file gives the same message in every process
# --------------------------------------------------------------------------------------------
def _message_with_seed(name: str, seed: int) -> str:
    code = ("import sys, spdnn.spec as S\n"
            "try:\n    S.load(sys.argv[1])\nexcept Exception as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(BAD / name)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONHASHSEED": str(seed)})
    return proc.stdout


def test_cycle_message_does_not_depend_on_the_hash_seed():
    with ThreadPoolExecutor(max_workers=2) as pool:
        msgs = list(pool.map(lambda s: _message_with_seed("cycle_between_layers.yaml", s), (0, 2)))
    assert "cycle" in msgs[0]
    assert msgs[0] == msgs[1]


# --------------------------------------------------------------------------------------------
# hostile YAML is refused fast, before anything is expanded
# --------------------------------------------------------------------------------------------
def _nest(kind: str, n: int) -> str:
    if kind == "flow":
        return "name: deep\ndescription: " + "[" * n + "]" * n + "\n"
    if kind == "flow-lines":
        return "name: deep\ndescription: " + "[\n" * n
    if kind == "mappings":
        return "name: deep\nd:\n" + "".join(" " * i + "a:\n" for i in range(1, n))
    return "name: deep\nd:\n" + "".join(" " * i + "-\n" for i in range(1, n))


@pytest.mark.parametrize("kind,n", [("flow", 1000), ("flow", 5000), ("flow", (1 << 19) - 20),
                                    ("flow-lines", (1 << 19) - 20), ("mappings", 1400),
                                    ("sequences", 1400)])
def test_deep_nesting_is_refused_in_well_under_a_fifth_of_a_second(kind, n):
    import time

    from spdnn.spec.yaml_io import MAX_DEPTH, load_yaml

    text = _nest(kind, n)
    assert len(text) < 1 << 20
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match=f"more than {MAX_DEPTH} levels"):
        load_yaml(text, file="deep.yaml")
    assert time.perf_counter() - t0 < 0.2


@pytest.mark.parametrize("name", ["alias_bomb.yaml", "alias_bomb_in_block_params.yaml"])
def test_alias_bombs_are_refused_in_well_under_a_second(name):
    import time

    t0 = time.perf_counter()
    with pytest.raises(SpecError, match="aliases expand"):
        S.load(BAD / name)
    assert time.perf_counter() - t0 < 0.5


def test_reasonable_aliases_still_load():
    anchored = ("name: n\ninput: {channels: 1, height: 8, width: 8}\nlayers:\n"
                "  - &c {name: c0, op: Conv2d, kernel_size: 3, out_channels: 2, padding: same}\n"
                "  - {<<: *c, name: c1}\n  - {<<: *c, name: c2}\n")
    spec = S.loads(anchored)
    assert [lay.name for lay in spec.layers] == ["c0", "c1", "c2"]
    assert spec.layers[2].kernel_size == 3


def test_block_data_built_in_python_is_held_to_the_depth_limit():
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    data = {"name": "n", "input": {"channels": 1, "height": 4, "width": 4},
            "blocks": {"B": {"params": {"p": deep}, "layers": [{"name": "r", "op": "ReLU"}]}},
            "layers": [{"name": "b", "op": "B"}]}
    with pytest.raises(SpecError, match="nests more than 200 levels") as info:
        S.from_data(data, file="api")
    assert info.value.field.startswith("blocks.B.params.p[0]")


def test_nested_blocks_cannot_nest_their_arguments_past_the_limit():
    text = "name: n\ninput: {channels: 1, height: 4, width: 4}\nblocks:\n"
    deep = "[" * 55 + "$p" + "]" * 55
    for i in range(6):
        inner = f"{{name: r, op: B{i - 1}, p: {deep}}}" if i else "{name: r, op: ReLU}"
        text += f"  B{i}:\n    params: {{p: 1}}\n    layers:\n      - {inner}\n"
    text += "layers:\n  - {name: b, op: B5}\n"
    with pytest.raises(SpecError, match="nests more than 200 levels"):
        S.loads(text)


def test_a_file_larger_than_the_cap_is_refused(tmp_path):
    from spdnn.spec.yaml_io import MAX_FILE_BYTES

    big = tmp_path / "big.yaml"
    big.write_text("name: n\ndescription: '" + "x" * MAX_FILE_BYTES + "'\n")
    with pytest.raises(SpecError, match="larger than 1 MiB"):
        read_yaml(big)
    if Path("/dev/zero").exists():  # never opened: a device is not a regular file (issue 28)
        with pytest.raises(SpecError, match="character device, not a regular file"):
            read_yaml("/dev/zero")


def test_windows_line_ends_still_read(tmp_path):
    p = tmp_path / "crlf.yaml"
    src = (ROOT / "netspecs/iris/appendix_a/parent_2_6x3x3.yaml").read_text()
    p.write_bytes(src.replace("\n", "\r\n").encode())
    assert S.load(p) == S.load(ROOT / "netspecs/iris/appendix_a/parent_2_6x3x3.yaml")


# --------------------------------------------------------------------------------------------
# size limits
# --------------------------------------------------------------------------------------------
def test_every_shipped_netspec_is_far_inside_the_default_limits():
    import math

    from spdnn.shapes import DEFAULT_LIMITS
    from spdnn.spec.blocks import netspec_paths

    paths = netspec_paths(ROOT / "netspecs")
    assert len(paths) >= 40
    for p in paths:
        spec, info = S.load_inferred(p)
        acts = sum(math.prod(i.shape) for i in spec.inputs) + sum(
            math.prod(lay.out_shape) for lay in info.layers)
        # the default (10^9, 4 GB of float32 weights) follows memory: VGG-11 (133 M) is 7.5x inside
        assert info.params * 5 < DEFAULT_LIMITS.params, p
        assert info.macs * 100 < DEFAULT_LIMITS.macs, p
        assert acts * 100 < DEFAULT_LIMITS.activations, p


def test_limits_python_api():
    from spdnn.shapes import LimitError, Limits, get_limits, limits_set, parse_limits

    spec = S.load(BAD / "huge_linear.yaml")
    with pytest.raises(LimitError, match="'fc' alone has 1,000,001,000,000 parameters"):
        infer(spec)
    assert infer(spec, limits=Limits(params=10**13)).params == 1_000_001_000_000
    with limits_set("params=1e13"):
        assert get_limits().params == 10**13
        assert infer(spec).params == 1_000_001_000_000
    assert get_limits() == Limits()
    small = S.load(ROOT / "netspecs/iris/appendix_a/parent_2_6x3x3.yaml")
    first = infer(small).layers[0]
    with pytest.raises(LimitError, match=f"'{first.name}' alone has {first.params} param"):
        infer(small, limits=Limits(params=first.params - 1))
    with pytest.raises(LimitError, match="brings the network to"):
        infer(small, limits=Limits(params=max(lay.params for lay in infer(small).layers)))
    assert parse_limits("params=250k, macs=3G,activations=1_000") == Limits(250_000, 1000, 3 * 10**9)
    assert parse_limits(Limits(params=7).text()) == Limits(params=7)
    for bad in ("params", "parms=1", "params=0", "params=-1", "params=1e999", "params=abc",
                "params=nan", "params=inf"):
        with pytest.raises(SpdnnError):
            parse_limits(bad)


def test_limits_environment_variable(monkeypatch):
    from spdnn.shapes import LimitError, get_limits

    spec = S.load(BAD / "huge_linear.yaml")
    monkeypatch.setenv("SPDNN_LIMITS", "params=2e12")
    assert get_limits().params == 2 * 10**12
    assert infer(spec).params == 1_000_001_000_000
    monkeypatch.setenv("SPDNN_LIMITS", "params=1e6")
    with pytest.raises(LimitError):
        S.load_checked(ROOT / "netspecs/generative_sensing/alexnet.yaml")


def _cli(argv, capsys):
    from spdnn.cli import main

    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@needs_cli
def test_cli_limits_option(capsys, monkeypatch):
    f = str(BAD / "huge_linear.yaml")
    rc, out, err = _cli(["--limits", "params=2e12", "validate", f], capsys)
    assert rc == 0 and "1,000,001,000,000 parameters" in out, err
    rc, out, err = _cli(["validate", f], capsys)  # the option does not stay set
    _check_cli(rc, out, err, BAD / "huge_linear.yaml", 5)
    for bad in ("params=lots", "weights=1"):
        rc, out, err = _cli(["--limits", bad, "validate", f], capsys)
        assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert "--limits" in err
    monkeypatch.setenv("SPDNN_LIMITS", "params=")
    rc, out, err = _cli(["validate", f], capsys)
    assert rc == 2 and err.startswith("error: bad SPDNN_LIMITS value") and err.count("\n") == 1
    monkeypatch.setenv("SPDNN_LIMITS", "params=2e12")
    rc, out, err = _cli(["validate", f], capsys)
    assert rc == 0, err


@needs_cli
@pytest.mark.parametrize("params", ["9" * 300, "1" + "0" * 5000, "1e400", "20000000000"])
def test_cli_merge_params_out_of_range_is_one_line(params, capsys):
    parents = sorted(str(p) for p in (ROOT / "netspecs/iris/appendix_a").glob("*.yaml"))[:2]
    rc, out, err = _cli(["merge", *parents, "--params", params], capsys)
    assert rc == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and len(err) < 400, err
    assert "internal error" not in err


# --------------------------------------------------------------------------------------------
# names an exporter may also generate
# --------------------------------------------------------------------------------------------
OUTPUT_CONV2D = """\
name: outconv
input: {name: image, channels: 1, height: 8, width: 8}
layers:
  - {name: c1, op: Conv2d, kernel_size: 3, out_channels: 4, padding: same, activation: relu}
  - {name: c2, op: Conv2d, kernel_size: 3, out_channels: 2, padding: same}
  - {name: c3, op: Conv2d, kernel_size: 3, out_channels: 2, padding: same}
outputs: [{name: conv2d, from: c2}, {name: relu, from: c3}]
"""


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_outputs_named_like_exporter_values_export_with_parity(exporter, tmp_path):
    import onnx

    from spdnn.export import export_onnx

    spec = S.loads(OUTPUT_CONV2D, file="outconv.yaml")
    report = export_onnx(spec, tmp_path / "outconv.onnx", exporter=exporter)
    assert report.checks and all(c.ok for c in report.checks)
    model = onnx.load(tmp_path / "outconv.onnx")
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["conv2d", "relu"]
    onnx.checker.check_model(model, full_check=True)


def test_default_output_avoids_an_input_named_out():
    spec = S.loads("name: n\ninput: {name: out, channels: 1, height: 4, width: 4}\n"
                   "layers:\n  - {name: r, op: ReLU}\n")
    assert [o.name for o in spec.outputs] == ["out_1"]

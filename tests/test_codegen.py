"""Code generation: generators/ in sync, emitted == in-process modules, safe and readable source.

Every netspec under netspecs/ and every merged network of
:data:`spdnn.codegen.regenerate.MERGED` is covered automatically (the cases are collected from
the glob and the table).
"""

from __future__ import annotations

import ast
import importlib
import io
import json
import re
import sys
import tokenize
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn

from spdnn.codegen import build_module, emit_module, runtime
from spdnn.codegen import regenerate as regenerate_module
from spdnn.codegen.names import class_name
from spdnn.codegen.regenerate import (
    GENERATED_MARKER,
    MERGED,
    REGENERATE_COMMAND,
    main,
    merged_spec,
    module_path,
    regenerate,
)
from spdnn.shapes import infer
from spdnn.spec import Netspec, example_inputs, load, loads
from spdnn.spec.blocks import netspec_paths
from tests.helpers import NOT_BUILT, exec_class, randomize_norms

ROOT = Path(__file__).resolve().parents[1]
NETSPEC_FILES = netspec_paths(ROOT / "netspecs")  # block libraries left out
CASES = ([f"netspecs/{p.relative_to(ROOT / 'netspecs').as_posix()}" for p in NETSPEC_FILES]
         + [f"merged/{name}" for name in MERGED])
# the tests that build every network leave out the few too big to build in the default run
BUILT_CASES = [c for c in CASES if c.removeprefix("netspecs/") not in NOT_BUILT]
BATCH = 2


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
@cache
def spec_of(case: str) -> Netspec:
    if case.startswith("merged/"):
        return merged_spec(case.removeprefix("merged/"), ROOT)
    return load(ROOT / case)


@cache
def source_of(case: str) -> str:
    return emit_module(spec_of(case))


def generator_module(case: str) -> str:
    """Dotted module name of the committed generator of ``case``."""
    if case.startswith("merged/"):
        rel = Path("generators", case).with_suffix(".py")
    else:
        rel = module_path(ROOT / case, ROOT)
    return ".".join(rel.with_suffix("").parts)


def inputs_for(spec: Netspec, seed: int = 0) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return example_inputs(spec, BATCH, float_fn="randn")


def as_dict(out, spec: Netspec) -> dict[str, torch.Tensor]:
    if isinstance(out, torch.Tensor):
        assert len(spec.outputs) == 1
        return {spec.outputs[0].name: out}
    return dict(out)


def assert_parity(spec: Netspec, cls: type[nn.Module], what: str) -> None:
    torch.manual_seed(0)
    ref = build_module(spec)
    randomize_norms(ref)
    gen = cls()
    ref_keys, gen_keys = list(ref.state_dict()), list(gen.state_dict())
    assert gen_keys == ref_keys, f"{what}: state_dict keys differ from build_module's"
    gen.load_state_dict(ref.state_dict(), strict=True)
    ref.eval()
    gen.eval()
    xs = inputs_for(spec)
    with torch.no_grad():
        want = as_dict(ref(*xs), spec)
        got = as_dict(gen(*xs), spec)
    assert list(got) == list(want) == [o.name for o in spec.outputs]
    shapes = infer(spec).output_shapes()
    for name in want:
        assert tuple(want[name].shape) == (BATCH, *shapes[name]), f"{what}: output '{name}' shape"
        assert got[name].shape == want[name].shape, f"{what}: output '{name}' shape"
        assert torch.equal(got[name], want[name]), (
            f"{what}: output '{name}' differs from build_module's by "
            f"{(got[name] - want[name]).abs().max().item():.3g}")


def stateful_layers(spec: Netspec) -> list[str]:
    return [lay.name for lay in infer(spec).layers
            if lay.op.module(list(lay.in_shapes), lay.out_shape) is not None]


def class_def(src: str, spec: Netspec) -> ast.ClassDef:
    tree = ast.parse(src)
    found = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    names = [c.name for c in found]
    # one nn.Module class, after the runtime helpers it uses and one class per block type (a
    # numbered sibling, e.g. GenerativeUnit2, where instances of one block differ in code)
    assert names[-1] == class_name(spec.name) and names.count(names[-1]) == 1, names
    block_class = re.compile(rf"({'|'.join(map(re.escape, spec.blocks)) or '(?!)'})\d*")
    for n in names[:-1]:
        assert n in runtime.__all__ or block_class.fullmatch(n), names
    assert len(names[:-1]) == len(set(names[:-1])), names
    return found[-1]


def method(cls: ast.ClassDef, name: str) -> ast.FunctionDef:
    found = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert len(found) == 1, f"exactly one {name}() expected, got {len(found)}"
    return found[0]


def assert_imports_only_torch(src: str) -> None:
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            bad = [a.name for a in node.names if a.name not in ("torch", "torch.nn")]
            assert not bad, f"emitted code imports {bad}"
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module in ("torch", "torch.nn"), (
                f"emitted code imports from {node.module!r}")
            if node.module == "torch":
                assert [a.name for a in node.names] == ["nn"], "only `from torch import nn`"


DANGEROUS_CALLS = {"eval", "exec", "compile", "__import__", "open", "getattr", "setattr",
                   "globals", "locals", "vars", "breakpoint", "input"}


def assert_no_dangerous_calls(src: str) -> None:
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Name):
            assert node.id not in ("os", "sys", "subprocess"), f"name {node.id!r} in emitted code"
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                assert f.id not in DANGEROUS_CALLS, f"call to {f.id}() in emitted code"
            if isinstance(f, ast.Attribute):
                assert f.attr not in ("system", "popen", "remove", "unlink", "rmtree"), (
                    f"call to .{f.attr}() in emitted code")


# --------------------------------------------------------------------------------------------
# (a) generators/ is in sync
# --------------------------------------------------------------------------------------------
def test_generators_in_sync():
    drift = regenerate(ROOT, check=True)
    assert drift == [], (
        f"generators/ is out of date; {len(drift)} file(s) are missing, differ from what "
        f"`spdnn compile` emits, or are stale: {', '.join(drift)}.\n"
        f"Run `{REGENERATE_COMMAND}` and commit generators/.")


def test_cases_cover_every_netspec():
    for family in ("netspecs/iris/appendix_a/", "netspecs/iris/appendix_d/", "netspecs/depth/"):
        assert any(c.startswith(family) for c in CASES), f"no netspec under {family}"
    assert {"iris_appendix_a", "iris_appendix_d", "depth"} <= set(MERGED)


def test_regenerate_writes_checks_and_removes_stale(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(regenerate_module, "MERGED", {})  # the toy root has no paper parents
    spec_dir = tmp_path / "netspecs" / "toy"
    spec_dir.mkdir(parents=True)
    text = ("name: toy\ninput: {name: image, channels: 1, height: 8, width: 8}\nlayers:\n"
            "- {name: conv, op: Conv2d, kernel_size: 3, out_channels: %d, padding: same}\n"
            "output: {name: out, from: conv}\n")
    (spec_dir / "3-toy net.yaml").write_text(text % 2)
    assert main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "generators/toy/n_3_toy_net.py" in err and REGENERATE_COMMAND in err

    written = regenerate(tmp_path, merged={})
    assert written == ["generators/__init__.py", "generators/toy/__init__.py",
                       "generators/toy/n_3_toy_net.py"]
    assert regenerate(tmp_path, check=True, merged={}) == []
    assert regenerate(tmp_path, merged={}) == []  # nothing rewritten when nothing changed
    ours = [m for m in sys.modules if m == "generators" or m.startswith("generators.")]
    saved = {m: sys.modules.pop(m) for m in ours}  # the repository's generators package
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    try:
        mod = importlib.import_module("generators.toy.n_3_toy_net")
        assert Path(mod.__file__).is_relative_to(tmp_path)
        assert sum(p.numel() for p in mod.Toy().parameters()) == 20
    finally:
        sys.path.remove(str(tmp_path))
        for m in [m for m in sys.modules if m == "generators" or m.startswith("generators.")]:
            del sys.modules[m]
        sys.modules.update(saved)

    (spec_dir / "3-toy net.yaml").write_text(text % 3)
    assert regenerate(tmp_path, check=True, merged={}) == ["generators/toy/n_3_toy_net.py"]

    (tmp_path / "generators" / "hand_written.py").write_text("X = 1\n")
    (spec_dir / "3-toy net.yaml").unlink()
    (tmp_path / "netspecs" / "other.yaml").write_text(text % 2)
    stale = ["generators/toy/__init__.py", "generators/toy/n_3_toy_net.py"]
    assert regenerate(tmp_path, check=True, merged={}) == sorted(["generators/other.py", *stale])
    regenerate(tmp_path, merged={})
    assert not (tmp_path / "generators" / "toy").exists()
    assert (tmp_path / "generators" / "hand_written.py").exists()  # not ours: never removed
    assert main(["--check", "--root", str(tmp_path)]) == 0


# --------------------------------------------------------------------------------------------
# (b) parity: emitted source and committed generator == build_module
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", BUILT_CASES)
def test_emitted_matches_build_module(case):
    spec = spec_of(case)
    assert_parity(spec, exec_class(source_of(case), spec), f"emitted {case}")


@pytest.mark.parametrize("case", BUILT_CASES)
def test_committed_generator_imports(case, monkeypatch):
    """The committed file is the emitted source (checked for parity above) behind a header, and
    it imports as ``generators.<path>`` without the compiler."""
    monkeypatch.syspath_prepend(str(ROOT))
    spec = spec_of(case)
    mod = importlib.import_module(generator_module(case))
    text = Path(mod.__file__).read_text()
    assert text.startswith(GENERATED_MARKER)
    assert text.endswith(source_of(case)), (
        f"{Path(mod.__file__).relative_to(ROOT)} is stale; run `{REGENERATE_COMMAND}`")
    torch.manual_seed(0)
    ref = build_module(spec)
    gen = getattr(mod, class_name(spec.name))()
    gen.load_state_dict(ref.state_dict(), strict=True)
    assert {k: v.shape for k, v in gen.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()}


# --------------------------------------------------------------------------------------------
# (c) imports, (e) readability, (f) parameter counts
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_emitted_imports_only_torch(case):
    assert_imports_only_torch(source_of(case))
    assert_no_dangerous_calls(source_of(case))


def assert_reads_like_hand_written(src: str, spec: Netspec) -> None:
    cls = class_def(src, spec)
    init, fwd = method(cls, "__init__"), method(cls, "forward")
    # forward: one `name = expr` per layer, then return
    assigns, ret = fwd.body[:-1], fwd.body[-1]
    assert isinstance(ret, ast.Return)
    assert len(assigns) == len(spec.layers), "forward: one assignment per layer"
    targets = []
    for a in assigns:
        assert isinstance(a, ast.Assign) and len(a.targets) == 1, ast.unparse(a)
        assert isinstance(a.targets[0], ast.Name), ast.unparse(a)
        targets.append(a.targets[0].id)
    args = [a.arg for a in fwd.args.args]
    assert args[0] == "self" and len(args) == 1 + len(spec.inputs)
    assert len(set(targets)) == len(targets), "forward: a variable is assigned twice"
    assert not set(targets) & set(args), "forward: a layer variable shadows an input"
    # __init__: super().__init__() then one `self.<attr> = ...` per stateful layer
    stateful = stateful_layers(spec)
    assert ast.unparse(init.body[0]) == "super().__init__()"
    attrs = []
    for a in init.body[1:]:
        assert isinstance(a, ast.Assign) and isinstance(a.targets[0], ast.Attribute), ast.unparse(a)
        assert ast.unparse(a.targets[0].value) == "self"
        attrs.append(a.targets[0].attr)
    assert len(attrs) == len(set(attrs)) == len(stateful)
    net_src = ast.get_source_segment(src, cls)  # block classes have their own attributes
    assert len(re.findall(r"^        self\.\w+ = ", net_src, re.M)) == len(stateful)
    assert attrs == [n for n, _ in build_module(spec).named_children()]
    # every attribute is used in forward, by the layer that owns it
    used = {n.attr for n in ast.walk(fwd) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id == "self"}
    assert used == set(attrs)


@pytest.mark.parametrize("case", BUILT_CASES)
def test_emitted_reads_like_hand_written(case):
    assert_reads_like_hand_written(source_of(case), spec_of(case))


@pytest.mark.parametrize("case", BUILT_CASES)
def test_param_counts_match_torch(case):
    spec = spec_of(case)
    info = infer(spec)
    doc = ast.get_docstring(class_def(source_of(case), spec))
    m = re.search(r"Parameters: ([\d,]+);", doc or "")
    assert m, "the class docstring states the parameter count"
    assert int(m.group(1).replace(",", "")) == info.params
    module = build_module(spec)
    counted = sum(p.numel() for p in module.parameters())
    if counted != info.params:  # name the ops whose cost model disagrees with torch
        wrong = []
        idents = dict(module.named_children())
        for name, attr, _ in module._plan:
            lay = info[name]
            n = sum(p.numel() for p in idents[attr].parameters()) if attr else 0
            if n != lay.params:
                wrong.append(f"{name} ({lay.op.op_name}): cost model {lay.params}, torch {n}")
        pytest.fail(f"{case}: cost model says {info.params} parameters, torch counts {counted}: "
                    + "; ".join(wrong))


# --------------------------------------------------------------------------------------------
# (d) hostile names
# --------------------------------------------------------------------------------------------
INJECTION = "a\"); os.system('echo pwned')#"
HOSTILE_NAME = 'evil """ net\nname \'\'\' with "quotes"'
HOSTILE_DESCRIPTION = ('"""\nimport os; os.system("echo pwned")\n"""\n'
                       "''' second line\\ with backslash\r\nand a # hash")
LAYERS = [  # (name, op fields, inputs)
    ("import os", "op: Conv2d, kernel_size: 3, out_channels: 4, padding: same, batch_norm: true, "
                  "activation: relu", None),
    ("__init__", "op: Conv2d, kernel_size: 3, out_channels: 4, padding: same, activation: relu",
     None),
    ("forward", "op: MaxPool2d, kernel_size: 2", None),
    ("class", "op: Conv2d, kernel_size: 3, out_channels: 4, padding: same, batch_norm: true",
     None),
    ("1st layer", "op: Unpool, scale_factor: 2", None),
    (INJECTION, "op: Conv2d, kernel_size: 3, out_channels: 4, padding: same", None),
    ("x", "op: ReLU", None),
    ("a-b", "op: Conv2d, kernel_size: 1, out_channels: 3", ["x"]),
    ("a_b", "op: Conv2d, kernel_size: 1, out_channels: 3", ["import os"]),
    ("A_B", "op: Dropout, p: 0.25", ["a_b"]),
    ("self", "op: Concat", ["a-b", "A_B"]),
    ("nn", "op: Conv2d, kernel_size: 3, out_channels: 1, padding: same, activation: sigmoid",
     None),
    ("torch", "op: Flatten", None),
    ("super", "op: Linear, out_features: 5, activation: tanh", None),
]
HOSTILE_STRINGS = [HOSTILE_NAME, HOSTILE_DESCRIPTION, "import os", "1st layer", INJECTION,
                   "os.system", '"""', "'''"]
IDENTIFIER_NAMES = ["__init__", "forward", "class", "x", "self", "nn", "torch", "super", "def"]


def hostile_yaml() -> str:
    q = json.dumps  # a JSON string is a valid YAML double-quoted scalar
    lines = [f"name: {q(HOSTILE_NAME)}", f"description: {q(HOSTILE_DESCRIPTION)}",
             f"input: {{name: {q('def')}, channels: 2, height: 8, width: 8}}", "layers:"]
    for name, fields, inputs in LAYERS:
        ins = f", inputs: {q(inputs)}" if inputs else ""
        lines.append(f"- {{name: {q(name)}, {fields}{ins}}}")
    lines.append("output: {name: score, from: super}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def hostile() -> tuple[Netspec, str]:
    spec = loads(hostile_yaml())
    assert [lay.name for lay in spec.layers] == [n for n, _, _ in LAYERS]
    assert spec.name == HOSTILE_NAME and spec.description == HOSTILE_DESCRIPTION
    return spec, emit_module(spec)


def test_hostile_names_compile_and_stay_inert(hostile):
    spec, src = hostile
    compile(src, "<hostile>", "exec")
    assert_imports_only_torch(src)
    assert_no_dangerous_calls(src)
    tokens = list(tokenize.generate_tokens(io.StringIO(src).readline))
    for tok in tokens:
        if tok.type not in (tokenize.STRING, tokenize.NAME):
            continue
        body = tok.string
        if tok.type == tokenize.STRING:  # the content between the quotes
            body = re.sub(r'^[a-zA-Z]*("""|\'\'\'|"|\')', "", body)[:-3 if body.endswith(
                ('"""', "'''")) else -1]
        for bad in HOSTILE_STRINGS:
            assert bad not in body, f"{bad!r} appears verbatim in token {tok.string!r}"
    # user text survives only inside comments, escaped
    comments = [t.string for t in tokens if t.type == tokenize.COMMENT]
    assert any(repr(HOSTILE_NAME)[1:-1] in c for c in comments)


def test_hostile_names_become_distinct_safe_identifiers(hostile):
    spec, src = hostile
    cls = class_def(src, spec)
    assert cls.name.isidentifier() and cls.name.isascii()
    fwd = method(cls, "forward")
    method(cls, "__init__")
    local = [a.targets[0].id for a in fwd.body[:-1]]
    attrs = [n for n, _ in build_module(spec).named_children()]
    params = [a.arg for a in fwd.args.args]
    for ident in local + attrs + params:
        assert ident.isidentifier() and ident.isascii() and not ident.startswith("_")
    assert not set(IDENTIFIER_NAMES) & set(local + attrs + params[1:])
    assert len(set(local)) == len(spec.layers)
    assert {"a_b", "a_b_2", "a_b_3"} <= set(local)  # "a-b", "a_b", "A_B" stay distinct
    assert_reads_like_hand_written(src, spec)


def test_hostile_names_parity(hostile):
    spec, src = hostile
    assert_parity(spec, exec_class(src, spec), "hostile netspec")
    module = exec_class(src, spec)()
    assert sum(p.numel() for p in module.parameters()) == infer(spec).params


def test_hostile_output_name_cannot_escape_docstring():
    payload = ('"""; import os; os.system(str().join(map(chr, [101, 99, 104, 111]))); '
               'x = """')
    spec = loads("name: t\ninput: {name: image, channels: 1, height: 4, width: 4}\nlayers:\n"
                 "- {name: c, op: Conv2d, kernel_size: 1, out_channels: 1}\n"
                 f"output: {{name: {json.dumps(payload)}, from: c}}\n")
    src = emit_module(spec)
    compile(src, "<hostile output>", "exec")
    assert_no_dangerous_calls(src)


def test_layer_named_spec_builds():
    spec = loads("name: t\ninput: {name: image, channels: 1, height: 4, width: 4}\nlayers:\n"
                 "- {name: spec, op: Conv2d, kernel_size: 1, out_channels: 1}\n"
                 "output: {name: out, from: spec}\n")
    assert_parity(spec, exec_class(emit_module(spec), spec), "layer named spec")

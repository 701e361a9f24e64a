"""Spec stage: load, validate and dump netspecs.

Public surface: :class:`Netspec` (and its parts), :func:`load` (a file), :func:`loads` (text),
:func:`from_data`, :func:`dump`, :func:`check_graph` and :func:`spec_hash`. Every error is a
:class:`~spdnn.errors.SpecError` naming file, line and field.
"""

from __future__ import annotations

import difflib
import graphlib
import hashlib
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from spdnn.errors import SpecError
from spdnn.io import register_dependencies
from spdnn.ops import OPS
from spdnn.spec.models import InputSpec, Netspec, OutputSpec, rebuild_layer_union
from spdnn.spec.yaml_io import dump_flow, dump_yaml, line_of, load_yaml, read_yaml



def _netspec_imports(path: Path) -> list[Path]:
    from spdnn.spec.blocks import imported_files

    return imported_files(path)


register_dependencies(_netspec_imports)  # no command may write over a netspec's imports

__all__ = ["MAX_DATA_DEPTH", "InputSpec", "Netspec", "OutputSpec", "check_depth", "check_graph", "dump", "example_inputs",
           "find_cycle", "from_data", "load", "load_checked", "load_inferred", "loads", "rebuild_layer_union", "spec_hash", "validation_error"]


def load(path: str | Path) -> Netspec:
    """Load and fully check a netspec file (YAML, safe loader).

    Raises:
        SpecError: with file, line and field of the first problem found.
    """
    data, lines = read_yaml(path)
    return from_data(data, file=str(path), lines=lines)


def loads(text: str, file: str = "<string>") -> Netspec:
    """Load and fully check netspec YAML text; see :func:`load`."""
    data, lines = load_yaml(text, file=file)
    return from_data(data, file=file, lines=lines)


def from_data(data: Any, file: str | None = None,
              lines: dict[tuple, int] | None = None) -> Netspec:
    """Validate plain data as a netspec and check its graph.

    Raises:
        SpecError: the data is not a mapping, a field is invalid, or the graph is broken.
    """
    lines = lines or {}
    if not isinstance(data, dict):
        raise SpecError(f"a netspec must be a YAML mapping, got {type(data).__name__}",
                        file=file, line=1, hint="start with 'name:', 'input:' and 'layers:'")
    from spdnn.spec.blocks import netspec_class, parse_blocks, resolve_imports

    check_depth(data, file, lines)
    data = resolve_imports(data, file, lines)
    model = netspec_class(parse_blocks(data, file, lines)) if data.get("blocks") else Netspec
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, data, file, lines) from None
    check_graph(spec, file=file, lines=lines)
    return spec


MAX_DATA_DEPTH = 200
"""Nesting levels netspec data may have (pydantic cannot serialize more than about 255; YAML
files are held to :data:`spdnn.spec.yaml_io.MAX_DEPTH` already, so this bounds data built in
Python and block bodies, whose arguments nest inside the body's layers)."""


def check_depth(data: Any, file: str | None = None, lines: dict[tuple, int] | None = None,
                limit: int = MAX_DATA_DEPTH) -> None:
    """Refuse ``data`` nested more than ``limit`` levels (lists and dicts), without recursion.

    Raises:
        SpecError: naming the path of the first value that is too deep.
    """
    stack: list[tuple[Any, tuple]] = [(data, ())]
    deepest: dict[int, int] = {}  # id -> the deepest level it was walked at
    while stack:
        obj, path = stack.pop()
        if not isinstance(obj, (dict, list)):
            continue
        if len(path) >= limit:
            field = _field_str(list(path[:6]), data) if isinstance(data, dict) else None
            field = f"{field}..." if field else None
            raise SpecError(f"the data nests more than {limit} levels deep", file=file,
                            line=line_of(lines or {}, path), field=field,
                            hint="a netspec needs only a few levels of nesting")
        if deepest.get(id(obj), -1) >= len(path):  # shared (an alias), walked as deep already
            continue
        deepest[id(obj)] = len(path)
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        stack.extend((v, path + (k,)) for k, v in items)


def load_checked(path: str | Path) -> Netspec:
    """:func:`load` plus shape inference; a shape error names the file and the layer's line.

    Raises:
        SpecError: any problem, located in the file.
    """
    return load_inferred(path)[0]


def load_inferred(path: str | Path):
    """``(netspec, NetInfo)``: :func:`load_checked` that also returns the shape inference, so
    callers (a merge) need not infer again.

    Raises:
        SpecError: any problem, located in the file.
    """
    from spdnn.shapes import infer

    data, lines = read_yaml(path)
    spec = from_data(data, file=str(path), lines=lines)
    try:
        info = infer(spec, file=str(path))
    except SpecError as exc:
        m = re.match(r"(layers|inputs)\[(\d+)\]", exc.field or "")
        loc = None
        if m and m.group(1) == "inputs" and ("input",) in lines:
            loc = ("input",)
        elif m:
            loc = (m.group(1), int(m.group(2)))
        raise exc.located(file=str(path), line=line_of(lines, loc) if loc else None) from None
    return spec, info


def dump(spec: Netspec, header: str | None = None) -> str:
    """The netspec as YAML text, one layer per line; ``loads(dump(s)) == s``.

    ``header`` (optional) is written as leading ``#`` comment lines.
    """
    data = spec.to_data()
    layers = data.pop("layers")
    blocks = data.pop("blocks", {})
    rest = {k: data.pop(k) for k in list(data) if k in ("output", "outputs")}
    text = dump_yaml(data)
    if blocks:
        text += "blocks:\n"
        for bname, bdata in blocks.items():
            text += f"  {bname}:\n"  # block names are identifiers
            for key, value in bdata.items():
                if key == "layers":
                    text += "    layers:\n"
                    text += "".join(f"    - {dump_flow(lay)}\n" for lay in value)
                else:
                    text += f"    {dump_flow({key: value})[1:-1]}\n"
    text += "layers:\n"
    for lay in layers:
        text += "- " + dump_flow(lay) + "\n"
    text += dump_yaml(rest)
    if header:
        text = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) + text
    return text


def spec_hash(spec: Netspec) -> str:
    """A stable SHA-256 (first 16 hex digits) of the netspec's content."""
    return hashlib.sha256(dump_yaml(spec.to_data()).encode()).hexdigest()[:16]


def example_inputs(spec: Netspec, batch: int = 1, generator: Any = None,
                   float_fn: str = "rand") -> list[Any]:
    """Random example inputs for ``spec``, one tensor per input in declaration order.

    A ``float32`` input gets ``(batch, *shape)`` values from ``torch.rand`` (uniform in
    [0, 1)) or ``torch.randn`` (``float_fn="randn"``); an ``int64`` input gets class indices
    uniform in ``0 .. num_classes - 1``. ``generator`` is an optional ``torch.Generator``.
    """
    import torch

    fn = {"rand": torch.rand, "randn": torch.randn}[float_fn]
    out = []
    for i in spec.inputs:
        if i.dtype == "int64":
            out.append(torch.randint(0, i.num_classes, (batch, *i.shape), generator=generator))
        else:
            out.append(fn(batch, *i.shape, generator=generator))
    return out


# --------------------------------------------------------------------------------------------
# graph checks
# --------------------------------------------------------------------------------------------
def find_cycle(preds: dict[str, list[str]]) -> list[str] | None:
    """A cycle of the graph given as ``{node: [predecessors]}``, as the list of its nodes in
    edge order (``[a, b]`` for ``a -> b -> a``), or ``None``; found by the standard library's
    :class:`graphlib.TopologicalSorter` (deterministic for a given insertion order)."""
    try:
        graphlib.TopologicalSorter(preds).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1][:-1])  # [n0, n1, ..., n0]: each node precedes the next
    return None


def check_graph(spec: Netspec, file: str | None = None,
                lines: dict[tuple, int] | None = None) -> None:
    """Check names and connections: unique names, known inputs, input counts, no cycles, and
    outputs that name a layer and are not named like an input.

    Raises:
        SpecError: naming the layer (and its line when ``lines`` is given).
    """
    lines = lines or {}
    input_names = [i.name for i in spec.inputs]
    seen: dict[str, int] = {}
    for name in input_names:
        if name in seen:
            raise SpecError(f"input name '{name}' is used twice", file=file,
                            line=line_of(lines, ("inputs",)), field="inputs")
        seen[name] = -1
    for i, lay in enumerate(spec.layers):
        where = {"file": file, "line": line_of(lines, ("layers", i, "name"))}
        if lay.name in seen:
            other = "an input" if seen[lay.name] < 0 else f"layers[{seen[lay.name]}]"
            raise SpecError(f"duplicate name '{lay.name}' (also used by {other})",
                            field=f"layers[{i}].name", hint="give every layer a unique name",
                            **where)
        seen[lay.name] = i
    names = set(seen)
    preds: dict[str, list[str]] = {n: [] for n in seen}  # dict order: messages do not
    # depend on the hash seed
    for i, lay in enumerate(spec.layers):
        srcs = spec.input_names(i)
        cls = type(lay)
        where = {"file": file, "line": line_of(lines, ("layers", i, "inputs"))}
        for s in srcs:
            if s not in names:
                close = difflib.get_close_matches(s, sorted(names), n=1)
                hint = f"did you mean '{close[0]}'?" if close else "name an earlier layer or an input"
                raise SpecError(f"layer '{lay.name}' reads '{s}', which is not a layer or input",
                                field=f"layers[{i}].inputs", hint=hint, **where)
            if s == lay.name:
                raise SpecError(f"layer '{lay.name}' reads itself", field=f"layers[{i}].inputs",
                                **where)
            preds[lay.name].append(s)
        # junctions may repeat an input (x + x); so may layers whose inputs play different
        # parts (an HQS stage started from x0 = y reads y twice)
        if len(srcs) != len(set(srcs)) and cls.kind != "junction" and lay.input_roles() is None:
            raise SpecError(f"layer '{lay.name}' names the same input twice",
                            field=f"layers[{i}].inputs", **where)
        if len(srcs) < cls.min_inputs or (cls.max_inputs is not None and len(srcs) > cls.max_inputs):
            want = (f"exactly {cls.min_inputs}" if cls.max_inputs == cls.min_inputs
                    else f"at least {cls.min_inputs}")
            raise SpecError(f"{cls.__name__} layer '{lay.name}' takes {want} input(s), "
                            f"got {len(srcs)}", field=f"layers[{i}].inputs", **where)
    cycle = find_cycle(preds)
    if cycle:
        path = " -> ".join(cycle + [cycle[0]])
        first = min(seen[n] for n in cycle if seen.get(n, -1) >= 0)
        raise SpecError(f"the layer graph has a cycle: {path}", file=file,
                        line=line_of(lines, ("layers", first)), field=f"layers[{first}].inputs",
                        hint="a netspec must be acyclic (feed-forward)")
    out_names = set()
    for j, out in enumerate(spec.outputs):
        key = "output" if ("output",) in lines else "outputs"
        loc = (key, "from") if key == "output" else (key, j, "from")
        if out.from_ not in names or out.from_ in input_names:
            raise SpecError(f"output '{out.name}' is taken from '{out.from_}', which is not a layer",
                            file=file, line=line_of(lines, loc), field=".".join(map(str, loc)))
        if out.name in out_names:
            raise SpecError(f"output name '{out.name}' is used twice", file=file,
                            line=line_of(lines, loc))
        if out.name in input_names:
            nloc = loc[:-1] + ("name",)
            raise SpecError(f"output '{out.name}' has the name of an input", file=file,
                            line=line_of(lines, nloc), field=".".join(map(str, nloc)),
                            hint="rename the output: an ONNX graph cannot have an input "
                                 "and an output of one name")
        out_names.add(out.name)
    used = {s for s, _ in spec.edges()}
    for k, inp in enumerate(input_names):
        if inp not in used:
            loc = ("input",) if ("input",) in lines else ("inputs", k)
            raise SpecError(f"input '{inp}' is not read by any layer", file=file,
                            line=line_of(lines, loc), hint="remove it or connect a layer to it")


# --------------------------------------------------------------------------------------------
# pydantic error -> one SpecError
# --------------------------------------------------------------------------------------------
def validation_error(exc: ValidationError, data: dict, file: str | None,
                     lines: dict[tuple, int], model: type | None = None) -> SpecError:
    """Turn a pydantic ``ValidationError`` on YAML ``data`` into one located :class:`SpecError`
    (the deepest error; unknown fields get a did-you-mean hint)."""
    errors = exc.errors()
    # Prefer the deepest error (most specific location).
    err = max(errors, key=lambda e: (e["type"] == "extra_forbidden", len(e["loc"])))
    loc, path, obj = _alias_loc(tuple(err["loc"]), data), [], data
    for k, part in enumerate(loc):
        if isinstance(obj, dict) and part in obj:
            path.append(part)
            obj = obj[part]
        elif isinstance(obj, list) and isinstance(part, int) and part < len(obj):
            path.append(part)
            obj = obj[part]
        elif k == len(loc) - 1 and err["type"] in ("missing", "extra_forbidden"):
            path.append(part)
    field = _field_str(path, data)
    line = line_of(lines, tuple(path))
    etype, msg, hint = err["type"], err["msg"], None
    if etype == "union_tag_invalid":
        tag = err.get("input", {}).get("op") if isinstance(err.get("input"), dict) else None
        blocks = data.get("blocks") if isinstance(data.get("blocks"), dict) else {}
        close = difflib.get_close_matches(str(tag), sorted(OPS) + sorted(blocks), n=1)
        msg = f"unknown op '{tag}'"
        hint = (f"did you mean '{close[0]}'? " if close else "") + "run `spdnn ops` for the list"
        field = field + ".op" if not field.endswith(".op") else field
        line = line_of(lines, tuple(path) + ("op",))
    elif etype == "union_tag_not_found":
        msg = "layer has no 'op' field"
        hint = "add e.g. 'op: Conv2d' (run `spdnn ops` for the list)"
    elif etype == "missing":
        msg = f"required field '{path[-1]}' is missing"
        hint = _missing_hint(path)
    elif etype == "extra_forbidden":
        allowed = _allowed_fields(path, data, model)
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
        msg = f"unknown field '{path[-1]}'"
        hint = f"did you mean '{close[0]}'?" if close else (
            f"allowed: {', '.join(allowed)}" if allowed else None)
    else:
        msg = msg.rstrip(".").removeprefix("Value error, ")
        value = err.get("input")
        if not isinstance(value, (dict, list)):
            msg += f" (got {value!r})"
    return SpecError(msg, file=file, line=line, field=field or None, hint=hint)


def _alias_loc(loc: tuple, data: dict) -> tuple:
    """Map ``('inputs', 0, ...)`` back to ``('input', ...)`` when the YAML used the singular."""
    for single, plural in (("input", "inputs"), ("output", "outputs")):
        if loc[:1] == (plural,) and single in data and isinstance(data[single], dict):
            return (single,) + loc[2:]
    return loc


def _field_str(path: list, data: dict) -> str:
    out = ""
    obj: Any = data
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            if isinstance(obj, list) and part < len(obj):
                obj = obj[part]
                if isinstance(obj, dict) and isinstance(obj.get("name"), str) and out.startswith("layers"):
                    out += f"({obj['name']})"
                continue
        else:
            out += ("." if out else "") + str(part)
        obj = obj.get(part) if isinstance(obj, dict) else None
    return out


def _allowed_fields(path: list, data: dict, model: type | None = None) -> list[str]:
    if model is not None and model is not Netspec:
        cls = model
        for part in path[:-1]:
            if not isinstance(part, str):
                continue
            f = cls.model_fields.get(part)
            ann = getattr(f, "annotation", None)
            if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                return []
            cls = ann
        return sorted(k if not v.alias else v.alias for k, v in cls.model_fields.items())
    if len(path) >= 3 and path[0] == "layers":
        layer = data["layers"][path[1]]
        cls = OPS.get(layer.get("op")) if isinstance(layer, dict) else None
        if cls is not None:
            return sorted(cls.model_fields)
        blocks = data.get("blocks") if isinstance(data.get("blocks"), dict) else {}
        bdef = blocks.get(layer.get("op")) if isinstance(layer, dict) else None
        if isinstance(bdef, dict) and isinstance(bdef.get("params", {}), dict):
            return sorted({"name", "op", "inputs", "merged_from"} | set(bdef.get("params", {})))
    if len(path) == 1:
        return sorted(set(Netspec.model_fields) | {"input", "output", "imports"})
    if path and path[0] in ("input", "inputs"):
        return sorted(InputSpec.model_fields)
    if path and path[0] in ("output", "outputs"):
        return ["from", "name"]
    return []


def _missing_hint(path: list) -> str | None:
    top = {"name": "give the network a name", "inputs": "add 'input: {channels: .., height: .., width: ..}'",
           "layers": "add a 'layers:' list"}
    if len(path) == 1:
        return top.get(str(path[0]))
    return None

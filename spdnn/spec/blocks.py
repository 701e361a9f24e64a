"""Blocks: parameterized sub-graphs declared once and instantiated as layers.

A netspec (or a library file it imports) declares blocks by name::

    imports: [../blocks/squeezenet.yaml]      # files holding `blocks:` (paths relative to the file)
    blocks:
      Fire:
        params: {squeeze: null, expand1x1: null, expand3x3: null}   # null: required
        inputs: [x]
        layers:
          - {name: squeeze, op: Conv2d, kernel_size: 1, out_channels: $squeeze, inputs: [x]}
          - ...
        output: cat
        structure: "Fire({squeeze},{expand1x1})"
    layers:
      - {name: fire2, op: Fire, squeeze: 16, expand1x1: 64, expand3x3: 64}

Computed parameters: a parameter default or a layer field may be an integer expression over
the parameters and ``$in_channels`` (the width of the instance's first input), e.g.
``params: {c: null, t: 6, hidden: $in_channels * $t}`` or ``out_channels: $c * $t``
(:mod:`spdnn.spec.expr`: ``+ - * // %``, parentheses, ``min``/``max``; parsed against a
whitelist, never ``eval``). Names are checked when the block is loaded (an unknown ``$name`` or
a malformed expression is one error naming the file, line and field); values are computed
when the instance is built, and those that read ``$in_channels`` when it is shaped.

Each block becomes an op class (``op: Literal["Fire"]`` plus one field per parameter), created
on demand and cached, so the global op registry is never touched. An instance is one compute
layer: one SPDNN graph node whose structure code names the block and its shaping arguments, so
merging works on networks built from blocks. Shapes, parameters and MACs come from running
:func:`spdnn.shapes.infer` on the instance's body (arguments substituted, inputs shaped like the
instance's inputs). Blocks may use other blocks (nesting), never themselves (directly or not).

Code generation emits one ``nn.Module`` class per block type; its ``__init__`` takes the
instance's submodules as keyword arguments, so one class serves every argument value. That is
the code generator's business (:mod:`spdnn.codegen.blocks`): this module imports neither torch
nor the code generator; :meth:`BlockOp.module` returns a :class:`BlockInstance`, which names the
instance and its input shapes only.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from spdnn.errors import ShapeError, SpecError
from spdnn.ops.base import Call, Op, Shape
from spdnn.spec.expr import INPUT_WIDTH, ExprError, is_expression
from spdnn.spec.expr import parse as parse_expr
from spdnn.spec.models import BlockDef, Netspec

if TYPE_CHECKING:
    import torch

_PARAM = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_BLOCK = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# a parameter may not shadow a layer field or one of the op's class variables
_RESERVED_PARAMS = ({"name", "op", "inputs", "merged_from", INPUT_WIDTH}
                    | set(Op.__class_vars__))


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# --------------------------------------------------------------------------------------------
# loading: imports and definition checks
# --------------------------------------------------------------------------------------------
class _BlocksOnly(BaseModel):
    model_config = ConfigDict(extra="ignore")
    blocks: dict[str, BlockDef] = Field(default_factory=dict)


def resolve_imports(data: dict, file: str | None, lines: dict, _seen: tuple = ()) -> dict:
    """``data`` with its ``imports:`` read into ``blocks`` (imported files may import too).

    Raises:
        SpecError: an import is missing or malformed, or two files define one block differently.
    """
    from spdnn.spec.yaml_io import line_of, read_yaml

    if "imports" not in data:
        return data
    data = dict(data)
    imports = data.pop("imports")
    if isinstance(imports, str):
        imports = [imports]
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise SpecError("'imports' must be a list of file paths", file=file,
                        line=line_of(lines, ("imports",)), field="imports")
    base = Path(file).parent if file and not file.startswith("<") else Path.cwd()
    if not isinstance(data.get("blocks") or {}, dict):
        return data  # the model reports the bad type
    blocks = dict(data.get("blocks") or {})
    for k, rel in enumerate(imports):
        where = {"file": file, "line": line_of(lines, ("imports", k)), "field": f"imports[{k}]"}
        try:
            path, found = _import_path(base, rel)
        except (OSError, ValueError) as exc:  # too long a name, a NUL character, a loop
            why = getattr(exc, "strerror", None) or str(exc)
            shown = repr(rel if len(rel) <= 80 else rel[:80] + "...")
            raise SpecError(f"imported file {shown} cannot be opened: {why}",
                            hint="check the path", **where) from None
        if path in _seen:
            raise SpecError(f"'{rel}' imports itself (through {len(_seen)} file(s))", **where)
        if not found:
            raise SpecError(f"imported file '{rel}' not found", hint=f"looked for {path}", **where)
        sub, sub_lines = read_yaml(path)
        if not isinstance(sub, dict) or set(sub) - {"blocks", "imports", "description"}:
            raise SpecError(f"imported file '{rel}' must hold only 'blocks:' (and 'imports:')",
                            **where)
        sub = resolve_imports(sub, str(path), sub_lines, _seen + (path,))
        for name, bdef in (sub.get("blocks") or {}).items():
            if name in blocks and _canon(blocks[name]) != _canon(bdef):
                raise SpecError(f"block '{name}' is defined differently in '{rel}' and elsewhere",
                                hint="rename one of them", **where)
            blocks.setdefault(name, bdef)
    data["blocks"] = blocks
    return data


def _import_path(base: Path, rel: str) -> tuple[Path, bool]:
    """Where an ``imports:`` entry points, resolved, and whether it is a file: ``rel`` relative
    to ``base``, else the block library shipped with spdnn (``netspecs/blocks/...``, see
    :func:`spdnn.zoo.lookup`).

    Raises:
        OSError, ValueError: the path cannot be examined (too long, a NUL character, a loop).
    """
    path = (base / rel).resolve()
    if path.is_file():
        return path, True
    from spdnn import zoo

    hits = [h for h in zoo.lookup(rel) if h.is_file()]
    return (hits[0].resolve(), True) if len(hits) == 1 else (path, False)


def imported_files(file: str | Path) -> list[Path]:
    """The files a netspec imports, directly or through imported files, resolved: what a
    command must never write over (:func:`spdnn.io.check_outputs`). Best effort: a file that
    is not a regular file, cannot be read or parsed, or names no ``imports:`` gives nothing
    (loading it reports the problem).
    """
    from spdnn.spec.yaml_io import MAX_FILE_BYTES, read_yaml

    out: list[Path] = []
    todo = [Path(file)]
    while todo and len(out) < 1000:
        f = todo.pop()
        try:
            if not f.is_file():  # a FIFO or device would block or never end
                continue
            with f.open("rb") as fh:
                if b"imports" not in fh.read(MAX_FILE_BYTES + 1):
                    continue
            data, _ = read_yaml(f)
        except Exception:  # noqa: BLE001 - loading the file reports it as one line
            continue
        imports = data.get("imports") if isinstance(data, dict) else None
        for rel in [imports] if isinstance(imports, str) else imports or []:
            if not isinstance(rel, str):
                continue
            try:
                path, found = _import_path(f.parent, rel)
            except (OSError, ValueError):
                continue
            if found and path not in out:
                out.append(path)
                todo.append(path)
    return out


def parse_blocks(data: dict, file: str | None, lines: dict) -> dict[str, BlockDef]:
    """Validate and check the ``blocks:`` of netspec data (after imports).

    Raises:
        SpecError: a malformed definition, a bad parameter name, a ``$name`` that names no
            parameter, a block named like a built-in op, or a recursive block.
    """
    from spdnn.ops import OPS
    from spdnn.spec import validation_error
    from spdnn.spec.yaml_io import line_of

    try:
        blocks = _BlocksOnly.model_validate(data).blocks
    except ValidationError as exc:
        raise validation_error(exc, data, file, lines, model=_BlocksOnly) from None
    uses: dict[str, list[str]] = {n: [] for n in blocks}  # block -> the blocks it uses
    for name, bdef in blocks.items():
        def fail(msg: str, sub: tuple = (), hint: str | None = None,
                 loc: tuple = ("blocks", name)) -> SpecError:
            return SpecError(msg, file=file, line=line_of(lines, loc + sub),
                             field=_dotted(loc + sub), hint=hint)

        if not _BLOCK.match(name):
            raise fail(f"block name '{name}' must be a letter followed by letters, digits or '_'")
        if name in OPS:
            raise fail(f"block '{name}' has the name of a built-in op", hint="rename the block")
        for p in bdef.params:
            if not _PARAM.match(p) or p in _RESERVED_PARAMS or p.startswith("model_"):
                hint = ("$in_channels is the width of the block's input, given by shape "
                        "inference" if p == INPUT_WIDTH else
                        "use a plain identifier other than name, op, inputs, in_channels")
                raise fail(f"block '{name}': '{p}' cannot be a parameter name", ("params", p),
                           hint=hint)
        known = set(bdef.params) | {INPUT_WIDTH}
        for p, default in bdef.params.items():
            for sub, ref, exc in _refs(default, ("params", p)):
                if exc is not None:
                    raise fail(f"block '{name}': {exc}", sub)
                if ref not in known or ref == p:
                    what = "itself" if ref == p else "not one of its params"
                    raise fail(f"block '{name}': parameter '{p}' uses '${ref}', which is {what}",
                               sub, hint="a computed parameter reads other params or "
                               "$in_channels")
        try:
            order_params(bdef)
        except SpecError as exc:
            raise fail(f"block '{name}': {exc.message}", ("params", exc.field)) from None
        for i, lay in enumerate(bdef.layers):
            for sub, ref, exc in _refs(lay, ("layers", i)):
                if exc is not None:
                    raise fail(f"block '{name}': {exc}", sub)
                if ref not in known:
                    raise fail(f"block '{name}' uses '${ref}', which is not one of its params",
                               sub, hint=f"add '{ref}' to params")
            op = lay.get("op")
            if isinstance(op, str) and op in blocks:
                uses[name].append(op)
        for k, w in enumerate(bdef.widths or ()):
            if w not in bdef.params:
                raise fail(f"block '{name}': widths names '{w}', which is not one of its params",
                           ("widths", k), hint="list the parameters that are channel widths")
        if bdef.structure is not None:
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(bdef.structure) if f]
            except ValueError as exc:
                raise fail(f"block '{name}': bad structure template ({exc})", ("structure",)) from None
            for f in fields:
                if f not in bdef.params:
                    raise fail(f"block '{name}': structure names '{{{f}}}', which is not a param",
                               ("structure",))
    from spdnn.spec import find_cycle

    cycle = find_cycle({n: list(dict.fromkeys(u)) for n, u in uses.items()})
    if cycle:
        cycle = list(reversed(cycle))  # `uses` lists successors: A uses B is edge A -> B
        path = " -> ".join(cycle + [cycle[0]])
        first = cycle[0]
        raise SpecError(f"recursive block: {path}", file=file,
                        line=line_of(lines, ("blocks", first)), field=f"blocks.{first}",
                        hint="a block cannot use itself, directly or through other blocks")
    return blocks


def _refs(value: Any, path: tuple) -> list[tuple[tuple, str | None, ExprError | None]]:
    """``(path, name, None)`` for every ``$name`` in ``value`` (plain or in an expression),
    ``(path, None, error)`` for a malformed expression; ``path`` locates the value."""
    if isinstance(value, str):
        if is_expression(value):
            try:
                return [(path, n, None) for n in parse_expr(value).names]
            except ExprError as exc:
                return [(path, None, exc)]
        return [(path, value[1:], None)] if value.startswith("$") else []
    if isinstance(value, dict):
        return [r for k, v in value.items() for r in _refs(v, path + (k,))]
    if isinstance(value, list):
        return [r for i, v in enumerate(value) for r in _refs(v, path + (i,))]
    return []


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def order_params(bdef: BlockDef) -> list[str]:
    """The block's parameters in an order where every computed default (an expression) comes
    after the parameters it reads.

    Raises:
        SpecError: computed defaults read each other in a cycle (``field``: the first
            parameter of it).
    """
    deps = {p: [n for _, n, _ in _refs(d, ()) if n in bdef.params]
            for p, d in bdef.params.items()}
    done: list[str] = []
    todo = list(bdef.params)
    while todo:
        ready = [p for p in todo if all(d in done for d in deps[p])]
        if not ready:
            raise SpecError("computed parameters read each other in a cycle: "
                            + " -> ".join(todo), field=todo[0])
        done += ready
        todo = [p for p in todo if p not in ready]
    return done


def resolve_params(bdef: BlockDef, values: dict[str, Any],
                   width: int | None) -> dict[str, Any]:
    """The parameter values with every computed one (an expression, as a default or as the
    instance's value) evaluated; ``width`` is ``$in_channels`` (``None``: unknown, and the
    parameters that read it stay expressions).

    Raises:
        SpecError: an expression cannot be evaluated (``field`` names the parameter).
    """
    env: dict[str, Any] = {} if width is None else {INPUT_WIDTH: width}
    out = dict(values)
    for p in order_params(bdef):
        v = values.get(p)
        if isinstance(v, str) and v.startswith("$") and not is_expression(v):
            ref = v[1:]  # a plain $name default: a copy of that value, once it is known
            if ref in env and not is_expression(env[ref]):
                out[p] = env[p] = env[ref]
            else:
                env[p] = v
            continue
        if not is_expression(v):
            env[p] = v
            continue
        try:
            expr = parse_expr(v)
            if all(n in env and not is_expression(env[n]) for n in expr.names):
                out[p] = env[p] = expr.evaluate(env)
            else:
                env[p] = v
        except ExprError as exc:
            raise SpecError(str(exc), field=f"params.{p}") from None
    return out


def _substitute(value: Any, args: dict[str, Any], path: tuple = ()) -> Any:
    """``value`` with ``$name`` replaced by ``args[name]`` and expressions evaluated.

    Raises:
        SpecError: an expression cannot be evaluated (``field`` locates it in the body).
    """
    if isinstance(value, str) and is_expression(value):
        try:
            return parse_expr(value).evaluate(args)
        except ExprError as exc:
            raise SpecError(str(exc), field=_dotted(path)) from None
    if isinstance(value, str) and value.startswith("$"):
        got = args[value[1:]]
        if is_expression(got):  # a computed parameter that could not be evaluated here
            raise SpecError(f"${value[1:]} = '{got}' cannot be computed here",
                            field=_dotted(path))
        return got
    if isinstance(value, dict):
        return {k: _substitute(v, args, path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, args, path + (i,)) for i, v in enumerate(value)]
    return value


def _closure(name: str, blocks: dict[str, BlockDef]) -> dict[str, BlockDef]:
    """``name`` and every block it uses, directly or not."""
    out: dict[str, BlockDef] = {}
    todo = [name]
    while todo:
        n = todo.pop()
        if n in out or n not in blocks:
            continue
        out[n] = blocks[n]
        todo += [lay.get("op") for lay in blocks[n].layers if isinstance(lay.get("op"), str)]
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------
# classes (cached, so that two loads of one file give equal netspecs)
# --------------------------------------------------------------------------------------------
_OP_CLASSES: dict[tuple[str, str], type[BlockOp]] = {}
_SPEC_CLASSES: dict[str, type[Netspec]] = {}
_BODIES: dict[tuple, tuple[Netspec, Any]] = {}


def block_op_class(name: str, blocks: dict[str, BlockDef]) -> type[BlockOp]:
    """The op class of block ``name`` (``blocks`` holds it and the blocks it uses)."""
    closure = _closure(name, blocks)
    key = (name, _canon({k: b.to_data() for k, b in closure.items()}))
    if key not in _OP_CLASSES:
        bdef = closure[name]
        fields: dict[str, Any] = {"op": (Literal[name], ...)}  # type: ignore[valid-type]
        for p, default in bdef.params.items():
            fields[p] = (Any, ... if default is None else default)
        cls = create_model(name, __base__=BlockOp, **fields)  # type: ignore[call-overload]
        cls.__doc__ = f"Block {name}: {bdef.description}".strip()
        cls.block_name = name
        cls.block = bdef
        cls.blocks = closure
        cls.min_inputs = cls.max_inputs = len(bdef.inputs)
        _OP_CLASSES[key] = cls
    return _OP_CLASSES[key]


def netspec_class(blocks: dict[str, BlockDef]) -> type[Netspec]:
    """:class:`Netspec` whose layers may also be instances of ``blocks``."""
    if not blocks:
        return Netspec
    key = _canon({k: b.to_data() for k, b in sorted(blocks.items())})
    if key not in _SPEC_CLASSES:
        from spdnn.ops import OPS

        classes = tuple(OPS.values()) + tuple(block_op_class(n, blocks) for n in sorted(blocks))
        layer = Annotated[Union[classes], Field(discriminator="op")]  # type: ignore[valid-type]
        _SPEC_CLASSES[key] = create_model(
            "Netspec", __base__=Netspec, __module__=Netspec.__module__,
            layers=(list[layer], Field(min_length=1)))  # type: ignore[valid-type]
    return _SPEC_CLASSES[key]


def merge_blocks(specs: list[Netspec]) -> dict[str, BlockDef]:
    """The union of the blocks of ``specs``.

    Raises:
        SpecError: two of them define one block name differently.
    """
    out: dict[str, BlockDef] = {}
    for s in specs:
        for name, bdef in s.blocks.items():
            if name in out and out[name] != bdef:
                raise SpecError(f"block '{name}' is defined differently in '{s.name}' and in "
                                "another network", hint="rename one of the blocks")
            out[name] = bdef
    return out


# --------------------------------------------------------------------------------------------
# the op
# --------------------------------------------------------------------------------------------
def _input_data(name: str, shape: Shape) -> dict:
    if len(shape) == 3:
        return {"name": name, "channels": shape[0], "height": shape[1], "width": shape[2]}
    if len(shape) == 1:
        return {"name": name, "features": shape[0]}
    raise ShapeError(f"block input '{name}' must be a (C, H, W) map or a vector, got {shape}")


class BlockOp(Op):
    """Base class of block instances (one subclass per block definition)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind = "compute"
    block_name: ClassVar[str] = ""
    block: ClassVar[BlockDef]
    blocks: ClassVar[dict[str, BlockDef]] = {}

    @model_validator(mode="after")
    def _check_body(self) -> BlockOp:
        if type(self) is not BlockOp:
            try:
                self.body(None)
            except SpecError as exc:
                if not self.reads_input_width():  # else: checked once the input is shaped
                    fld = f"{exc.field}: " if exc.field else ""
                    raise ValueError(f"in block '{self.block_name}': {fld}{exc.message}"
                                     + (f" ({exc.hint})" if exc.hint else "")) from None
        return self

    def args(self) -> dict[str, Any]:
        """The instance's parameter values (defaults applied), as plain data; computed
        parameters are evaluated, except those that read ``$in_channels`` (their expression
        text is kept: the input width is known only once the instance is shaped)."""
        data = self.model_dump(mode="json")
        return resolve_params(self.block, {p: data[p] for p in self.block.params}, None)

    def reads_input_width(self) -> bool:
        """Whether the body or a computed parameter reads ``$in_channels``."""
        return _reads_width(type(self))

    def env(self, width: int | None) -> dict[str, Any]:
        """What ``$name`` means in the body: the parameter values (all computed ones
        evaluated) and ``in_channels = width``.

        Raises:
            SpecError: a computed parameter cannot be evaluated.
        """
        data = self.model_dump(mode="json")
        env = resolve_params(self.block, {p: data[p] for p in self.block.params}, width)
        if width is not None:
            env[INPUT_WIDTH] = width
        return env

    def body(self, ins: list[Shape] | None) -> tuple[Netspec, Any]:
        """``(body netspec, its NetInfo)`` for input shapes ``ins`` (``None``: unshaped dummy
        inputs, no inference; a block that reads ``$in_channels`` is then built for the first
        of the probe widths :data:`PROBE_WIDTHS` its body accepts). Cached.

        Raises:
            SpecError: the body (parameters substituted) is not a valid netspec, or a computed
                value cannot be evaluated; ShapeError: its shapes do not fit ``ins``.
        """
        key = (type(self), _canon(self.args()), None if ins is None else tuple(map(tuple, ins)))
        if key not in _BODIES:
            from spdnn.shapes import infer

            if ins is not None:
                width: int | None = ins[0][0] if ins[0] else None
                spec = self._body_spec(ins, width)
                _BODIES[key] = (spec, infer(spec))
            elif not self.reads_input_width():
                _BODIES[key] = (self._body_spec(None, None), None)
            else:
                first: SpecError | None = None
                for width in PROBE_WIDTHS:
                    try:
                        _BODIES[key] = (self._body_spec(None, width), None)
                        break
                    except SpecError as exc:
                        first = first or exc
                else:
                    assert first is not None
                    raise first
        return _BODIES[key]

    def _body_spec(self, ins: list[Shape] | None, width: int | None) -> Netspec:
        from spdnn.spec import from_data

        bdef = self.block
        shapes = ins if ins is not None else [(1,)] * len(bdef.inputs)
        data: dict[str, Any] = {
            "name": self.block_name,
            "inputs": [_input_data(n, s) for n, s in zip(bdef.inputs, shapes)],
            "layers": _substitute(bdef.layers, self.env(width), ("layers",)),
        }
        if bdef.output is not None:  # named like no input (else the default output is)
            out = next(n for n in ("out", *(f"out_{k}" for k in range(1, len(bdef.inputs) + 1)))
                       if n not in bdef.inputs)
            data["output"] = {"name": out, "from": bdef.output}
        if self.blocks:
            data["blocks"] = {k: b.to_data() for k, b in self.blocks.items()}
        return from_data(data, file=None)

    def shaped_body(self, ins: list[Shape]) -> tuple[Netspec, Any]:
        """``(body netspec, its NetInfo)`` for input shapes ``ins`` (see :meth:`body`).

        Raises:
            ShapeError: the body does not fit ``ins`` or cannot be built for them (a computed
                value that is not valid for this input width), located at this instance.
        """
        try:
            return self.body(ins)
        except SpecError as exc:
            fld = f"{exc.field}: " if exc.field else ""
            raise self.fail(f"in block body, {fld}{exc.message}", hint=exc.hint) from None

    # -- shape and cost ------------------------------------------------------------------
    def infer_shape(self, ins: list[Shape]) -> Shape:
        spec, info = self.shaped_body(ins)
        return info.shapes[spec.outputs[0].from_]

    def num_params(self, ins: list[Shape], out: Shape) -> int:
        return self.shaped_body(ins)[1].params

    def macs(self, ins: list[Shape], out: Shape) -> int:
        return self.shaped_body(ins)[1].macs

    def onnx_unsupported(self, ins: list[Shape], out: Shape, exporter: str) -> str | None:
        """The first body layer that ``exporter`` cannot export (see
        :meth:`~spdnn.ops.base.Op.onnx_unsupported`)."""
        for lay in self.shaped_body(ins)[1].layers:
            why = lay.op.onnx_unsupported(list(lay.in_shapes), lay.out_shape, exporter)
            if why:
                return f"in block body, layer '{lay.name}' ({lay.op.op_name}): {why}"
        return None

    # -- torch ---------------------------------------------------------------------------
    def module(self, ins: list[Shape], out: Shape) -> BlockInstance:
        """The instance's module call, resolved into submodules and ``forward`` code by the code
        generator (:func:`spdnn.codegen.blocks.resolve`)."""
        return BlockInstance(self.block_name, op=self, ins=tuple(map(tuple, ins)))

    def apply(self, mod: torch.nn.Module | None, xs: list[torch.Tensor]) -> torch.Tensor:
        assert mod is not None
        return mod(*xs)

    def forward_expr(self, attr: str | None, args: list[str]) -> str:
        return f"self.{attr}({', '.join(args)})"

    # -- SPDNN -----------------------------------------------------------------------------
    def channel_params(self) -> tuple[str, ...]:
        """The parameters that set channel counts inside the body: the block's declared
        ``widths`` (:class:`~spdnn.spec.models.BlockDef`), else those whose ``$name`` is the
        whole value of an ``out_channels``/``out_features`` field, or of a nested block
        instance's own channel parameter. The SPDNN channel budget scales these together."""
        if self.block.widths is not None:
            return tuple(self.block.widths)
        return _channel_params(type(self))

    def out_channels_of(self) -> int | None:
        """The block's output width, when the channel budget may scale it: the block has
        channel parameters and its output width does not depend on its input width (a Fire
        module's ``e1 + e3``), found by shape inference on probe inputs; or, for a block whose
        output follows its input (an identity residual) and that declares its ``widths``, the
        value of its first declared width (``planes``). ``None`` when not scalable."""
        if not self.channel_params():
            return None
        fixed = _probe_width(self)
        if fixed is not None or self.block.widths is None:
            return fixed
        value = self.args().get(self.block.widths[0])
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def width_follows_input(self) -> bool:
        """Whether the block's output width equals its input width (an identity residual
        ``x + f(x)`` such as ResNet's basic block): the probe finds no fixed output width.
        The SPDNN channel budget gives such a block the width of its input (a tie), or
        projects its input to the block's width (:meth:`spdnn.graph.rebuild.Rebuild.build`)."""
        return bool(self.channel_params()) and _probe_width(self) is None

    def undeclared_widths(self) -> bool:
        """The block has channel parameters and an output that follows its input, but does
        not declare its ``widths``: the budget cannot scale it."""
        return self.block.widths is None and self.width_follows_input()

    def with_width(self, width: int) -> Op:
        """A copy whose channel parameters are all multiplied by ``width / out_channels_of()``
        (each rounded, at least 1), so a Fire(16, 64, 64) asked for 64 channels becomes
        Fire(8, 32, 32). The new output width is ``width`` up to rounding."""
        base = self.out_channels_of()
        if base is None:
            raise TypeError(f"block {self.block_name} has no scalable width")
        scale = int(width) / base
        data = self.model_dump(mode="json")
        params = self.channel_params()
        for p in params:
            if isinstance(data.get(p), int) and not isinstance(data.get(p), bool):
                data[p] = max(1, int(round(data[p] * scale)))
        if self.block.widths is not None and self.width_follows_input():
            data[params[0]] = int(width)  # the output width is the first declared width
        return type(self)(**data)

    def input_roles(self) -> tuple[str, ...] | None:
        """The block's input names when it has several (each keeps its part in a merge)."""
        return tuple(self.block.inputs) if len(self.block.inputs) > 1 else None

    def label_parts(self) -> tuple[str, list[str]]:
        """A collapsed block instance is labelled with its structure code."""
        return self.structure(), []

    def structure(self) -> str:
        args = self.args()
        if self.block.structure is not None:
            return self.block.structure.format(**args)
        vals = [str(v) if isinstance(v, (int, float, str, bool)) else _canon(v)
                for v in args.values() if not is_expression(v)]  # (derived from the input)
        return f"{self.block_name}({','.join(vals)})"

    def resample_factor(self) -> Fraction:
        """The pooling factor the body applies from its first input to its output (1 when the
        output is a vector)."""
        from spdnn.shapes import execution_order

        spec, _ = self.body(None)

        factor: dict[str, Fraction | None] = {i.name: Fraction(1) for i in spec.inputs}
        for idx in execution_order(spec):
            lay = spec.layers[idx]
            fs = [factor[s] for s in spec.input_names(idx)]
            if lay.kind == "reshape" or lay.clears_factor or any(f is None for f in fs):
                factor[lay.name] = None
            else:
                factor[lay.name] = max(fs) * lay.resample_factor()
        return factor[spec.outputs[0].from_] or Fraction(1)


PROBE_WIDTHS = (64, 1024, 3, 1)
"""The input widths an unshaped block instance that reads ``$in_channels`` is validated with
(the first its body accepts); the real width is checked when the instance is shaped."""
_READS_WIDTH: dict[type, bool] = {}


def _reads_width(cls: type[BlockOp]) -> bool:
    if cls not in _READS_WIDTH:
        values = list(cls.block.params.values()) + list(cls.block.layers)
        _READS_WIDTH[cls] = any(n == INPUT_WIDTH for v in values for _, n, _ in _refs(v, ()))
    return _READS_WIDTH[cls]


_CHANNEL_FIELDS = ("out_channels", "out_features")
_CHANNEL_PARAMS: dict[type, tuple[str, ...]] = {}
_WIDTHS: dict[tuple, int | None] = {}


def _channel_params(cls: type[BlockOp]) -> tuple[str, ...]:
    if cls not in _CHANNEL_PARAMS:
        found: list[str] = []
        for lay in cls.block.layers:
            fields = list(_CHANNEL_FIELDS)
            op = lay.get("op")
            if isinstance(op, str) and op in cls.blocks:  # a nested block instance
                fields = list(_channel_params(block_op_class(op, cls.blocks)))
            for f in fields:
                v = lay.get(f)
                if isinstance(v, str) and v.startswith("$") and v[1:] in cls.block.params:
                    if v[1:] not in found:
                        found.append(v[1:])
        _CHANNEL_PARAMS[cls] = tuple(p for p in cls.block.params if p in found)
    return _CHANNEL_PARAMS[cls]


def _probe_width(op: BlockOp) -> int | None:
    """Output channels of ``op`` on probe inputs of two different widths (maps 32x32, then
    vectors); ``None`` if it depends on the input width or no probe fits."""
    key = (type(op), _canon(op.args()))
    if key not in _WIDTHS:
        n_in = len(op.block.inputs)
        width = None
        for form in ((32, 32), ()):
            try:
                outs = {op.infer_shape([(c, *form)] * n_in)[0] for c in (5, 7)}
            except (ShapeError, SpecError):
                continue
            width = outs.pop() if len(outs) == 1 else None
            break
        _WIDTHS[key] = width
    return _WIDTHS[key]


# --------------------------------------------------------------------------------------------
# the module call
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockInstance(Call):
    """The module call of one block instance before code generation: the instance ``op`` and
    its input shapes ``ins``. :func:`spdnn.codegen.blocks.resolve` turns it into the block's
    submodules and ``forward`` code; it cannot be built or emitted itself."""

    op: Any = None
    ins: tuple = ()

    def _unresolved(self) -> TypeError:
        return TypeError(f"block call {self.target} is resolved by spdnn.codegen.blocks.resolve "
                         "before it is built or emitted")

    def build(self, namespace: dict[str, Any]) -> Any:
        """Not buildable as such (see the class docstring).

        Raises:
            TypeError: always.
        """
        raise self._unresolved()

    def source(self, names: dict | None = None) -> str:
        """Not emittable as such (see the class docstring).

        Raises:
            TypeError: always.
        """
        raise self._unresolved()

    def children(self) -> list[Call]:
        """The module calls of the body's stateful layers."""
        spec, info = self.op.shaped_body(list(self.ins))
        calls = [lay.op.module(list(lay.in_shapes), lay.out_shape) for lay in info.layers]
        return [c for c in calls if c is not None]

    def helpers(self) -> set[str]:
        """Names of the helper classes the body's layers need."""
        out: set[str] = set()
        for c in self.children():
            out |= c.helpers()
        return out


def is_block_library(path: str | Path) -> bool:
    """Whether a YAML file is a block library (``blocks:`` only, no ``layers:``), not a
    netspec; such files live e.g. in ``netspecs/blocks/`` and are only ever imported."""
    from spdnn.spec.yaml_io import read_yaml

    try:
        data, _ = read_yaml(path)
    except SpecError:
        return False
    return isinstance(data, dict) and "blocks" in data and "layers" not in data


def netspec_paths(root: str | Path, pattern: str = "**/*.yaml") -> list[Path]:
    """The netspec files matching ``pattern`` under ``root``, block libraries left out, sorted."""
    return sorted(p for p in Path(root).glob(pattern) if not is_block_library(p))

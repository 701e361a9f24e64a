"""Computed block parameters: small integer expressions such as ``$c * $t`` or
``max(8, $in_channels // 4)`` in a block's layers and parameter defaults.

A string that contains ``$`` and is not a plain ``$name`` is an expression. It may use:

* ``$name`` -- a parameter of the block, or ``$in_channels``, the width of the block's first
  input (``C`` of a ``(C, H, W)`` map, ``F`` of a vector), known when the instance is shaped;
* integer literals, ``+ - * // %``, unary ``-``, parentheses, and ``min(a, b, ...)`` /
  ``max(a, b, ...)``.

Nothing else: no ``/`` (write ``//``: widths are integers), no ``**``, no other names, calls,
attributes or subscripts. An expression is parsed with :func:`ast.parse` and evaluated by
walking the tree against that whitelist; it is never passed to ``eval``. The values are Python
integers (``True``/``False`` are not numbers here); an intermediate result beyond ``2**62`` in
magnitude is refused (the netspec's size limits are far below), and so is a text longer than
:data:`MAX_LENGTH` characters.

Example (MobileNetV2's inverted residual block, Sandler et al., CVPR 2018, Table 1: the
expansion layer has ``t * k`` channels for an input of ``k`` channels)::

    params: {c: null, t: 6, stride: 1}
    layers:
      - {name: expand, op: Conv2d, kernel_size: 1, out_channels: $in_channels * $t}

Errors are :class:`ExprError` (a ``ValueError``), one line; :mod:`spdnn.spec.blocks` places
them at the file and field.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["INPUT_WIDTH", "MAX_LENGTH", "Expr", "ExprError", "is_expression", "parse"]

INPUT_WIDTH = "in_channels"
"""The name (``$in_channels``) of the width of the block's first input."""
MAX_LENGTH = 200
"""The longest expression text accepted (characters)."""
_LIMIT = 1 << 62
_REF = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_PLAIN = re.compile(r"^\$[A-Za-z_][A-Za-z0-9_]*$")
_MANGLE = "__spdnn_param_"
_FUNCS = {"min": min, "max": max}
_BINOPS: dict[type, Any] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}
_SYMBOL = {ast.Div: "/", ast.Pow: "**", ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|",
           ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>"}


class ExprError(ValueError):
    """A malformed expression, an unknown name, or a value it cannot compute (one line)."""


def is_expression(value: Any) -> bool:
    """Whether ``value`` is an expression: a string with a ``$`` that is not a plain
    ``$name`` (that one is a substitution of any value, list or string included)."""
    return isinstance(value, str) and "$" in value and not _PLAIN.match(value)


@dataclass(frozen=True)
class Expr:
    """A parsed expression: its text, the names it reads (without ``$``) and its tree."""

    text: str
    names: tuple[str, ...]
    tree: ast.Expression

    def evaluate(self, env: dict[str, Any]) -> int:
        """The integer value for the parameter values ``env`` (name -> value).

        Raises:
            ExprError: a name missing from ``env`` or bound to a non-integer, division or
                modulo by zero, or a result beyond ``2**62`` in magnitude.
        """
        return _eval(self.tree.body, env, self.text)


def parse(text: str) -> Expr:
    """Parse an expression (see the module docstring).

    Raises:
        ExprError: not an expression, too long, a syntax error, or a construct outside the
            whitelist (its message names it: ``'/' is not allowed, write //``).
    """
    if not isinstance(text, str) or "$" not in text:
        raise ExprError(f"{text!r} is not an expression (it names no $parameter)")
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression of {len(text)} characters is too long "
                        f"(at most {MAX_LENGTH})")
    stray = re.search(r"\$(?![A-Za-z_])", text)
    if stray:
        raise ExprError(f"'{text}': '$' must be followed by a parameter name")
    code = _REF.sub(lambda m: _MANGLE + m.group(1), text)
    try:
        tree = ast.parse(code.strip(), mode="eval")
    except SyntaxError:
        raise ExprError(f"'{text}' is not a valid expression (integers, $names, + - * // %, "
                        "parentheses, min(), max())") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExprError(f"'{text}' is nested too deeply") from None
    names: list[str] = []
    for node in ast.walk(tree):
        _check_node(node, text, names)
    return Expr(text, tuple(dict.fromkeys(names)), tree)


def _check_node(node: ast.AST, text: str, names: list[str]) -> None:
    if isinstance(node, (ast.Expression, ast.Load)) or type(node) in _BINOPS:
        return
    if isinstance(node, (ast.USub, ast.UAdd)):
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            sym = _SYMBOL.get(type(node.op), type(node.op).__name__)
            hint = ", write // (integer division)" if sym == "/" else ""
            raise ExprError(f"'{text}': '{sym}' is not allowed{hint}")
        return
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise ExprError(f"'{text}': unary '{type(node.op).__name__}' is not allowed")
        return
    if isinstance(node, ast.Constant):
        if type(node.value) is not int:
            raise ExprError(f"'{text}': only integer literals are allowed, not "
                            f"{node.value!r}")
        return
    if isinstance(node, ast.Name):
        if node.id.startswith(_MANGLE):
            names.append(node.id[len(_MANGLE):])
        elif node.id not in _FUNCS:
            raise ExprError(f"'{text}': unknown name '{node.id}' (write ${node.id} for a "
                            "parameter)")
        return
    if isinstance(node, ast.Call):
        f = node.func
        if not (isinstance(f, ast.Name) and f.id in _FUNCS) or node.keywords:
            raise ExprError(f"'{text}': only min(...) and max(...) may be called")
        if len(node.args) < 2 or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExprError(f"'{text}': {f.id}() needs two or more arguments")
        return
    what = type(node).__name__.lower()
    raise ExprError(f"'{text}': {what} is not allowed (integers, $names, + - * // %, "
                    "parentheses, min(), max())")


def _eval(node: ast.AST, env: dict[str, Any], text: str) -> int:
    if isinstance(node, ast.Constant):
        value = node.value
    elif isinstance(node, ast.Name):
        name = node.id[len(_MANGLE):]
        if name not in env:
            raise ExprError(f"'{text}': ${name} is not known here")
        value = env[name]
        if type(value) is not int:
            raise ExprError(f"'{text}': ${name} is {value!r}, not an integer")
    elif isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env, text)
        value = -v if isinstance(node.op, ast.USub) else v
    elif isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env, text), _eval(node.right, env, text)
        if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and b == 0:
            raise ExprError(f"'{text}': division by zero")
        value = _BINOPS[type(node.op)](a, b)
    elif isinstance(node, ast.Call):
        value = _FUNCS[node.func.id](*(_eval(a, env, text) for a in node.args))  # type: ignore[attr-defined]
    else:  # parse() admits nothing else
        raise ExprError(f"'{text}': cannot evaluate {type(node).__name__}")
    if abs(value) > _LIMIT:
        raise ExprError(f"'{text}': a value beyond 2**62")
    return value

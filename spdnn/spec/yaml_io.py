"""Safe YAML loading that remembers where every value came from.

Only the safe constructor is used, so tags such as ``!!python/object`` are rejected instead of
building Python objects. Text is scanned and parsed by libyaml (``yaml.CSafeLoader``'s C parser)
when PyYAML was built with it, else by PyYAML's pure-Python parser (about 20 times slower); the
nodes are composed by PyYAML's composer in both cases, so that the bounds below and the line of
every node are the same. Alongside the data we return a map from the path of every mapping key
and sequence item (``("layers", 3, "kernel_size")``) to its 1-based line, so that validation
errors can point at the line the user has to edit.

Hostile files are refused while they are parsed, before anything is built from them: a document
may nest at most :data:`MAX_DEPTH` levels (a netspec needs about eight), aliases may add at most
:data:`MAX_ALIAS_NODES` nodes when expanded (a "billion laughs" file is refused at the alias
that crosses the limit) and may not refer to the node that holds them (a recursive structure),
and a document may hold at most :data:`MAX_NODES` nodes (a 1 MiB file of any shape is decided in
well under 2 s; see ``benchmarks/bench_yaml_bounds.py``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from spdnn.errors import SpecError

Path_ = tuple[str | int, ...]

MAX_DEPTH = 64
"""Nesting levels a YAML document may have, aliases expanded (a netspec needs about eight)."""
MAX_FILE_BYTES = 1 << 20
"""Size of a YAML file :func:`read_yaml` reads (the largest shipped netspec is 14 KB); a device
such as ``/dev/zero`` is refused instead of read until memory runs out."""
MAX_INT = 2**64
"""Integers a YAML file may hold are below this in magnitude (tensor sizes and seeds are 64-bit;
a longer run of digits is a typo or an attack, and past 4,300 digits Python refuses to read it)."""
MAX_ALIAS_NODES = 100_000
"""Nodes that the aliases of one document may add when expanded (each use of ``*a`` adds the
whole of what ``&a`` holds, with the aliases in it expanded)."""
MAX_NODES = 50_000
"""Nodes (scalars, sequences, mappings) one document may hold as written; the largest shipped
YAML file (netspecs/blocks/spade.yaml) has 1,144. A file of hundreds of thousands of tiny nodes is refused at the node
that crosses the limit instead of being built."""

LIBYAML = getattr(yaml, "__with_libyaml__", False)
"""Whether PyYAML was built with libyaml: then its C scanner and parser are used."""


class _Bounds:
    """Mixed into a safe loader: its composer counts, for every node, how many nodes and how
    many levels it stands for with its aliases expanded, and refuses too deep a document, too
    many nodes or aliases that expand to too much, at the line where the limit is crossed (one
    pass over the literal nodes: an alias costs one step however much it stands for)."""

    def _start(self, file: str | None) -> None:
        self._file = file
        self._depth = 0
        self._nodes = 0
        self._size: dict[int, int] = {}  # id(node) -> nodes, aliases expanded
        self._height: dict[int, int] = {}  # id(node) -> levels, aliases expanded
        self._alias_nodes = 0

    def _refuse(self, message: str, mark: yaml.Mark, hint: str) -> SpecError:
        return SpecError(message, file=self._file, line=mark.line + 1, hint=hint)

    def construct_bounded_int(self, node: yaml.ScalarNode) -> int:
        digits = sum(ch.isalnum() for ch in str(node.value))
        value = None
        if digits <= 80:  # 2^64 in binary is 65 digits; a sexagesimal 1:2:3 has fewer
            value = yaml.SafeLoader.construct_yaml_int(self, node)
        if value is None or abs(value) >= MAX_INT:
            shown = node.value if len(node.value) <= 24 else f"{node.value[:12]}..."
            raise self._refuse(f"the integer {shown} ({digits} digits) is too large",
                               node.start_mark, "numbers in a netspec fit in 64 bits")
        return value

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # PyYAML's constructors fail on a bad value under an explicit tag ('!!int abc': a
        # ValueError, '!!timestamp x': AttributeError, '!!bool maybe': KeyError, '!!float ""':
        # IndexError): one line naming the tag and the line instead
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError,
                OverflowError) as exc:
            tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
            value = node.value if isinstance(node, yaml.ScalarNode) else None
            shown = "" if value is None else f" {value[:40]!r}" + ("..." * (len(value) > 40))
            raise self._refuse(f"the value{shown} cannot be read as YAML tag '{tag}' "
                               f"({type(exc).__name__})", node.start_mark,
                               "write a value of that type, or drop the tag") from None

    def fetch_flow_collection_start(self, token_class: type) -> None:
        # PyYAML's scanner (libyaml's stops at 1,000 levels by itself) looks up to 1024
        # characters ahead for a key after every '[' / '{', which costs time quadratic in the
        # nesting: refuse a too deep flow collection as it opens
        if self.flow_level >= MAX_DEPTH:
            raise self._refuse(f"the YAML nests more than {MAX_DEPTH} levels deep",
                               self.get_mark(), "a netspec needs only a few levels of nesting")
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if self._depth >= MAX_DEPTH:
            raise self._refuse(f"the YAML nests more than {MAX_DEPTH} levels deep",
                               event.start_mark, "a netspec needs only a few levels of nesting")
        if not isinstance(event, yaml.AliasEvent):
            self._nodes += 1
            if self._nodes > MAX_NODES:
                raise self._refuse(f"the YAML holds more than {MAX_NODES:,} nodes",
                                   event.start_mark,
                                   "a netspec or recipe holds a few thousand values at most")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        key = id(node)
        if isinstance(event, yaml.AliasEvent):
            if key not in self._size:
                raise self._refuse(f"alias '*{event.anchor}' refers to the node that holds it",
                                   event.start_mark, "a netspec cannot hold itself")
            self._alias_nodes += self._size[key]
            if self._alias_nodes > MAX_ALIAS_NODES:
                raise self._refuse(
                    f"aliases expand to more than {MAX_ALIAS_NODES:,} YAML nodes "
                    f"(at '*{event.anchor}')", event.start_mark,
                    "write the values out, or use fewer aliases")
        else:
            if isinstance(node, yaml.MappingNode):
                kids = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                kids = node.value
            else:
                kids = []
            self._size[key] = 1 + sum(self._size[id(k)] for k in kids)
            self._height[key] = 1 + max((self._height[id(k)] for k in kids), default=0)
        if self._depth + self._height[key] > MAX_DEPTH:
            raise self._refuse(f"the YAML nests more than {MAX_DEPTH} levels deep (with "
                               f"'*{event.anchor}' expanded)" if isinstance(event, yaml.AliasEvent)
                               else f"the YAML nests more than {MAX_DEPTH} levels deep",
                               event.start_mark, "a netspec needs only a few levels of nesting")
        return node


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], seen: set[int],
          file: str | None) -> None:
    """Record the line of every key/item; refuse duplicate keys. An aliased node is walked once
    (a "billion laughs" file would otherwise take exponential time)."""
    lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key, value in node.value:
            k = str(key.value)
            if isinstance(key, yaml.ScalarNode) and k != "<<":
                if k in keys:
                    raise SpecError(f"key '{k}' is given twice", file=file,
                                    line=key.start_mark.line + 1, hint="remove one of them")
                keys.add(k)
            kpath = path + (k,)
            lines[kpath] = key.start_mark.line + 1
            _walk(value, kpath, lines, seen, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            ipath = path + (i,)
            lines[ipath] = item.start_mark.line + 1
            _walk(item, ipath, lines, seen, file)


class _PyBoundedLoader(_Bounds, yaml.SafeLoader):
    """PyYAML's pure-Python safe loader, bounded."""

    def __init__(self, text: str, file: str | None) -> None:
        yaml.SafeLoader.__init__(self, text)
        self._start(file)


_BoundedLoader: type = _PyBoundedLoader
"""The loader :func:`load_yaml` uses: :class:`_CBoundedLoader` where libyaml is there."""

if LIBYAML:
    from yaml.cyaml import CParser

    class _CBoundedLoader(_Bounds, yaml.composer.Composer, CParser,
                          yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        """libyaml's scanner and parser (C, about 20 times faster) under PyYAML's composer
        (Python, so that :meth:`_Bounds.compose_node` sees every node) and safe constructor,
        bounded."""

        def __init__(self, text: str, file: str | None) -> None:
            CParser.__init__(self, text)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._start(file)

    _BoundedLoader = _CBoundedLoader

for _cls in {_PyBoundedLoader, _BoundedLoader}:
    _cls.add_constructor("tag:yaml.org,2002:int", _Bounds.construct_bounded_int)


def load_yaml(text: str, file: str | None = None) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML text safely.

    Args:
        text: the document.
        file: the file name, used in error messages only.

    Returns:
        ``(data, lines)``: the plain Python data (dicts, lists, scalars) and the line map.

    Raises:
        SpecError: the text is not YAML, holds several documents, is empty, uses a tag that
            would build a Python object, nests more than :data:`MAX_DEPTH` levels, holds more
            than :data:`MAX_NODES` nodes, or has aliases that expand to more than
            :data:`MAX_ALIAS_NODES` nodes or hold themselves.
    """
    loader = None
    lines: dict[Path_, int] = {}
    try:
        bad = yaml.reader.Reader.NON_PRINTABLE.search(text)
        if bad:  # what PyYAML's reader refuses (libyaml's accepts a few more characters)
            raise yaml.reader.ReaderError(file, bad.start(), ord(bad.group()), "unicode",
                                          "special characters are not allowed")
        loader = _BoundedLoader(text, file)
        node = loader.get_single_node()
        if node is None:
            raise SpecError("the file is empty", file=file, line=1,
                            hint="a netspec needs at least 'name', 'input' and 'layers'")
        # before construction: SafeConstructor writes the pairs of a merge key ('<<: *a')
        # into the mapping node, which would read as keys given twice
        _walk(node, (), lines, set(), file)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        if "exceeded maximum nesting depth" in problem:  # libyaml's own limit (1,000)
            problem = f"the YAML nests more than {MAX_DEPTH} levels deep"
            hint = "a netspec needs only a few levels of nesting"
        elif "could not determine a constructor" in str(exc):
            m = re.search(r"'([^']+)'", problem)
            tag = (m.group(1) if m else "?").replace("tag:yaml.org,2002:", "!!")
            problem = f"YAML tag '{tag}' is not allowed"
            hint = "tags that build Python objects are never loaded; write plain YAML"
        else:
            hint = "fix the YAML syntax"
            if LIBYAML and isinstance(exc, (yaml.scanner.ScannerError, yaml.parser.ParserError)):
                problem = _python_problem(text, mark) or problem
        raise SpecError(problem, file=file, line=line, hint=hint) from None
    except yaml.reader.ReaderError as exc:
        raise SpecError(f"unacceptable character #x{exc.character:04x} in the file", file=file,
                        line=text.count("\n", 0, exc.position) + 1,
                        hint="netspecs are plain UTF-8 text without control characters") from None
    except yaml.YAMLError as exc:  # pragma: no cover - every loader error is marked in practice
        raise SpecError(f"invalid YAML: {exc}", file=file) from None
    except RecursionError:
        raise SpecError("the YAML nests too deeply", file=file,
                        hint="a netspec needs only a few levels of nesting") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


_MESSAGE_PREFIX = 64 << 10
"""Text up to a syntax error that PyYAML's parser reads again for its message (see
:func:`_python_problem`): about a second at most."""


def _python_problem(text: str, mark: yaml.Mark | None) -> str | None:
    """PyYAML's wording of the syntax error libyaml found at ``mark`` (it names the character,
    libyaml does not: "found character '\\t' that cannot start any token"), from the text up to
    the end of that line when it is at most :data:`_MESSAGE_PREFIX` characters; ``None`` when
    PyYAML finds no error on that line there."""
    if mark is None:
        return None
    end = text.find("\n", mark.index)
    prefix = text if end < 0 else text[:end + 1]
    if len(prefix) > _MESSAGE_PREFIX:
        return None
    try:
        for _ in yaml.parse(prefix, Loader=yaml.SafeLoader):
            pass
    except yaml.MarkedYAMLError as exc:
        at = exc.problem_mark or exc.context_mark
        if at is not None and at.line == mark.line:
            return exc.problem or exc.context
    except yaml.YAMLError:
        pass
    return None


def read_yaml(path: str | Path) -> tuple[Any, dict[Path_, int]]:
    """Read and safely parse a YAML file; see :func:`load_yaml`.

    Raises:
        SpecError: the file is missing, unreadable, larger than :data:`MAX_FILE_BYTES`, not
            UTF-8, or not valid YAML.
    """
    from spdnn.io import check_regular_input

    p = Path(path)
    if not p.is_dir():  # a directory keeps its own message below
        check_regular_input(p, "YAML file", SpecError)
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise SpecError(f"the file is larger than {MAX_FILE_BYTES >> 20} MiB", file=str(path),
                            hint="a netspec is a few kilobytes of YAML text")
        text = raw.decode("utf-8")
        if "\r" in text:  # what read_text (universal newlines) did
            text = text.replace("\r\n", "\n").replace("\r", "\n")
    except FileNotFoundError:
        raise SpecError("file not found", file=str(path), hint="check the path") from None
    except IsADirectoryError:
        raise SpecError("is a directory, not a YAML file", file=str(path)) from None
    except UnicodeDecodeError:
        raise SpecError("not a UTF-8 text file", file=str(path),
                        hint="netspecs are YAML text files") from None
    except OSError as exc:
        raise SpecError(f"cannot read the file: {exc.strerror or exc}", file=str(path)) from None
    except ValueError:  # a NUL byte in the path
        raise SpecError("the path holds a NUL character", file=repr(str(path)),
                        hint="check the path") from None
    return load_yaml(text, file=str(path))


def line_of(lines: dict[Path_, int], loc: Path_) -> int | None:
    """The line of the longest prefix of ``loc`` that the line map knows."""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def dump_yaml(data: Any) -> str:
    """Dump plain data as block-style YAML, keys in insertion order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def dump_flow(data: Any) -> str:
    """One mapping as a single flow-style YAML line: ``{name: c1, op: Conv2d, ...}``."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=True, width=1 << 16).strip()

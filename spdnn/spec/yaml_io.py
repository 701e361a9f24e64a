"""Safe YAML loading that remembers where every value came from.

Only ``yaml.SafeLoader`` is used, so tags such as ``!!python/object`` are rejected instead of
building Python objects. Alongside the data we return a map from the path of every mapping key
and sequence item (``("layers", 3, "kernel_size")``) to its 1-based line, so that validation
errors can point at the line the user has to edit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from spdnn.errors import SpecError

Path_ = tuple[str | int, ...]


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


def load_yaml(text: str, file: str | None = None) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML text safely.

    Args:
        text: the document.
        file: the file name, used in error messages only.

    Returns:
        ``(data, lines)``: the plain Python data (dicts, lists, scalars) and the line map.

    Raises:
        SpecError: the text is not YAML, holds several documents, is empty, or uses a tag that
            would build a Python object.
    """
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            raise SpecError("the file is empty", file=file, line=1,
                            hint="a netspec needs at least 'name', 'input' and 'layers'")
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        if "could not determine a constructor" in str(exc):
            m = re.search(r"'([^']+)'", problem)
            tag = (m.group(1) if m else "?").replace("tag:yaml.org,2002:", "!!")
            problem = f"YAML tag '{tag}' is not allowed"
            hint = "tags that build Python objects are never loaded; write plain YAML"
        else:
            hint = "fix the YAML syntax"
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
    lines: dict[Path_, int] = {}
    _walk(node, (), lines, set(), file)
    return data, lines


def read_yaml(path: str | Path) -> tuple[Any, dict[Path_, int]]:
    """Read and safely parse a YAML file; see :func:`load_yaml`.

    Raises:
        SpecError: the file is missing, unreadable, not UTF-8, or not valid YAML.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", file=str(path), hint="check the path") from None
    except IsADirectoryError:
        raise SpecError("is a directory, not a YAML file", file=str(path)) from None
    except UnicodeDecodeError:
        raise SpecError("not a UTF-8 text file", file=str(path),
                        hint="netspecs are YAML text files") from None
    except OSError as exc:
        raise SpecError(f"cannot read the file: {exc.strerror}", file=str(path)) from None
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

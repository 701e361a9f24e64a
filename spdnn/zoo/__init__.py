"""The zoo: the netspecs, block libraries and training recipes shipped with spdnn.

The repository keeps them at its top level (``netspecs/``, ``netspecs/blocks/``,
``recipes/``); the wheel ships the same files as package data of this package, read with
:mod:`importlib.resources`. In the repository ``spdnn/zoo/netspecs`` and ``spdnn/zoo/recipes``
are symbolic links to the top-level folders (building the wheel copies the files they hold),
so the relative paths inside the files (``../netspecs/...`` in a recipe, ``../blocks/...`` in a
netspec's ``imports:``) hold in the repository, in the installed copy and in a copy made with
:func:`copy`, which keeps the layout.

A *zoo name* is a relative path whose first part is ``netspecs`` or ``recipes``
(``netspecs/iris/appendix_a/*.yaml``, ``recipes/iris_a_merged.yaml``). Where no such local path
exists, :func:`expand` and :func:`locate` find it in the zoo, so the README's commands run from
any folder; a local file or folder of that name always wins.
"""

from __future__ import annotations

import glob
import importlib.resources
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from spdnn.errors import SpdnnError

TOPS = ("netspecs", "recipes")
"""The zoo's two folders; a zoo name starts with one of them."""

_SUFFIXES = (".yaml", ".yml")
_ABBREVIATIONS = ("al", "e.g", "i.e", "sec", "fig", "figs", "app", "eq", "eqs", "cf", "vs",
                  "ch", "no", "approx", "resp", "tab")


def root() -> Path:
    """The folder holding the zoo's ``netspecs/`` and ``recipes/`` (the installed package data,
    or this package's folder in the repository, whose links lead to the top-level folders).

    Raises:
        SpdnnError: the installation holds no zoo (a wheel built without its package data).
    """
    where = importlib.resources.files(__name__)
    base = Path(str(where))
    if not all((base / top).is_dir() for top in TOPS):
        raise SpdnnError(f"spdnn's zoo (netspecs/ and recipes/) is missing from {base}",
                         hint="reinstall spdnn from its wheel or repository: pip install spdnn")
    return base


def zoo_name(path: str | Path) -> PurePosixPath | None:
    """``path`` as a zoo name (``./`` dropped, ``/`` separators), or ``None`` when it is not
    one: absolute, empty, holding ``..``, or not starting with ``netspecs``/``recipes``."""
    text = str(path).replace("\\", "/")
    p = PurePosixPath(text)
    if p.is_absolute() or not p.parts or ".." in p.parts:
        return None
    return p if p.parts[0] in TOPS else None


def _magic(text: str) -> bool:
    return glob.has_magic(text)


def _inside(path: Path, base: Path) -> bool:
    try:
        path.resolve().relative_to(base.resolve())
    except ValueError:
        return False
    return True


def lookup(path: str | Path) -> list[Path]:
    """The zoo's files or folders of a zoo name, sorted; ``[]`` when ``path`` is no zoo name or
    names nothing in the zoo (or the zoo is missing). ``path`` may be a glob pattern
    (``netspecs/iris/appendix_a/*.yaml``; ``**`` matches folders at any depth)."""
    name = zoo_name(path)
    if name is None:
        return []
    try:
        base = root()
    except SpdnnError:
        return []
    full = base.joinpath(*name.parts)
    if _magic(str(name)):
        return sorted(Path(h) for h in glob.glob(str(full), recursive=True))
    return [full] if full.exists() else []


def expand(path: str | Path) -> list[Path] | None:
    """The zoo files or folders a zoo name stands for when it names nothing here (relative to
    the current folder): :func:`lookup`, for a ``path`` that does not exist and, a glob pattern
    (as a shell passes one that matched nothing), matches nothing here.

    Returns:
        ``None`` when ``path`` is not a zoo name, exists here (or matches here), or matches
        nothing in the zoo; else the matching paths under :func:`root`.
    """
    text = str(path)
    if zoo_name(path) is None or Path(text).exists() or (
            _magic(text) and glob.glob(text, recursive=True)):
        return None
    return lookup(path) or None


def locate(path: str | Path) -> Path:
    """``path``, or the zoo's file or folder of that name when it names nothing here (see
    :func:`expand`; a pattern must match exactly one)."""
    hits = expand(path)
    return hits[0] if hits and len(hits) == 1 else Path(path)


def files(top: str | None = None) -> list[Path]:
    """Every YAML file of the zoo (or of one of its :data:`TOPS`), sorted by name."""
    base = root()
    out = []
    for t in (top,) if top else TOPS:
        folder = base / t
        out += [p for p in folder.rglob("*") if p.suffix in _SUFFIXES and p.is_file()]
    return sorted(out, key=lambda p: p.relative_to(base).as_posix())


# --------------------------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One file of the zoo: its zoo ``name`` (``netspecs/iris/appendix_d/published.yaml``), its
    ``kind`` (``netspec``, ``block library``, ``recipe`` or ``base recipe``) and a one-line
    ``description`` (the file's ``description:`` field, else the first sentence of its header
    comment)."""

    name: str
    kind: str
    description: str


def _kind(name: PurePosixPath) -> str:
    if name.parts[0] == "netspecs":
        return "block library" if "blocks" in name.parts[1:-1] else "netspec"
    return "base recipe" if "base" in name.parts[1:-1] else "recipe"


def first_sentence(text: str, limit: int = 120) -> str:
    """The first sentence of ``text`` (whitespace joined; a full stop inside parentheses or
    after an abbreviation such as ``et al.``, ``sec.``, ``e.g.`` does not end it), cut to
    ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    depth = 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch == "." and depth == 0 and (i + 1 == len(text) or text[i + 1] == " "):
            word = text[:i].rsplit(" ", 1)[-1].lstrip("(").lower()
            if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                continue
            text = text[:i]
            break
    text = text.rstrip(" .:;,")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def describe(path: Path) -> str:
    """One line about a zoo file: its top-level ``description:``, else the first sentence of the
    comment lines it starts with, else ``""``."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    comment = []
    header = True
    for line in text.splitlines():
        if header and line.startswith("#"):
            comment.append(line.lstrip("#").strip())
            continue
        header = False
        if line.startswith("description:"):
            try:
                value = yaml.safe_load(line)["description"]
            except (yaml.YAMLError, TypeError, KeyError):
                break
            if isinstance(value, str) and value.strip():
                return first_sentence(value)
            break
    return first_sentence(" ".join(comment))


def entries() -> list[Entry]:
    """Every file of the zoo with its kind and description, netspecs first, sorted by name."""
    base = root()
    out = []
    for p in files():
        name = PurePosixPath(p.relative_to(base).as_posix())
        out.append(Entry(str(name), _kind(name), describe(p)))
    return out


# --------------------------------------------------------------------------------------------
# copying out
# --------------------------------------------------------------------------------------------
def references(path: Path) -> list[Path]:
    """The zoo files ``path`` (a zoo netspec or recipe) refers to: a netspec's ``imports:``; a
    recipe's ``base:`` and its models' ``netspec:``/``merge:`` paths (patterns expanded).
    Relative to the file, as spdnn reads them; references outside the zoo are left out."""
    from spdnn.spec.yaml_io import read_yaml

    data, _ = read_yaml(path)
    if not isinstance(data, dict):
        return []
    refs: list[str] = []
    imports = data.get("imports")
    refs += [imports] if isinstance(imports, str) else [i for i in imports or []
                                                        if isinstance(i, str)]
    if isinstance(data.get("base"), str):
        refs.append(data["base"])
    models = data.get("models") if isinstance(data.get("models"), dict) else {}
    for m in [data.get("model"), *models.values()]:
        if not isinstance(m, dict):
            continue
        if isinstance(m.get("netspec"), str):
            refs.append(m["netspec"])
        refs += [x for x in (m.get("merge") or []) if isinstance(x, str)]
    base = root()
    out = []
    for ref in refs:
        full = path.parent / ref
        hits = glob.glob(str(full), recursive=True) if _magic(ref) else [str(full)]
        out += [Path(h) for h in hits if Path(h).is_file() and _in_zoo(Path(h), base)]
    return out


def _in_zoo(path: Path, base: Path) -> bool:
    return any(_inside(path, base / top) for top in TOPS)


def _relative(path: Path, base: Path) -> PurePosixPath:
    """A zoo file's zoo name, also for a path reached through ``..`` from another zoo file."""
    real = path.resolve()
    for top in TOPS:
        try:
            return PurePosixPath(top, real.relative_to((base / top).resolve()).as_posix())
        except ValueError:
            continue
    raise SpdnnError(f"{path} is not a file of the zoo")  # callers pass zoo files only


def select(names: list[str]) -> list[Path]:
    """The zoo files named: ``all``, a zoo name of a file (``.yaml`` may be left out) or of a
    folder (every YAML file under it), or a glob pattern; sorted, each once.

    Raises:
        SpdnnError: a name that is no zoo name or matches nothing in the zoo (``field='NAME'``).
    """
    base = root()
    chosen: dict[str, Path] = {}
    for raw in names:
        if raw == "all":
            hits = files()
        else:
            name = zoo_name(raw)
            if name is None:
                raise SpdnnError(f"'{raw}' is not a name in the zoo", field="NAME",
                                 hint="names start with netspecs/ or recipes/, as spdnn zoo "
                                      "lists them; or give all")
            full = base.joinpath(*name.parts)
            if _magic(str(name)):
                found = [Path(h) for h in glob.glob(str(full), recursive=True)]
            elif full.is_dir():
                found = [full]
            elif full.is_file():
                found = [full]
            else:
                found = [full.with_name(full.name + s) for s in _SUFFIXES
                         if full.with_name(full.name + s).is_file()]
            hits = []
            for f in found:
                hits += ([p for p in f.rglob("*") if p.suffix in _SUFFIXES and p.is_file()]
                         if f.is_dir() else [f] if f.suffix in _SUFFIXES else [])
            if not hits:
                raise SpdnnError(f"'{raw}' matches nothing in the zoo", field="NAME",
                                 hint="spdnn zoo lists the names, e.g. recipes/iris_a_merged.yaml")
        for h in hits:
            chosen.setdefault(str(_relative(h, base)), h)
    return [chosen[k] for k in sorted(chosen)]


def with_references(paths: list[Path]) -> list[Path]:
    """``paths`` and every zoo file they refer to, directly or through others (see
    :func:`references`), sorted by zoo name, each once."""
    base = root()
    todo = list(paths)
    seen: dict[str, Path] = {}
    while todo:
        p = todo.pop()
        key = str(_relative(p, base))
        if key in seen:
            continue
        seen[key] = p
        todo += references(p)
    return [seen[k] for k in sorted(seen)]


@dataclass(frozen=True)
class Copied:
    """One file :func:`copy` handled: its zoo ``name``, where it went (``dest``) and what
    happened (``copied``, ``replaced``, or ``unchanged``: the same bytes were there)."""

    name: str
    dest: Path
    status: str


def copy(names: list[str], dest: str | Path, overwrite: bool = False) -> list[Copied]:
    """Copy zoo files, with every file they refer to, into ``dest``, keeping the zoo's layout
    (``dest/recipes/...``, ``dest/netspecs/...``), so their relative paths still hold and the
    copies train and render as the originals.

    Args:
        names: see :func:`select` (``["all"]`` copies everything).
        dest: the folder to copy into (created when missing).
        overwrite: replace files already in ``dest`` that differ; without it nothing is written
            when one differs.

    Raises:
        SpdnnError: a name matches nothing; ``dest`` is inside the installed zoo or is a file;
            without ``overwrite``, files in ``dest`` differ from the zoo's (naming the first).
    """
    from spdnn.io import write_atomic

    base = root()
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise SpdnnError("the destination is a file", file=str(dest), field="DEST",
                         hint="give a folder (created when missing)")
    if _in_zoo(dest, base) or _inside(dest, base):
        raise SpdnnError("the destination is inside spdnn's zoo", file=str(dest), field="DEST",
                         hint="copy into a folder of your own, e.g. my_zoo/")
    plan = []
    clashes = []
    for src in with_references(select(names)):
        name = _relative(src, base)
        target = dest.joinpath(*name.parts)
        data = src.read_bytes()
        if target.is_file():
            same = target.read_bytes() == data
            status = "unchanged" if same else "replaced"
            if not same and not overwrite:
                clashes.append(target)
        elif target.exists():
            raise SpdnnError("a folder is in the way of a file", file=str(target), field="DEST",
                             hint="copy into another folder")
        else:
            status = "copied"
        plan.append((str(name), target, data, status))
    if clashes:
        raise SpdnnError(f"{len(clashes)} of the {len(plan)} files exist in {dest} with other "
                         f"content (first: {clashes[0]})", field="DEST",
                         hint="pass --overwrite to replace them, or copy into another folder")
    done = []
    for name, target, data, status in plan:
        if status != "unchanged":
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, data, what="zoo file")
        done.append(Copied(name, target, status))
    return done

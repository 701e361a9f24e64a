"""Packaging (issue 18, items 1-3): the zoo of shipped netspecs and recipes, found from any
folder and copied out with its references; the dependency ranges, the extras and the one-line
error that names a missing one; the core commands import none of the extras' packages; and the
built wheel, installed into a fresh virtual environment, runs the demo from an empty folder."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

from spdnn import extras, zoo
from spdnn.cli import main
from spdnn.errors import SpdnnError
from tests.helpers import ROOT

IRIS_A = sorted(p.name for p in (ROOT / "netspecs/iris/appendix_a").glob("*.yaml"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def repo_zoo_names() -> set[str]:
    """The YAML files of the repository's netspecs/ and recipes/, as zoo names."""
    return {p.relative_to(ROOT).as_posix() for top in zoo.TOPS
            for p in (ROOT / top).rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()}


def dist_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


# --------------------------------------------------------------------------------------------
# the zoo
# --------------------------------------------------------------------------------------------
def test_the_zoo_is_the_repository_folders():
    base = zoo.root()
    names = {f.relative_to(base).as_posix() for f in zoo.files()}
    assert names == repo_zoo_names()
    kinds = {e.name: e.kind for e in zoo.entries()}
    assert {n for n, k in kinds.items() if k == "block library"} == {
        n for n in names if n.startswith("netspecs/blocks/")}
    assert kinds["recipes/base/iris.yaml"] == "base recipe"
    assert kinds["recipes/gan/dcgan_digits.yaml"] == "recipe"
    assert kinds["netspecs/squeezenet/squeezenet_1_0.yaml"] == "netspec"
    assert all(e.description for e in zoo.entries())  # every file says what it is


def test_descriptions_are_the_field_or_the_first_sentence_of_the_header(tmp_path: Path):
    f = tmp_path / "a.yaml"
    f.write_text("# ignored when a description field exists\nname: a\n"
                 "description: 'Fire module: squeeze, then expand'\n")
    assert zoo.describe(f) == "Fire module: squeeze, then expand"
    f.write_text("# BEGAN (thesis sec. 3.3, eqs. 3.1-3.2) as in Berthelot et al. 2017. Adam\n"
                 "# betas (0.5, 0.999).\ntask: began\n")
    assert zoo.describe(f) == "BEGAN (thesis sec. 3.3, eqs. 3.1-3.2) as in Berthelot et al. 2017"
    assert zoo.first_sentence("SqueezeNet 1.0 (Iandola et al. 2016. Table 1): 1,248,424 "
                              "parameters. More.") == ("SqueezeNet 1.0 (Iandola et al. 2016. "
                                                       "Table 1): 1,248,424 parameters")
    assert zoo.first_sentence("x" * 200, limit=10) == "x" * 9 + "…"
    assert zoo.describe(tmp_path / "missing.yaml") == ""


def test_zoo_names_resolve_against_the_zoo_only_when_nothing_is_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = zoo.root()
    assert zoo.expand("netspecs/iris/appendix_a/*.yaml") == [
        base / "netspecs/iris/appendix_a" / n for n in IRIS_A]
    assert zoo.expand("./recipes/iris_a_merged.yaml") == [base / "recipes/iris_a_merged.yaml"]
    assert zoo.locate("recipes/iris_a_merged.yaml") == base / "recipes/iris_a_merged.yaml"
    assert zoo.expand("netspecs/**/squeezenet_1_*.yaml") == [
        base / "netspecs/squeezenet/squeezenet_1_0.yaml",
        base / "netspecs/squeezenet/squeezenet_1_1.yaml"]
    for not_zoo in ("foo/x.yaml", "/netspecs/x.yaml", "netspecs/../recipes/x.yaml",
                    "netspecs/nothing_*.yaml", "recipes/nothing.yaml", "netspecsx/a.yaml"):
        assert zoo.expand(not_zoo) is None, not_zoo
        assert zoo.locate(not_zoo) == Path(not_zoo)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes/iris_a_merged.yaml").write_text("mine")  # a local file wins
    assert zoo.expand("recipes/iris_a_merged.yaml") is None
    assert zoo.expand("recipes/*.yaml") is None  # the pattern matches here
    assert zoo.locate("recipes/iris_a_merged.yaml") == Path("recipes/iris_a_merged.yaml")


def test_copy_brings_the_references_and_keeps_the_layout(tmp_path: Path):
    from spdnn import spec as S
    from spdnn.train import load_recipe
    from spdnn.train.recipe import netspecs_of

    dest = tmp_path / "my_zoo"
    done = zoo.copy(["recipes/iris_a_merged"], dest)  # .yaml may be left out
    assert [(d.name, d.status) for d in done] == [
        (f"netspecs/iris/appendix_a/{n}", "copied") for n in IRIS_A] + [
        ("recipes/base/iris.yaml", "copied"), ("recipes/iris_a_merged.yaml", "copied")]
    recipe = load_recipe(dest / "recipes/iris_a_merged.yaml")
    assert recipe.resolve(recipe.models["net"].merge[0]) == [
        (dest / "recipes/../netspecs/iris/appendix_a" / n) for n in IRIS_A]
    assert netspecs_of(recipe)["net"].name == "iris_a_merged"
    # a netspec brings its block library; the copy loads on its own
    zoo.copy(["netspecs/squeezenet/squeezenet_1_1.yaml"], dest)
    assert (dest / "netspecs/blocks/squeezenet.yaml").is_file()
    assert S.load(dest / "netspecs/squeezenet/squeezenet_1_1.yaml").name == "squeezenet_1_1"
    assert {d.status for d in zoo.copy(["recipes/iris_a_merged.yaml"], dest)} == {"unchanged"}


def test_copy_never_overwrites_without_overwrite(tmp_path: Path):
    dest = tmp_path / "z"
    zoo.copy(["recipes/iris_a_merged.yaml"], dest)
    (dest / "recipes/base/iris.yaml").write_text("steps: 1\n")
    (dest / "recipes/iris_a_merged.yaml").unlink()
    with pytest.raises(SpdnnError) as exc:
        zoo.copy(["recipes/iris_a_merged.yaml"], dest)
    assert exc.value.one_line() == (
        f"DEST: 1 of the 5 files exist in {dest} with other content (first: "
        f"{dest / 'recipes/base/iris.yaml'}) (pass --overwrite to replace them, or copy into "
        "another folder)")
    assert not (dest / "recipes/iris_a_merged.yaml").exists()  # nothing was written
    statuses = {d.name: d.status for d in zoo.copy(["recipes/iris_a_merged.yaml"], dest,
                                                    overwrite=True)}
    assert statuses["recipes/base/iris.yaml"] == "replaced"
    assert statuses["recipes/iris_a_merged.yaml"] == "copied"
    assert (dest / "recipes/base/iris.yaml").read_bytes() == (
        zoo.root() / "recipes/base/iris.yaml").read_bytes()


def test_copy_refuses_bad_names_and_destinations(tmp_path: Path):
    with pytest.raises(SpdnnError, match="'foo/x.yaml' is not a name in the zoo"):
        zoo.copy(["foo/x.yaml"], tmp_path)
    with pytest.raises(SpdnnError, match="'recipes/nothing' matches nothing in the zoo"):
        zoo.copy(["recipes/nothing"], tmp_path)
    with pytest.raises(SpdnnError, match="inside spdnn's zoo"):
        zoo.copy(["recipes/iris_a_merged.yaml"], zoo.root() / "netspecs" / "x")
    (tmp_path / "f").write_text("")
    with pytest.raises(SpdnnError, match="the destination is a file"):
        zoo.copy(["all"], tmp_path / "f")


def test_user_files_may_name_the_shipped_netspecs_and_blocks(tmp_path, monkeypatch):
    from spdnn import spec as S
    from spdnn.train import load_recipe
    from spdnn.train.recipe import netspecs_of

    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(
        "name: mine\ntask: iris\nmodel: {netspec: netspecs/iris/appendix_d/published.yaml}\n"
        "steps: 1\n")
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.resolve("netspecs/iris/appendix_d/published.yaml") == [
        zoo.root() / "netspecs/iris/appendix_d/published.yaml"]
    assert netspecs_of(recipe)["net"].name == S.load(
        ROOT / "netspecs/iris/appendix_d/published.yaml").name
    (tmp_path / "n.yaml").write_text(
        "name: tiny\nimports: [netspecs/blocks/squeezenet.yaml]\n"
        "input: {name: x, channels: 3, height: 8, width: 8}\n"
        "layers:\n  - {name: f, op: Fire, squeeze: 2, expand1x1: 4, expand3x3: 4}\n"
        "output: {name: y, from: f}\n")
    assert S.load(tmp_path / "n.yaml").layers[0].op == "Fire"
    # the Python API takes zoo names too
    assert load_recipe("recipes/iris_a_merged.yaml").name == "iris_a_merged"


def layer_names(path: str | Path) -> list[str]:
    from spdnn import spec as S

    return [layer.name for layer in S.load(path).layers]


def test_cli_takes_zoo_names_from_any_folder(tmp_path, monkeypatch, capsys):
    from spdnn import spec as S
    from spdnn.graph import merge_files
    from spdnn.shapes import infer

    monkeypatch.chdir(tmp_path)
    assert main(["merge", "netspecs/iris/appendix_a/*.yaml", "-o", "m.yaml"]) == 0
    err = capsys.readouterr().err
    assert err == ("note: netspecs/iris/appendix_a/*.yaml is not here; using the 3 files shipped "
                   f"with spdnn ({zoo.root() / 'netspecs/iris/appendix_a'})\n")
    parents = sorted((ROOT / "netspecs/iris/appendix_a").glob("*.yaml"))
    assert layer_names("m.yaml") == [la.name for la in merge_files(parents).spec.layers]
    assert main(["inspect", "netspecs/iris/appendix_d/published.yaml", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["file"] == str(zoo.root() / "netspecs/iris/appendix_d/published.yaml")
    assert table["total"]["params"] == infer(S.load(
        ROOT / "netspecs/iris/appendix_d/published.yaml")).params
    # a quoted pattern of local files is expanded like a shell would, with no note
    (tmp_path / "p").mkdir()
    for n in IRIS_A:
        shutil.copy(ROOT / "netspecs/iris/appendix_a" / n, tmp_path / "p" / n)
    assert main(["merge", "p/*.yaml", "-o", "m2.yaml"]) == 0
    assert capsys.readouterr().err == ""
    assert layer_names("m2.yaml") == layer_names("m.yaml")
    # outputs are never redirected into the zoo, even when named like a zoo file
    assert main(["compile", "netspecs/iris/appendix_d/published.yaml", "-o",
                 "netspecs/iris/appendix_d/published.py"]) == 0
    assert (tmp_path / "netspecs/iris/appendix_d/published.py").is_file()
    assert not (zoo.root() / "netspecs/iris/appendix_d/published.py").exists()


def test_zoo_command_lists_and_copies(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["zoo", "list", "squeezenet", "fire"]) == 0
    text = capsys.readouterr().out
    assert "netspecs/blocks/squeezenet.yaml" in text and "SqueezeNet Fire module" in text
    assert "recipes/" not in text.split("Give these names")[0]
    assert main(["zoo", "copy", "all", "everything"]) == 0
    assert f"{len(repo_zoo_names())} files copied in everything." in capsys.readouterr().out
    copied = {p.relative_to(tmp_path / "everything").as_posix()
              for p in (tmp_path / "everything").rglob("*.yaml")}
    assert copied == repo_zoo_names()
    assert main(["zoo", "copy", "recipes/iris_a_merged.yaml"]) == 2
    assert "zoo copy needs what to copy and where" in capsys.readouterr().err
    assert main(["zoo", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(zoo.root())
    assert main(["zoo", "list", "no-such-word-anywhere"]) == 2


# --------------------------------------------------------------------------------------------
# dependencies and extras
# --------------------------------------------------------------------------------------------
CORE = {"torch", "networkx", "pydantic", "pyyaml", "numpy", "graphviz", "typer", "rich"}
HEAVY = ("matplotlib", "skimage", "sklearn", "scipy", "onnx", "onnxruntime", "onnxscript",
         "mlxtend", "torchmetrics", "tensorboard")


def test_core_dependencies_are_ranges_and_the_pin_is_a_constraint():
    deps = PYPROJECT["project"]["dependencies"]
    assert {dist_name(d) for d in deps} == CORE
    torch = next(d for d in deps if dist_name(d) == "torch")
    assert "==" not in torch and ">=" in torch  # a user's CUDA torch is kept
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert pins == ["torch==2.13.0"]
    makefile = (ROOT / "Makefile").read_text()
    assert '-c constraints.txt -e ".[all,dev]"' in makefile
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_extras_match_pyproject():
    optional = PYPROJECT["project"]["optional-dependencies"]
    for name, modules in extras.EXTRAS.items():
        assert {dist_name(d) for d in optional[name]} == set(modules.values()), name
    assert optional["all"] == ["spdnn[export,train,tensorboard]"]
    assert set(extras.EXTRAS) == set(optional) - {"all", "dev"}
    assert not {dist_name(d) for d in optional["all"]} & CORE


def _hide(monkeypatch, *hidden: str) -> None:
    real = extras.importlib.util.find_spec
    monkeypatch.setattr(extras.importlib.util, "find_spec",
                        lambda name, *a: None if name in hidden else real(name, *a))


def test_require_names_the_extra_and_the_missing_packages(monkeypatch):
    extras.require("export", "spdnn export")  # installed here: nothing raised
    _hide(monkeypatch, "onnxscript")
    assert extras.missing("export") == ["onnxscript"]
    with pytest.raises(SpdnnError) as exc:
        extras.require("export", "spdnn export")
    assert exc.value.one_line() == ("spdnn export needs the 'export' extra: pip install "
                                    "'spdnn[export]' (onnxscript is not installed; pip install "
                                    "onnxscript adds just that)")
    _hide(monkeypatch, "matplotlib", "skimage")
    assert extras.missing("train") == ["matplotlib", "scikit-image"]
    with pytest.raises(SpdnnError, match=r"\(matplotlib, scikit-image are not installed; pip "
                                         r"install matplotlib scikit-image adds just those\)$"):
        extras.require("train", "spdnn train")


@pytest.mark.parametrize("args, extra", [
    (["export", "netspecs/iris/appendix_d/published.yaml", "-o", "{tmp}/n.onnx"], "export"),
    (["bench", "netspecs/iris/appendix_d/published.yaml", "-o", ""], "export"),
    (["train", "recipes/iris_a_merged.yaml", "-o", "{tmp}/run"], "train"),
    (["evaluate", "{tmp}/run"], "train"),
    (["predict", "{tmp}/run"], "train"),
    (["compare", "recipes/iris_a_merged.yaml", "-o", "{tmp}/cmp"], "train"),
    (["demo", "-o", "{tmp}/demo"], "train"),
    (["train", "recipes/iris_a_merged.yaml", "--tensorboard", "-o", "{tmp}/run"], "tensorboard"),
], ids=["export", "bench", "train", "evaluate", "predict", "compare", "demo", "tensorboard"])
def test_a_command_without_its_extra_fails_in_one_line(args, extra, tmp_path, monkeypatch,
                                                       capsys):
    monkeypatch.chdir(ROOT)
    _hide(monkeypatch, *extras.EXTRAS[extra])
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    what = f"spdnn {args[0]}" + (" --tensorboard" if extra == "tensorboard" else "")
    assert err.startswith(f"error: {what} needs the '{extra}' extra: pip install "
                          f"'spdnn[{extra}]' ("), err
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # it stopped before writing anything


def test_the_python_entry_points_check_their_extra(monkeypatch, tmp_path):
    from spdnn.export import export_onnx
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe

    _hide(monkeypatch, "onnxruntime")
    with pytest.raises(SpdnnError, match=r"^spdnn.export.export_onnx needs the 'export' extra"):
        export_onnx(ROOT / "netspecs/iris/appendix_d/published.yaml", tmp_path / "n.onnx")
    _hide(monkeypatch, "mlxtend")
    recipe = load_recipe(ROOT / "recipes/iris_a_merged.yaml")
    with pytest.raises(SpdnnError, match=r"^spdnn's trainer needs the 'train' extra"):
        trainer_for(recipe, outdir=tmp_path / "run")
    assert not (tmp_path / "n.onnx").exists() and not (tmp_path / "run").exists()


PROBE = textwrap.dedent("""
    import json, sys
    from spdnn.cli import main
    HEAVY = {heavy!r}
    report = []
    for args in {commands!r}:
        code = main(args)
        report.append([args[0], code, sorted(m for m in HEAVY if m in sys.modules)])
    from spdnn.cli.demo import real_gray_image  # the control: this one needs scikit-image
    real_gray_image(8, 8)
    report.append(["control", 0, sorted(m for m in HEAVY if m in sys.modules)])
    print(json.dumps(report))
""")


def test_core_commands_import_none_of_the_extras(tmp_path: Path):
    iris = [str(ROOT / "netspecs/iris/appendix_a" / n) for n in IRIS_A]
    commands = [
        ["validate", "-q", str(ROOT / "netspecs/squeezenet"), *iris],
        ["inspect", iris[0]],
        ["merge", *iris, "-o", str(tmp_path / "m.yaml")],
        ["render", *iris, "-o", str(tmp_path / "c.dot")],
        ["render", str(ROOT / "netspecs/squeezenet/squeezenet_1_1.yaml"), "-o",
         str(tmp_path / "s.dot"), "--expand-blocks"],
        ["compile", iris[0], "-o", str(tmp_path / "n.py")],
        ["ops"],
        ["zoo"],
        ["zoo", "copy", "recipes/iris_a_merged.yaml", str(tmp_path / "z")],
    ]
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY, commands=commands)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, code, loaded in report[:-1]:
        assert code == 0, (name, proc.stderr[-2000:])
        assert loaded == [], f"spdnn {name} imported {loaded}"
    assert "skimage" in report[-1][2]  # the probe sees an import when there is one


# --------------------------------------------------------------------------------------------
# the wheel, installed into a fresh virtual environment
# --------------------------------------------------------------------------------------------
def _source_copy(dest: Path) -> Path:
    """What a clean clone holds for the build: pyproject, README and the package with its
    zoo links (copied as links), netspecs/ and recipes/."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    for name in ("spdnn", "netspecs", "recipes"):
        shutil.copytree(ROOT / name, dest / name, symlinks=True, ignore=ignore)
    assert (dest / "spdnn/zoo/netspecs").is_symlink()
    return dest


@pytest.mark.slow
def test_the_wheel_runs_the_demo_from_an_empty_folder(tmp_path: Path):
    src = _source_copy(tmp_path / "src")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    # no build isolation and no index: the build uses this environment's setuptools, offline
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=300,
                   capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("spdnn-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = {n.removeprefix("spdnn/zoo/") for n in z.namelist()
                   if n.startswith("spdnn/zoo/") and n.endswith((".yaml", ".yml"))}
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA")))
    assert shipped == repo_zoo_names()
    assert b"Requires-Dist: torch<3,>=2.6" in metadata
    assert b"Provides-Extra: export" in metadata and b"Provides-Extra: train" in metadata
    # a fresh environment: the wheel installed into it, the dependencies seen through a .pth
    # line naming this environment's site-packages (nothing downloaded, nothing rebuilt)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig."
                                   "get_paths()['purelib'])"], capture_output=True, text=True,
                                  check=True).stdout.strip())
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (purelib / "_spdnn_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    subprocess.run([*pip, "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, timeout=300, capture_output=True)
    empty = tmp_path / "empty"
    empty.mkdir()

    def spdnn(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "spdnn"), *args], cwd=empty,
                              capture_output=True, text=True, timeout=300)

    where = subprocess.run([str(py), "-c", "import spdnn; print(spdnn.__file__)"], cwd=empty,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(purelib)  # the wheel's copy, not the repository's
    r = spdnn("zoo", "path")
    assert r.returncode == 0 and r.stdout.strip() == str(purelib / "spdnn" / "zoo"), r.stderr
    r = spdnn("demo", "--no-train", "-o", "out")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in ("merged.yaml", "merge_report.md", "merged_net.py", "merged_output.png",
                 "camera_96x128.png"):
        assert (empty / "out" / name).is_file(), name
    r = spdnn("merge", "netspecs/iris/appendix_a/*.yaml", "-o", "merged.yaml")
    assert r.returncode == 0, r.stderr
    assert "using the 3 files shipped with spdnn" in r.stderr
    assert layer_names(empty / "merged.yaml") == layer_names(empty / "out/merged.yaml")
    r = spdnn("zoo", "copy", "recipes/iris_a_merged.yaml", "mine")
    assert r.returncode == 0 and (empty / "mine/recipes/base/iris.yaml").is_file(), r.stderr

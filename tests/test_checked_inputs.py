"""Inputs checked before they are read (issue 28, items 3 to 5): YAML through libyaml within the
same bounds and line numbers, images against a pixel limit before decoding, ``.pts`` counts
against the header while reading, too-long path names, checkpoints and weight files validated
after a safe load, non-finite training losses, and a parameter limit in line with memory. Each
reproducer of the issue is a test here."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from spdnn.cli import main
from spdnn.errors import SpecError
from spdnn.spec import yaml_io
from tests.test_nothing_lost import one_error_line


# -- YAML -------------------------------------------------------------------------------------
def test_yaml_is_parsed_by_libyaml_when_pyyaml_has_it():
    if yaml_io.LIBYAML:
        assert yaml_io._BoundedLoader.__name__ == "_CBoundedLoader"


@pytest.mark.parametrize("shape", ["flat list", "90k keys"])
def test_a_large_yaml_file_is_decided_in_under_two_seconds(shape, tmp_path: Path):
    """The issue's reproducers: a 680 KB flat list took 16 s, 0.9 MB of 90k keys 9 s."""
    text = ("[" + "1," * 340_000 + "1]\n" if shape == "flat list"
            else "".join(f"k{i}: 1\n" for i in range(90_000)))
    path = tmp_path / "big.yaml"
    path.write_text(text)
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match=f"more than {yaml_io.MAX_NODES:,} nodes") as e:
        yaml_io.read_yaml(path)
    assert time.perf_counter() - t0 < 2
    assert e.value.line == (1 if shape == "flat list" else yaml_io.MAX_NODES // 2)  # the mapping is node 1


@pytest.mark.parametrize("loader", ["_PyBoundedLoader", "_BoundedLoader"])
@pytest.mark.parametrize("text,line,says", [
    ("a: 1\nb:\n\t- 2\n", 3, "found character '\\t' that cannot start any token"),
    ("a: [1, 2\nb: 3\n", 2, "expected ',' or ']'"),
    ("a: 1\na: 2\n", 2, "key 'a' is given twice"),
    ("a: &x [*x]\n", 1, "refers to the node that holds it"),
    ("a:\n  b: !!python/object:os.system x\n", 2, "YAML tag '!!python/object:os.system'"),
    ("a:\n  - !!int abc\n", 2, "YAML tag '!!int'"),
    ("a: 1\nb: \x07\n", 2, "#x0007"),
])
def test_both_parsers_give_the_same_line_and_message(loader, text, line, says, monkeypatch):
    monkeypatch.setattr(yaml_io, "_BoundedLoader", getattr(yaml_io, loader))
    with pytest.raises(SpecError) as e:
        yaml_io.load_yaml(text, file="f.yaml")
    assert e.value.line == line and says in e.value.one_line(), e.value.one_line()


# -- images -----------------------------------------------------------------------------------
def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width`` x ``height`` 8-bit gray pixels, with one empty
    data chunk: what a decompression bomb's first bytes say, without its megabytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("size,says", [
    ((12_000, 12_000), "is 12,000 x 12,000 pixels, over the limit of 67,108,864 pixels"),
    ((2_000_000, 1), "is 2,000,000 x 1 pixels"),
    ((30_000, 30_000), "is 30,000 x 30,000 pixels")])
def test_predict_refuses_a_huge_image_from_its_header(size, says, run, tmp_path: Path, capsys):
    """The issue's reproducers: a 140 KB 12000x12000 PNG took 68 s and 2.7 GB, a 1x2,000,000
    PNG 51 s, an 875 KB PNG declaring 900M pixels raised DecompressionBombError."""
    big = png_header(tmp_path / "big.png", *size)
    t0 = time.perf_counter()
    assert main(["predict", str(run), str(big), "-o", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - t0 < 5
    err = one_error_line(capsys)
    assert str(big) in err and says in err and "--limits pixels=" in err
    assert not (tmp_path / "out").exists()


def test_the_pixel_limit_is_a_size_limit_and_pillows(tmp_path: Path):
    import numpy as np
    from PIL import Image

    from spdnn.errors import SpdnnError
    from spdnn.io import read_image
    from spdnn.shapes import limits_set

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(path)
    assert read_image(path).shape == (60, 80)
    pillows = Image.MAX_IMAGE_PIXELS
    with limits_set("pixels=4000"), pytest.raises(SpdnnError, match="is 80 x 60 pixels"):
        read_image(path)
    with limits_set("pixels=5000"):
        assert read_image(path).shape == (60, 80)
    assert Image.MAX_IMAGE_PIXELS == pillows  # left as it was for other readers


# -- .pts landmark files ----------------------------------------------------------------------
@pytest.mark.parametrize("body,says", [
    ("1 2\n" * 5_000_000, "lists more than 68 points"),
    ("1" * 50_000_000, "a line longer than 256 characters"),
    ("1 2\n" * 67 + "nan 2\n}\n", "two finite numbers"),
])
def test_a_pts_file_is_checked_against_its_header_while_it_is_read(body, says, tmp_path: Path):
    """The issue's reproducer: a .pts file declaring 68 points and listing 50,000,000 took 57 s
    to be refused (here 5,000,000 and one 50 MB line, to keep the test's file small)."""
    from spdnn.data.landmarks import read_pts
    from spdnn.errors import SpdnnError

    p = tmp_path / "many.pts"
    p.write_text("version: 1\nn_points: 68\n{\n" + body)
    t0 = time.perf_counter()
    with pytest.raises(SpdnnError, match=says) as e:
        read_pts(p)
    assert time.perf_counter() - t0 < 0.5
    assert "many.pts" in e.value.one_line()


# -- path names -------------------------------------------------------------------------------
LONG = "a" * 300


@pytest.mark.parametrize("argv", [
    ["validate", f"{LONG}.yaml"], ["inspect", f"{LONG}.yaml"], ["train", f"{LONG}.yaml"],
    ["evaluate", LONG], ["evaluate", f"{LONG}/last.pt"], ["import", f"{LONG}.onnx", "-o", "o.yaml"],
    ["import", f"{LONG}.py:Net", "-o", "o.yaml"], ["zoo", "copy", "iris", LONG],
    ["zoo", "copy", "iris/parent_1", f"{LONG}/x.yaml"]], ids=lambda a: "-".join(a[:2])[:20])
def test_a_path_component_over_255_characters_is_one_line(argv, tmp_path, capsys, monkeypatch):
    """The issue's reproducer: 'OSError: File name too long' was an internal error (exit 1)
    in validate, inspect, train, evaluate, import and zoo copy."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert "aaaaaaaaaaaa...(30" in err and "too long" in err and "shorten the path" in err


# -- checkpoints and weight files -------------------------------------------------------------
def _first_weight(st: dict) -> str:
    return next(k for k, v in st["models"]["net"].items() if v.is_floating_point())


def _sparse_momentum(st: dict) -> None:
    state = st["optimizers"]["net"]["state"]
    slot = next(s for s in state.values() if "momentum_buffer" in s)
    slot["momentum_buffer"] = slot["momentum_buffer"].to_sparse()


BROKEN = {  # the reproducers: each was an internal error (exit 1) or failed later
    "models-a-list": (lambda st: st.__setitem__("models", [1, 2]), "checkpoint.models"),
    "no-recipe": (lambda st: st.pop("recipe"), "checkpoint.recipe: Field required"),
    "no-netspecs": (lambda st: st.pop("netspecs"), "checkpoint.netspecs: Field required"),
    "no-rng": (lambda st: st.pop("rng"), "checkpoint.rng: Field required"),
    "step-a-string": (lambda st: st.__setitem__("step", "x"), "checkpoint.step"),
    "rng-too-short": (lambda st: st["rng"]["numpy"].__setitem__("keys", st["rng"]["numpy"][
        "keys"][:3]), "checkpoint.rng.numpy.keys"),
    "nan-weights": (lambda st: st["models"]["net"][_first_weight(st)].fill_(float("nan")),
                    "holds NaN or infinite values"),
    "int64-weight": (lambda st: st["models"]["net"].__setitem__(
        k := _first_weight(st), st["models"]["net"][k].long()), "is torch.int64; a weight"),
    "complex-weight": (lambda st: st["models"]["net"].__setitem__(
        k := _first_weight(st), st["models"]["net"][k].to(torch.complex64)), "complex64"),
    "sparse-weight": (lambda st: st["models"]["net"].__setitem__(
        k := _first_weight(st), st["models"]["net"][k].to_sparse()), "sparse"),
    "meta-weight": (lambda st: st["models"]["net"].__setitem__(
        k := _first_weight(st), torch.empty_like(st["models"]["net"][k], device="meta")),
        "meta tensor"),
    "sparse-momentum": (_sparse_momentum, "momentum_buffer' has layout torch.sparse_coo"),
}


@pytest.mark.parametrize("command", ["evaluate", "resume"])
@pytest.mark.parametrize("case", list(BROKEN))
def test_a_checkpoint_of_the_wrong_structure_is_one_line(case, command, run, tmp_path: Path,
                                                         capsys):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    st = torch.load(folder / "last.pt", weights_only=True)
    change, says = BROKEN[case]
    change(st)
    torch.save(st, folder / "last.pt")
    (folder / "best.pt").unlink(missing_ok=True)
    argv = (["evaluate", str(folder)] if command == "evaluate" else
            ["train", str(run.parent / "recipe.yaml"), "-o", str(folder), "--resume"])
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert "last.pt" in err and says in err, err


@pytest.mark.parametrize("kind", ["int64", "complex", "sparse", "meta", "nan"])
def test_merge_weights_refuses_tensors_it_cannot_use(kind, tmp_path: Path, capsys):
    """The issue's reproducer: merge --weights with int64, complex, sparse or meta tensors was
    an internal error."""
    from spdnn import spec as S
    from spdnn.codegen import build_module
    from tests.test_weight_merge import small_a, small_b

    files = []
    for spec in (small_a(), small_b()):
        y, w = tmp_path / f"{spec.name}.yaml", tmp_path / f"{spec.name}.pt"
        y.write_text(S.dump(spec))
        state = build_module(spec).state_dict()
        files.append((y, w, state))
    state = files[0][2]
    k = next(k for k, v in state.items() if v.is_floating_point())
    state[k] = {"int64": torch.Tensor.long, "complex": lambda t: t.to(torch.complex64),
                "sparse": torch.Tensor.to_sparse, "meta": lambda t: t.to("meta"),
                "nan": lambda t: t.fill_(float("inf"))}[kind](state[k])
    for _, w, st in files:
        torch.save(st, w)
    mw = tmp_path / "m.pt"
    assert main(["merge", str(files[0][0]), str(files[1][0]), "--weights", str(files[0][1]),
                 str(files[1][1]), "--params", "sum", "-o", str(tmp_path / "m.yaml"),
                 "--out-weights", str(mw)]) == 2
    err = one_error_line(capsys)
    assert f"{files[0][1]}: the tensor '{k}'" in err and not mw.exists()


def test_a_diverging_training_stops_naming_the_step(tmp_path: Path, capsys):
    """The issue's reproducer: --set optim.lr=1e30 failed inside BCE (exit 1) two steps
    later; a NaN loss stops as soon as it appears."""
    from tests.test_train import tiny_recipe

    recipe = tiny_recipe(tmp_path)
    assert main(["train", str(recipe), "-o", str(tmp_path / "r"), "--set", "optim.lr=1e30",
                 "--set", "steps=8", "-q"]) == 2
    err = one_error_line(capsys)
    assert "optim.lr: the training diverged " in err and "lower the learning rate" in err
    assert "step " in err and "(now 1e+30)" in err


def test_a_nan_loss_stops_training_at_its_step(tmp_path: Path):
    from spdnn.errors import SpdnnError
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe
    from tests.test_train import tiny_recipe

    tr = trainer_for(load_recipe(tiny_recipe(tmp_path), ["steps=8"]), outdir=tmp_path / "r",
                     progress=False, quiet=True)
    original = tr.task.loss

    def nan_at_step_3(*args):
        loss = original(*args)
        return loss * float("nan") if tr.step == 2 else loss

    tr.task.loss = nan_at_step_3
    with pytest.raises(SpdnnError, match=r"diverged at step 3: its training loss is nan"):
        tr.run()
    assert tr.step == 2


# -- size limits in line with memory ----------------------------------------------------------
BIG = "name: big\ninput: {features: 60000}\nlayers:\n  - {name: fc, op: Linear, out_features: 60000}\n"


def test_a_network_of_billions_of_parameters_is_refused_at_validation(tmp_path: Path, capsys):
    """The issue's reproducer: one 60000 -> 60000 Linear layer (3.6e9 parameters) passed the
    default limits, then export and bench tried to allocate 14.4 GB."""
    big = tmp_path / "big.yaml"
    big.write_text(BIG)
    for argv in (["validate", str(big)], ["export", str(big), "-o", str(tmp_path / "b.onnx")],
                 ["bench", str(big)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        line = next(ln for ln in err.splitlines() if "big.yaml:4:" in ln)
        assert "3,600,060,000 parameters, over the limit of 1,000,000,000" in line
    assert not (tmp_path / "b.onnx").exists()


def test_a_network_is_checked_against_the_memory_available_before_it_is_built(
        tmp_path: Path, capsys, monkeypatch):
    import spdnn.shapes as shapes

    big = tmp_path / "big.yaml"
    big.write_text(BIG)
    monkeypatch.setattr(shapes, "available_memory", lambda: 8 * 10**9)
    try:
        for argv in (["export", str(big), "-o", str(tmp_path / "b.onnx")], ["bench", str(big)]):
            assert main(["--limits", "params=1e10", *argv]) == 2
            err = one_error_line(capsys)
            assert "need 43.2 GB of memory, 8.0 GB are available; refused before" in err
    finally:
        shapes.set_limits(None)  # main's --limits stays for the process
    assert not (tmp_path / "b.onnx").exists()
    assert shapes.Limits().params == 10**9

"""GAN+aspect end to end from the CLI (thesis sec. 3.3.1, App. F): a tiny iris BEGAN run ->
``spdnn invert`` -> the aspect task -> ``spdnn generate`` -> the iris folder loader; and the
bad inputs of the issue (a run without a generator, an aspect run of another latent size, a
non-empty output folder: one-line errors naming the file, exit 2, nothing overwritten)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spdnn.cli import main
from tests.helpers import ROOT

SMALL = ["steps=2", "batch_size=2", "data.train_size=4", "data.val_size=2", "eval_every=2",
         "checkpoint_every=2", "log_every=1", "samples=2"]


def _train(recipe: str, out: Path, extra: list[str] = ()) -> Path:
    args = ["train", str(ROOT / recipe), "-o", str(out), "--quiet"]
    for s in SMALL + list(extra):
        args += ["--set", s]
    assert main(args) == 0
    return out


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "internal" not in err, err
    return err


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A 2-step iris BEGAN, 4 inverted eyes, a 2-step aspect run on them."""
    tmp = tmp_path_factory.mktemp("aspect")
    gan = _train("recipes/aspect/iris_began.yaml", tmp / "gan")
    lat = tmp / "latents.pt"
    assert main(["invert", str(gan), "-o", str(lat), "--steps", "3", "--limit", "4"]) == 0
    asp = _train("recipes/aspect/iris_mask.yaml", tmp / "asp",
                 [f"data.root={lat}", "data.train_size=3", "data.val_size=1"])
    return tmp, gan, lat, asp


def test_invert_writes_latents_in_range_with_masks(pipeline):
    from spdnn.tasks.gan.invert import load_latents

    tmp, gan, lat, _ = pipeline
    st = load_latents(lat)
    assert st["z"].shape == (4, 64) and st["z"].abs().max() <= 1
    assert st["masks"].shape == (4, 1, 24, 32) and set(st["masks"].unique().tolist()) <= {0, 1}
    assert st["images"].shape == (4, 1, 24, 32) and st["mae"].shape == (4,)
    assert (tmp / "latents_mae.png").is_file()
    assert st["meta"]["method"] == "optimize" and st["meta"]["range"] == "tanh"


def test_generate_writes_pairs_the_iris_folder_loader_reads(pipeline, capsys):
    from spdnn.data.iris import IrisFolderDataset

    tmp, gan, _, asp = pipeline
    out = tmp / "gen"
    assert main(["generate", str(gan), "--aspect", str(asp), "-n", "5", "-o", str(out)]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"0000{i}.png" for i in range(5)]
    ds = IrisFolderDataset(out)
    assert len(ds) == 5
    img, mask = ds[0]
    assert img.shape == (1, 96, 128) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert (out / "preview.png").is_file() and (out / "interpolation.png").is_file()
    # the same seed gives the same pairs (the generator and aspect are deterministic)
    before = {p.name: p.read_bytes() for p in (out / "masks").iterdir()}

    # a non-empty output folder is refused, nothing is touched
    capsys.readouterr()
    assert main(["generate", str(gan), "--aspect", str(asp), "-n", "2", "-o", str(out)]) == 2
    err = _one_line_error(capsys)
    assert str(out) in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in (out / "masks").iterdir()} == before
    # --overwrite replaces the pairs: 2 now, none left over from the 5
    assert main(["generate", str(gan), "--aspect", str(asp), "-n", "2", "-o", str(out),
                 "--overwrite"]) == 0
    assert len(IrisFolderDataset(out)) == 2
    assert (out / "masks" / "00000.png").read_bytes() == before["00000.png"]


def test_invert_refuses_a_run_without_a_generator(pipeline, capsys):
    tmp, _, _, asp = pipeline
    capsys.readouterr()
    assert main(["invert", str(asp), "-o", str(tmp / "x.pt")]) == 2
    err = _one_line_error(capsys)
    assert "no generator" in err and str(asp) in err
    assert not (tmp / "x.pt").exists()


def test_invert_refuses_to_overwrite_its_output(pipeline, capsys):
    tmp, gan, lat, _ = pipeline
    before = lat.read_bytes()
    capsys.readouterr()
    assert main(["invert", str(gan), "-o", str(lat), "--steps", "1", "--limit", "1"]) == 2
    assert str(lat) in _one_line_error(capsys)
    assert lat.read_bytes() == before


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A 2-step BEGAN on 8x8 digits: a generator with a latent of 16, not 64."""
    return _train("recipes/gan/began_digits.yaml", tmp_path_factory.mktemp("digits") / "run")


def test_generate_refuses_an_aspect_run_of_another_latent_size(pipeline, digits, tmp_path,
                                                               capsys):
    tmp, _, _, asp = pipeline
    capsys.readouterr()
    out = tmp_path / "gen"
    assert main(["generate", str(digits), "--aspect", str(asp), "-n", "2", "-o", str(out)]) == 2
    err = _one_line_error(capsys)
    assert "64" in err and "16" in err and str(asp) in err
    assert not out.exists()


def test_aspect_network_must_read_the_latent_size(tmp_path):
    from spdnn.errors import SpecError
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe
    from tests.aspect_helpers import small_latents

    lat = small_latents(tmp_path / "l.pt", 16, (1, 24, 32), n=6)
    r = load_recipe(ROOT / "recipes/aspect/iris_mask.yaml", SMALL + [f"data.root={lat}"])
    with pytest.raises(SpecError, match="16 values"):
        trainer_for(r, outdir=tmp_path / "r", progress=False)


def test_landmark_aspect_from_a_pts_folder(digits, tmp_path):
    """``--data`` with .pts files inverts into a latents file with landmarks, and the landmark
    MLP (App. F Table II, 68 points) trains on it."""
    from spdnn.tasks.gan.invert import load_latents
    from tests.test_landmarks import landmark_folder

    truth = landmark_folder(tmp_path / "faces", n=4)
    lat = tmp_path / "lm.pt"
    assert main(["invert", str(digits), "--data", str(tmp_path / "faces"), "-o", str(lat),
                 "--steps", "2"]) == 0
    st = load_latents(lat)
    assert st["landmarks"].shape == (4, 136) and st["z"].shape == (4, 16)
    assert np.allclose(st["landmarks"][0].numpy(), (truth[0] / [40, 30]).reshape(-1), atol=1e-5)
    spec = tmp_path / "lm16.yaml"
    spec.write_text((ROOT / "netspecs/gan/aspect/landmark_generator_68.yaml").read_text()
                    .replace("features: 64", "features: 16"))
    recipe = tmp_path / "lm.yaml"
    recipe.write_text(f"name: lm\ntask: aspect\nmodel: {{netspec: {spec}}}\n"
                      f"data: {{source: latents, root: {lat}, train_size: 3, val_size: 1}}\n"
                      "optim: {name: adam, lr: 0.0003}\nbatch_size: 2\nsteps: 2\n"
                      "eval_every: 2\ncheckpoint_every: 2\n")
    assert main(["train", str(recipe), "-o", str(tmp_path / "lm_run"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "lm_run" / "metrics.json").read_text())
    assert "val_point_error" in json.dumps(metrics)

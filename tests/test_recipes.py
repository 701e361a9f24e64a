"""Every shipped recipe trains end to end in small form (a few steps on a few samples)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from spdnn.runs import trainer_for
from spdnn.train import load_recipe
from tests.helpers import ROOT

RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "base" not in p.parent.parts)
SMALL = ["steps=2", "batch_size=2", "data.train_size=4", "data.val_size=2", "eval_every=2",
         "checkpoint_every=2", "log_every=1", "samples=2"]
# recipe folders whose tasks need every class in the small form (stratified splits of ten classes;
# Smart Augmentation's k + 1 training images of each class): a few more images, still seconds
SMALL_BY_FOLDER = {"smart_augmentation": ["data.train_size=50", "data.val_size=20"],
                   "classifier": ["data.train_size=20", "data.val_size=10"],
                   # the synthetic scenes: source vtest extracts the whole video once (10-20 s),
                   # which tests/test_data_people.py covers on its own
                   "thermal": ["data.source=synthetic"]}


def test_there_are_recipes_for_every_network_of_the_issue():
    names = {p.stem for p in RECIPES}
    assert {"iris_a_parent_1", "iris_a_parent_2", "iris_a_parent_3", "iris_a_merged",
            "iris_segnet_basic", "iris_d_published", "depth_merged"} <= names
    assert {f"depth_parent_{i}" for i in range(1, 9)} <= names


# the larger SPADE / SPADE-SR generators (12-16 M parameters, 5-8 s each in small form) share
# spade_sr_32's code path: slow-marked so the default run keeps one GAN and the inversion
SLOW_RECIPES = {"spade_sr_64", "spade_sr_128", "spade_64", "spade_128"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow)
                                  if p.stem in SLOW_RECIPES else p for p in RECIPES],
                         ids=lambda p: p.stem)
def test_recipe_trains_in_small_form(path: Path, tmp_path: Path):
    small = SMALL + SMALL_BY_FOLDER.get(path.parent.name, [])
    recipe = load_recipe(path, small)
    if recipe.task == "aspect":  # reads a latents file of `spdnn invert`: a small one here
        from tests.aspect_helpers import recipe_latents

        recipe = load_recipe(path, SMALL + [f"data.root={recipe_latents(recipe, tmp_path)}"])
    if recipe.task == "spade_sr_inversion":  # inverts a trained SPADE-SR run: a small one here
        from tests.spade_sr_helpers import recipe_gan_run

        recipe = load_recipe(path, small + [f"options.gan_run={recipe_gan_run(recipe, tmp_path)}"])
    trainer = trainer_for(recipe, outdir=tmp_path / recipe.name, progress=False)
    final = trainer.run()
    assert trainer.step == 2
    losses = {k: v for k, v in final.items() if k.startswith("val_loss")}  # val_loss, val_loss_d...
    assert losses and all(math.isfinite(v) for v in losses.values()), final
    assert (tmp_path / recipe.name / "metrics.json").is_file()


@pytest.mark.parametrize("override", [
    "batch_size=1000000000", "steps=100000000000", "data.train_size=1000000000000",
    "optim.lr=.inf", "optim.lr=.nan", "seed=-1", "name=../elsewhere", "output={0}",
    "output=runs/{name.__class__}", "samples=100000", "epochs=10000000",
])
def test_extreme_recipe_values_are_one_line_errors(override: str, tmp_path: Path, capsys):
    from spdnn.cli import main

    code = main(["train", str(ROOT / "recipes/iris_a_merged.yaml"), "-o", str(tmp_path / "r"),
                 "--set", override])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "internal" not in err
    assert not (tmp_path / "r").exists()

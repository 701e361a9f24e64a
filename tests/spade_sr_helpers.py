"""A small SPADE-SR GAN run for the tests of the inversion phase (its ``options.gan_run``)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import ROOT

SMALL_GAN = ["steps=1", "batch_size=2", "data.train_size=4", "data.val_size=2", "samples=2",
             "data.source=synthetic"]


def recipe_gan_run(recipe, tmp_path: Path) -> Path:
    """A checkpoint of an untrained SPADE-SR-32 run at ``tmp_path/gan/last.pt`` (written by the
    trainer, so it has the layout, netspecs and EMA of a real run), for ``recipe``'s
    ``options.gan_run``."""
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe

    gan = load_recipe(ROOT / "recipes" / "thermal" / "spade_sr_32.yaml", SMALL_GAN)
    trainer = trainer_for(gan, outdir=tmp_path / "gan", progress=False)
    trainer.save_checkpoint()
    return tmp_path / "gan" / "last.pt"

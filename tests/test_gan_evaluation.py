"""The offline GAN evaluation suite (spdnn.tasks.gan.evaluation) on scikit-learn's real 8x8
digits: FID on the trained referee, its cache, conditional accuracy, diversity, the attribute
error, and ``spdnn evaluate`` on a tiny DCGAN run."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from spdnn.data.images import image_datasets
from spdnn.tasks.gan import evaluation as E

STEPS = 100  # referee and judge budgets: > 90 % on real val digits
DATA = SimpleNamespace(source="digits", root=None, train_size=600, val_size=200, seed=3,
                       options={})


class FakeTask:
    """The GANTask contract evaluate_gan relies on, with a 'generator' that returns real
    validation images (of the requested class when ``shift`` is 0, of class ``c + shift``
    otherwise) or, with ``noise``, uniform noise."""

    def __init__(self, conditional: str = "class", shift: int = 0, noise: bool = False,
                 data=DATA, eval_samples: int = 1000) -> None:
        self.conditional, self.shift, self.noise = conditional, shift, noise
        self.options = SimpleNamespace(eval_samples=eval_samples)
        self.recipe = SimpleNamespace(name="fake", seed=0, data=data)
        self.train, self.val = image_datasets(data, (1, 8, 8))
        self.class_names = self.train.class_names
        self.attribute_name = "brightness"

    def datasets(self):
        return self.train, self.val

    def generate(self, models, n, device, labels=None, attributes=None, generator=None):
        assert n <= E.GEN_CHUNK
        if self.noise:
            return torch.rand(n, 1, 8, 8, generator=generator)
        if attributes is not None:  # the real image whose brightness is nearest the request
            have = self.val.images.mean((1, 2, 3))
            return self.val.images[(have[None] - attributes[:, :1]).abs().argmin(1)]
        if labels is None:
            labels = torch.randint(10, (n,), generator=generator)
        out = []
        for c in ((labels + self.shift) % 10).tolist():
            pool = torch.nonzero(self.val.labels == c).flatten()
            out.append(self.val.images[pool[torch.randint(len(pool), (1,), generator=generator)]])
        return torch.cat(out)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One evaluation folder for the module, so the referee and judge train once."""
    return tmp_path_factory.mktemp("eval")


@pytest.fixture(scope="module")
def referee(cache):
    task = FakeTask()
    spec = E.referee_netspec((1, 8, 8), 10)
    return E.trained_classifier("referee", spec, task.train, task.val, STEPS, E.REFEREE_SEED,
                                cache, E._data_key(task), "cpu")


def test_fid_of_real_vs_itself_is_zero_and_noise_is_far_above_the_floor(referee):
    task = FakeTask()
    feats = E.RefereeFeatures(referee.module)
    real = task.val.images
    assert referee.accuracy > 0.9
    assert abs(E.fid(feats, real, real, "cpu")) < 1e-6
    floor = E.fid(feats, real[:100], real[100:], "cpu")
    noise = E.fid(feats, torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                  real, "cpu")
    assert 0 < floor and noise > 10 * floor
    feats.train()  # torchmetrics may call train(): the features stay in eval mode
    assert not referee.module.training


def test_referee_cache_is_reused_and_a_changed_key_trains_a_new_one(referee, cache, monkeypatch):
    task = FakeTask()
    calls = []
    fit = E._fit
    monkeypatch.setattr(E, "_fit", lambda *a, **k: calls.append(1) or fit(*a, **k))
    spec = E.referee_netspec((1, 8, 8), 10)
    mtime = referee.path.stat().st_mtime_ns
    again = E.trained_classifier("referee", spec, task.train, task.val, STEPS, E.REFEREE_SEED,
                                 cache, E._data_key(task), "cpu")
    assert not again.trained and calls == [] and again.path == referee.path
    assert referee.path.stat().st_mtime_ns == mtime and again.accuracy == referee.accuracy
    x = task.val.images[:50]
    assert torch.equal(E.predict(again.module, x, "cpu"), E.predict(referee.module, x, "cpu"))
    # other data (another split seed), another netspec: new files, trained anew
    other = SimpleNamespace(**{**vars(DATA), "seed": 4})
    t2 = FakeTask(data=other)
    new_data = E.trained_classifier("referee", spec, t2.train, t2.val, 5, E.REFEREE_SEED, cache,
                                    E._data_key(t2), "cpu")
    wider = E.judge_netspec((1, 8, 8), 10)
    new_spec = E.trained_classifier("referee", wider, task.train, task.val, 5, E.REFEREE_SEED,
                                    cache, E._data_key(task), "cpu")
    assert new_data.trained and new_spec.trained and len(calls) == 2
    assert len({referee.path, new_data.path, new_spec.path}) == 3
    # an unreadable cache file is replaced, not trusted
    new_spec.path.write_bytes(b"not a checkpoint")
    redo = E.trained_classifier("referee", wider, task.train, task.val, 5, E.REFEREE_SEED,
                                cache, E._data_key(task), "cpu")
    assert redo.trained and len(calls) == 3 and redo.path == new_spec.path


def test_conditional_accuracy_high_for_the_requested_class_low_for_a_wrong_one(cache):
    right = E.evaluate_gan(FakeTask(), {}, cache, "cpu", referee_steps=STEPS,
                           judge_steps=STEPS, diversity_pairs=50)
    assert right["cond_accuracy"] > 0.8 and right["judge_accuracy"] > 0.8
    assert right["fid_samples"] == 200 and right["fid_floor_samples"] == 100
    assert right["fid"] < 3 * right["fid_real_floor"]  # real images: FID at the floor
    assert (cache / "confusion.png").stat().st_size > 10_000
    assert (cache / "diversity.png").stat().st_size > 10_000
    for who in ("div", "real"):
        for group in ("within", "between"):
            for m in E.MEASURES:
                assert np.isfinite(right[f"{who}_{group}_{m}"])
    # real digits of one class are more alike than of two classes
    assert right["real_within_ssim"] > right["real_between_ssim"]
    assert right["real_within_mse"] < right["real_between_mse"]
    wrong = E.evaluate_gan(FakeTask(shift=3), {}, cache, "cpu", referee_steps=STEPS,
                           judge_steps=STEPS, diversity_pairs=50)
    assert wrong["cond_accuracy"] < 0.2
    noise = E.evaluate_gan(FakeTask(noise=True), {}, cache, "cpu", referee_steps=STEPS,
                           judge_steps=STEPS, diversity_pairs=50)
    assert noise["fid"] > 10 * noise["fid_real_floor"]


def test_diversity_measures_of_identical_and_different_images():
    x = FakeTask().val.images[:40]
    same = E.pair_measures(x, x)
    assert same["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert same["mse"] == same["rmse"] == same["mae"] == 0.0
    # UQI has no stabilising constants: windows of constant background score 0 (torchmetrics'
    # eps), so identical digits stay below 1 and identical noise images reach it
    assert 0.99 < same["uqi"] < 1.0
    noise = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert E.pair_measures(noise, noise)["uqi"] == pytest.approx(1.0, abs=1e-4)
    a, b = x[:20], x[20:]
    d = E.pair_measures(a, b)
    from skimage.metrics import structural_similarity

    k, sigma = E.window((1, 8, 8))
    assert (k, sigma) == (5, pytest.approx(1.5 * 5 / 11))
    oracle = np.mean([structural_similarity(a[i, 0].double().numpy(), b[i, 0].double().numpy(),
                                            gaussian_weights=True, sigma=sigma, data_range=1.0,
                                            use_sample_covariance=False) for i in range(20)])
    assert d["ssim"] == pytest.approx(oracle, abs=1e-5)
    per = (a.double() - b.double()).square().flatten(1).mean(1)
    assert d["mse"] == pytest.approx(float(per.mean()))
    assert d["rmse"] == pytest.approx(float(per.sqrt().mean()))
    assert E.window((3, 28, 28)) == (11, 1.5)


def test_pairs_are_of_one_class_within_and_of_two_between():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3])  # class 3 has one image: never in a within pair
    g = torch.Generator().manual_seed(0)
    i, j = E.pairs(labels, 300, False, g)
    assert len(i) == 300 and (i != j).all() and (labels[i] == labels[j]).all()
    assert set(labels[i].tolist()) == {0, 1}
    i, j = E.pairs(labels, 300, True, g)
    assert (labels[i] != labels[j]).all() and set(labels[i].tolist()) == {0, 1, 2, 3}
    i, _ = E.pairs(torch.zeros(5, dtype=torch.long), 10, True, g)
    assert len(i) == 0


def test_attribute_task_reports_the_attribute_error(cache, monkeypatch):
    fake = types.ModuleType("spdnn.data.attributes")
    fake.measure = lambda name, images: images.mean((1, 2, 3))[:, None].float()
    monkeypatch.setitem(sys.modules, "spdnn.data.attributes", fake)
    task = FakeTask(conditional="attribute")
    task.val.attributes = fake.measure("brightness", task.val.images)
    res = E.evaluate_gan(task, {}, cache, "cpu", referee_steps=STEPS, diversity_pairs=50)
    assert res["attr_mae"] < 0.01 < res["attr_mae_chance"]
    assert "cond_accuracy" not in res
    # diversity groups are attribute requests: this fake generator ignores its noise (one
    # image per request), which the same-attribute measures must show as no variation
    assert res["div_within_mse"] == 0 and res["div_within_ssim"] > 0.999
    assert res["div_between_mse"] > 0
    assert "div_within_ssim" in res
    task.val.attributes = None  # items without the attribute: a clear error
    with pytest.raises(E.SpdnnError, match="carry the attribute"):
        E.evaluate_gan(task, {}, cache, "cpu", referee_steps=STEPS)


def test_a_source_without_two_classes_is_a_clear_error():
    with pytest.raises(E.SpdnnError) as e:
        E.referee_netspec((1, 8, 8), 1)
    assert e.value.field == "data.source" and "two classes" in str(e.value)


def test_spdnn_evaluate_runs_the_suite_on_a_dcgan_run(tmp_path: Path, capsys, monkeypatch):
    from spdnn.cli import main
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe
    from tests.helpers import ROOT

    r = load_recipe(ROOT / "recipes/gan/dcgan_digits.yaml",
                    ["steps=3", "eval_every=3", "checkpoint_every=3", "batch_size=16",
                     "data.train_size=300", "data.val_size=60"])
    run = tmp_path / "run"
    trainer_for(r, outdir=run, progress=False).run()
    monkeypatch.setattr(E, "REFEREE_STEPS", 40)
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    text = capsys.readouterr().out
    assert "fid_real_floor" in text and "val_mmd" in text and "div_within_ssim" in text
    assert "div_between_ssim" not in text  # unconditional: within only
    rep = json.loads((run / "evaluation.json").read_text())
    assert rep["step"] == 3 and rep["metrics"]["fid"] > 0
    assert rep["metrics"]["fid_samples"] == 60
    assert (run / "eval" / "diversity.png").is_file()
    assert len(list((run / "eval").glob("referee_*.pt"))) == 1
    # -o elsewhere; --no-report skips the suite
    assert main(["evaluate", str(run), "-o", str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / "diversity.png").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-report"]) == 0
    assert "fid" not in capsys.readouterr().out
    assert "fid" not in json.loads((run / "evaluation.json").read_text())["metrics"]
    # an output that would overwrite an input: one line, exit 2, the checkpoint intact
    before = (run / "best.pt").read_bytes()
    for argv in (["-o", str(run / "best.pt")], ["-o", str(run / "last.pt")]):
        assert main(["evaluate", str(run), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "would overwrite the input" in err[0]
    assert (run / "best.pt").read_bytes() == before
    assert main(["evaluate", str(run / "evaluation.json")]) == 2

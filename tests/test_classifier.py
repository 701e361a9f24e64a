"""The generic classifier (thesis App. C): accuracy metrics, cross-dataset evaluation, the
traditional augmentation baseline (kornia), prediction, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spdnn.data.images import TensorImages
from spdnn.runs import trainer_for
from spdnn.tasks.classifier import (
    AugmentOptions,
    ClassAccuracy,
    evaluate_classifier,
    traditional_augmentation,
)
from spdnn.train import load_recipe
from tests.helpers import ROOT

CL = ROOT / "recipes" / "classifier"
TINY = ["data.train_size=20", "data.val_size=10", "batch_size=5", "steps=3", "eval_every=3",
        "checkpoint_every=3", "log_every=1"]


def test_accuracy_error_and_balanced_accuracy_exact():
    m = ClassAccuracy(3)
    logits = torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0]])
    m.update(logits[:3], torch.tensor([0, 1, 2]))
    m.update(logits[3:], torch.tensor([2, 0]))
    out = m.compute()
    assert out["accuracy"] == pytest.approx(4 / 5) and out["error"] == pytest.approx(1 / 5)
    assert out["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)  # per-class recalls


def test_evaluate_classifier_matches_cross_entropy_by_hand():
    images = torch.rand(7, 1, 4, 4)
    labels = torch.tensor([0, 1, 1, 0, 2, 2, 1])
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3), torch.nn.Dropout(0.9))
    net.train()
    got = evaluate_classifier(net, TensorImages(images, labels, ["a", "b", "c"]), batch_size=3)
    with torch.no_grad():
        logits = net[1](images.flatten(1))
    assert got["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)
    assert got["error"] == pytest.approx(float((logits.argmax(1) != labels).float().mean()))
    assert net.training  # mode restored


def test_traditional_augmentation_is_seeded_and_flip_only_mirrors():
    x = torch.rand(6, 1, 10, 10)
    aug = traditional_augmentation(AugmentOptions(rotation=10, shift=0.1))
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    assert torch.equal(a, aug(x)) and a.shape == x.shape and not torch.allclose(a, x)
    flip = traditional_augmentation(AugmentOptions(flip=True, rotation=0, shift=0))
    torch.manual_seed(0)
    out = flip(x)
    same = [torch.allclose(o, i) or torch.allclose(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(same) and any(not torch.allclose(o, i) for o, i in zip(out, x))


def test_classifier_trains_predicts_and_reports_per_source_errors(tmp_path: Path):
    recipe = load_recipe(CL / "digits_inter_dataset_mixture.yaml",
                         [*TINY, "options.test_size=30", "options.augment=traditional",
                          "options.flip=false"])
    tr = trainer_for(recipe, outdir=tmp_path / "run", progress=False, quiet=True)
    assert len(tr.train_ds) == 40  # 20 from each part
    batch = tuple(tr.to_device(t) for t in
                  next(iter(torch.utils.data.DataLoader(tr.train_ds, batch_size=8))))
    w0 = [p.detach().clone() for p in tr.models["net"].parameters()]
    assert tr.task.training_step(tr, batch)["loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(w0, tr.models["net"].parameters()))
    final = tr.evaluate()
    assert final["val_error"] == pytest.approx(1 - final["val_accuracy"])
    rep = tr.task.report(tr.eval_models(), tmp_path, tr.device)
    assert set(rep) == {"error_mnist", "error_digits"} and all(0 <= v <= 1 for v in rep.values())
    from skimage import io

    img = tmp_path / "seven.png"
    io.imsave(img, (tr.val_ds.images[0, 0].numpy() * 255).astype(np.uint8), check_contrast=False)
    out = tr.task.predict_files(tr.eval_models(), [img], tmp_path / "pred", tr.device, {})
    lines = out[0][1].read_text().splitlines()
    assert lines[0] == "file,class,probability" and lines[1].startswith(str(img))
    assert lines[1].split(",")[1] in [str(i) for i in range(10)]


@pytest.mark.parametrize("sets, words", [
    (["--set", "model.netspec=" + str(ROOT / "netspecs/smart_augmentation/network_b_28_2class.yaml"),
      "--set", "data.source=mnist", "--set", "data.options={}"], "models.net"),
    (["--set", "data.options.parts=[mnist, faces]"], "same class set"),
])
def test_bad_input_is_one_line_exit_2(sets, words, tmp_path: Path, capsys):
    from spdnn.cli import main

    code = main(["train", str(CL / "digits_inter_dataset_mixture.yaml"), "-o", str(tmp_path / "r"),
                 *sets, "--set", "steps=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "r").exists()

"""Smart Augmentation (thesis App. E): partner sampling, the joint loss alpha L_A + beta L_B,
gradients reaching network A through B, one network A per class, the blend grid, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from spdnn.errors import SpecError
from spdnn.runs import trainer_for
from spdnn.tasks.smart_augmentation import sample_partners
from spdnn.train import load_recipe
from tests.helpers import ROOT

RECIPE = ROOT / "recipes" / "smart_augmentation" / "faces_sa_one_a.yaml"
TINY = ["data.train_size=12", "data.val_size=6", "batch_size=4", "steps=2", "eval_every=2",
        "checkpoint_every=2", "log_every=1"]


def trainer(tmp_path: Path, *extra: str):
    return trainer_for(load_recipe(RECIPE, [*TINY, *extra]), outdir=tmp_path / "run",
                       progress=False, quiet=True)


def test_partners_are_other_images_of_the_targets_class():
    torch.manual_seed(0)
    labels_all = torch.randint(0, 4, (60,))
    counts = torch.bincount(labels_all, minlength=4)
    members = torch.full((4, int(counts.max())), -1, dtype=torch.long)
    position = torch.empty(60, dtype=torch.long)
    for c in range(4):
        idx = (labels_all == c).nonzero().flatten()
        members[c, :len(idx)] = idx
        position[idx] = torch.arange(len(idx))
    k = int(counts.min()) - 1
    seen = set()
    for _ in range(50):
        index = torch.randint(0, 60, (16,))
        p = sample_partners(members, position, labels_all[index], index, k)
        assert p.shape == (16, k)
        assert bool((labels_all[p] == labels_all[index][:, None]).all())   # same class
        assert bool((p != index[:, None]).all())                            # never the target
        assert all(len(set(row.tolist())) == k for row in p)                # distinct
        seen.update(p.flatten().tolist())
    assert len(seen) == 60  # every image gets drawn at some point


def test_one_step_minimises_alpha_la_plus_beta_lb_and_trains_a_through_b(tmp_path: Path):
    tr = trainer(tmp_path, "options.alpha=0.4", "options.beta=0.6")
    task = tr.task
    batch = tuple(tr.to_device(t) for t in
                  next(iter(torch.utils.data.DataLoader(tr.train_ds, batch_size=4))))
    logs = task.training_step(tr, batch)
    assert logs["loss"] == pytest.approx(0.4 * logs["loss_a"] + 0.6 * logs["loss_b"], rel=1e-5)
    assert all(math.isfinite(v) for v in logs.values())
    opt = tr.optimizers["network_b"]  # one optimizer over both networks
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert ids == {id(p) for m in tr.models.values() for p in m.parameters()}
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[1]["lr"] == 0.005
    # alpha = 0: A still changes, through B's cross-entropy on A's output alone
    task.options = task.options.model_copy(update={"alpha": 0.0, "beta": 1.0})
    a0 = [p.detach().clone() for p in tr.models["network_a"].parameters()]
    logs = task.training_step(tr, batch)
    assert any(not torch.equal(p0, p) for p0, p in zip(a0, tr.models["network_a"].parameters()))
    assert logs["loss"] == pytest.approx(logs["loss_b"], rel=1e-6)


def test_one_network_a_per_class_trains_only_the_classes_in_the_batch(tmp_path: Path):
    tr = trainer(tmp_path, "options.per_class=true")
    nets = tr.models["network_a"].nets
    assert len(nets) == 2
    w0, w1 = (next(n.parameters()) for n in nets)
    assert not torch.equal(w0, w1)  # copy 1 initialised from another seed
    ds = tr.train_ds
    only0 = [i for i in range(len(ds)) if int(ds.labels[i]) == 0][:4]
    batch = torch.utils.data.default_collate([ds[i] for i in only0])
    before = [[p.detach().clone() for p in n.parameters()] for n in nets]
    tr.task.training_step(tr, tuple(tr.to_device(t) for t in batch))
    changed = [any(not torch.equal(b, p) for b, p in zip(bs, n.parameters()))
               for bs, n in zip(before, nets)]
    assert changed == [True, False]


def test_the_blend_grid_and_validation_of_b_alone(tmp_path: Path):
    tr = trainer(tmp_path, "options.blend_rows=3")
    ev = tr.evaluate()
    assert {"val_loss", "val_accuracy", "val_error"} <= set(ev)
    val_batch = tuple(tr.to_device(t) for t in next(iter(torch.utils.data.DataLoader(tr.val_ds))))
    files = tr.task.figures(tr.eval_models(), val_batch, tmp_path)
    assert [f.name for f in files] == ["blends.png"] and files[0].is_file()
    imgs, names = tr.task.blends(tr.eval_models(), 3, 0, tr.device)
    assert imgs.shape == (3 * 3, 1, 28, 28) and names == ["face", "non-face", "face"]
    train = tr.task.datasets()[0]
    for r in range(3):  # the k inputs of a row are training images of the row's class
        for j in range(2):
            match = (train.images == imgs[3 * r + j]).flatten(1).all(1)
            assert bool(match.any()) and int(train.labels[match][0]) == r % 2


def test_a_class_with_fewer_than_k_plus_one_images_is_an_error(tmp_path: Path):
    with pytest.raises(SpecError) as e:
        trainer(tmp_path, "data.train_size=4")  # 2 per class, k = 2 needs 3
    assert e.value.field == "data.train_size" and "k + 1 = 3" in e.value.message
    with pytest.raises(SpecError) as e:
        trainer(tmp_path, "models.network_b.netspec="
                f"{ROOT / 'netspecs/smart_augmentation/network_b_gender_96.yaml'}")
    assert e.value.field == "models.network_a"


def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, capsys):
    from spdnn.cli import main

    code = main(["train", str(RECIPE), "-o", str(tmp_path / "r"), "--set", "data.train_size=4",
                 "--set", "data.val_size=2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "needs k + 1" in err
    assert not (tmp_path / "r").exists()

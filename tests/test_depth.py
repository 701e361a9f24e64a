"""Monocular depth, thesis App. B: parents of one size, the like-each merge with its fully
connected fan-in narrowed, and the depth data options (targets, flips, zoom)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spdnn import spec as S
from spdnn.data.depth import MotorcycleDepthDataset, SyntheticDepthDataset, load_motorcycle
from spdnn.errors import SpdnnError
from spdnn.graph import merge
from spdnn.graph.budget import fc_feeders, fit_budget
from spdnn.shapes import infer
from tests.helpers import ROOT, load_glob


def _conv_parent_params(w: int) -> int:
    # conv -> BN has no bias: 3x3 1->w + BN(2w); six 3x3 w->w + BN; 3x3 w->1 with bias
    return (9 * w + 2 * w) + 6 * (9 * w * w + 2 * w) + (9 * w + 1)


FC_PARENT = (9 * 6 + 12) + 3 * (9 * 36 + 12) + (6 * 330 * 30 + 30) + (30 * 330 + 330) + (49 + 1)


def test_parents_are_of_one_size():
    """App. B sec. A.4: the merged network has the parameters of each parent, so the parents
    are of one size: networks 1-4 at width 36 match networks 5-8 (6 channels + FC 30, 330)."""
    params = [infer(p).params for p in load_glob("netspecs/depth/parent_*.yaml")]
    assert FC_PARENT == 70_784 and _conv_parent_params(36) == 71_137
    assert params == [_conv_parent_params(36)] * 4 + [FC_PARENT] * 4
    # 36 is the width closest to the FC parents' size
    assert min(range(20, 50), key=lambda w: abs(_conv_parent_params(w) - FC_PARENT)) == 36


@pytest.fixture(scope="module")
def like_each():
    return merge(load_glob("netspecs/depth/parent_*.yaml"), params="like-each")


def test_like_each_merge_is_reachable_by_narrowing_the_fc_fan_in(like_each):
    r = like_each
    spec, info = r.spec, infer(r.spec)
    target = round((4 * 71_137 + 4 * 70_784) / 8)
    assert r.report.target_params == target == 70_960
    assert abs(info.params - target) <= 0.01 * target
    assert not any("out of reach" in n for n in r.report.notes)
    # the four branch ends concatenated before FC 30 get one channel each: fan-in 4 x 10 x 33
    cat = spec.layer(spec.layer("O").inputs[0])
    assert all(info.shapes[i] == (1, 10, 33) for i in cat.inputs)
    assert info.shapes["O"] == (30,) and info.shapes["Q"] == (330,)  # labelled counts kept
    assert spec.layer("O").out_features == 30 and spec.layer("Q").out_features == 330
    # the other convolutions keep a real width (a single multiplier would leave 1-2 channels)
    feeders = {"J", "K", "L", "M"}
    widths = {lay.name: lay.out_channels for lay in spec.layers
              if lay.op_name == "Conv2d" and len(lay.name) == 1}
    assert {widths[n] for n in feeders} == {1}
    hidden = [w for n, w in widths.items() if n not in feeders and n != "S"]
    assert min(hidden) >= 8 and len(set(hidden)) <= 2
    # 87.5% fewer parameters than the eight parents together (1 - 1/8 up to the 1% fit)
    total = 4 * 71_137 + 4 * 70_784
    assert 1 - info.params / total == pytest.approx(0.875, abs=0.0015)


def test_fc_feeders_walk_through_pools_dropout_and_concat():
    spec = S.loads("""
name: fc_net
input: {name: image, channels: 1, height: 8, width: 8}
layers:
- {name: a, op: Conv2d, kernel_size: 3, out_channels: 4, padding: same}
- {name: b, op: Conv2d, kernel_size: 3, out_channels: 4, padding: same, inputs: [image]}
- {name: pa, op: MaxPool2d, kernel_size: 2, inputs: [a]}
- {name: pb, op: MaxPool2d, kernel_size: 2, inputs: [b]}
- {name: cat, op: Concat, inputs: [pa, pb]}
- {name: d, op: Dropout, p: 0.5}
- {name: f1, op: Linear, out_features: 5}
- {name: f2, op: Linear, out_features: 3}
output: {from: f2}
""")
    assert fc_feeders(spec, {"na": "a", "nb": "b", "nf": "f1"}) == {"na", "nb"}
    chain = S.load(ROOT / "netspecs/depth/parent_1.yaml")  # no Linear: no feeder
    assert fc_feeders(chain, {lay.name: lay.name for lay in chain.layers}) == set()


def test_fit_budget_without_names_scales_everything_by_one_multiplier():
    parents = load_glob("netspecs/depth/parent_*.yaml")
    r = merge(parents, params="keep")
    # with one multiplier (and the one-channel steps) the like-each target leaves every
    # convolution at 4 channels or fewer
    base = {lay.name: lay.out_channels for lay in r.spec.layers
            if lay.op_name == "Conv2d" and len(lay.name) == 1 and lay.name != "S"}

    def build(widths):
        layers = [lay.with_width(widths[lay.name]) if lay.name in widths else lay
                  for lay in r.spec.layers]
        return r.spec.model_copy(update={"layers": layers})

    fit = fit_budget(build, base, 70_960)
    assert fit.reachable and max(fit.widths.values()) <= 4
    split = fit_budget(build, base, 70_960, names={n: n for n in base})
    assert split.reachable and {split.widths[n] for n in "JKLM"} == {1}
    assert min(w for n, w in split.widths.items() if n not in "JKLM") >= 8
    assert abs(split.info.params - 70_960) <= 710


# --------------------------------------------------------------------------------------------
# data options
# --------------------------------------------------------------------------------------------


def test_motorcycle_disparity_target_is_proportional_to_disparity():
    s = load_motorcycle()
    a = MotorcycleDepthDataset("train", n=2, seed=3, cache=False)
    b = MotorcycleDepthDataset("train", n=2, seed=3, target="disparity", cache=False)
    for i in range(2):
        (xa, ta, ma), (xb, tb, mb) = a[i], b[i]
        assert torch.equal(xa, xb) and torch.equal(ma, mb)
        v = ma > 0
        want = (ta.double() * (s.d_max - s.d_min) + s.d_min) / s.d_max
        assert torch.allclose(tb.double()[v], want[v], atol=1e-6)
        assert torch.all(tb[~v] == 0) and tb[v].min() >= s.d_min / s.d_max - 1e-6
    with pytest.raises(SpdnnError, match="unknown target"):
        MotorcycleDepthDataset("train", n=1, target="depth")


def test_motorcycle_vertical_flips_are_off_unless_asked():
    plain = MotorcycleDepthDataset("train", n=12, seed=0, cache=False)
    flipped = MotorcycleDepthDataset("train", n=12, seed=0, vertical_flips=True, cache=False)
    n_flipped = 0
    for i in range(12):
        _, hflip, vflip = plain._draw(plain._rng(i))
        x, y = plain[i][0], flipped[i][0]
        if vflip:
            assert torch.equal(y, torch.flip(x, dims=[1]))
            n_flipped += 1
        else:
            assert torch.equal(x, y)
    assert 0 < n_flipped < 12


def test_motorcycle_train_and_val_crops_share_one_zoom_range():
    tr = MotorcycleDepthDataset("train", n=200, seed=0)
    va = MotorcycleDepthDataset("val", n=200, seed=0)
    h_tr = [tr.crop_box(i)[2] for i in range(200)]
    h_va = [va.crop_box(i)[2] for i in range(200)]
    # the validation band is 199 columns: heights 48 .. 199 / (264/80 * 0.8) = 75
    assert max(h_va) <= 75 and max(h_tr) <= 75 and min(h_tr) >= 48 and min(h_va) >= 48
    wide = MotorcycleDepthDataset("train", n=200, seed=0, matched_zoom=False)
    assert max(wide.crop_box(i)[2] for i in range(200)) > 100


def test_synthetic_scaled_depth_is_depth_over_z_far():
    ds = SyntheticDepthDataset(2, seed=5, target="scaled_depth", cache=False)
    for i in range(2):
        s = ds.scene(i)
        _, t, m = ds[i]
        v = s.valid
        assert np.allclose(t[0].numpy()[v], s.depth[v] / 60.0, atol=1e-6)
        assert torch.equal(m[0] > 0, torch.from_numpy(v)) and torch.all(t[0][~torch.from_numpy(v)] == 0)


def test_depth_task_passes_its_source_options_and_rejects_others():
    from spdnn.tasks import build_task
    from spdnn.train import load_recipe

    over = ["data.source=synthetic", "data.train_size=2", "data.val_size=1"]
    r = load_recipe(ROOT / "recipes/depth_parent_8.yaml",
                    over + ["data.options={target: scaled_depth}"])
    train, val = build_task(r).datasets()
    assert train.target == val.target == "scaled_depth" and len(train) == 2
    r = load_recipe(ROOT / "recipes/depth_parent_8.yaml",
                    over + ["data.options={target: depth, flips: true}"])
    with pytest.raises(SpdnnError, match=r"data\.options\.flips"):
        build_task(r).datasets()

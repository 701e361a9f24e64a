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


def test_like_each_merge_narrows_the_dense_fan_in_not_the_convolutions(like_each):
    """Issue 24: the four merged conv4 nodes hold a 36-channel layer of a fully convolutional
    parent and the 6-channel layer that feeds FC 30 in parents 5-8. The dense layer's fan-in is
    a ChannelSlice of its own budget width, so no lineage passes through a one-channel layer
    (the budget before squeezed J-M to 1 channel)."""
    r = like_each
    spec, info = r.spec, infer(r.spec)
    target = round((4 * 71_137 + 4 * 70_784) / 8)
    assert r.report.target_params == target == 70_960
    assert r.report.binding == "params" and not r.report.warnings
    # one fan-in channel is 10 x 33 x 30 = 9,900 parameters (14% of the target): the closest
    # multiplier lands within half of that step
    assert abs(info.params - target) <= 9_900 / 2
    cat = spec.layer(spec.layer("O").inputs[0])
    assert cat.op_name == "Concat" and len(cat.inputs) == 4
    slices = [lay for lay in spec.layers if lay.op_name == "ChannelSlice"]
    assert len(slices) == 4 and all(1 <= lay.stop <= 6 for lay in slices)
    fan_in = sum(info.shapes[i][0] for i in cat.inputs)
    assert 4 <= fan_in <= 8 and info["O"].in_shapes[0] == (fan_in, 10, 33)
    assert info.shapes["O"] == (30,) and info.shapes["Q"] == (330,)  # labelled counts kept
    convs = {lay.name: lay.out_channels for lay in spec.layers
             if lay.op_name == "Conv2d" and len(lay.name) == 1 and lay.name != "S"}
    # J-M keep the width of the other convolutions (one multiplier, staggered rounding)
    assert min(convs.values()) >= 4 and max(convs.values()) - min(convs.values()) <= 1
    assert {lay.inputs[0] for lay in slices} == {"J", "K", "L", "M"}
    total = 4 * 71_137 + 4 * 70_784
    assert 1 - info.params / total == pytest.approx(0.875, abs=0.01)


def test_fan_ins_are_the_dense_parents_widths(like_each):
    r = like_each
    fan = r.rebuild.fan_ins()
    assert sorted(r.letters[u] for u, _ in fan) == ["J", "K", "L", "M"]
    assert {r.letters[v] for _, v in fan} == {"O"} and set(fan.values()) == {6}
    # --params keep: no slice, the dense layer reads all 36 channels (the thesis' rebuild)
    keep = merge(load_glob("netspecs/depth/parent_*.yaml"), params="keep")
    assert not any(lay.op_name == "ChannelSlice" for lay in keep.spec.layers)


def test_min_width_one_lets_the_budget_reach_closer_but_never_below_one():
    r = merge(load_glob("netspecs/depth/parent_*.yaml"), params="like-each", min_width=1)
    widths = [w["width"] for w in r.report.widths]
    assert min(widths) >= 1 and r.report.binding == "params"


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

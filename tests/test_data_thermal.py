"""spdnn.data.thermal: the SYNTHETIC thermal stand-in (field, pooling to the 5x8 heatmap,
rescaling to [-1, 1], Thermalnet levels), the synthetic scenes and the paired folder loader
(heatmaps, and full-resolution thermal images for the levels); data.source vtest:
tests/test_data_people.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spdnn.data import thermal as T
from spdnn.errors import SpdnnError
from spdnn.train.recipe import DataSpec


def test_paper_sizes_match_the_netspecs():
    from spdnn.spec import load

    spec = load("netspecs/spade_sr/spade_sr_64.yaml")
    h = next(i for i in spec.inputs if i.name == "h")
    assert (h.height, h.width) == (T.HEATMAP_HEIGHT, T.HEATMAP_WIDTH) == (5, 8)
    assert (T.IMAGE_HEIGHT, T.IMAGE_WIDTH) == (8 * 5, 8 * 8)
    assert T.THERMALNET_LEVELS == 256


def test_uniform_field_heatmap_is_the_rescaled_value():
    for c, want in ((19.0, -1.0), (30.0, 1.0), (24.5, 0.0), (22.25, -0.4090909)):
        field = np.full((40, 64), c, dtype=np.float32)
        hm = T.rescale_heatmap(T.pool_heatmap(field))
        assert hm.shape == (5, 8)
        np.testing.assert_allclose(hm, want, atol=1e-6)
    assert T.rescale_heatmap(np.array([10.0, 40.0])).tolist() == [-1.0, 1.0]  # clipped
    np.testing.assert_allclose(T.unscale_heatmap(T.rescale_heatmap(np.array([20.0, 27.5]))),
                               [20.0, 27.5], atol=1e-5)


def test_pooling_matches_avg_pool2d():
    field = np.random.default_rng(0).normal(25, 3, size=(3, 40, 64)).astype(np.float32)
    want = F.avg_pool2d(torch.from_numpy(field)[:, None], kernel_size=8)[:, 0].numpy()
    np.testing.assert_allclose(T.pool_heatmap(field), want, rtol=0, atol=1e-5)
    with pytest.raises(SpdnnError, match="does not pool"):
        T.pool_heatmap(np.zeros((41, 64)))


def test_field_is_hotter_where_the_person_is():
    mask = np.zeros((40, 64), dtype=bool)
    mask[8:40, 40:48] = True
    skin = np.zeros_like(mask)
    skin[8:16, 40:48] = True
    field = T.synthetic_thermal_field(mask, skin=skin, noise_std_c=0.0)
    assert np.all(field[~mask] == T.SYNTHETIC_AMBIENT_C)
    assert np.all(field[mask & ~skin] == T.SYNTHETIC_CLOTH_C)
    assert np.all(field[skin] == T.SYNTHETIC_SKIN_C)
    hm = T.rescale_heatmap(T.pool_heatmap(field))
    assert hm[1, 5] > hm[2, 5] > hm[2, 0]          # skin block > cloth block > background
    assert np.all(hm[1:, 5] > hm[:, :5].max()) and hm[0, 5] == hm[0, 0]
    noisy = T.synthetic_thermal_field(mask, skin=skin, rng=np.random.default_rng(1))
    assert 0.2 < float(np.std(noisy[~mask])) < 0.3   # SYNTHETIC_NOISE_STD_C = 0.25
    with pytest.raises(SpdnnError, match="does not match"):
        T.synthetic_thermal_field(mask, skin=skin[:, :10])


def test_skin_from_rgb_of_a_real_crop():
    rgb = np.zeros((3, 4, 4), dtype=np.float32)
    rgb[:, :2] = np.array([0.86, 0.63, 0.48])[:, None, None]   # skin tone
    rgb[:, 2:] = np.array([0.10, 0.30, 0.80])[:, None, None]   # blue cloth
    assert T.skin_mask_from_rgb(rgb).tolist() == [[True] * 4] * 2 + [[False] * 4] * 2
    mask = np.ones((4, 4), dtype=bool)
    field = T.synthetic_thermal_field(mask, rgb=rgb, noise_std_c=0.0)
    assert field[0, 0] == T.SYNTHETIC_SKIN_C and field[3, 3] == T.SYNTHETIC_CLOTH_C


def test_quantisation_round_trip_within_one_level():
    t = np.random.default_rng(2).uniform(*T.THERMALNET_RANGE_C, size=(40, 64))
    q = T.quantise_levels(t)
    assert q.dtype == np.int64 and q.min() >= 0 and q.max() <= 255
    step = (T.THERMALNET_RANGE_C[1] - T.THERMALNET_RANGE_C[0]) / 255
    assert np.abs(T.dequantise_levels(q) - t).max() <= step / 2 + 1e-5
    assert T.quantise_levels(np.array([0.0, 15.0, 40.0, 99.0])).tolist() == [0, 0, 255, 255]


def test_synthetic_scenes_are_seeded_with_exact_masks():
    a, b, c = T.synthetic_scene(7), T.synthetic_scene(7), T.synthetic_scene(8)
    assert a.rgb.shape == (3, 40, 64) and a.rgb.dtype == np.float32
    assert 0.0 <= a.rgb.min() and a.rgb.max() <= 1.0
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.rgb, c.rgb)
    person, skin = T.render_person(np.random.default_rng(3))
    assert person.sum() > 50 and skin.sum() > 0 and not np.any(skin & ~person)
    assert T.synthetic_scene(1, empty_probability=1.0).mask.sum() == 0


def test_synthetic_dataset_items():
    ds = T.SyntheticThermalDataset(6, seed=0)
    rgb, hm = ds[0]
    assert rgb.shape == (3, 40, 64) and hm.shape == (1, 5, 8) and hm.dtype == torch.float32
    assert -1.0 <= hm.min() and hm.max() <= 1.0
    assert torch.equal(ds[2][1], T.SyntheticThermalDataset(6, seed=0)[2][1])
    for i in range(len(ds)):                      # the heatmap is hottest over the person
        scene, _ = ds.scene(i)
        if scene.mask.sum() > 100:
            cover = T.pool_heatmap(scene.mask.astype(np.float32))
            hmi = ds[i][1][0].numpy()
            assert hmi[cover > 0.3].mean() > hmi[cover == 0].mean() + 0.2
    rgb, levels = T.SyntheticThermalDataset(2, target="levels")[0]
    assert levels.shape == (40, 64) and levels.dtype == torch.int64
    with pytest.raises(SpdnnError, match="unknown thermal target"):
        T.SyntheticThermalDataset(2, target="celsius")


def _pairs(root, stems=("a", "b"), shape=(5, 8), kind="npy"):
    from skimage import io

    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "thermal").mkdir(exist_ok=True)
    for i, s in enumerate(stems):
        img = np.full((40, 64, 3), 40 * (i + 1), dtype=np.uint8)
        io.imsave(str(root / "rgb" / f"{s}.png"), img, check_contrast=False)
        hm = np.full(shape, 20.0 + i, dtype=np.float32)
        if kind == "npy":
            np.save(root / "thermal" / f"{s}.npy", hm)
        else:
            io.imsave(str(root / "thermal" / f"{s}.png"), np.round(hm * 100).astype(np.uint16),
                      check_contrast=False)


@pytest.mark.parametrize("kind", ["npy", "png"])
def test_folder_loader_reads_pairs(tmp_path, kind):
    _pairs(tmp_path, kind=kind)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    ds = T.ThermalFolderDataset(tmp_path)
    assert ds.stems == ["a", "b"] and len(ds) == 2
    rgb, hm = ds[1]
    assert rgb.shape == (3, 40, 64) and hm.shape == (1, 5, 8)
    np.testing.assert_allclose(hm.numpy(), T.rescale_heatmap(np.float32(21.0)), atol=1e-5)
    np.testing.assert_allclose(rgb.numpy(), 80 / 255, atol=1e-6)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before   # nothing written


def _one_line_error(root, match, **kw):
    with pytest.raises(SpdnnError, match=match) as e:
        T.ThermalFolderDataset(root, **kw)
    assert "\n" not in e.value.one_line() and e.value.field == "data.root"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio probing a garbage file
def test_folder_loader_errors(tmp_path):
    _one_line_error(tmp_path, "no rgb/ folder")
    (tmp_path / "rgb").mkdir()
    (tmp_path / "thermal").mkdir()
    _one_line_error(tmp_path, "no \\(rgb, thermal\\) pairs")

    _pairs(tmp_path / "unpaired")
    np.save(tmp_path / "unpaired" / "thermal" / "c.npy", np.zeros((5, 8)))
    (tmp_path / "unpaired" / "rgb" / "a.png").unlink()
    _one_line_error(tmp_path / "unpaired", r"unpaired stems in .*: "
                                           r"2 only in thermal/ \(a, c\)")

    _pairs(tmp_path / "size", shape=(8, 8))
    _one_line_error(tmp_path / "size", "is 8x8, the generator's h input is 5x8")
    T.ThermalFolderDataset(tmp_path / "size", heatmap_size=(8, 8))  # a different sensor is fine

    _pairs(tmp_path / "badheat")
    (tmp_path / "badheat" / "thermal" / "b.npy").write_bytes(b"not numpy")
    _one_line_error(tmp_path / "badheat", "cannot read heatmap .*b.npy")

    np.save(tmp_path / "badheat" / "thermal" / "b.npy", np.full((5, 8), np.nan))
    _one_line_error(tmp_path / "badheat", "b.npy holds NaN")

    _pairs(tmp_path / "png8", kind="png")
    from skimage import io
    io.imsave(str(tmp_path / "png8" / "thermal" / "a.png"), np.zeros((5, 8), np.uint8),
              check_contrast=False)
    _one_line_error(tmp_path / "png8", "must be 16-bit")

    _pairs(tmp_path / "badrgb")
    (tmp_path / "badrgb" / "rgb" / "b.png").write_bytes(b"\x89PNG garbage")
    ds = T.ThermalFolderDataset(tmp_path / "badrgb")
    with pytest.raises(SpdnnError, match="cannot read image .*b.png") as e:
        ds[1]
    assert "\n" not in e.value.one_line()


def _full_res_pairs(root: Path, shape: tuple[int, int]) -> list[np.ndarray]:
    from skimage import io

    (root / "rgb").mkdir(parents=True)
    (root / "thermal").mkdir()
    fields = []
    for i in range(3):
        io.imsave(str(root / "rgb" / f"s{i}.png"), np.full((40, 64, 3), 50 * i, np.uint8),
                  check_contrast=False)
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
        f = (18.0 + i + 15.0 * xx / shape[1] + 0.01 * yy).astype(np.float32)
        np.save(root / "thermal" / f"s{i}.npy", f)
        fields.append(f)
    return fields


def test_folder_serves_levels_from_full_resolution_thermal(tmp_path):
    fields = _full_res_pairs(tmp_path / "same", (40, 64))
    ds = T.ThermalFolderDataset(tmp_path / "same", target="levels")
    rgb, levels = ds[2]
    assert rgb.shape == (3, 40, 64) and levels.dtype == torch.int64
    np.testing.assert_array_equal(levels.numpy(), T.quantise_levels(fields[2]))  # no resize

    fields = _full_res_pairs(tmp_path / "big", (120, 160))
    data = DataSpec(source="folder", root=str(tmp_path / "big"), train_size=5, val_size=1)
    tr, va = T.thermal_datasets(data, target="levels", image_size=(60, 80))
    (rgb, levels), = [va[0]]
    assert rgb.shape == (3, 60, 80) and levels.shape == (60, 80)
    want = torch.nn.functional.interpolate(torch.from_numpy(fields[va.indices[0]])[None, None],
                                           size=(60, 80), mode="bilinear", antialias=True)
    np.testing.assert_array_equal(levels.numpy(), T.quantise_levels(want[0, 0].numpy()))
    assert len(tr) == 2

    with pytest.raises(SpdnnError, match="is 120x160, the generator's h input is 5x8"):
        T.ThermalFolderDataset(tmp_path / "big")               # heatmap target: as before
    _full_res_pairs(tmp_path / "heat", (5, 8))
    with pytest.raises(SpdnnError, match="is 5x8, not a full-resolution thermal image") as e:
        T.ThermalFolderDataset(tmp_path / "heat", target="levels")
    assert e.value.field == "data.root" and "\n" not in e.value.one_line()
    _full_res_pairs(tmp_path / "small", (4, 40))
    with pytest.raises(SpdnnError, match="not a full-resolution"):
        T.ThermalFolderDataset(tmp_path / "small", target="levels")

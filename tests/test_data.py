"""Tests of spdnn.data: synthetic iris, App. D 2.3 degradations, depth datasets, folder loaders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spdnn.data import (
    ColumnShadow,
    Compose,
    ContrastMapping,
    EyeSample,
    IrisFolderDataset,
    KittiDepthDataset,
    MotionBlur,
    MotorcycleDepthDataset,
    Resize,
    SyntheticDepthDataset,
    SyntheticIrisDataset,
    contrast_lut_inside,
    contrast_lut_outside,
    degradation_pipeline,
    load_motorcycle,
    motion_blur_kernel,
    render_eye,
    resize_with_mask,
    shadow_gains,
)
from spdnn.errors import SpdnnError

# ---------------------------------------------------------------------------------------------
# synthetic iris
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("degrade", [False, True])
def test_synthetic_iris_shapes_dtypes_ranges(degrade):
    ds = SyntheticIrisDataset(4, seed=0, degrade=degrade)
    assert len(ds) == 4
    for i in range(4):
        img, mask = ds[i]
        assert img.shape == mask.shape == (1, 96, 128)
        assert img.dtype == mask.dtype == torch.float32
        assert 0.0 <= img.min() and img.max() <= 1.0
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(IndexError):
        ds[4]


def test_synthetic_iris_deterministic_per_seed_and_index():
    a, b = SyntheticIrisDataset(3, seed=7), SyntheticIrisDataset(3, seed=7)
    for i in (2, 0):  # order of access does not matter
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    assert not torch.equal(a[0][0], a[1][0])
    assert not torch.equal(a[1][0], SyntheticIrisDataset(3, seed=8)[1][0])
    # seed and index do not simply add up
    assert not torch.equal(
        SyntheticIrisDataset(2, seed=1)[0][0], SyntheticIrisDataset(2, seed=0)[1][0]
    )
    # degradation leaves the ground truth alone and degrades the same eye
    clean, degraded = SyntheticIrisDataset(3, seed=7, degrade=False), a
    for i in range(3):
        assert torch.equal(clean[i][1], degraded[i][1])
        assert not torch.equal(clean[i][0], degraded[i][0])


def test_iris_mask_is_exact_geometry():
    ds = SyntheticIrisDataset(25, seed=11, degrade=False)
    yy, xx = np.mgrid[0:96, 0:128].astype(float)
    nonempty = 0
    for i in range(len(ds)):
        s = ds.sample(i)
        p = s.params
        (cx, cy), R = p["iris_center"], p["iris_radius"]
        (px, py), rp = p["pupil_center"], p["pupil_radius"]
        pupil = np.hypot(xx - px, yy - py) < rp
        iris_disc = np.hypot(xx - cx, yy - cy) < R
        assert not (s.mask[pupil] > 0).any()  # the pupil is never in the mask
        assert (s.mask <= iris_disc).all()
        assert (s.mask <= s.region).all()
        # region = visible iris disc, mask = region minus pupil, exactly
        assert np.array_equal(s.mask > 0, (s.region > 0) & ~pupil)
        # eyelid occlusion: nothing above the upper lid or below the lower lid is in the mask
        (ox, oy), a, t = p["opening_center"], p["opening_half_width"], p["tilt"]
        bowl = np.clip(1 - ((xx - ox) / a) ** 2, 0, None)
        opening = (yy > oy - p["upper_lid_height"] * bowl + t * (xx - ox)) & (
            yy < oy + p["lower_lid_depth"] * bowl + t * (xx - ox)
        )
        assert np.array_equal(s.region > 0, iris_disc & opening)
        nonempty += s.mask.sum() > 100
        # the pupil is dark and the iris darker than the sclera, on average (clean image)
        if (pupil & opening).sum() > 20:
            assert s.image[pupil & opening].mean() < s.image[s.mask > 0].mean()
    assert nonempty >= 23


def test_render_eye_other_size():
    s = render_eye(np.random.default_rng(0), height=48, width=64)
    assert s.image.shape == s.mask.shape == (48, 64)


# ---------------------------------------------------------------------------------------------
# App. D 2.3 degradations
# ---------------------------------------------------------------------------------------------


def _matlab_lut(u, inside):
    """The 256-entry LUT as DBaug.m builds it: x = linspace(0,1,256), tanh, min-max normalise."""
    x = np.linspace(0, 1, 256)
    y = np.tanh(3 * (x - 0.5 - u * 0.8)) if inside else np.tanh(3 * (x - 0.5 + (u - 0.5) * 0.6))
    return x, (y - y.min()) / (y.max() - y.min())


@pytest.mark.parametrize("u", [0.0, 0.1, 0.5, 0.77, 0.999])
def test_contrast_luts_monotone_unit_range_and_equal_to_dbaug(u):
    for lut, inside in ((contrast_lut_outside, False), (contrast_lut_inside, True)):
        x, ref = _matlab_lut(u, inside)
        y = lut(x, u)
        assert np.allclose(y, ref, atol=1e-12)
        assert np.all(np.diff(y) > 0)
        assert y[0] == pytest.approx(0.0) and y[-1] == pytest.approx(1.0)
        assert y.min() >= 0 and y.max() <= 1


def test_inside_lut_darkens_more_as_u_grows_and_outside_offset_is_symmetric():
    x = np.linspace(0, 1, 256)
    means = [contrast_lut_inside(x, u).mean() for u in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert means == sorted(means, reverse=True)
    assert means[0] == pytest.approx(0.5)  # u = 0: symmetric S-curve
    # outside: offset in [-0.3, 0.3]: u < 0.5 darkens, u > 0.5 brightens
    assert contrast_lut_outside(x, 0.0).mean() < 0.5 < contrast_lut_outside(x, 1.0).mean()


def test_contrast_mapping_uses_region_split():
    img = np.tile(np.linspace(0, 1, 128), (96, 1))
    region = np.zeros((96, 128))
    region[30:60, 40:90] = 1
    s = EyeSample(image=img, mask=region.copy(), region=region)
    out = ContrastMapping()(s, np.random.default_rng(5))
    u_out, u_in = np.random.default_rng(5).random(2)
    inside = region > 0
    assert np.allclose(out.image[inside], contrast_lut_inside(img[inside], u_in))
    assert np.allclose(out.image[~inside], contrast_lut_outside(img[~inside], u_out))
    assert np.array_equal(out.mask, s.mask)


def test_shadow_gains_formula_and_per_column_application():
    g = shadow_gains(128, 1.0, 0.5, 0.0)
    assert g.shape == (128,)
    assert g.min() == pytest.approx(0.0) and g.max() == pytest.approx(1.0)
    assert np.all(np.diff(g) > 0)  # sign +1: shadow on the left
    assert np.all(np.diff(shadow_gains(128, -1.0, 0.5, 0.0)) < 0)  # sign -1: on the right
    g2 = shadow_gains(128, 1.0, 0.3, 0.6)
    x2 = np.linspace(0, 1, 128)
    f = np.tanh(2 * (x2 - 0.5 + (0.3 - 0.5) * 0.6))
    assert np.allclose(g2, (f - f.min()) / (f.max() - f.min()) + 0.06)
    # applied: every column multiplied by its own gain
    img = np.full((96, 128), 0.5)
    s = EyeSample(image=img, mask=np.zeros_like(img), region=np.zeros_like(img))
    out = ColumnShadow()(s, np.random.default_rng(9)).image
    rng = np.random.default_rng(9)
    sign = 1.0 if rng.standard_normal() >= 0 else -1.0
    u1, u2 = rng.random(), rng.random()
    assert np.allclose(out, 0.5 * shadow_gains(128, sign, u1, u2)[None, :])
    assert np.allclose(out, out[0:1, :])  # constant along each column
    assert np.ptp(out[0]) > 0.4  # and varying across columns


@pytest.mark.parametrize("length", [5.0, 7.3, 10.0])
@pytest.mark.parametrize("angle", [0.0, math.pi / 2, math.pi / 4, 1.0, -2.5])
def test_motion_blur_kernel_sum_length_direction(length, angle):
    k = motion_blur_kernel(length, angle)
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert k.min() >= 0 and k.sum() == pytest.approx(1.0)
    c = k.shape[0] // 2
    y, x = np.mgrid[0 : k.shape[0], 0 : k.shape[1]]
    X, Y = x - c, -(y - c)  # y up
    assert (k * X).sum() == pytest.approx(0, abs=1e-9) and (k * Y).sum() == pytest.approx(
        0, abs=1e-9
    )
    cov = np.array([[(k * X * X).sum(), (k * X * Y).sum()], [(k * X * Y).sum(), (k * Y * Y).sum()]])
    w, v = np.linalg.eigh(cov)
    # a uniform segment of length L has variance L^2/12; the tent interpolant adds 1/6
    assert math.sqrt(12 * (w[1] - 1 / 6)) == pytest.approx(length, abs=0.05)
    d = math.atan2(v[1, 1], v[0, 1])
    assert abs(math.sin(d - angle)) < 1e-2  # main axis along the direction (mod pi)
    if angle == 0.0:
        assert np.count_nonzero(k[c]) >= int(length) and k.sum() == pytest.approx(k[c].sum())


def test_motion_blur_transform_preserves_constants_and_impulse_gives_kernel():
    const = EyeSample(
        image=np.full((96, 128), 0.3), mask=np.zeros((96, 128)), region=np.zeros((96, 128))
    )
    out = MotionBlur()(const, np.random.default_rng(0)).image
    assert np.allclose(out, 0.3)
    imp = np.zeros((41, 41))
    imp[20, 20] = 1.0
    s = EyeSample(image=imp, mask=imp.copy(), region=imp.copy())
    out = MotionBlur()(s, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    length, angle = rng.uniform(5, 10), rng.uniform(-math.pi, math.pi)
    k = motion_blur_kernel(length, angle)
    c = k.shape[0] // 2
    assert np.allclose(out.image[20 - c : 21 + c, 20 - c : 21 + c], k[::-1, ::-1])
    assert np.array_equal(out.mask, imp)  # ground truth is not blurred


def test_resize_and_pipeline_order():
    rng = np.random.default_rng(0)
    big = render_eye(rng, height=192, width=256)
    small = Resize()(big)
    assert small.image.shape == small.mask.shape == small.region.shape == (96, 128)
    assert set(np.unique(small.mask)) <= {0.0, 1.0}
    assert abs(small.mask.sum() * 4 - big.mask.sum()) < 0.1 * big.mask.sum()
    pipe = degradation_pipeline()
    assert isinstance(pipe, Compose)
    assert [type(t) for t in pipe.transforms] == [Resize, ContrastMapping, ColumnShadow, MotionBlur]
    out = pipe(big, np.random.default_rng(1))
    assert out.image.shape == (96, 128) and 0 <= out.image.min() and out.image.max() <= 1


# ---------------------------------------------------------------------------------------------
# iris folder
# ---------------------------------------------------------------------------------------------


def _write(path, arr):
    from skimage import io

    path.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(str(path), arr, check_contrast=False)


def _iris_folder(tmp_path):
    root = tmp_path / "iris"
    rng = np.random.default_rng(0)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:50, 20:60] = 255
    _write(root / "images" / "a.png", (rng.random((60, 80, 3)) * 255).astype(np.uint8))
    _write(root / "masks" / "a.png", mask)
    _write(root / "images" / "b.bmp", (rng.random((120, 160)) * 255).astype(np.uint8))
    _write(root / "masks" / "b.tif", np.kron(mask // 255, np.ones((2, 2), np.uint8)))  # 0/1 labels
    return root


def test_iris_folder_dataset(tmp_path):
    ds = IrisFolderDataset(_iris_folder(tmp_path))
    assert len(ds) == 2 and ds.stems == ["a", "b"]
    for i in range(2):
        img, mask = ds[i]
        assert img.shape == mask.shape == (1, 96, 128)
        assert img.dtype == mask.dtype == torch.float32
        assert 0 <= img.min() and img.max() <= 1
        assert set(mask.unique().tolist()) == {0.0, 1.0}
        # the square covers rows 1/6..5/6 and columns 1/4..3/4
        assert mask[0, 48, 64] == 1 and mask[0, 5, 5] == 0
        assert mask.mean().item() == pytest.approx(40 * 40 / (60 * 80), abs=0.03)
    img, mask = IrisFolderDataset(ds.root, degrade=True, seed=3)[0]
    assert torch.equal(mask, ds[0][1])


def test_iris_folder_errors(tmp_path):
    with pytest.raises(SpdnnError, match="does not exist"):
        IrisFolderDataset(tmp_path / "nope")
    root = _iris_folder(tmp_path)
    (root / "masks" / "b.tif").rename(root / "masks" / "c.tif")
    with pytest.raises(SpdnnError, match="do not match") as e:
        IrisFolderDataset(root)
    assert "b" in str(e.value) and "c" in str(e.value) and e.value.hint
    _write(root / "masks" / "b.png", np.zeros((4, 4), np.uint8))
    (root / "masks" / "c.tif").unlink()
    _write(root / "masks" / "b.jpg", np.zeros((4, 4), np.uint8))
    with pytest.raises(SpdnnError, match="two files"):
        IrisFolderDataset(root)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    with pytest.raises(SpdnnError, match="missing folder"):
        IrisFolderDataset(empty)
    (empty / "masks").mkdir()
    with pytest.raises(SpdnnError, match="no image"):
        IrisFolderDataset(empty)


# ---------------------------------------------------------------------------------------------
# depth
# ---------------------------------------------------------------------------------------------


def test_motorcycle_scene_loads_offline_with_valid_mask():
    s = load_motorcycle()
    assert s.image.shape == s.target.shape == s.valid.shape == (500, 741)
    assert 0 < (~s.valid).sum() < 0.2 * s.valid.size  # inf disparities are marked invalid
    assert s.target[s.valid].min() == 0.0 and s.target[s.valid].max() == 1.0
    assert np.all(s.target[~s.valid] == 0)
    assert 0 <= s.image.min() and s.image.max() <= 1


def test_motorcycle_dataset_items():
    ds = MotorcycleDepthDataset("train", n=3, seed=0)
    for i in range(3):
        img, tgt, mask = ds[i]
        assert img.shape == tgt.shape == mask.shape == (1, 80, 264)
        assert img.dtype == tgt.dtype == mask.dtype == torch.float32
        assert 0 <= img.min() and img.max() <= 1 and 0 <= tgt.min() and tgt.max() <= 1
        assert set(mask.unique().tolist()) <= {0.0, 1.0} and mask.mean() > 0.5
        assert torch.all(tgt[mask == 0] == 0)
        assert torch.isfinite(tgt).all()
    again = MotorcycleDepthDataset("train", n=3, seed=0)[1]
    assert all(torch.equal(a, b) for a, b in zip(ds[1], again, strict=True))
    assert not torch.equal(ds[1][0], MotorcycleDepthDataset("train", n=3, seed=1)[1][0])
    with pytest.raises(SpdnnError):
        MotorcycleDepthDataset("test")


def test_motorcycle_train_and_val_crops_are_disjoint():
    tr = MotorcycleDepthDataset("train", n=300, seed=0)
    va = MotorcycleDepthDataset("val", n=300, seed=0)
    assert tr.col_range[1] <= va.col_range[0]
    train_right = max(left + w for _, left, _, w in map(tr.crop_box, range(300)))
    val_left = min(left for _, left, _, _ in map(va.crop_box, range(300)))
    assert train_right <= tr.col_range[1] < va.col_range[0] <= val_left
    for ds in (tr, va):
        for i in range(0, 300, 7):
            top, left, h, w = ds.crop_box(i)
            assert 0 <= top and top + h <= 500 and h >= 8 and w >= 8
            assert abs(w / h / (264 / 80) - 1) < 0.3


def test_resize_with_mask_never_leaks_invalid_values():
    v = np.full((40, 40), 0.5)
    valid = np.ones((40, 40), bool)
    v[:, 20:] = np.inf
    valid[:, 20:] = False
    out, ok = resize_with_mask(v, valid, 10, 10)
    assert np.all(np.isfinite(out))
    assert np.allclose(out[ok], 0.5)
    assert ok[:, :4].all() and not ok[:, 6:].any()


def test_synthetic_depth_dataset():
    ds = SyntheticDepthDataset(3, seed=0)
    for i in range(3):
        img, depth, mask = ds[i]
        assert img.shape == depth.shape == mask.shape == (1, 80, 264)
        assert img.dtype == depth.dtype == mask.dtype == torch.float32
        assert 0 <= img.min() and img.max() <= 1 and 0 <= depth.min() and depth.max() <= 1
        assert mask.mean() > 0.3
    assert all(
        torch.equal(a, b) for a, b in zip(ds[2], SyntheticDepthDataset(3, seed=0)[2], strict=True)
    )
    _, inv, inv_mask = SyntheticDepthDataset(3, seed=0, target="inverse_depth")[0]
    _, depth, mask = ds[0]
    assert torch.equal(inv_mask, mask) and torch.all(depth[mask == 0] == 0)
    valid = mask > 0
    z = 1 + 59 * depth[valid].double()
    assert torch.allclose(inv[valid].double(), (1 / z - 1 / 60) / (1 - 1 / 60), atol=1e-5)
    with pytest.raises(SpdnnError):
        SyntheticDepthDataset(1, target="disparity")


def test_synthetic_depth_is_exact_on_the_ground_plane():
    ds = SyntheticDepthDataset(6, seed=2)
    for i in range(6):
        s = ds.scene(i)
        p = s.params
        f, h, pitch = p["focal_px"], p["camera_height"], math.radians(p["pitch_deg"])
        v = np.arange(80, dtype=float)
        dcy = -(v - 79 / 2) / f
        dy = dcy * math.cos(pitch) - math.sin(pitch)
        z_ground = np.where(
            dy < 0, -h / np.where(dy < 0, dy, -1), np.inf
        )  # camera-z of the ground hit
        col = s.depth[:, 132]
        assert np.all(col <= z_ground + 1e-9)  # nothing behind the ground
        bottom = s.depth[-1]
        # most of the bottom row sees the ground, at exactly the analytic depth
        assert np.mean(np.isclose(bottom, z_ground[-1])) > 0.5
        expected01 = np.clip((s.depth - 1.0) / 59.0, 0, 1)
        assert np.allclose(s.depth01[s.valid], expected01[s.valid])
        assert not s.valid[~np.isfinite(s.depth)].any()


def _kitti_folder(tmp_path, names=("000000_10.png", "000001_10.png")):
    root = tmp_path / "kitti"
    rng = np.random.default_rng(0)
    for n in names:
        _write(root / "training" / "image_2" / n, (rng.random((75, 248, 3)) * 255).astype(np.uint8))
        disp = np.full((75, 248), 32 * 256, np.uint16)  # 32 px everywhere ...
        disp[:, :100] = 0  # ... except no ground truth on the left
        _write(root / "training" / "disp_noc_0" / n, disp)
    return root


def test_kitti_dataset(tmp_path):
    ds = KittiDepthDataset(_kitti_folder(tmp_path))
    assert len(ds) == 2
    img, tgt, mask = ds[0]
    assert img.shape == tgt.shape == mask.shape == (1, 80, 264)
    assert img.dtype == tgt.dtype == mask.dtype == torch.float32
    assert 0 <= img.min() and img.max() <= 1
    assert torch.allclose(tgt[mask > 0], torch.tensor(0.125))  # 32 / 256
    assert mask[0, :, :80].sum() == 0 and mask[0, :, 120:].all()
    assert torch.all(tgt[mask == 0] == 0)


def test_kitti_errors(tmp_path):
    with pytest.raises(SpdnnError, match="does not exist"):
        KittiDepthDataset(tmp_path / "nothing")
    (tmp_path / "k" / "training" / "image_2").mkdir(parents=True)
    with pytest.raises(SpdnnError, match="missing folder") as e:
        KittiDepthDataset(tmp_path / "k")
    assert "disp_noc_0" in str(e.value)
    (tmp_path / "k" / "training" / "disp_noc_0").mkdir()
    with pytest.raises(SpdnnError, match="no"):
        KittiDepthDataset(tmp_path / "k")
    root = _kitti_folder(tmp_path)
    (root / "training" / "disp_noc_0" / "000001_10.png").unlink()
    with pytest.raises(SpdnnError, match="do not match"):
        KittiDepthDataset(root)


# ---------------------------------------------------------------------------------------------
# item cache, DataLoader workers
# ---------------------------------------------------------------------------------------------


def _same_item(a, b):
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and x.stride() == y.stride() and torch.equal(x, y)
        for x, y in zip(a, b, strict=True)
    )


def _dataset_pairs(tmp_path):
    """(cached, uncached) pairs of every dataset, small sizes."""
    iris_root, kitti_root = _iris_folder(tmp_path), _kitti_folder(tmp_path)
    makers = [
        lambda c: SyntheticIrisDataset(5, seed=3, cache=c),
        lambda c: SyntheticIrisDataset(3, seed=1, degrade=False, cache=c),
        lambda c: IrisFolderDataset(iris_root, degrade=True, seed=2, cache=c),
        lambda c: MotorcycleDepthDataset("train", n=4, seed=1, cache=c),
        lambda c: MotorcycleDepthDataset("val", n=3, seed=1, cache=c),
        lambda c: SyntheticDepthDataset(2, seed=4, target="inverse_depth", cache=c),
        lambda c: KittiDepthDataset(kitti_root, cache=c),
    ]
    return [(m(None), m(False)) for m in makers]


def test_cached_items_are_bit_identical_to_computed_ones(tmp_path):
    for cached, plain in _dataset_pairs(tmp_path):
        name = type(cached).__name__
        assert cached.cache is not None and cached.cache.shared, name  # default: on, shared
        assert plain.cache is None, name
        n = len(plain)
        order = list(range(n - 1, -1, -1)) + list(range(n))  # fill backwards, then read hits
        for i in order:
            assert _same_item(cached[i], plain[i]), (name, i)
        assert len(cached.cache) == n and cached.cache.missing() == []
        assert _same_item(cached[0], cached.compute_item(0)), name


def test_cache_hands_out_copies_and_keeps_index_errors():
    ds = SyntheticIrisDataset(2, seed=0)
    first = ds[1]
    first[0].fill_(7.0)  # a caller modifying its item ...
    assert torch.equal(ds[1][0], SyntheticIrisDataset(2, seed=0, cache=False)[1][0])  # ... is alone
    with pytest.raises(IndexError):
        ds[2]
    with pytest.raises(IndexError):
        ds[-1]
    assert len(ds.cache) == 1


def test_iris_folder_negative_index_as_without_cache(tmp_path):
    root = _iris_folder(tmp_path)
    assert _same_item(IrisFolderDataset(root)[-1], IrisFolderDataset(root, cache=False)[-1])


def test_cache_default_follows_the_size_limit(monkeypatch):
    import spdnn.data.cache as C

    assert SyntheticIrisDataset(4).cache is not None
    monkeypatch.setattr(C, "CACHE_LIMIT_BYTES", 3 * 2 * 96 * 128 * 4)
    assert SyntheticIrisDataset(3).cache is not None
    assert SyntheticIrisDataset(4).cache is None  # over the limit: computed on every access
    assert SyntheticIrisDataset(4, cache=True).cache is not None
    assert SyntheticIrisDataset(0).cache is None


def test_cache_falls_back_to_local_memory_without_shm(monkeypatch):
    import spdnn.data.cache as C

    monkeypatch.setattr(C, "_shm_free_bytes", lambda: 0)
    ds = SyntheticIrisDataset(4, seed=5)
    assert ds.cache is not None and not ds.cache.shared
    plain = SyntheticIrisDataset(4, seed=5, cache=False)
    assert all(_same_item(ds[i], plain[i]) for i in (3, 3, 0))
    assert ds.prefill(num_workers=2) == 2 and len(ds.cache) == 4  # computed here instead


def test_custom_transform_changing_shape_is_not_cached():
    ds = SyntheticIrisDataset(2, seed=0, transform=Resize(48, 64))
    img, mask = ds[0]
    assert img.shape == (1, 48, 64) and len(ds.cache) == 0
    assert _same_item(ds[0], (img, mask))


def _batches(ds, num_workers, context=None):
    from torch.utils.data import DataLoader

    loader = DataLoader(
        ds,
        batch_size=3,
        sampler=[4, 1, 0, 5, 2, 3, 1],
        num_workers=num_workers,
        multiprocessing_context=context if num_workers else None,
    )
    return [tuple(b) for b in loader]


def _same_batches(a, b):
    return len(a) == len(b) and all(_same_item(x, y) for x, y in zip(a, b, strict=True))


def test_workers_yield_the_batches_of_the_main_process_and_share_the_cache():
    reference = _batches(SyntheticIrisDataset(6, seed=9, cache=False), 0)
    assert _same_batches(_batches(SyntheticIrisDataset(6, seed=9), 0), reference)
    ds = SyntheticIrisDataset(6, seed=9)
    assert _same_batches(_batches(ds, 2, "fork"), reference)
    assert len(ds.cache) == 6  # the workers filled the main process's (shared) cache
    assert _same_batches(_batches(ds, 2, "fork"), reference)  # all hits now
    assert _same_batches(_batches(ds, 0), reference)
    plain = SyntheticIrisDataset(6, seed=9, cache=False)
    assert _same_batches(_batches(plain, 2, "fork"), reference)


def test_spawned_workers_share_the_cache():
    reference = _batches(MotorcycleDepthDataset("train", n=6, seed=2, cache=False), 0)
    ds = MotorcycleDepthDataset("train", n=6, seed=2)
    assert _same_batches(_batches(ds, 1, "spawn"), reference)
    assert len(ds.cache) == 6


def test_pickled_dataset_gives_the_same_items_and_prefill_in_workers():
    import pickle

    ds = SyntheticIrisDataset(5, seed=4)
    ds[2]
    copy = pickle.loads(pickle.dumps(ds))  # plain pickle: a private copy of the cache
    plain = SyntheticIrisDataset(5, seed=4, cache=False)
    assert all(_same_item(copy[i], plain[i]) for i in range(5))
    assert ds.prefill(num_workers=2) == 4 and ds.prefill() == 0
    assert len(ds.cache) == 5 and all(_same_item(ds[i], plain[i]) for i in range(5))
    assert plain.prefill() == 0

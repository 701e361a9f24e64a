"""spdnn.data.people (person crops from a video: MOG2 foreground, boxes, windows, the cache, the
frame split) and data.source vtest of spdnn.data.thermal (real RGB, SYNTHETIC thermal; the
fallback to synthetic), on a tiny generated .avi; the real vtest.avi where it is installed."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from spdnn.data import people as P
from spdnn.data import thermal as T
from spdnn.errors import SpdnnError
from spdnn.train.recipe import DataSpec

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (the train extra) is absent")

FH, FW, FRAMES = 120, 160, 60
RECT_H, RECT_W = 30, 12
TINY = dict(min_height=0.15, min_area=0.005, history=200, frame_stride=3, gap_frames=3,
            val_fraction=0.25)
"""Settings for the tiny video: rectangles 30 px tall in 120 (0.25 of the frame)."""


def _rects(i: int) -> list[tuple[int, int]]:
    """Top-left (y, x) of the two rectangles in frame ``i``: one walks right, one left."""
    return [(20, 10 + 2 * i), (70, 140 - 2 * i)]


def _background() -> np.ndarray:
    yy, xx = np.mgrid[0:FH, 0:FW]
    g = (60 + 40 * np.sin(xx / 9.0) + 30 * np.cos(yy / 7.0)).astype(np.uint8)
    return np.stack([g, (g * 0.8).astype(np.uint8), (g * 0.6).astype(np.uint8)], axis=2)


def _truth(i: int) -> np.ndarray:
    m = np.zeros((FH, FW), dtype=bool)
    for y, x in _rects(i):
        m[y:y + RECT_H, x:x + RECT_W] = True
    return m


def _write_video(path: Path, frames: int, moving: bool = True) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (FW, FH))
    assert w.isOpened()
    bg = _background()
    for i in range(frames):
        f = bg.copy()
        if moving:
            f[_truth(i)] = (250, 250, 250)
        w.write(f)
    w.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return _write_video(tmp_path_factory.mktemp("video") / "walk.avi", FRAMES)


def _settings(**kw) -> P.PeopleSettings:
    return P.PeopleSettings(**{**TINY, **kw})


def test_crops_hold_the_moving_rectangles(video, tmp_path):
    c = P.extract_people(video, (40, 64), "crops", _settings(), cache_folder=tmp_path,
                         progress=False)
    assert c.frames == FRAMES and len(c) > 0
    assert c.rgb.shape == (len(c), 3, 40, 64) and c.rgb.dtype == np.uint8
    assert c.mask.shape == (len(c), 40, 64) and c.mask.dtype == bool
    assert set(c.frame.tolist()) <= set(range(0, FRAMES, 3))
    # both rectangles, in (nearly) every strided frame where neither touches the border
    per_frame = np.bincount(c.frame, minlength=FRAMES)
    assert (per_frame[range(0, FRAMES, 3)] == 2).mean() > 0.8
    for k in range(len(c)):
        x, y, w, h = c.box[k]
        assert w * 40 == h * 64 or abs(w / h - 1.6) < 0.05          # the output's aspect
        assert 0 <= x and x + w <= FW and 0 <= y and y + h <= FH     # inside the frame
        assert 1.4 * (RECT_H - 2) <= h <= 1.4 * (RECT_H + 4) + 1     # margin x the box
        assert any(x <= rx and rx + RECT_W <= x + w and y <= ry and ry + RECT_H <= y + h
                   for ry, rx in _rects(int(c.frame[k])))            # a whole rectangle in it
        truth = cv2.resize(_truth(int(c.frame[k]))[y:y + h, x:x + w].astype(np.float32),
                           (64, 40), interpolation=cv2.INTER_AREA) > 0.5
        iou = (truth & c.mask[k]).sum() / (truth | c.mask[k]).sum()
        assert iou > 0.8, (k, iou)
        # the masked pixels are the bright rectangles; the crop is RGB, not OpenCV's BGR (the
        # background's brightest channel, written first to the BGR writer, is blue)
        assert c.rgb[k][:, c.mask[k]].mean() > 200
        assert c.rgb[k][2, ~truth].mean() > 1.4 * c.rgb[k][0, ~truth].mean()


def test_scenes_are_one_window_a_frame(video, tmp_path):
    c = P.extract_people(video, (32, 32), "scenes", _settings(), cache_folder=tmp_path,
                         progress=False)
    assert c.frame.tolist() == list(range(0, FRAMES, 3))
    assert (c.box[:, 2:] == FH).all()                 # the largest square of the frame
    assert c.rgb.shape == (len(c), 3, 32, 32) and c.mask.any(axis=(1, 2)).all()


def test_cache_is_read_and_keyed_by_the_settings(video, tmp_path, monkeypatch):
    kw = dict(size=(40, 64), mode="crops", cache_folder=tmp_path, progress=False)
    first = P.extract_people(video, settings=_settings(), **kw)
    assert first.path is not None and first.path.parent == tmp_path and first.path.is_file()

    def no_extraction(*a, **k):
        raise AssertionError("extracted again instead of reading the cache")

    with monkeypatch.context() as m:
        m.setattr(P, "_extract", no_extraction)
        again = P.extract_people(video, settings=_settings(val_fraction=0.5), **kw)  # split only
        for key in ("rgb", "mask", "frame", "box"):
            np.testing.assert_array_equal(getattr(again, key), getattr(first, key))
        assert again.path == first.path and again.frames == first.frames
    other = P.extract_people(video, settings=_settings(margin=1.6), **kw)
    assert other.path != first.path and other.box[0, 3] != first.box[0, 3]
    assert P.extract_people(video, (40, 48), "crops", _settings(), cache_folder=tmp_path,
                            progress=False).path not in (first.path, other.path)
    # the cache folder comes from $SPDNN_CACHE
    monkeypatch.setenv(P.CACHE_ENV, str(tmp_path / "env"))
    assert P.cache_dir() == tmp_path / "env"


def test_corrupt_cache_is_rebuilt(video, tmp_path):
    kw = dict(size=(40, 64), mode="crops", settings=_settings(), cache_folder=tmp_path,
              progress=False)
    first = P.extract_people(video, **kw)
    first.path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(UserWarning, match="person-crop cache .* unreadable"):
        again = P.extract_people(video, **kw)
    np.testing.assert_array_equal(again.mask, first.mask)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P.extract_people(video, **kw)                 # rewritten: read without a warning


def _one_line(exc: pytest.ExceptionInfo) -> str:
    line = exc.value.one_line()
    assert "\n" not in line
    return line


def test_bad_videos_are_one_line_errors(video, tmp_path):
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage " * 50)
    with pytest.raises(SpdnnError, match="cannot read the video") as e:
        P.extract_people(bad, cache=False, progress=False)
    assert e.value.file == str(bad) and "make opencv-vtest" in _one_line(e)

    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(video.read_bytes()[:2000])
    with pytest.raises(SpdnnError, match="cannot read the video") as e:
        P.extract_people(truncated, settings=_settings(), cache=False, progress=False)
    assert e.value.file == str(truncated)

    empty = _write_video(tmp_path / "empty.avi", 0)            # a header, no frames
    with pytest.raises(SpdnnError, match="cannot read the video: it holds no frames") as e:
        P.extract_people(empty, settings=_settings(), cache=False, progress=False)
    assert e.value.file == str(empty) and e.value.field == "data.root"

    still = _write_video(tmp_path / "still.avi", 20, moving=False)
    with pytest.raises(SpdnnError, match="no person crops in the video's 20 frames") as e:
        P.extract_people(still, settings=_settings(), cache=False, progress=False)
    assert e.value.file == str(still) and "synthetic" in _one_line(e)

    with pytest.raises(SpdnnError, match="does not exist"):
        P.extract_people(tmp_path / "none.avi", cache=False, progress=False)
    with pytest.raises(SpdnnError, match=r"data.options.margin: .*greater than or equal to 1"):
        P.people_settings({"margin": 0.5})
    with pytest.raises(SpdnnError, match="data.options.stride: Extra inputs") as e:
        P.people_settings({"stride": 2})
    assert "frame_stride" in e.value.hint


def test_split_is_by_frame_ranges(video, tmp_path):
    c = P.extract_people(video, settings=_settings(), cache_folder=tmp_path, progress=False)
    train, val = P.split_by_frames(c, val_fraction=0.25, gap_frames=3)
    assert c.frame[train].max() < 45 - 3 and c.frame[val].min() >= 45
    assert len(train) + len(val) == (c.frame < 42).sum() + (c.frame >= 45).sum()
    with pytest.raises(SpdnnError, match="validation frames .* hold no crops"):
        P.split_by_frames(c, val_fraction=0.01, gap_frames=0)


def _vtest_data(video, **kw) -> DataSpec:
    return DataSpec(source="vtest", root=str(video), seed=kw.pop("seed", 0),
                    train_size=kw.pop("train_size", 6), val_size=kw.pop("val_size", 4),
                    options={**TINY, **kw})


def test_vtest_source_items(video, tmp_path, monkeypatch):
    monkeypatch.setenv(P.CACHE_ENV, str(tmp_path))
    tr, va = T.thermal_datasets(_vtest_data(video), progress=False)
    assert (len(tr), len(va)) == (6, 4)
    assert max(tr.crops.frame[tr.indices]) < min(va.crops.frame[va.indices])
    rgb, hm = tr[0]
    assert rgb.shape == (3, 40, 64) and rgb.dtype == torch.float32 and 0 <= rgb.min()
    assert hm.shape == (1, 5, 8) and hm.dtype == torch.float32
    # the SYNTHETIC field: warmer where the person is, ambient elsewhere (plus noise)
    scene, field = tr.scene(0)
    assert abs(field[~scene.mask].mean() - T.SYNTHETIC_AMBIENT_C) < 0.05
    assert field[scene.mask].mean() > T.SYNTHETIC_CLOTH_C - 0.1
    cover = T.pool_heatmap(scene.mask.astype(np.float32))[None]
    assert hm.numpy()[cover > 0.3].mean() > hm.numpy()[cover == 0].mean() + 0.2
    # deterministic items; noise seeded per item (and by data.seed)
    tr2, _ = T.thermal_datasets(_vtest_data(video), progress=False)
    assert tr2.indices == tr.indices
    for i in range(len(tr)):
        assert torch.equal(tr[i][1], tr2[i][1]) and torch.equal(tr[i][0], tr2[i][0])
    tr3, _ = T.thermal_datasets(_vtest_data(video, seed=1), progress=False)
    j = tr.indices[0]
    k = tr3.indices.index(j) if j in tr3.indices else None
    if k is not None:
        assert torch.equal(tr3[k][0], rgb) and not torch.equal(tr3[k][1], hm)

    tr, va = T.thermal_datasets(_vtest_data(video, train_size=100, val_size=100),
                                target="levels", image_size=(32, 32), progress=False)
    assert len(tr) == (np.arange(0, FRAMES, 3) < 42).sum() and len(va) == 5  # all scenes
    rgb, levels = tr[0]
    assert rgb.shape == (3, 32, 32) and levels.shape == (32, 32) and levels.dtype == torch.int64
    scene, field = tr.scene(0)
    assert torch.equal(levels, torch.from_numpy(T.quantise_levels(field)))
    assert 0 <= levels.min() and levels.max() <= 255


def test_vtest_falls_back_to_synthetic_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(P, "VTEST_PATH", tmp_path / "absent.avi")
    data = DataSpec(source="vtest", train_size=3, val_size=2, options={"frame_stride": 2})
    with pytest.warns(UserWarning) as rec:
        tr, va = T.thermal_datasets(data)
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert "make opencv-vtest" in msg and "absent.avi" in msg and "synthetic" in msg
    assert isinstance(tr, T.SyntheticThermalDataset) and (len(tr), len(va)) == (3, 2)
    want = T.SyntheticThermalDataset(3)[1]
    assert all(torch.equal(a, b) for a, b in zip(tr[1], want, strict=True))

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "cv2" else real(name, *a))
    with pytest.warns(UserWarning, match=r"vtest.avi .* and OpenCV \(`pip install 'spdnn\["
                                         r"train\]'`") as rec:
        T.thermal_datasets(data)
    assert len(rec) == 1
    # bad options are errors even when falling back; a named video that is absent is no fallback
    with pytest.raises(SpdnnError, match="data.options.stride"):
        T.thermal_datasets(DataSpec(source="vtest", options={"stride": 2}))
    with pytest.raises(SpdnnError, match="does not exist") as e:
        T.thermal_datasets(DataSpec(source="vtest", root=str(tmp_path / "typo.avi")))
    assert e.value.field == "data.root"


@pytest.fixture(scope="module")
def vtest_clip(tmp_path_factory) -> Path:
    """Frames 250..349 of the real vtest.avi (10 s of it), rewritten as MJPG."""
    if not P.VTEST_PATH.is_file():
        pytest.skip("OpenCV's vtest.avi is absent (make opencv-vtest as root installs it)")
    cap = cv2.VideoCapture(str(P.VTEST_PATH))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 250)
    path = tmp_path_factory.mktemp("vtest") / "clip.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (768, 576))
    for _ in range(100):
        ok, frame = cap.read()
        assert ok
        out.write(frame)
    cap.release()
    out.release()
    return path


@pytest.mark.parametrize("detector", ["foreground", "hog"])
def test_people_of_the_real_vtest_video(vtest_clip, detector):
    """The default settings on 100 real frames (every 5th read): a few people a frame, each
    a minority of its crop and at its middle (the full video: benchmarks/bench_thermal_data.py)."""
    settings = P.PeopleSettings(detector=detector, **({"frame_stride": 20} if detector == "hog"
                                                     else {}))
    c = P.extract_people(vtest_clip, settings=settings, cache=False, progress=False)
    frames = 100 // settings.frame_stride
    assert c.frames == 100 and c.rgb.shape[1:] == (3, 40, 64)
    assert frames <= len(c) <= 8 * frames and len(set(c.frame.tolist())) > 0.8 * frames
    frac = c.mask.mean(axis=(1, 2))
    assert 0.02 < np.median(frac) < 0.3
    assert c.mask[:, :, 24:40].mean() > 2 * c.mask[:, :, :8].mean()

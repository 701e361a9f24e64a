"""Real RGB people from a video: person crops (and whole scenes) with foreground masks, extracted
once with OpenCV and cached. The RGB side of the thermal tasks' ``data.source: vtest``
(:func:`spdnn.data.thermal.thermal_datasets`); nothing here is thermal.

The video is OpenCV's sample ``vtest.avi`` (795 frames, 768 x 576, 10 frames/s, a street with
people walking, seen from above), which the Debian package ``opencv-doc`` installs at
:data:`VTEST_PATH` (``make opencv-vtest`` extracts just that file). Any video OpenCV reads works.

Extraction (:func:`extract_people`, ``cv2`` = ``opencv-python-headless``, the ``train`` extra):

1. **Background.** A MOG2 background subtractor (``cv2.createBackgroundSubtractorMOG2``, Zivkovic
   2004; ``history`` frames, ``var_threshold``, shadow detection on) starts from the per-pixel
   median of ``median_frames`` frames spread over the video (people who move are not in it; without
   it, the people of the first frames would linger in the model as background) and learns the
   background over the *whole* video (pass 1).
2. **Foreground masks.** Pass 2 reads every ``frame_stride``-th frame and applies the learnt model
   without updating it (learning rate 0): pixels labelled foreground (255; shadows, 127, are
   background) cleaned by a morphological opening (``open_px``, removes speckle and the fluttering
   tape) and a closing (``close_px``, fills holes in a body).
3. **Boxes.** ``detector="foreground"``: the connected components of the mask (8-connected) at
   least ``min_height`` of the frame tall, ``min_area`` of the frame in pixels, taller than
   ``min_aspect`` x their width, and not touching the frame's border (a person cut by it).
   ``detector="hog"``: OpenCV's HOG + linear-SVM people detector
   (``cv2.HOGDescriptor_getDefaultPeopleDetector``, Dalal & Triggs 2005) on the frame, boxes of
   SVM score >= ``hog_score`` at least ``min_inside`` inside the frame, each shrunk to the
   foreground inside it (dropped when it holds none). At most ``max_per_frame`` boxes a frame,
   the largest first.
4. **Crops.** ``mode="crops"``: each box becomes a window of the output's aspect ratio (for the
   SPADE-SR generator's 40 x 64, height x width, a landscape window 1.6 times as wide as tall,
   the paper's 64 x 40 room images of one person), ``margin`` times the box's height, centred on
   the box and shifted (not padded) to lie inside the frame; windows larger than the frame are
   dropped. ``mode="scenes"``: one window a frame, the largest of the output's aspect that fits
   the frame (576 x 576 for Thermalnet's 224 x 224), centred on the foreground horizontally.
   The window's RGB is resized by area averaging (``cv2.INTER_AREA``) and its mask by area
   coverage > 1/2. The mask is the whole foreground in the window (other people in it included).

Outputs (:class:`PeopleCrops`): ``rgb`` ``(N, 3, H, W)`` uint8, ``mask`` ``(N, H, W)`` bool,
``frame`` ``(N,)`` int64 (0-based frame index), ``box`` ``(N, 4)`` int64 (the window in frame
pixels: x, y, width, height), in frame order.

**Cache.** One ``.npz`` per extraction under :func:`cache_dir` (``$SPDNN_CACHE``, else
``~/.cache/spdnn``), ``people_<mode>_<digest>.npz``, the digest a hash of the extraction
settings (:class:`PeopleSettings`, the output size), the video's name, size and modification
time, and OpenCV's version. Written atomically (:func:`spdnn.io.write_atomic`); an unreadable or
inconsistent cache file is rebuilt (with a warning); an unwritable cache folder only warns.

**Split.** :func:`split_by_frames` splits by time, not at random: the first ``1 - val_fraction``
of the video's frames train, the rest after a gap of ``gap_frames`` validate, so a validation
crop is never a training crop's next frame. The street is the same and people who walk through
both parts of the video appear in both.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from spdnn.errors import SpdnnError, validated

__all__ = [
    "CACHE_ENV",
    "VTEST_PATH",
    "PeopleCrops",
    "PeopleSettings",
    "cache_dir",
    "extract_people",
    "people_settings",
    "split_by_frames",
]

VTEST_PATH = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
"""Where the Debian package ``opencv-doc`` installs OpenCV's ``vtest.avi`` sample."""

CACHE_ENV = "SPDNN_CACHE"
"""Environment variable naming the cache folder (default ``~/.cache/spdnn``)."""

_CACHE_FORMAT = 1
_KEYS = ("rgb", "mask", "frame", "box")


class PeopleSettings(BaseModel):
    """Extraction and split settings, ``data.options`` of ``data.source: vtest`` (unknown keys
    are errors). Fractions are of the frame's height (lengths) or area (areas). None of them is
    from a paper: they are chosen for ``vtest.avi`` (people 60..100 px tall in 576)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    frame_stride: int = Field(default=5, ge=1, le=10_000)
    """Read every n-th frame in pass 2 (5: 0.5 s apart at 10 frames/s)."""
    history: int = Field(default=500, ge=2, le=100_000)
    """MOG2's history, frames (OpenCV's default); after the median start the learning rate is
    1 / history."""
    var_threshold: float = Field(default=16.0, gt=0)
    """MOG2's squared Mahalanobis distance threshold (OpenCV's default)."""
    median_frames: int = Field(default=25, ge=0, le=1000)
    """Frames (evenly spread) whose per-pixel median starts the background model (0: none)."""
    open_px: int = Field(default=3, ge=0, le=99)
    """Side of the elliptic opening kernel, pixels (0: none)."""
    close_px: int = Field(default=7, ge=0, le=99)
    """Side of the elliptic closing kernel, pixels (0: none)."""
    detector: Literal["foreground", "hog"] = "foreground"
    """Where the boxes come from (module docstring, step 3)."""
    min_height: float = Field(default=0.07, gt=0, le=1)
    """Smallest box height, fraction of the frame's height (0.07: 40 px of 576)."""
    min_area: float = Field(default=0.0008, ge=0, le=1)
    """Fewest foreground pixels of a component, fraction of the frame's area (350 px)."""
    min_aspect: float = Field(default=0.8, ge=0)
    """A component's height / width at least this (a standing person or a small group)."""
    hog_score: float = Field(default=0.5)
    """Smallest HOG SVM score of a box (``detector="hog"``)."""
    min_inside: float = Field(default=0.75, gt=0, le=1)
    """Smallest fraction of a HOG box inside the frame."""
    max_per_frame: int = Field(default=8, ge=1, le=1000)
    """Most crops a frame."""
    margin: float = Field(default=1.4, ge=1.0, le=20.0)
    """Crop window height / box height (``mode="crops"``)."""
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    """The last fraction of the frames that validates (:func:`split_by_frames`)."""
    gap_frames: int = Field(default=25, ge=0)
    """Frames between the training and the validation range (neither uses them)."""

    def extraction(self) -> dict:
        """The settings that change the crops (the split's two do not), for the cache's hash."""
        return self.model_dump(exclude={"val_fraction", "gap_frames"})


def people_settings(options: dict) -> PeopleSettings:
    """``data.options`` of ``source: vtest`` validated.

    Raises:
        SpdnnError: at ``data.options.<key>`` with pydantic's message (unknown key, bad value).
    """
    return validated(PeopleSettings, options or {}, "data.options",
                     hint="options of data.source vtest: "
                          + ", ".join(PeopleSettings.model_fields))


@dataclass
class PeopleCrops:
    """Extracted windows (module docstring): ``rgb`` ``(N, 3, H, W)`` uint8, ``mask``
    ``(N, H, W)`` bool, ``frame`` ``(N,)`` int64, ``box`` ``(N, 4)`` int64 (x, y, w, h in frame
    pixels); ``frames`` the video's frame count, ``path`` the cache file (None: not cached)."""

    rgb: np.ndarray
    mask: np.ndarray
    frame: np.ndarray
    box: np.ndarray
    frames: int
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.frame)


def cache_dir() -> Path:
    """``$SPDNN_CACHE`` if set, else ``~/.cache/spdnn``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spdnn"


def _cv2():
    try:
        import cv2
    except ImportError:
        raise SpdnnError("person crops from a video need OpenCV (cv2), which is not installed",
                         hint="pip install 'spdnn[train]' (or opencv-python-headless>=4.8,<5)"
                         ) from None
    return cv2


def _digest(video: Path, mode: str, size: tuple[int, int], settings: PeopleSettings,
            cv2_version: str) -> str:
    st = video.stat()
    key = dict(format=_CACHE_FORMAT, mode=mode, size=list(size), video=video.name,
               bytes=st.st_size, mtime_ns=st.st_mtime_ns, opencv=cv2_version,
               settings=settings.extraction())
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _read_cache(path: Path, size: tuple[int, int]) -> PeopleCrops | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in (*_KEYS, "frames")}
        n = len(arrays["frame"])
        h, w = size
        ok = (arrays["rgb"].dtype == np.uint8 and arrays["rgb"].shape == (n, 3, h, w)
              and arrays["mask"].dtype == np.bool_ and arrays["mask"].shape == (n, h, w)
              and arrays["box"].shape == (n, 4) and arrays["frames"].shape == ())
        if not ok:
            raise ValueError("arrays of the wrong shape or type")
    except Exception as e:  # zipfile / numpy raise many kinds on a damaged file
        warnings.warn(f"the person-crop cache {path} is unreadable ({type(e).__name__}: {e}); "
                      f"extracting again", stacklevel=3)
        return None
    return PeopleCrops(arrays["rgb"], arrays["mask"], arrays["frame"].astype(np.int64),
                       arrays["box"].astype(np.int64), int(arrays["frames"]), path)


def _write_cache(path: Path, crops: PeopleCrops) -> Path | None:
    from spdnn.io import write_atomic

    buf = io.BytesIO()
    np.savez_compressed(buf, rgb=crops.rgb, mask=crops.mask, frame=crops.frame, box=crops.box,
                        frames=np.int64(crops.frames))
    try:
        return write_atomic(path, buf.getvalue(), what="person-crop cache")
    except SpdnnError as e:
        warnings.warn(f"{e.one_line()}; the crops are not cached", stacklevel=3)
        return None


def _kernel(cv2, px: int):
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (px, px)) if px > 1 else None


def _foreground(cv2, mog, frame: np.ndarray, s: PeopleSettings) -> np.ndarray:
    fg = (mog.apply(frame, learningRate=0) == 255).astype(np.uint8)
    for op, px in ((cv2.MORPH_OPEN, s.open_px), (cv2.MORPH_CLOSE, s.close_px)):
        k = _kernel(cv2, px)
        if k is not None:
            fg = cv2.morphologyEx(fg, op, k)
    return fg


def _boxes(cv2, hog, frame: np.ndarray, fg: np.ndarray, s: PeopleSettings
           ) -> list[tuple[int, int, int, int]]:
    fh, fw = fg.shape
    out = []
    if s.detector == "foreground":
        n, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        for x, y, w, h, area in stats[1:]:
            if (h >= s.min_height * fh and area >= s.min_area * fh * fw
                    and h >= s.min_aspect * w and x > 0 and y > 0 and x + w < fw
                    and y + h < fh):
                out.append((int(x), int(y), int(w), int(h)))
    else:
        rects, scores = hog.detectMultiScale(frame, winStride=(8, 8), padding=(8, 8),
                                             scale=1.05)
        for (x, y, w, h), score in zip(np.reshape(rects, (-1, 4)), np.ravel(scores),
                                       strict=True):
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, fw), min(y + h, fh)
            if score < s.hog_score or x1 <= x0 or y1 <= y0:
                continue
            if (x1 - x0) * (y1 - y0) < s.min_inside * w * h:
                continue
            ys, xs = np.nonzero(fg[y0:y1, x0:x1])
            if len(ys) == 0:
                continue
            bx, by = x0 + int(xs.min()), y0 + int(ys.min())
            bw, bh = int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1
            if bh >= s.min_height * fh:
                out.append((bx, by, bw, bh))
    out.sort(key=lambda b: -b[2] * b[3])
    return out[:s.max_per_frame]


def _window(cx: float, cy: float, wh: int, ww: int, fh: int, fw: int
            ) -> tuple[int, int, int, int] | None:
    if wh > fh or ww > fw or wh < 1 or ww < 1:
        return None
    x = int(round(min(max(cx - ww / 2, 0), fw - ww)))
    y = int(round(min(max(cy - wh / 2, 0), fh - wh)))
    return x, y, ww, wh


def _resize(cv2, frame: np.ndarray, fg: np.ndarray, win, size) -> tuple[np.ndarray, np.ndarray]:
    x, y, w, h = win
    dsize = (size[1], size[0])
    rgb = cv2.resize(frame[y:y + h, x:x + w], dsize, interpolation=cv2.INTER_AREA)
    cover = cv2.resize(fg[y:y + h, x:x + w].astype(np.float32), dsize,
                       interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb[..., ::-1].transpose(2, 0, 1)), cover > 0.5


def _bad_video(video: Path, why: str) -> SpdnnError:
    return SpdnnError(f"cannot read the video: {why}", file=str(video), field="data.root",
                      hint="replace the file (make opencv-vtest installs OpenCV's vtest.avi) or "
                           "use data.source: synthetic")


def _frames(cv2, video: Path):
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        cap.release()
        raise _bad_video(video, "OpenCV cannot open it (not a video, or damaged)")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def extract_people(video: str | Path = VTEST_PATH, size: tuple[int, int] = (40, 64),
                   mode: Literal["crops", "scenes"] = "crops",
                   settings: PeopleSettings | None = None, *, cache: bool = True,
                   cache_folder: str | Path | None = None, progress: bool = True
                   ) -> PeopleCrops:
    """The person crops (or scenes) of ``video`` (module docstring), from the cache when it holds
    them, else extracted (two passes over the video, a progress bar on stderr) and cached.

    Args:
        video: any video OpenCV reads (default :data:`VTEST_PATH`).
        size: output ``(H, W)`` pixels (40 x 64: the SPADE-SR generator's output, paper Table 2).
        mode: ``"crops"`` (windows around each person) or ``"scenes"`` (one a frame).
        settings: extraction settings (default :class:`PeopleSettings`).
        cache: read and write the cache (False: extract, write nothing).
        cache_folder: default :func:`cache_dir`.
        progress: show the progress bar (rich, transient, on stderr).
    Returns:
        :class:`PeopleCrops`, at least one window, in frame order. Deterministic: same video,
        settings and OpenCV version, same arrays.
    Raises:
        SpdnnError: OpenCV missing (names the extra); the video missing, unreadable or without
            frames, or yielding no crops (``file=`` the video, with a hint).
    """
    settings = settings or PeopleSettings()
    video = Path(video)
    size = (int(size[0]), int(size[1]))
    if mode not in ("crops", "scenes"):
        raise SpdnnError(f"unknown extraction mode {mode!r}; expected 'crops' or 'scenes'")
    if min(size) < 1:
        raise SpdnnError(f"crop size must be positive, got {size}")
    cv2 = _cv2()
    if not video.is_file():
        raise SpdnnError("the video does not exist", file=str(video), field="data.root",
                         hint="make opencv-vtest installs OpenCV's vtest.avi, or set data.root "
                              "to a video")
    path = Path(cache_folder) if cache_folder is not None else cache_dir()
    path = path / f"people_{mode}_{_digest(video, mode, size, settings, cv2.__version__)}.npz"
    if cache:
        hit = _read_cache(path, size)
        if hit is not None:
            return hit
    crops = _extract(cv2, video, size, mode, settings, progress)
    if cache:
        crops.path = _write_cache(path, crops)
    return crops


def _extract(cv2, video: Path, size: tuple[int, int], mode: str, s: PeopleSettings,
             progress: bool) -> PeopleCrops:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    cap = cv2.VideoCapture(str(video))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    mog = cv2.createBackgroundSubtractorMOG2(history=s.history, varThreshold=s.var_threshold,
                                             detectShadows=True)
    rate = -1.0                      # MOG2's automatic rate
    if s.median_frames and total:
        step = max(1, total // s.median_frames)
        sample = [f for i, f in enumerate(_frames(cv2, video)) if i % step == 0]
        if sample and all(f.shape == sample[0].shape for f in sample):
            median = np.median(np.stack(sample[:s.median_frames]), axis=0).astype(np.uint8)
            mog.apply(median, learningRate=1.0)
            rate = 1.0 / s.history   # MOG2's automatic rate would give the first frames 1/2, 1/4..
    hog = None
    if s.detector == "hog":
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    rgbs, masks, frames, boxes = [], [], [], []
    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                                                                      "{task.total} frames"),
            TimeElapsedColumn())
    with Progress(*cols, console=Console(stderr=True), transient=True,
                  disable=not progress) as bar:
        job = bar.add_task(f"learning the background of {video.name}", total=total or None)
        n = 0
        shape = None
        for frame in _frames(cv2, video):
            if shape is None:
                shape = frame.shape
            elif frame.shape != shape:
                raise _bad_video(video, f"frame {n} is {frame.shape}, the first {shape}")
            mog.apply(frame, learningRate=rate)
            n += 1
            bar.update(job, completed=n)
        if n == 0:
            raise _bad_video(video, "it holds no frames OpenCV can decode")
        fh, fw = shape[:2]
        h, w = size
        job = bar.add_task(f"extracting people from {video.name}", total=n)
        for i, frame in enumerate(_frames(cv2, video)):
            bar.update(job, completed=i + 1)
            if i % s.frame_stride:
                continue
            fg = _foreground(cv2, mog, frame, s)
            if mode == "scenes":
                wh = min(fh, fw * h // w)
                ww = min(fw, wh * w // h)
                xs = np.nonzero(fg.any(axis=0))[0]
                cx = (xs.min() + xs.max() + 1) / 2 if len(xs) else fw / 2
                wins = [_window(cx, fh / 2, wh, ww, fh, fw)]
            else:
                wins = []
                for bx, by, bw, bh in _boxes(cv2, hog, frame, fg, s):
                    wh = int(round(s.margin * bh))
                    wins.append(_window(bx + bw / 2, by + bh / 2, wh, int(round(wh * w / h)),
                                        fh, fw))
            for win in wins:
                if win is None:
                    continue
                rgb, mask = _resize(cv2, frame, fg, win, size)
                if mode == "crops" and not mask.any():
                    continue
                rgbs.append(rgb)
                masks.append(mask)
                frames.append(i)
                boxes.append(win)
    if not frames:
        raise SpdnnError(f"no person {mode} in the video's {n} frames (every {s.frame_stride}th "
                         f"read, detector {s.detector})", file=str(video), field="data.options",
                         hint="a video of people moving over a static background is needed; "
                              "lower data.options.min_height / min_area, or use data.source: "
                              "synthetic")
    return PeopleCrops(np.stack(rgbs).astype(np.uint8), np.stack(masks),
                       np.asarray(frames, dtype=np.int64), np.asarray(boxes, dtype=np.int64), n)


def split_by_frames(crops: PeopleCrops, val_fraction: float = 0.2, gap_frames: int = 25
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` indices into ``crops`` by time: training crops come from frames
    ``< (1 - val_fraction) * frames - gap_frames``, validation crops from frames
    ``>= (1 - val_fraction) * frames`` (vtest: frames 0..610 and 636..794 at the defaults).

    Returns:
        two int64 arrays, ascending.
    Raises:
        SpdnnError: either side empty (``data.options.val_fraction``).
    """
    start = int(round((1.0 - val_fraction) * crops.frames))
    train = np.nonzero(crops.frame < start - gap_frames)[0]
    val = np.nonzero(crops.frame >= start)[0]
    if len(train) == 0 or len(val) == 0:
        side = "training" if len(train) == 0 else "validation"
        raise SpdnnError(f"the {side} frames of the video hold no crops ({len(crops)} crops in "
                         f"{crops.frames} frames, validation from frame {start}, gap "
                         f"{gap_frames})", field="data.options.val_fraction",
                         hint="change data.options.val_fraction / gap_frames")
    return train.astype(np.int64), val.astype(np.int64)

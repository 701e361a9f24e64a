"""Faces with facial landmarks in the 68-point ``.pts`` layout of the public 300-W / iBUG sets
(Sagonas et al. 2013: ``ibug``, ``afw``, ``helen``, ``lfpw``), the landmark aspect of the
GAN+aspect face experiment (thesis App. F sec. 3.1; the thesis used 49 points detected on
CelebA, which does not ship). No landmark data ships with spdnn: this loader serves users who
bring such a folder (and the tests).

A ``.pts`` file::

    version: 1
    n_points:  68
    {
    x1 y1
    ...
    x68 y68
    }

(pixel coordinates, x to the right, y down, origin at the top-left pixel, as the 300-W
annotations; the iBUG files count pixels from 1, which this loader keeps as written).
A folder holds ``<stem>.<image ext>`` beside ``<stem>.pts`` for every image (the way the
300-W subsets are distributed); sub-folders are not searched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from spdnn.data.iris import IMAGE_EXTENSIONS
from spdnn.errors import SpdnnError

POINTS = 68
"""Points of the 300-W / iBUG markup."""

__all__ = ["POINTS", "read_pts", "LandmarkFolderDataset"]


MAX_PTS_LINE = 256
"""Characters a line of a ``.pts`` file may have ("x y" with two numbers needs about 20)."""
MAX_PTS_HEADER_LINES = 16
"""Lines before the opening ``{`` (300-W has two: ``version`` and ``n_points``)."""


def read_pts(path: str | Path, n_points: int = POINTS) -> np.ndarray:
    """The landmarks of one ``.pts`` file as ``(n_points, 2)`` float64 ``(x, y)`` pixels.

    The file is read line by line and checked as it goes: the header count against
    ``n_points`` before any point is read, the points against the header as they are read
    (one too many stops the reading), at most :data:`MAX_PTS_HEADER_LINES` lines before ``{``
    and :data:`MAX_PTS_LINE` characters a line; so a file listing millions of points is refused
    at the first point too many, and one endless line after :data:`MAX_PTS_LINE` characters.

    Raises:
        SpdnnError: (naming the file and line) unreadable file, no ``n_points:`` header and
            ``{`` in the first lines, a header count other than ``n_points``, a line that is
            not two finite numbers or is too long, more or fewer points than the header's, or
            no closing ``}``.
    """
    from spdnn.io import check_regular_input

    p = Path(path)
    check_regular_input(p, "landmark file")
    hint = "the 300-W layout: version, n_points, '{', one 'x y' per line, '}'"
    try:
        fh = p.open(encoding="utf-8", errors="strict", newline=None)
    except OSError as exc:
        raise SpdnnError(f"cannot read the landmark file: {exc.strerror or exc}",
                         file=str(p)) from None
    header: int | None = None
    opened = closed = False  # seen '{' / '}'
    pts: list[tuple[float, float]] = []
    no = 0
    with fh:
        try:
            for no, raw in enumerate(iter(lambda: fh.readline(MAX_PTS_LINE + 1), ""), 1):
                if len(raw) > MAX_PTS_LINE:
                    raise SpdnnError(f"a line longer than {MAX_PTS_LINE} characters",
                                     file=f"{p}:{no}", hint=hint)
                line = raw.strip()
                if not opened:
                    if line.lower().startswith("n_points"):
                        try:
                            header = int(line.split(":", 1)[1])
                        except (IndexError, ValueError):
                            raise SpdnnError(f"bad n_points header '{line[:40]}'",
                                             file=f"{p}:{no}",
                                             hint="write 'n_points: 68'") from None
                    elif line == "{" and header is not None:
                        if header != n_points:
                            raise SpdnnError(f"the file has {header} points, {n_points} are "
                                             "expected", file=str(p),
                                             hint=f"use {n_points}-point annotations "
                                                  "(300-W / iBUG)")
                        opened = True
                    elif line == "{" or no >= MAX_PTS_HEADER_LINES:
                        break
                    continue
                if line == "}":
                    closed = True
                    break
                if not line:
                    continue
                parts = line.split()
                try:
                    if len(parts) != 2:
                        raise ValueError
                    xy = (float(parts[0]), float(parts[1]))
                    if not (np.isfinite(xy[0]) and np.isfinite(xy[1])):
                        raise ValueError
                except ValueError:
                    raise SpdnnError(f"expected two finite numbers 'x y', got '{line[:40]}'",
                                     file=f"{p}:{no}") from None
                if len(pts) == header:  # stop at the first point too many
                    raise SpdnnError(f"the file lists more than {header} points, its header "
                                     f"says {header}", file=f"{p}:{no}",
                                     hint=f"give exactly {n_points} 'x y' lines")
                pts.append(xy)
        except UnicodeDecodeError:
            raise SpdnnError("the landmark file is not UTF-8 text", file=str(p),
                             hint=hint) from None
        except OSError as exc:
            raise SpdnnError(f"cannot read the landmark file: {exc.strerror or exc}",
                             file=str(p)) from None
    if not opened:
        raise SpdnnError("not a .pts landmark file (no 'n_points:' header and '{')", file=str(p),
                         hint=hint)
    if not closed:
        raise SpdnnError("the point list has no closing '}'", file=str(p), hint=hint)
    if len(pts) != header:
        raise SpdnnError(f"the file lists {len(pts)} points, its header says {header}",
                         file=str(p), hint=f"give exactly {n_points} 'x y' lines")
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


class LandmarkFolderDataset(Dataset):
    """Images with ``.pts`` landmarks in one folder (module docstring).

    Item ``i`` (sorted by stem) is ``(image, landmarks)``: ``(C, H, W)`` float32 in [0, 1] (read
    with ``skimage.io``, resized to ``height x width`` by :func:`spdnn.data.images.fit_images`,
    gray or RGB by ``channels``) and ``(2 * n_points,)`` float32: ``x / W0, y / H0`` per point
    (``W0 x H0`` the original image's size), interleaved ``x1, y1, x2, y2, ...`` as the
    landmark generator of App. F Table II outputs them (coordinates divided by the image size).

    Raises:
        SpdnnError: the folder is missing, holds no image with a ``.pts`` file, an image
            without its ``.pts`` (or a ``.pts`` without its image), or a bad ``.pts`` file
            (:func:`read_pts`, naming it).
    """

    def __init__(self, root: str | Path, height: int, width: int, channels: int = 1,
                 n_points: int = POINTS) -> None:
        root = Path(root)
        if not root.is_dir():
            raise SpdnnError("the landmark folder does not exist", file=str(root),
                             hint="a folder of <name>.png|jpg beside <name>.pts")
        images = {p.stem: p for p in sorted(root.iterdir())
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}
        pts = {p.stem: p for p in sorted(root.iterdir()) if p.is_file() and p.suffix == ".pts"}
        if not pts:
            raise SpdnnError("no .pts landmark file in the folder", file=str(root),
                             hint="a folder of <name>.png|jpg beside <name>.pts")
        missing = sorted(set(pts) - set(images)) + sorted(set(images) - set(pts))
        if missing:
            stem = missing[0]
            what = (f"{stem}.pts has no image" if stem in pts else
                    f"{images[stem].name} has no {stem}.pts")
            raise SpdnnError(f"{what} ({len(missing)} unmatched)", file=str(root),
                             hint="give every image a .pts file with the same name")
        self.stems = sorted(pts)
        self.image_paths = [images[s] for s in self.stems]
        self.pts_paths = [pts[s] for s in self.stems]
        self.landmarks = [read_pts(p, n_points) for p in self.pts_paths]  # all checked up front
        self.shape = (int(channels), int(height), int(width))
        self.n_points = n_points

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from skimage.util import img_as_float32

        from spdnn.data.images import fit_images
        from spdnn.io import read_image

        path = self.image_paths[i]
        try:
            img = img_as_float32(read_image(path))
        except SpdnnError:
            raise
        except Exception as exc:  # noqa: BLE001 - any reader failure is a data problem
            raise SpdnnError(f"cannot read image: {exc}", file=str(path)) from None
        if img.ndim == 3 and img.shape[2] in (2, 4):
            img = img[..., :-1]
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        h0, w0 = img.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(img))
        x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
        image = fit_images(x, self.shape)[0]
        lm = self.landmarks[i] / np.array([w0, h0], dtype=np.float64)
        return image, torch.from_numpy(lm.astype(np.float32).reshape(-1))

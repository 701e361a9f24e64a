"""The 68-point .pts landmark loader (300-W / iBUG layout), on a folder the test writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.io import imsave

from spdnn.data.landmarks import LandmarkFolderDataset, read_pts
from spdnn.errors import SpdnnError


def write_pts(path, pts, header=None) -> None:
    n = len(pts) if header is None else header
    body = "\n".join(f"{x} {y}" for x, y in pts)
    path.write_text(f"version: 1\nn_points:  {n}\n{{\n{body}\n}}\n")


def landmark_folder(root, n=2, h=30, w=40):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    truth = []
    for i in range(n):
        pts = np.stack([rng.uniform(0, w, 68), rng.uniform(0, h, 68)], 1).round(2)
        imsave(root / f"face{i}.png", (rng.random((h, w)) * 255).astype(np.uint8),
               check_contrast=False)
        write_pts(root / f"face{i}.pts", pts)
        truth.append(pts)
    return truth


def test_pts_file_reads_exactly(tmp_path):
    pts = [(float(i) + 0.5, 2.0 * i) for i in range(68)]
    write_pts(tmp_path / "a.pts", pts)
    got = read_pts(tmp_path / "a.pts")
    assert got.shape == (68, 2)
    assert np.array_equal(got, np.array(pts))


def test_folder_normalises_by_the_image_size(tmp_path):
    truth = landmark_folder(tmp_path / "faces", h=30, w=40)
    ds = LandmarkFolderDataset(tmp_path / "faces", height=12, width=16)
    assert len(ds) == 2 and ds.stems == ["face0", "face1"]
    img, lm = ds[1]
    assert img.shape == (1, 12, 16) and 0 <= float(img.min()) and float(img.max()) <= 1
    want = (truth[1] / np.array([40.0, 30.0])).reshape(-1).astype(np.float32)
    assert torch.allclose(lm, torch.from_numpy(want))
    assert lm[0] == pytest.approx(truth[1][0, 0] / 40) and lm[1] == pytest.approx(truth[1][0, 1] / 30)


@pytest.mark.parametrize("case", ["header", "count", "garbage", "unclosed"])
def test_bad_pts_files_are_one_line_errors_naming_the_file(tmp_path, case):
    p = tmp_path / "bad.pts"
    pts = [(1.0, 2.0)] * 68
    if case == "header":
        write_pts(p, pts[:49])  # a 49-point file: header and points say 49
    elif case == "count":
        write_pts(p, pts[:60], header=68)
    elif case == "garbage":
        write_pts(p, pts[:67] + [("x", "y")])
    else:
        p.write_text("version: 1\nn_points: 68\n{\n" + "1 2\n" * 68)
    with pytest.raises(SpdnnError) as e:
        read_pts(p)
    msg = e.value.one_line()
    assert "bad.pts" in msg and "\n" not in msg
    if case in ("header", "count"):
        assert "68" in msg


def test_folder_with_an_unmatched_image_is_refused(tmp_path):
    landmark_folder(tmp_path / "f")
    imsave(tmp_path / "f" / "lonely.png", np.zeros((4, 4), np.uint8), check_contrast=False)
    with pytest.raises(SpdnnError, match="lonely.png has no lonely.pts"):
        LandmarkFolderDataset(tmp_path / "f", 8, 8)
    write_pts(tmp_path / "f" / "lonely.pts", [(0, 0)] * 5)
    with pytest.raises(SpdnnError, match="lonely.pts"):
        LandmarkFolderDataset(tmp_path / "f", 8, 8)

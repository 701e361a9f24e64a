"""Optional dependencies ("extras") and the one check that names a missing one.

The core install (``pip install spdnn``: torch, networkx, pydantic, PyYAML, numpy, graphviz,
typer, rich) validates, inspects, merges, renders and compiles netspecs and lists the zoo.
Commands that need more say which extra to install, in one line, before they start:

* ``export`` -- ``spdnn export``, ``spdnn bench`` with the ``ort`` runtime: onnx, onnxruntime,
  onnxscript (torch's ONNX exporter), scikit-image (the photographs of the parity check);
* ``train`` -- ``spdnn train``/``evaluate``/``predict``/``compare``/``demo``: matplotlib
  (plots), scikit-image, scipy (data, degradations), scikit-learn, mlxtend (datasets, the GAN
  evaluation), torchmetrics (FID, SSIM, accuracy), kornia (traditional augmentation), bm3d
  (denoising), opencv-python-headless (person crops from OpenCV's vtest.avi,
  :mod:`spdnn.data.people`; <5: 5.x dropped ``HOGDescriptor``);
* ``tensorboard`` -- ``spdnn train --tensorboard``;
* ``all`` -- every one of them (``pip install 'spdnn[all]'``).

:data:`EXTRAS` must list the same packages as ``[project.optional-dependencies]`` in
``pyproject.toml`` (a test compares them).
"""

from __future__ import annotations

import importlib.util

from spdnn.errors import SpdnnError

EXTRAS: dict[str, dict[str, str]] = {
    "export": {"onnx": "onnx", "onnxruntime": "onnxruntime", "onnxscript": "onnxscript",
               "skimage": "scikit-image"},
    "train": {"matplotlib": "matplotlib", "skimage": "scikit-image", "scipy": "scipy",
              "sklearn": "scikit-learn", "mlxtend": "mlxtend", "torchmetrics": "torchmetrics",
              "kornia": "kornia", "bm3d": "bm3d",
              "cv2": "opencv-python-headless"},
    "tensorboard": {"tensorboard": "tensorboard"},
}
"""Extra name -> {module imported: the distribution that provides it}."""


def missing(extra: str) -> list[str]:
    """The distributions of ``extra`` whose module cannot be found (``importlib.util.find_spec``;
    nothing is imported), in :data:`EXTRAS` order.

    Raises:
        KeyError: ``extra`` is not one of :data:`EXTRAS` (a programming error).
    """
    out = []
    for module, dist in EXTRAS[extra].items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or half-removed installation
            found = False
        if not found:
            out.append(dist)
    return out


def require(extra: str, what: str) -> None:
    """Check that the ``extra``'s packages are installed before ``what`` (``"spdnn export"``,
    ``"spdnn.export.export_onnx"``) starts.

    Raises:
        SpdnnError: one line naming ``what``, the extra, the command that installs it and
            the missing packages, e.g. ``spdnn export needs the 'export' extra: pip install
            'spdnn[export]' (onnxscript is not installed; pip install onnxscript adds just
            that)``; the CLI exits with code 2.
    """
    gone = missing(extra)
    if gone:
        one = len(gone) == 1
        raise SpdnnError(f"{what} needs the '{extra}' extra: pip install 'spdnn[{extra}]'",
                         hint=f"{', '.join(gone)} {'is' if one else 'are'} not installed; pip "
                              f"install {' '.join(gone)} adds just {'that' if one else 'those'}")

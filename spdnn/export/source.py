"""What to export: a netspec, a netspec file, or one network of a training checkpoint.

:func:`load_source` turns the ``SOURCE`` of ``spdnn export`` into a netspec and the weights to
load into it. Checkpoints (``best.pt``/``last.pt`` of ``spdnn train``, or a run folder holding
them) are read only through :func:`spdnn.io.load_checkpoint`, i.e. with
``torch.load(weights_only=True)`` and no fallback: a crafted file can never run code here, and
every unreadable, truncated or foreign file is a one-line
:class:`~spdnn.io.CheckpointError` naming it.

A checkpoint (format 2) holds one netspec per network of the recipe (``"netspecs"``: name ->
netspec YAML text; the single network of a one-network recipe is ``"net"``, a GAN recipe has
a ``"generator"`` and a ``"discriminator"``, of which the generator is what gets deployed:
thesis sec. 3.3, DCGAN layout of App. H, ``recipes/gan/dcgan_digits.yaml``), the trained
weights (``"models"``: name -> state dict) and the weight averages of the models that have
EMA (``"ema"``: name -> ``AveragedModel`` state dict, keys prefixed ``module.``, plus
``n_averaged``). The averages are exported first, as evaluation uses them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from spdnn.export.report import ExportError
from spdnn.spec import Netspec

__all__ = ["default_path", "load_source", "select_model"]

_YAML = (".yaml", ".yml")


def load_source(source: str | Path | Netspec,
                model: str | None = None) -> tuple[Netspec, list[dict], str | None]:
    """``(netspec, candidate state dicts, file)`` of a Netspec, a netspec YAML file, a training
    checkpoint or a run folder holding one.

    Args:
        source: what to export.
        model: for a checkpoint, the name of the network to export (e.g. ``"generator"`` of a
            two-network GAN recipe); may be omitted when the checkpoint holds one network.

    Returns:
        The netspec, the state dicts to try in order (the model's EMA average first when it
        has one, then its trained weights; none for a netspec) and the file read (``None``
        for a Netspec).

    Raises:
        SpecError: the netspec (or the one stored in the checkpoint) does not load.
        CheckpointError: the checkpoint is missing, empty, truncated, corrupt, unsafe to load
            or not written by ``spdnn train``.
        ExportError: the source does not exist, the checkpoint holds no netspec, or ``model``
            is missing or unknown (the message lists the networks there are).
    """
    from spdnn.io import load_checkpoint
    from spdnn.spec import load_checked

    if isinstance(source, Netspec):
        _no_model(model, "a netspec")
        return source, [], None
    path = Path(source)
    if not path.exists():
        raise ExportError("file not found", file=str(path),
                          hint="give a netspec (.yaml), a checkpoint or a run folder")
    if path.is_file() and path.suffix.lower() in _YAML:
        _no_model(model, "a netspec file", str(path))
        return load_checked(path), [], str(path)
    ckpt = load_checkpoint(path, networks_only=True)
    return _from_checkpoint(ckpt, model)


def select_model(names: list[str], model: str | None, file: str | None) -> str:
    """The network of a checkpoint to export: ``model``, or the only one there is.

    Raises:
        ExportError: ``model`` is not one of ``names``, or it is omitted and there are several.
    """
    listed = ", ".join(names)
    if model is not None:
        if model not in names:
            raise ExportError(f"no network '{model}' in this checkpoint (it holds: {listed})",
                              file=file, hint=f"choose one of {listed} with --model")
        return model
    if len(names) > 1:
        raise ExportError(f"this checkpoint holds {len(names)} networks ({listed}); say which "
                          "one to export", file=file, hint=f"e.g. --model {names[0]}")
    return names[0]


def _from_checkpoint(ckpt: dict[str, Any], model: str | None
                     ) -> tuple[Netspec, list[dict], str]:
    from spdnn.io import averaged_weights
    from spdnn.spec import loads

    file = ckpt["path"]
    netspecs = ckpt.get("netspecs")
    if not isinstance(netspecs, dict) or not netspecs:
        raise ExportError("this checkpoint holds no netspec", file=file,
                          hint="export a checkpoint written by 'spdnn train'")
    name = select_model([str(k) for k in netspecs], model, file)
    raw = netspecs[name]
    where = f"{file}:netspecs.{name}"
    if not isinstance(raw, str):
        raise ExportError(f"the stored netspec of '{name}' is not YAML text", file=where,
                          hint="export a checkpoint written by 'spdnn train'")
    spec = loads(raw, file=where)
    states: list[dict] = []
    ema = averaged_weights(ckpt, name)
    if ema is not None:
        states.append(ema)
    trained = (ckpt.get("models") or {}).get(name)
    if isinstance(trained, dict):
        states.append(trained)
    return spec, states, file


def _no_model(model: str | None, what: str, file: str | None = None) -> None:
    if model is not None:
        raise ExportError(f"--model {model} was given, but {what} holds exactly one network",
                          file=file, hint="--model chooses a network of a multi-network "
                          "checkpoint; leave it out")


def default_path(source: str | Path | Netspec, suffix: str = ".onnx",
                 model: str | None = None) -> Path:
    """``model.yaml`` -> ``model.onnx`` (a Netspec -> ``<name>.onnx`` in the current folder).

    With ``model`` (one network of a checkpoint) its name is appended: ``runs/gan`` and
    ``--model generator`` -> ``runs/gan_generator.onnx``.
    """
    if isinstance(source, Netspec):
        return Path(re.sub(r"\W+", "_", source.name) + suffix)
    path = Path(source).with_suffix(suffix)
    if model is not None:
        slug = re.sub(r"\W+", "_", model)
        path = path.with_name(f"{path.stem}_{slug}{suffix}")
    return path

"""Training recipes: one YAML file says what to train, on what data, how, and where to write.

```yaml
name: iris_merged
task: iris                    # a registered task (spdnn.train.tasks)
model:
  merge: [../netspecs/iris/appendix_a/*.yaml]   # or `netspec: path.yaml`; paths relative to this file
  params: like-each
data: {source: synthetic, train_size: 512, val_size: 128}
optim: {name: sgd, lr: 0.01, momentum: 0.9, nesterov: true}    # thesis App. A: Nesterov
batch_size: 16
steps: 300
```

Any field can be overridden from the command line: ``--set optim.lr=0.001``. A recipe may
start from another one: ``base: iris_base.yaml`` (its fields are defaults, deep-merged).
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spdnn.errors import SpecError
from spdnn.spec import validation_error
from spdnn.spec.yaml_io import load_yaml, read_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """Which network to train: one netspec, or the SPDNN merge of several."""

    netspec: str | None = None
    merge: list[str] | None = None
    params: str = "like-each"
    distance: Literal["longest", "shortest"] = "longest"
    head_kernel: int | None = None

    @model_validator(mode="after")
    def _one(self) -> ModelSpec:
        if (self.netspec is None) == (self.merge is None):
            raise ValueError("give exactly one of 'netspec' (a path) or 'merge' (a list of paths)")
        return self


class DataSpec(_Strict):
    """Where the data comes from. ``source`` names a loader of the task (e.g. ``synthetic``,
    ``folder``, ``motorcycle``, ``kitti``); ``root`` is a folder for the real-data loaders."""

    source: str = "synthetic"
    root: str | None = None
    train_size: int = Field(default=512, gt=0)
    val_size: int = Field(default=128, gt=0)
    seed: int = 0
    num_workers: int = Field(default=0, ge=0, le=64)
    """DataLoader worker processes that prepare batches beside the training loop (0: in the
    loop). Each worker is seeded from the recipe seed, so exact resume holds either way."""
    options: dict[str, Any] = Field(default_factory=dict)


class OptimSpec(_Strict):
    """Optimizer: SGD with (Nesterov) momentum as the thesis, or Adam with betas (seed 001)."""

    name: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=0.0, ge=0)


class ScheduleSpec(_Strict):
    """Learning-rate schedule over the run's steps."""

    name: Literal["constant", "cosine", "linear", "step"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    step_size: int = Field(default=1000, gt=0)
    gamma: float = Field(default=0.1, gt=0)


class Recipe(_Strict):
    """A training run (see the module docstring for an example)."""

    name: str = Field(min_length=1)
    task: str
    model: ModelSpec
    data: DataSpec = Field(default_factory=DataSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    batch_size: int = Field(default=16, gt=0)
    epochs: int | None = Field(default=None, gt=0)
    steps: int | None = Field(default=None, gt=0)
    seed: int = 0
    eval_every: int = Field(default=50, gt=0)
    checkpoint_every: int = Field(default=100, gt=0)
    log_every: int = Field(default=10, gt=0)
    output: str = "runs/{name}"
    grad_clip: float | None = Field(default=None, gt=0)
    ema: float | None = Field(default=None, gt=0, lt=1)
    amp: bool = True
    channels_last: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    best_metric: str | None = None
    best_mode: Literal["min", "max"] = "max"
    samples: int = Field(default=8, ge=0)

    @model_validator(mode="after")
    def _length(self) -> Recipe:
        if self.epochs is None and self.steps is None:
            raise ValueError("give 'steps' or 'epochs'")
        return self

    # set by load_recipe: the folder relative paths are resolved against
    base_dir: str = Field(default=".", exclude=True)

    def resolve(self, path: str) -> list[Path]:
        """Paths (globs allowed) relative to the recipe file's folder, sorted."""
        p = Path(path)
        full = p if p.is_absolute() else Path(self.base_dir) / p
        hits = sorted(Path(x) for x in glob.glob(str(full)))
        if not hits:
            raise SpecError(f"'{path}' matches no file", hint=f"paths are relative to {self.base_dir}")
        return hits

    def output_dir(self) -> Path:
        """The run folder (relative paths are relative to the current directory)."""
        return Path(self.output.format(name=self.name))


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (value parsed as YAML) to plain recipe data.

    Raises:
        SpecError: an override is not of the form ``key=value``.
    """
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy
    for ov in overrides:
        if "=" not in ov:
            raise SpecError(f"bad override '{ov}'", hint="write --set key.sub=value, e.g. optim.lr=0.001")
        key, _, raw = ov.partition("=")
        value, _ = load_yaml(raw or "null", file="--set")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecError(f"cannot set '{key}': '{part}' is not a section", field=key)
        node[parts[-1]] = value
    return data


def _deep_merge(base: dict, child: dict) -> dict:
    out = dict(base)
    for k, v in child.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_with_base(path: Path, depth: int) -> tuple[dict, dict]:
    """Read a recipe; ``base: other.yaml`` (relative to this file) supplies defaults."""
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError("a recipe must be a YAML mapping", file=str(path), line=1)
    base = data.pop("base", None)
    if base is None:
        return data, lines
    if depth > 8 or not isinstance(base, str):
        raise SpecError("'base' must name another recipe file (at most 8 levels)", file=str(path),
                        line=lines.get(("base",)), field="base")
    base_data, _ = _read_with_base(path.parent / base, depth + 1)
    return _deep_merge(base_data, data), lines


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a recipe file (safe YAML), applying ``--set`` overrides.

    Raises:
        SpecError: naming file, line and field.
    """
    data, lines = _read_with_base(Path(path), depth=0)
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, data, str(path), lines, model=Recipe) from None
    recipe.base_dir = str(Path(path).resolve().parent)
    return recipe

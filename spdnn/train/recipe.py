"""Training recipes: one YAML file says what to train, on what data, how, and where to write.

One network (the form of the iris and depth recipes):

```yaml
name: iris_merged
task: iris                    # a registered task (spdnn.tasks)
model:
  merge: [../netspecs/iris/appendix_a/*.yaml]   # or `netspec: path.yaml`; paths relative to this file
  params: like-each
data: {source: synthetic, train_size: 512, val_size: 128}
optim: {name: sgd, lr: 0.01, momentum: 0.9, nesterov: true}    # thesis App. A: Nesterov
batch_size: 16
steps: 300
```

Several networks, each with its own optimizer, schedule, EMA and gradient clipping (a GAN):

```yaml
task: dcgan
models:
  generator:     {netspec: ../netspecs/gan/dcgan/digits_generator.yaml, ema: 0.99,
                  optim: {name: adam, lr: 0.0002, betas: [0.5, 0.999]}}
  discriminator: {netspec: ../netspecs/gan/dcgan/digits_discriminator.yaml,
                  optim: {name: adam, lr: 0.0002, betas: [0.5, 0.999]}}
```

The one-network form ``model: {...}`` is the same as ``models: {net: {...}}``. A model's
``optim``, ``schedule``, ``ema`` and ``grad_clip`` default to the recipe's top-level sections.
Any field can be overridden from the command line: ``--set optim.lr=0.001``,
``--set models.generator.optim.lr=0.0001``. A recipe may start from another one:
``base: iris_base.yaml`` (its fields are defaults, deep-merged).
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from spdnn.choices import DEFAULT_RULE, DistanceRule
from spdnn.errors import SpecError
from spdnn.spec import validation_error
from spdnn.spec.yaml_io import load_yaml, read_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataSpec(_Strict):
    """Where the data comes from. ``source`` names a loader of the task (e.g. ``synthetic``,
    ``folder``, ``motorcycle``, ``kitti``); ``root`` is a folder for the real-data loaders."""

    source: str = "synthetic"
    root: str | None = None
    train_size: int = Field(default=512, gt=0, le=10**8)
    val_size: int = Field(default=128, gt=0, le=10**8)
    seed: int = Field(default=0, ge=0, lt=2**63)
    num_workers: int = Field(default=0, ge=0, le=64)
    """DataLoader worker processes that prepare batches beside the training loop (0: in the
    loop). Each worker is seeded from the recipe seed, so exact resume holds either way."""
    cache: bool | None = None
    """Keep every prepared item in shared memory after its first use (items are bit-identical
    to uncached ones; :mod:`spdnn.data.cache`). ``None``: on while the cache fits in 1 GiB."""
    options: dict[str, Any] = Field(default_factory=dict)


class OptimSpec(_Strict):
    """Optimizer: SGD with (Nesterov) momentum as the thesis trains its networks, or Adam with
    betas (SPADE-SR, "Low-Resolution Thermal Sensor-Guided Image Synthesis", sec. 4)."""

    name: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=0.0, ge=0)


class ScheduleSpec(_Strict):
    """Learning-rate schedule over the run's steps."""

    name: Literal["constant", "cosine", "linear", "step"] = "constant"
    warmup_steps: int = Field(default=0, ge=0, le=10**9)
    step_size: int = Field(default=1000, gt=0, le=10**9)
    gamma: float = Field(default=0.1, gt=0)


class ModelSpec(_Strict):
    """One network of a run: a netspec file or the SPDNN merge of several, with its optimizer
    settings. ``optim``/``schedule``/``ema``/``grad_clip`` left out take the recipe's
    top-level values (see :meth:`Recipe.model_optim` and friends)."""

    netspec: str | None = None
    merge: list[str] | None = None
    params: str = "like-each"
    distance: DistanceRule = DEFAULT_RULE
    head_kernel: int | None = None
    optim: OptimSpec | None = None
    schedule: ScheduleSpec | None = None
    ema: float | None = Field(default=None, gt=0, lt=1)
    grad_clip: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> ModelSpec:
        if (self.netspec is None) == (self.merge is None):
            raise ValueError("give exactly one of 'netspec' (a path) or 'merge' (a list of paths)")
        return self


_MODEL_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class Recipe(_Strict):
    """A training run (see the module docstring for examples).

    ``models`` maps a model name (an identifier; the task says which names it needs) to its
    :class:`ModelSpec`. A recipe written with ``model:`` is read as ``models: {net: ...}``.
    """

    name: str = Field(min_length=1, max_length=120, pattern=r"^[^/\\\x00-\x1f]+$")
    task: str
    models: dict[Annotated[str, StringConstraints(pattern=_MODEL_NAME)], ModelSpec] = Field(
        min_length=1)
    data: DataSpec = Field(default_factory=DataSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    batch_size: int = Field(default=16, gt=0, le=65536)
    epochs: int | None = Field(default=None, gt=0, le=10**6)
    steps: int | None = Field(default=None, gt=0, le=10**9)
    seed: int = Field(default=0, ge=0, lt=2**63)
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
    samples: int = Field(default=8, ge=0, le=1024)
    options: dict[str, Any] = Field(default_factory=dict)
    """Settings of the task (e.g. a GAN's ``latent``, BEGAN's ``gamma``): each task validates
    them with its own model and names a bad one as ``options.<field>``."""

    @model_validator(mode="before")
    @classmethod
    def _one_model_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and "model" in data:
            if "models" in data:
                raise ValueError("give 'model' (one network) or 'models' (several), not both")
            data = dict(data)
            data["models"] = {"net": data.pop("model")}
        return data

    @model_validator(mode="after")
    def _length(self) -> Recipe:
        if self.epochs is None and self.steps is None:
            raise ValueError("give 'steps' or 'epochs'")
        return self

    # set by load_recipe: the folder relative paths are resolved against
    base_dir: str = Field(default=".", exclude=True)
    # set by load_recipe: the recipe file and the files it names as 'base' (what a run folder
    # may not hold, see input_files)
    source_files: list[str] = Field(default_factory=list, exclude=True)
    # set by load_recipe: where `task:` was written (a file and line, or "--set task=...") so
    # that an unknown task is reported there (spdnn.tasks.build_task checks it)
    task_origin: tuple[str | None, int | None] = Field(default=(None, None), exclude=True)

    # A model's own section wins; a model the recipe does not declare (one a task's
    # ``build_models`` adds) and fields a model leaves out take the recipe's top-level values.
    def model_optim(self, name: str) -> OptimSpec:
        """The optimizer settings of model ``name`` (its own, else the recipe's)."""
        m = self.models.get(name)
        return m.optim if m is not None and m.optim is not None else self.optim

    def model_schedule(self, name: str) -> ScheduleSpec:
        """The learning-rate schedule of model ``name`` (its own, else the recipe's)."""
        m = self.models.get(name)
        return m.schedule if m is not None and m.schedule is not None else self.schedule

    def model_ema(self, name: str) -> float | None:
        """The EMA decay of model ``name`` (its own, else the recipe's; ``None``: no EMA)."""
        m = self.models.get(name)
        return m.ema if m is not None and m.ema is not None else self.ema

    def model_grad_clip(self, name: str) -> float | None:
        """The gradient-norm clip of model ``name`` (its own, else the recipe's)."""
        m = self.models.get(name)
        return m.grad_clip if m is not None and m.grad_clip is not None else self.grad_clip

    def input_files(self) -> list[Path]:
        """The files training reads: the recipe file and its ``base`` files (when loaded by
        :func:`load_recipe`) and every model's netspec files (their ``imports:`` are added by
        :func:`spdnn.io.check_outputs`). Names that match nothing are left out (building the
        task reports them)."""
        out = [Path(f) for f in self.source_files]
        for m in self.models.values():
            for pattern in [m.netspec] if m.netspec is not None else m.merge or []:
                try:
                    out += self.resolve(pattern)
                except SpecError:
                    continue
        return out

    def resolve(self, path: str) -> list[Path]:
        """Paths (globs allowed) relative to the recipe file's folder, sorted; a name of the
        zoo shipped with spdnn (``netspecs/...``) that matches nothing there is the zoo's
        (:func:`spdnn.zoo.lookup`)."""
        from spdnn import zoo

        p = Path(path)
        full = p if p.is_absolute() else Path(self.base_dir) / p
        hits = sorted(Path(x) for x in glob.glob(str(full))) or zoo.lookup(path)
        if not hits:
            raise SpecError(f"'{path}' matches no file", hint=f"paths are relative to {self.base_dir}")
        return hits

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if v.strip(".") == "" or v != v.strip():
            raise ValueError(f"{v!r} is not a plain name: the run folder runs/{{name}} would be "
                             "another folder; write e.g. iris_merged")
        return v

    @field_validator("output")
    @classmethod
    def _output_template(cls, v: str) -> str:
        import string

        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        except ValueError as exc:
            raise ValueError(f"bad output template ({exc}); write e.g. runs/{{name}}") from None
        if any(f != "name" for f in fields):
            raise ValueError("the output template may only use {name}, e.g. runs/{name}")
        return v

    def output_dir(self) -> Path:
        """The run folder (``output`` with ``{name}`` filled in; relative paths are relative
        to the current directory)."""
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
        try:
            value, _ = load_yaml(raw or "null", file="--set")
        except SpecError as exc:  # named as the user wrote it: --set steps=!!int abc: ...
            exc.file, exc.line = f"--set {ov}", None
            raise
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


def _read_with_base(path: Path, depth: int, files: list[Path] | None = None) -> tuple[dict, dict]:
    """Read a recipe; ``base: other.yaml`` (relative to this file) supplies defaults. Each file
    read is appended to ``files``."""
    if files is not None:
        files.append(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError("a recipe must be a YAML mapping", file=str(path), line=1)
    base = data.pop("base", None)
    if base is None:
        return data, lines
    if depth > 8 or not isinstance(base, str):
        raise SpecError("'base' must name another recipe file (at most 8 levels)", file=str(path),
                        line=lines.get(("base",)), field="base")
    base_data, _ = _read_with_base(path.parent / base, depth + 1, files)
    return _deep_merge(base_data, data), lines


def netspecs_of(recipe: Recipe) -> dict[str, Any]:
    """The network of every model of the recipe, ``{name: Netspec}``: a netspec file, or the
    SPDNN merge of several (thesis ch. 3.1), each parent loaded once.

    Raises:
        SpdnnError: missing files, invalid netspecs, merge errors (naming the model's field).
    """
    from spdnn import spec as S

    out = {}
    for name, m in recipe.models.items():
        if m.netspec is not None:
            paths = recipe.resolve(m.netspec)
            if len(paths) != 1:
                raise SpecError(f"'{m.netspec}' matches {len(paths)} files",
                                field=f"models.{name}.netspec", hint="name one netspec file")
            out[name] = S.load(paths[0])
            continue
        from spdnn.graph import merge_files

        paths = [p for pat in m.merge or [] for p in recipe.resolve(pat)]
        label = recipe.name if len(recipe.models) == 1 else f"{recipe.name}_{name}"
        out[name] = merge_files(paths, params=m.params, distance=m.distance,
                                head_kernel=m.head_kernel, name=label).spec
    return out


def validate_recipe(data: dict, file: str = "recipe", lines: dict | None = None) -> Recipe:
    """Validate plain recipe data (e.g. the copy stored in a checkpoint).

    Raises:
        SpecError: naming the file, line (when ``lines`` is given) and field.
    """
    if isinstance(data, dict) and "model" in data and "models" not in data:
        try:  # the one-network form: report errors at `model.<field>`, as the user wrote them
            _OneModel.model_validate({"model": data["model"]})
        except ValidationError as exc:
            raise validation_error(exc, {"model": data["model"]}, file, lines or {},
                                   model=_OneModel) from None
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, data, file, lines or {}, model=Recipe) from None


class _OneModel(_Strict):
    model: ModelSpec


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a recipe file (safe YAML), applying ``--set`` overrides.

    Raises:
        SpecError: naming file, line and field.
    """
    from spdnn import zoo

    path = zoo.locate(path)  # recipes/... from any folder: the zoo's copy when none is here
    files: list[Path] = []
    data, lines = _read_with_base(Path(path), depth=0, files=files)
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        recipe = validate_recipe(data, str(path), lines)
    except SpecError as exc:
        raise blame_override(exc, overrides or []) from None
    origin = blame_override(SpecError("", file=str(path), line=lines.get(("task",)),
                                      field="task"), overrides or [])
    recipe.task_origin = (origin.file, origin.line)
    recipe.base_dir = str(Path(path).resolve().parent)
    recipe.source_files = [str(f) for f in files]
    return recipe


def blame_override(exc: SpecError, overrides: list[str]) -> SpecError:
    """Point an error about a field a ``--set`` override wrote at that override (``--set
    stpes=30: stpes: unknown field``) instead of a line of the recipe file."""
    for ov in reversed(overrides):
        key = ov.partition("=")[0].strip()
        if exc.field and (exc.field == key or exc.field.startswith(key + ".")
                          or key.startswith(exc.field + ".")):
            exc.file, exc.line = f"--set {ov}", None
            break
    return exc

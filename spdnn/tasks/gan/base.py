"""What every GAN task of the thesis shares (thesis sec. 3.3; App. F-I): latent vectors, class
and attribute codes in the latent, logits read from sigmoid/softmax heads, the pixel range,
sample grids and the evaluation suite.

Conventions (each GAN task in this package follows them):

* **Data** items are ``(image float32 (C, H, W) in [0, 1], label int64 ()[, attribute float32
  (A,)])`` (:mod:`spdnn.data.images`). A task whose networks work in [-1, 1] (``pixel_range:
  symmetric``, as the authors' BEGAN and CIFAR-10 code) maps images with :meth:`GANTask.to_net`
  before they enter a discriminator and generated images back with :meth:`GANTask.to_unit`.
* **Latent** ``z``: ``options.latent`` ``normal`` (N(0, I), DCGAN) or ``uniform`` (U[-1, 1],
  BEGAN and the VAC/VAR+GAN code: architectures.md sec. 2.3), of the generator input's size.
* **Class code** (conditional tasks; ``options.class_code``):

  - ``thesis``: the VAC+GAN code of the authors (architectures.md sec. 3.1-3.2): with ``K``
    classes and ``K >= 3``, ``z[c] = +|u_c|`` for the requested class ``c`` and ``z[j] =
    -|u_j|`` for every other ``j < K`` (the rest of ``z`` stays as drawn); with two classes,
    the sign of ``z[0]`` says the class (class 0: ``z[0] >= 0``, class 1: ``z[0] < 0``).
    The generator's input keeps its size.
  - ``one_hot``: the CGAN code (Mirza & Osindero 2014): ``z`` is ``noise`` values followed by
    the one-hot label, so the generator's input has ``noise + K`` features.

* **Logits.** The thesis' discriminators, classifiers and regressors end in a sigmoid,
  softmax or tanh. A GAN task trains on the pre-activation instead: :meth:`GANTask.module_netspec`
  gives the trainer a copy of the netspec whose output layer has ``activation: none`` and
  remembers the activation in :attr:`GANTask.heads`; losses then use the numerically stable
  forms (``binary_cross_entropy_with_logits``, ``cross_entropy`` on logits, ``tanh`` applied
  in float32), which autocast leaves in float32, so mixed precision on CUDA is safe. The
  checkpoint keeps the netspec as written; the state dict is the same (an activation has no
  parameters).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from spdnn.errors import SpdnnError, SpecError
from spdnn.metrics import KernelMMD
from spdnn.tasks.common import sample_grid, validate_options
from spdnn.train.task import Task


class GANOptions(BaseModel):
    """``options:`` of a GAN recipe (each task adds its own fields; unknown ones are errors)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    latent: Literal["normal", "uniform"] = "normal"
    """Distribution of the latent noise: N(0, I) or U[-1, 1]."""
    pixel_range: Literal["unit", "symmetric"] = "unit"
    """Range the networks see images in: [0, 1] or [-1, 1] (generated images are mapped back)."""
    class_code: Literal["thesis", "one_hot"] = "thesis"
    """How a conditional task writes the class into ``z`` (module docstring)."""
    eval_samples: int = Field(default=1000, ge=10, le=100_000)
    """Generated images per evaluation (FID, conditional accuracy, diversity)."""


def output_layer(spec) -> Any:
    """The layer that produces the netspec's (first) output."""
    return {lay.name: lay for lay in spec.layers}[spec.outputs[0].from_]


def without_output_activation(spec) -> tuple[Any, str]:
    """``(copy of spec whose output layer has activation none, that activation)``.

    Raises:
        SpecError: the output layer has no ``activation`` field (e.g. a stand-alone
            activation layer), so its pre-activation cannot be read.
    """
    lay = output_layer(spec)
    if "activation" not in type(lay).model_fields:
        raise SpecError(f"the output layer '{lay.name}' ({type(lay).__name__}) has no "
                        "activation field, so its pre-activation cannot be read",
                        field="outputs", hint="end the network in a layer with "
                        "'activation: sigmoid' (or softmax/tanh/none)")
    act = lay.activation or "none"
    new = lay.model_copy(update={"activation": "none"})
    layers = [new if x.name == lay.name else x for x in spec.layers]
    return spec.model_copy(update={"layers": layers}), act


def head_size(spec) -> int:
    """Number of output values per sample of a vector-output netspec."""
    from spdnn.shapes import infer

    return math.prod(list(infer(spec).output_shapes().values())[0])


class GANTask(Task):
    """Base of the GAN tasks: latent sampling, class codes, logit heads, pixel range,
    generation, ``samples.png`` and the evaluation suite (:meth:`report`).

    Subclasses set ``name``, ``model_names``, ``Options`` (a :class:`GANOptions` subclass),
    ``logit_models`` (the models read as logits) and ``conditional`` (``"none"``, ``"class"``
    or ``"attribute"``; ``"map"``: the generator also reads a conditioning map, its second
    input, e.g. SPADE-SR's heatmap, :mod:`spdnn.tasks.gan.spade_sr`), and write
    :meth:`training_step` / :meth:`validation_step`.

    Raises:
        SpecError: bad ``options``; the generator takes more than one vector input; the
            generator's output shape differs from what a discriminator reads; a conditional
            task on data without labels or with a class count its networks do not have.
    """

    Options: ClassVar[type[GANOptions]] = GANOptions
    logit_models: ClassVar[tuple[str, ...]] = ("discriminator",)
    conditional: ClassVar[str] = "none"
    image_models: ClassVar[tuple[str, ...]] = ("discriminator",)
    """Models that read the generator's image (checked against its output shape)."""
    default_best_metric = "val_mmd"
    default_best_mode = "min"
    summary_metrics = ("fid", "fid_real_floor", "cond_accuracy", "attr_mae", "div_within_ssim",
                       "div_between_ssim", "val_mmd")

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        self.options = validate_options(self.Options, getattr(recipe, "options", {}))
        g = netspecs["generator"]
        self.map_input: str | None = None
        """Name of the generator's conditioning-map input (``conditional = "map"``), else None."""
        self.map_shape: tuple[int, int, int] | None = None
        """``(C, h, w)`` of that map (SPADE-SR's heatmap ``(1, 5, 8)``)."""
        if self.conditional == "map":
            vectors = [i for i in g.inputs if len(i.shape) == 1]
            maps = [i for i in g.inputs if len(i.shape) == 3]
            if len(g.inputs) != 2 or len(vectors) != 1 or len(maps) != 1:
                raise SpecError("a map-conditional generator takes two inputs: the latent "
                                "vector (features: N) and the conditioning map (channels, "
                                "height, width)", field="models.generator")
            self.map_input, self.map_shape = maps[0].name, tuple(maps[0].shape)
            self.z_dim: int = vectors[0].shape[0]
        elif len(g.inputs) != 1 or len(g.inputs[0].shape) != 1:
            raise SpecError("the generator must take one latent vector input (features: N)",
                            field="models.generator")
        else:
            self.z_dim = g.inputs[0].shape[0]
        from spdnn.shapes import infer

        self.image_shape: tuple[int, int, int] = tuple(list(infer(g).output_shapes().values())[0])
        for name in self.image_models:
            want = tuple(netspecs[name].inputs[0].shape)
            if want != self.image_shape:
                raise SpecError(f"the generator makes images of shape {self.image_shape}, the "
                                f"{name} reads {want}", field=f"models.{name}",
                                hint=f"make the {name}'s input the generator's output shape")
        self.heads: dict[str, str] = {}
        self._module_specs: dict[str, Any] = {}
        for name in self.logit_models:
            self._module_specs[name], self.heads[name] = without_output_activation(netspecs[name])
        self.num_classes = 0
        self.attribute_name: str | None = None  # attribute-conditional tasks set both
        self.attribute_dim = 0
        self._val_z: torch.Generator | None = None

    # -- networks -----------------------------------------------------------------------------
    def module_netspec(self, name: str):
        """The netspec the trainer builds model ``name`` from: the logit form for
        :attr:`logit_models` (module docstring), else as written."""
        return self._module_specs.get(name, self.netspecs[name])

    # -- data -----------------------------------------------------------------------------------
    def datasets(self):
        from spdnn.data.images import image_datasets

        train, val = image_datasets(self.recipe.data, self.image_shape)
        self.class_names = list(getattr(train, "class_names", []))
        return train, val

    def to_net(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the networks' pixel range (``options.pixel_range``)."""
        return images * 2 - 1 if self.options.pixel_range == "symmetric" else images

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """Generated images in the networks' range -> [0, 1] (clamped), float32."""
        x = images.float()
        if self.options.pixel_range == "symmetric":
            x = (x + 1) / 2
        return x.clamp(0, 1)

    # -- latents --------------------------------------------------------------------------------
    @property
    def noise_dim(self) -> int:
        """Latent noise values per sample (``z_dim`` less the one-hot code, if any)."""
        if self.conditional == "class" and self.options.class_code == "one_hot":
            return self.z_dim - self.num_classes
        return self.z_dim

    def check_classes(self, num_classes: int, field: str = "data.source") -> None:
        """Set :attr:`num_classes` for a class-conditional task and check the latent can hold it.

        Raises:
            SpecError: fewer than two classes, or a latent too small for the code.
        """
        if num_classes < 2:
            raise SpecError(f"a conditional GAN needs labelled data with at least two classes; "
                            f"'{self.recipe.data.source}' has {num_classes}", field=field)
        self.num_classes = num_classes
        if self.options.class_code == "one_hot" and self.z_dim <= num_classes:
            raise SpecError(f"the generator reads {self.z_dim} latent values, too few for "
                            f"noise plus a one-hot code of {num_classes} classes",
                            field="models.generator",
                            hint=f"give the generator's input more than {num_classes} features")
        if self.options.class_code == "thesis" and num_classes > 2 and self.z_dim < num_classes:
            raise SpecError(f"the thesis class code needs at least {num_classes} latent values, "
                            f"the generator reads {self.z_dim}", field="models.generator")

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, noise_dim)`` latent noise (``options.latent``), drawn on the CPU."""
        if self.options.latent == "uniform":
            return torch.rand(n, self.noise_dim, generator=generator) * 2 - 1
        return torch.randn(n, self.noise_dim, generator=generator)

    def encode_class(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Write class ``labels`` ``(n,)`` into latent ``noise`` ``(n, noise_dim)`` by
        ``options.class_code`` (module docstring); returns ``(n, z_dim)``."""
        labels = labels.to(noise.device).long()
        if self.options.class_code == "one_hot":
            return torch.cat([noise, F.one_hot(labels, self.num_classes).to(noise.dtype)], 1)
        z = noise.clone()
        if self.num_classes == 2:
            z[:, 0] = torch.where(labels == 0, z[:, 0].abs(), -z[:, 0].abs())
            return z
        k = self.num_classes
        sign = torch.where(F.one_hot(labels, k).bool(), 1.0, -1.0).to(z.dtype)
        z[:, :k] = z[:, :k].abs() * sign
        return z

    def latent(self, n: int, device, labels: torch.Tensor | None = None,
               attributes: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, z_dim)`` generator inputs on ``device``: noise, with the class or attribute code
        when the task is conditional (``labels`` default: uniformly drawn classes)."""
        noise = self.sample_noise(n, generator)
        if self.conditional == "class":
            if labels is None:
                labels = torch.randint(self.num_classes, (n,), generator=generator)
            noise = self.encode_class(noise, labels.cpu())
        elif self.conditional == "attribute":
            if attributes is None:
                raise ValueError("an attribute-conditional generator needs attributes")
            noise = self.encode_attributes(noise, attributes.cpu().float())
        return noise.to(device)

    def encode_attributes(self, noise: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """Latent ``noise`` ``(n, z_dim)`` with ``z[:, :A]`` overwritten by ``2 a - 1`` for
        ``attributes`` ``a`` ``(n, A)`` in (0, 1) (the authors' VAR+GAN code,
        architectures.md sec. 4; ``A`` = :attr:`attribute_dim`, set by the attribute-conditional
        tasks); returns a new tensor.

        Raises:
            ValueError: ``attributes`` is not ``(n, A)``.
        """
        a = attributes.to(device=noise.device, dtype=noise.dtype)
        if tuple(a.shape) != (noise.shape[0], self.attribute_dim):
            raise ValueError(f"attributes of shape {tuple(a.shape)} for {noise.shape[0]} latents "
                             f"of attribute '{self.attribute_name}' (A = {self.attribute_dim})")
        z = noise.clone()
        z[:, :self.attribute_dim] = 2 * a - 1
        return z

    # -- validation -----------------------------------------------------------------------------
    def new_metrics(self):
        """The kernel MMD^2 between generated and real validation images
        (:class:`spdnn.metrics.KernelMMD`); also restarts the fixed stream the validation pass
        draws its ``z`` from (``self._val_z``, seeded by the recipe), so every pass sees the
        same latents and training's random state is not touched."""
        self._val_z = torch.Generator().manual_seed(self.recipe.seed)
        return KernelMMD()

    # -- heads ------------------------------------------------------------------------------------
    def bce_logits(self, logits: torch.Tensor, real: bool | torch.Tensor) -> torch.Tensor:
        """Mean BCE of logits ``(n, ...)`` against 1 (``real=True``), 0, or a target tensor,
        in float32 (``binary_cross_entropy_with_logits``)."""
        x = logits.float().reshape(logits.shape[0], -1)
        if isinstance(real, torch.Tensor):
            target = real.float().reshape(x.shape[0], -1).expand_as(x)
        else:
            target = torch.full_like(x, 1.0 if real else 0.0)
        return F.binary_cross_entropy_with_logits(x, target)

    def class_logits_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Classification loss of a classifier head on logits: BCE for one output (two classes,
        thesis App. G: "binary cross-entropy"), else categorical cross-entropy (App. H)."""
        x = logits.float().reshape(logits.shape[0], -1)
        if x.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(x[:, 0], labels.float())
        return F.cross_entropy(x, labels.long())

    @staticmethod
    def predicted_class(logits: torch.Tensor) -> torch.Tensor:
        """Class indices ``(n,)`` of classifier logits (one output: ``logit > 0`` is class 1)."""
        x = logits.float().reshape(logits.shape[0], -1)
        return (x[:, 0] > 0).long() if x.shape[1] == 1 else x.argmax(1)

    # -- generation and outputs ---------------------------------------------------------------
    @torch.no_grad()
    def generate(self, models, n: int, device, labels: torch.Tensor | None = None,
                 attributes: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, C, H, W)`` generated images in [0, 1] (float32, CPU), for the requested
        ``labels`` ``(n,)`` or ``attributes`` ``(n, A)`` when the task is conditional."""
        z = self.latent(n, device, labels=labels, attributes=attributes, generator=generator)
        return self.to_unit(models["generator"](z)).cpu()

    def sample_conditions(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Conditions for ``n`` samples of a fixed grid: ``{"labels": ...}`` (``n`` rows of
        one class each for a class-conditional task), ``{"attributes": ...}`` or ``{}``."""
        if self.conditional == "class":
            per = max(1, n // self.num_classes)
            return {"labels": torch.arange(self.num_classes).repeat_interleave(per)}
        return {}

    def samples(self, models, n: int, seed: int, device) -> torch.Tensor:
        """Generated images from a fixed ``z`` drawn with ``seed`` (one row per class for the
        class-conditional tasks: ``num_classes`` rows of ``n // num_classes``)."""
        g = torch.Generator().manual_seed(seed)
        cond = self.sample_conditions(n, g)
        count = len(next(iter(cond.values()))) if cond else n
        return self.generate(models, count, device, generator=g, **cond)

    def grid_columns(self, count: int) -> int | None:
        """Columns of a grid of ``count`` samples: ``None`` (square-ish) unless the task is
        class-conditional; then (samples in class order, :meth:`sample_conditions`) one row
        per class while a class has at most 16 samples, else each class fills a block of whole
        rows of the largest divisor of its count up to 16 (2 classes x 50: 10 columns)."""
        if self.conditional != "class":
            return None
        per = max(1, count // self.num_classes)
        if per <= 16:
            return per
        cols = max(c for c in range(1, 17) if per % c == 0)
        return cols if cols >= 4 else per

    def figures(self, models, batch, outdir: Path) -> list[Path]:
        return [self.samples_figure(models, batch[0].device, outdir / "samples.png")]

    def samples_figure(self, models, device, dest: Path) -> Path:
        """``samples.png`` of a run: a grid of :meth:`samples` from the recipe's seed (100 in
        rows per class for a class-conditional task, else 64), written to ``dest``."""
        imgs = self.samples(models, 100 if self.conditional == "class" else 64,
                            self.recipe.seed, device)
        cols = self.grid_columns(imgs.shape[0])
        title = f"{self.recipe.name}: generated samples (fixed z"
        labels = None
        if self.conditional == "class":
            rows = imgs.shape[0] // self.num_classes // cols
            names = list(getattr(self, "class_names", None) or [])
            if len(names) != self.num_classes:
                names = [str(k) for k in range(self.num_classes)]
            labels = [name if r == 0 else "" for name in names for r in range(rows)]
            title += (", one row per class" if rows == 1 else f", {rows} rows per class")
            title += ")"
        else:
            title += ")"
        return sample_grid(imgs, dest, title, cols=cols, row_labels=labels)

    def prediction_outputs(self, inputs, outdir, options):
        """``samples_seed<seed>.png`` in ``outdir``."""
        return [outdir / f"samples_seed{int(options.get('seed', 0))}.png"]

    def predict_files(self, models, inputs, outdir, device, options):
        if inputs:
            raise SpdnnError("a generator takes no input files",
                             hint="spdnn predict RUN --num 64 --seed 0 -o OUT")
        n, seed = int(options.get("num", 64)), int(options.get("seed", 0))
        return [self.predict_grid(models, n, seed, device,
                                  self.prediction_outputs(inputs, outdir, options)[0])]

    def predict_grid(self, models, n: int, seed: int, device, dest: Path) -> tuple[str, Path]:
        """``spdnn predict``'s grid of ``n`` :meth:`samples` drawn with ``seed``, written to
        ``dest``; returns (what it holds, ``dest``)."""
        imgs = self.samples(models, n, seed, device)
        sample_grid(imgs, dest, f"{self.recipe.name}: {imgs.shape[0]} samples, seed {seed}",
                    cols=self.grid_columns(imgs.shape[0]))
        return (f"{imgs.shape[0]} generated images {tuple(imgs.shape[1:])}", dest)

    # -- evaluation ---------------------------------------------------------------------------
    def report(self, models, outdir: Path, device) -> dict[str, float]:
        """The GAN evaluation suite on this run (FID on a domain feature extractor, conditional
        accuracy, diversity, attribute error): :func:`spdnn.tasks.gan.evaluation.evaluate_gan`."""
        from spdnn.tasks.gan.evaluation import evaluate_gan

        return evaluate_gan(self, models, outdir, device)

"""The op base class, the registry, and the tiny "module call" IR shared by build and codegen.

An op is one small pydantic class: its fields are the layer parameters of the netspec, and its
methods and class variables say everything the compiler needs to know about it, so no stage
tests op names (see :mod:`spdnn.ops` for the full list):

* :meth:`Op.infer_shape` -- output shape from input shapes (batch axis excluded);
* :meth:`Op.num_params` and :meth:`Op.macs` -- cost model;
* :meth:`Op.module` -- the torch module, as a :class:`Call` that both the in-process builder and
  the code generator turn into a module (one source of truth, so they cannot drift), and
  :attr:`Op.helpers`, the helper classes that call names beyond ``torch.nn``;
* :meth:`Op.apply` and :meth:`Op.forward_expr` -- how the layer is called in ``forward``;
* SPDNN (thesis ch. 3.1): :attr:`Op.kind`, :meth:`Op.structure` (``3C``, ``30F``, ``4D``),
  :meth:`Op.is_spdnn_node`, :meth:`Op.resample_factor`, :attr:`Op.clears_factor`,
  :meth:`Op.resampling_layer` (how the rebuild re-creates a pool or unpool) and
  :attr:`Op.mergeable`;
* drawing: :meth:`Op.label_parts` (label text) and :attr:`Op.draw_class` (colour class);
* inputs: :attr:`Op.reads_class_indices` (may read ``int64`` class-index inputs).

Register a new op with :func:`register_op`; :func:`spdnn.spec.rebuild_layer_union` makes the
netspec model aware of it.

This module imports no torch: torch is imported only by the methods that build or run modules
(:meth:`Call.build`, :meth:`Op.apply` of ops that call torch functions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spdnn.errors import ShapeError

if TYPE_CHECKING:
    import torch

Shape = tuple[int, ...]
"""A tensor shape without the batch axis: ``(C, H, W)`` for feature maps, ``(F,)`` for vectors."""

OpKind = Literal["compute", "resample", "junction", "reshape", "rider"]
"""How an op takes part in SPDNN labelling (thesis ch. 3.1 step 1 and (d)):

* ``compute`` -- a graph node with a structure code (convolutions, Linear, block instances);
* ``resample`` -- not a node; changes the sticky pooling factor (pools, unpools, upsampling);
* ``junction`` -- joins branches (Concat, Add, Mul);
* ``reshape`` -- changes the data's layout; the factor is read off the new resolution;
* ``rider`` -- everything else: not a node, rides along the edge it sits on and leaves the
  factor alone (activations, dropout, stand-alone norms, fixed filters such as FixedConv2d,
  Embedding, ...). A rider whose inputs play different parts (SPADE) is still a node, see
  :meth:`Op.is_spdnn_node`.
"""


@dataclass(frozen=True)
class Helper:
    """A torch helper (class or function) that a module :class:`Call` names beyond ``torch.nn``.

    ``path`` is ``"package.module:Name"``; ``Name`` is what a call's ``target`` says. The helper
    is imported only when a module is built; emitted files get its source (read from the file,
    without importing it), so it must use nothing but ``torch`` and ``nn`` (``from torch import
    nn``) and the module-level functions listed in ``needs`` (names in the same module, emitted
    before it).
    """

    path: str
    needs: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """The module that defines the helper."""
        return self.path.partition(":")[0]

    @property
    def name(self) -> str:
        """The helper's name: the ``target`` of the calls that use it."""
        return self.path.partition(":")[2]

    def load(self) -> Any:
        """Import and return the helper object.

        Raises:
            ImportError, AttributeError: the path names nothing.
        """
        import importlib

        return getattr(importlib.import_module(self.module), self.name)


# --------------------------------------------------------------------------------------------
# Module calls
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """A constructor call such as ``nn.Conv2d(1, 8, kernel_size=(3, 3))``.

    ``target`` is ``"nn.<Name>"`` for ``torch.nn`` classes or the name of a helper class that
    the op declares in :attr:`Op.helpers`. Arguments are plain Python values (numbers, bools,
    strings, tuples) or nested :class:`Call` objects.
    """

    target: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    @staticmethod
    def of(target: str, *args: Any, **kwargs: Any) -> Call:
        """``Call.of("nn.Conv2d", 1, 8, kernel_size=3)``: positional and keyword arguments."""
        return Call(target, tuple(args), tuple(kwargs.items()))

    def build(self, namespace: dict[str, Any]) -> torch.nn.Module:
        """Instantiate the module; ``namespace`` maps ``"nn"`` and helper class names (see
        :func:`spdnn.codegen.build.namespace`)."""
        head, _, rest = self.target.partition(".")
        obj = namespace[head]
        if rest:
            for part in rest.split("."):
                obj = getattr(obj, part)
        args = [a.build(namespace) if isinstance(a, Call) else a for a in self.args]
        kwargs = {k: (v.build(namespace) if isinstance(v, Call) else v) for k, v in self.kwargs}
        return obj(*args, **kwargs)

    def source(self, names: dict | None = None) -> str:
        """Python source of the call; every value is written with ``repr`` (strings escaped).

        ``names`` maps block keys to emitted class names (see :mod:`spdnn.codegen.blocks`)."""
        parts = ([_src(a, names) for a in self.args]
                 + [f"{k}={_src(v, names)}" for k, v in self.kwargs])
        return f"{self.target}({', '.join(parts)})"

    def children(self) -> list[Call]:
        """The nested calls among the arguments."""
        return [a for a in list(self.args) + [v for _, v in self.kwargs] if isinstance(a, Call)]

    def helpers(self) -> set[str]:
        """Names of the non-``nn`` helper classes this call (and nested calls) need."""
        out = set() if self.target.startswith("nn.") else {self.target.split(".")[0]}
        for a in list(self.args) + [v for _, v in self.kwargs]:
            if isinstance(a, Call):
                out |= a.helpers()
        return out


def _src(value: Any, names: dict | None = None) -> str:
    if isinstance(value, Call):
        return value.source(names)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, (bool, int, str, tuple, type(None))):
        return repr(value)
    raise TypeError(f"cannot emit value {value!r} of type {type(value).__name__}")


def sequential(calls: list[Call]) -> Call:
    """One call if there is one, else ``nn.Sequential(...)`` of them."""
    if len(calls) == 1:
        return calls[0]
    return Call("nn.Sequential", tuple(calls))


# --------------------------------------------------------------------------------------------
# Activations shared by compute layers
# --------------------------------------------------------------------------------------------
ACTIVATIONS: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {
    "relu": ("nn.ReLU", ()),
    "leaky_relu": ("nn.LeakyReLU", ()),  # negative_slope: the layer's field
    "elu": ("nn.ELU", ()),
    "sigmoid": ("nn.Sigmoid", ()),
    "tanh": ("nn.Tanh", ()),
    "softmax": ("nn.Softmax", (("dim", 1),)),
    "relu6": ("nn.ReLU6", ()),
    "silu": ("nn.SiLU", ()),
    "gelu": ("nn.GELU", ()),
    "gelu_tanh": ("nn.GELU", (("approximate", "tanh"),)),
    "hardswish": ("nn.Hardswish", ()),
    "hardsigmoid": ("nn.Hardsigmoid", ()),
}
"""The activations a compute layer may fuse (its ``activation:`` field) and the stand-alone
activation ops call: name -> (``torch.nn`` class, fixed keyword arguments). Defined once here;
:data:`ActivationName` and :func:`activation_call` are derived from it, and each stand-alone op
(``ReLU6``, ``GELU``, ...) names its entry. Sources: ReLU6 (Krizhevsky 2010; MobileNetV2,
Sandler et al., CVPR 2018, sec. 3.2), SiLU/Swish (Elfwing et al. 2018; Ramachandran et al.
2017), GELU (Hendrycks & Gimpel 2016, eq. 1 and the tanh approximation of sec. 2),
Hardswish/Hardsigmoid (MobileNetV3, Howard et al., ICCV 2019, sec. 5.2)."""

ActivationName = Literal[tuple(ACTIVATIONS) + ("none",)]  # type: ignore[valid-type]
"""An ``activation:`` value: a key of :data:`ACTIVATIONS`, or ``none``."""


def activation_call(name: str | None, negative_slope: float = 0.01) -> Call | None:
    """The module of a fused activation (``None`` for ``"none"``/``None``).

    Raises:
        KeyError: ``name`` is not a key of :data:`ACTIVATIONS` (netspecs are validated first).
    """
    if name in (None, "none"):
        return None
    target, kwargs = ACTIVATIONS[name]
    if name == "leaky_relu":
        kwargs = (("negative_slope", float(negative_slope)),)
    return Call(target, (), kwargs)


# --------------------------------------------------------------------------------------------
# The op base class
# --------------------------------------------------------------------------------------------
class Op(BaseModel):
    """Base class of every layer op. Subclasses add ``op: Literal["Name"]`` and their params.

    Common fields:
        name: unique layer name (any string; code generation derives a safe identifier).
        inputs: names of the layers (or network inputs) this layer reads. Omitted: the previous
            layer of the list, or the network input for the first layer (a plain list is a chain).
        merged_from: provenance written by ``spdnn merge`` (``parent:layer`` names); not used by
            the compiler.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=200)
    inputs: list[str] | None = None
    merged_from: list[str] | None = None

    kind: ClassVar[OpKind] = "rider"
    """The op's part in SPDNN labelling (see :data:`OpKind`): ``compute`` layers become graph
    nodes; ``resample`` ops become sticky pooling factors; ``junction`` ops (Concat, Add) join
    branches; ``reshape`` ops change the layout; ``rider`` ops ride along on edges."""
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1
    helpers: ClassVar[tuple[Helper, ...]] = ()
    """The torch helpers :meth:`module` names beyond ``torch.nn`` (see :class:`Helper`)."""
    clears_factor: ClassVar[bool] = False
    """True for layers that end the sticky pooling factor (thesis ch. 3.1 (d): "the pooling
    property stays with the data except when an unpooling or a fully connected layer is
    reached"): their output carries no factor and their structure code no factor suffix."""
    reads_class_indices: ClassVar[bool] = False
    """True for layers that may read an ``int64`` class-index input (Embedding); an int64 input
    can feed no other layer."""
    mergeable: ClassVar[bool] = True
    """False for ops that SPDNN merging cannot rebuild at the top level of a parent (Add: a merge
    joins branches by concatenation only, thesis ch. 3.1 "turn back the graph")."""
    shown_on_edges: ClassVar[bool] = True
    """Whether diagrams write the op on the SPDNN edge that carries it (a Concat is the join
    itself, drawn as the edges meeting, so it is not written)."""
    draw_class: ClassVar[str | None] = None
    """The colour class of the op in diagrams (``conv``, ``deconv``, ``linear``, or a kind);
    ``None``: its :attr:`kind`. :mod:`spdnn.render` maps classes to colours."""

    @field_validator("inputs")
    @classmethod
    def _inputs_nonempty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(v) == 0:
            raise ValueError("inputs must name at least one layer (or be omitted)")
        return v

    # -- shape and cost ------------------------------------------------------------------
    def infer_shape(self, ins: list[Shape]) -> Shape:
        """Output shape for input shapes ``ins`` (batch axis excluded).

        Raises:
            ShapeError: the inputs do not fit this op.
        """
        return ins[0]

    def num_params(self, ins: list[Shape], out: Shape) -> int:
        """Number of trainable parameters."""
        return 0

    def macs(self, ins: list[Shape], out: Shape) -> int:
        """Multiply-accumulate operations for one sample (batch size 1)."""
        return 0

    # -- torch -----------------------------------------------------------------------------
    def module(self, ins: list[Shape], out: Shape) -> Call | None:
        """The module holding this layer's parameters/state, or ``None`` if stateless."""
        return None

    def apply(self, mod: torch.nn.Module | None, xs: list[torch.Tensor]) -> torch.Tensor:
        """Run the layer in the in-process interpreter (ops that call torch functions import
        torch here, never at module level)."""
        assert mod is not None
        return mod(xs[0])

    def forward_expr(self, attr: str | None, args: list[str]) -> str:
        """Python expression computing the layer in generated ``forward`` code.

        ``attr`` is the attribute name of the module (``None`` if stateless), ``args`` the
        variable names of the inputs. Must compute exactly what :meth:`apply` computes.
        """
        return f"self.{attr}({args[0]})"

    def onnx_unsupported(self, ins: list[Shape], out: Shape, exporter: str) -> str | None:
        """Why ``torch.onnx``'s ``exporter`` (``"dynamo"`` or ``"torchscript"``) cannot export
        this layer for input shapes ``ins``, or ``None`` when it can; asked by
        :func:`spdnn.export.export_onnx` before it exports, so the user gets one line naming
        the layer instead of the exporter's traceback."""
        return None

    # -- SPDNN -------------------------------------------------------------------------------
    def structure(self) -> str | None:
        """SPDNN structure code (thesis ch. 3.1 (a), (c)) for compute ops, else ``None``."""
        return None

    def input_roles(self) -> tuple[str, ...] | None:
        """Names of the inputs when they play different parts (SPADE's feature map and
        segmentation map, a two-input block's ``x`` and ``s``), else ``None``.

        SPDNN treats such a layer as a graph node even when it is not ``compute`` (it cannot ride
        on one edge), and a merge keeps its inputs apart, one argument per role, instead of
        concatenating them. Interchangeable inputs (Concat, Add, Mul) return ``None``.
        """
        return None

    def is_spdnn_node(self) -> bool:
        """Whether the layer is a node of the SPDNN graph (thesis ch. 3.1 step 1): compute
        layers, and layers whose inputs play different parts (:meth:`input_roles`), which
        cannot ride on one edge. Every other layer rides along the edge it sits on."""
        return self.kind == "compute" or self.input_roles() is not None

    def resample_factor(self) -> Fraction:
        """How this op changes the sticky pooling factor (thesis ch. 3.1 (d)): a 2x2 pool
        multiplies it by 2, a 2x unpool divides it by 2; other ops return 1."""
        return Fraction(1)

    @classmethod
    def resampling_layer(cls, factor: Fraction) -> dict[str, Any] | None:
        """Netspec data (``op`` and parameters; no name or inputs) of a layer of this class that
        multiplies the sticky pooling factor by ``factor``, or ``None`` when this class cannot.

        The merge's rebuild asks this where an edge must be resampled (depth paper App. A.2.1:
        the pooling quality is recalled from the original networks): a pool class answers for
        integer factors above 1, an unpool class for factors ``1/k``.
        """
        return None

    @classmethod
    def layer_data(cls, name: str, **fields: Any) -> dict[str, Any]:
        """Plain netspec data of a layer of this op: ``{"name": name, "op": <class name>,
        **fields}`` (validated only when the netspec is)."""
        return {"name": name, "op": cls.__name__, **fields}

    def out_channels_of(self) -> int | None:
        """The width the SPDNN channel budget may scale (conv-like ops), else ``None``."""
        return None

    def width_follows_input(self) -> bool:
        """Whether the op's output width is its input width while :meth:`out_channels_of` names
        it (an identity-residual block): a merge must feed it that many channels."""
        return False

    def with_width(self, width: int) -> Op:
        """A copy with its scalable width set to ``width`` (see :meth:`out_channels_of`)."""
        raise TypeError(f"{type(self).__name__} has no scalable width")

    # -- drawing -------------------------------------------------------------------------------
    def label_parts(self) -> tuple[str, list[str]]:
        """How the layer is labelled in diagrams and summaries: ``(main, extra)``, the op with
        its size (``Conv2d 3x3, 12 ch``, ``MaxPool2d 2``) and secondary settings (``pad same``,
        ``BN``, ``relu``). Default: the op name and its non-default fields. Not escaped."""
        d = self.model_dump(exclude_defaults=True, exclude={"name", "op", "inputs", "merged_from"})
        return self.op_name, [f"{k}={v}" for k, v in d.items()]

    def colour_class(self) -> str:
        """The colour class diagrams fill the layer with: :attr:`draw_class` or :attr:`kind`."""
        return self.draw_class or self.kind

    # -- helpers -------------------------------------------------------------------------------
    @property
    def op_name(self) -> str:
        """The op's registry name (its class name)."""
        return type(self).__name__

    def fail(self, message: str, hint: str | None = None) -> ShapeError:
        return ShapeError(f"layer '{self.name}' ({self.op_name}): {message}", hint=hint)

    def need_spatial(self, shape: Shape, what: str = "input") -> tuple[int, int, int]:
        if len(shape) != 3:
            raise self.fail(f"expects a (C, H, W) feature map as {what}, got shape {shape}",
                            hint="insert a Reshape layer before it")
        return shape  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
OPS: dict[str, type[Op]] = {}


def register_op(cls: type[Op]) -> type[Op]:
    """Class decorator: add an op class to the registry under its class name.

    Raises:
        ValueError: an op of that name is already registered, or ``op`` is not a Literal of
            the class name.
    """
    name = cls.__name__
    if name in OPS and OPS[name] is not cls:
        raise ValueError(f"op {name!r} is already registered")
    ann = cls.model_fields.get("op")
    if ann is None or getattr(ann.annotation, "__args__", None) != (name,):
        raise ValueError(f"op class {name} must declare `op: Literal[{name!r}]`")
    OPS[name] = cls
    return cls


def pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``[3, 5] -> (3, 5)``."""
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


# --------------------------------------------------------------------------------------------
# label text helpers (used by the ops' label_parts)
# --------------------------------------------------------------------------------------------
def dims_text(v: Any) -> str:
    """A kernel size as text: ``3 -> "3x3"``, ``(3, 5) -> "3x5"``."""
    if isinstance(v, (tuple, list)):
        if len(v) == 2 and v[0] == v[1]:
            return f"{v[0]}x{v[1]}"
        return "x".join(str(x) for x in v)
    return f"{v}x{v}"


def one_text(v: Any) -> str:
    """A per-axis value as text: ``2`` or ``(2, 2)`` -> ``"2"``, ``(1, 2)`` -> ``"1x2"``."""
    if isinstance(v, (tuple, list)):
        return str(v[0]) if len(set(v)) == 1 else "x".join(str(x) for x in v)
    return str(v)


def fused_text(op: Op) -> list[str]:
    """The fused batch norm and activation of a layer as label parts (``["BN", "relu"]``)."""
    extras = []
    if getattr(op, "batch_norm", False):
        extras.append("BN")
    act = getattr(op, "activation", None)
    if act not in (None, "none"):
        extras.append(act)
    return extras

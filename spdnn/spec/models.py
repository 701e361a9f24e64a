"""The netspec: a network declared as a YAML layer graph (pydantic models, one per concept).

A netspec names its input(s), its layers and its output(s)::

    name: iris_a_parent_3
    input: {name: image, channels: 1, height: 96, width: 128}
    layers:
      - {name: conv1, op: Conv2d, kernel_size: 3, out_channels: 8, padding: same,
         batch_norm: true, activation: relu}
      - {name: conv2, op: Conv2d, kernel_size: 5, out_channels: 8, padding: same}
    output: {name: mask, from: conv2}

``layers`` is a graph: each layer names its ``inputs``; a layer without ``inputs`` reads the
previous layer (or the network input for the first one), so a plain list is a chain. The
``op`` field selects the layer type from the op registry (a pydantic discriminated union).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spdnn.ops import OPS, Op
from spdnn.ops.types import PosInt


class InputSpec(BaseModel):
    """A network input: a ``(channels, height, width)`` image tensor, or a ``features`` vector.

    Shapes exclude the batch axis; the tensor fed to the network is ``(N, C, H, W)`` or
    ``(N, features)``.

    ``dtype`` is ``float32`` (default) or ``int64``. An ``int64`` input holds class indices
    (e.g. the label of a conditional GAN, Mirza & Osindero 2014): it must be a vector
    (``features``), must give ``num_classes`` (indices lie in ``0 .. num_classes - 1``), and
    may feed only ``Embedding`` layers. Exported ONNX graphs declare it as ``int64``.

    Raises (on validation): ``ValueError`` for a mixed image/vector form, an ``int64`` image,
    or ``num_classes`` missing on an ``int64`` input / given on a ``float32`` one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="x", min_length=1, max_length=200)
    channels: PosInt | None = None
    height: PosInt | None = None
    width: PosInt | None = None
    features: PosInt | None = None
    dtype: Literal["float32", "int64"] = "float32"
    num_classes: PosInt | None = None

    @model_validator(mode="after")
    def _one_form(self) -> InputSpec:
        if self.dtype == "int64":
            if self.features is None:
                raise ValueError("an int64 input holds class indices: declare it as a vector "
                                 "('features'), not an image")
            if self.num_classes is None:
                raise ValueError("an int64 input needs 'num_classes' (indices are "
                                 "0 .. num_classes - 1)")
        elif self.num_classes is not None:
            raise ValueError("'num_classes' is for int64 (class index) inputs; add "
                             "'dtype: int64' or remove it")
        img = (self.channels, self.height, self.width)
        if self.features is not None:
            if any(v is not None for v in img):
                raise ValueError("give either 'features' or 'channels/height/width', not both")
        elif any(v is None for v in img):
            raise ValueError("an image input needs 'channels', 'height' and 'width' "
                             "(or give 'features' for a vector input)")
        return self

    def to_data(self) -> dict[str, Any]:
        """Plain data for YAML: the name always, ``dtype`` only when not ``float32``."""
        d = self.model_dump(exclude_none=True)
        if d.get("dtype") == "float32":
            del d["dtype"]
        return d

    @property
    def torch_dtype(self) -> Any:
        """The ``torch.dtype`` fed to the network (``torch.float32`` or ``torch.int64``)."""
        import torch

        return torch.int64 if self.dtype == "int64" else torch.float32

    @property
    def shape(self) -> tuple[int, ...]:
        if self.features is not None:
            return (self.features,)
        return (self.channels, self.height, self.width)  # type: ignore[return-value]


class OutputSpec(BaseModel):
    """A network output: the layer ``from`` whose result is returned under ``name``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(default="out", min_length=1, max_length=200)
    from_: str = Field(alias="from", min_length=1)


class BlockDef(BaseModel):
    """A block: a parameterized sub-graph declared once and used as a layer (``op: Name``).

    Fields:
        params: parameter name -> default value; ``null`` marks a required parameter. A
            default may be computed from other parameters and from ``$in_channels`` (the
            width of the block's first input): ``hidden: $in_channels * $t`` (see
            :mod:`spdnn.spec.expr`); an instance may still give it a value.
        inputs: the block's input names (default ``[x]``); an instance reads as many layers.
        layers: ordinary netspec layers (plain data); a string ``"$name"`` anywhere in them is
            replaced by the instance's value of parameter ``name``, and an integer expression
            such as ``$c * $t`` or ``max(8, $in_channels // 4)`` by its value.
        output: the body layer whose result the block returns (default: the last layer).
        structure: the SPDNN structure code of an instance, a ``str.format`` template over the
            parameters, e.g. ``"Fire({squeeze},{expand1x1})"``; default ``Name(arg1,arg2,...)``.
        widths: the parameters that are channel widths, which the SPDNN channel budget scales
            together (``[planes]`` of a ResNet basic block, ``[c]`` of a MobileNetV2 inverted
            residual). Default: found from the body (parameters that are the whole value of an
            ``out_channels``/``out_features``). A block whose output width follows its input
            width (an identity residual: ``x + f(x)``) must declare them to be scaled; its
            first declared width is then its output width, and a merge ties it to the width of
            its input (:mod:`spdnn.graph.budget`).
        description: free text.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    params: dict[str, Any] = Field(default_factory=dict)
    inputs: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=lambda: ["x"],
                                                                min_length=1)
    layers: list[dict[str, Any]] = Field(min_length=1)
    output: str | None = None
    structure: str | None = None
    widths: list[str] | None = None
    description: str = ""

    def to_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True)


def _layer_union() -> Any:
    classes = tuple(OPS.values())
    return Annotated[Union[classes], Field(discriminator="op")]  # type: ignore[valid-type]


Layer = _layer_union()


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


class Netspec(BaseModel):
    """A whole network.

    Fields:
        name: the network's name (free text; code generation derives a class name from it).
        description: free text, kept in the emitted module's docstring.
        inputs: one or more :class:`InputSpec` (YAML: ``input:`` for one, ``inputs:`` for a list).
        blocks: block definitions (:class:`BlockDef`) by name; a layer ``op: Name`` instantiates
            one (see :mod:`spdnn.spec.blocks`). Files listed under ``imports:`` are read into
            this at load time.
        layers: the layer graph, each an op from the registry or a block instance.
        outputs: one or more :class:`OutputSpec` (YAML ``output:``/``outputs:``); default: the
            last layer, named ``out`` (``out_1`` if an input has that name).

    Raises (on validation):
        pydantic.ValidationError: a field is missing, of the wrong type, or out of range.
        spdnn.errors.SpecError: graph errors are raised by :func:`spdnn.spec.check_graph`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    inputs: list[InputSpec] = Field(min_length=1)
    blocks: dict[str, BlockDef] = Field(default_factory=dict)
    layers: list[Layer] = Field(min_length=1)  # type: ignore[valid-type]
    outputs: list[OutputSpec] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for single, plural in (("input", "inputs"), ("output", "outputs")):
            if single in data:
                if plural in data:
                    raise ValueError(f"give either '{single}' or '{plural}', not both")
                data[plural] = _as_list(data.pop(single))
        return data

    @model_validator(mode="after")
    def _default_output(self) -> Netspec:
        if not self.outputs:  # named "out" (or "out_1", ... when an input is named so)
            taken = {i.name for i in self.inputs}
            name = next(n for n in ("out", *(f"out_{k}" for k in range(1, len(taken) + 1)))
                        if n not in taken)
            object.__setattr__(self, "outputs", [OutputSpec(name=name, **{"from": self.layers[-1].name})])
        return self

    # -- convenience -----------------------------------------------------------------------------
    def layer(self, name: str) -> Op:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(name)

    def input_names(self, layer_index: int) -> list[str]:
        """The resolved input names of layer ``layer_index`` (chain default applied)."""
        lay = self.layers[layer_index]
        if lay.inputs is not None:
            return list(lay.inputs)
        if layer_index == 0:
            return [self.inputs[0].name]
        return [self.layers[layer_index - 1].name]

    def edges(self) -> list[tuple[str, str]]:
        """All ``(source, layer)`` data edges, inputs included, in declaration order."""
        return [(src, lay.name) for i, lay in enumerate(self.layers) for src in self.input_names(i)]

    def to_data(self) -> dict[str, Any]:
        """Plain data for YAML: defaults left out, ``input``/``output`` used when single."""
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        ins = [i.to_data() for i in self.inputs]
        if len(ins) == 1:
            d["input"] = ins[0]
        else:
            d["inputs"] = ins
        if self.blocks:
            d["blocks"] = {k: b.to_data() for k, b in self.blocks.items()}
        d["layers"] = [_layer_data(lay) for lay in self.layers]
        outs = [o.model_dump(by_alias=True) for o in self.outputs]
        if len(outs) == 1:
            d["output"] = outs[0]
        else:
            d["outputs"] = outs
        return d


def _layer_data(lay: Op) -> dict[str, Any]:
    data = lay.model_dump(mode="json", exclude_defaults=True)
    # keep a stable, readable key order: name, op, params..., inputs, merged_from
    out: dict[str, Any] = {"name": data.pop("name"), "op": data.pop("op")}
    inputs = data.pop("inputs", None)
    merged = data.pop("merged_from", None)
    out.update(data)
    if inputs is not None:
        out["inputs"] = inputs
    if merged is not None:
        out["merged_from"] = merged
    return out


def rebuild_layer_union() -> None:
    """Make :class:`Netspec` accept ops registered after import (extension point)."""
    global Layer
    Layer = _layer_union()
    Netspec.model_fields["layers"].annotation = list[Layer]  # type: ignore[valid-type]
    Netspec.model_rebuild(force=True)


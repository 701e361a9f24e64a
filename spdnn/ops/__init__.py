"""The op registry: every layer type a netspec may use (``spdnn ops`` lists them).

Importing this package registers the built-in ops; it imports no torch (torch is imported only
where a module is built or run).

**A new op is one class.** In any module (a file of ``spdnn/ops/`` for a built-in op, or your
own file), subclass :class:`~spdnn.ops.base.Op`, decorate it with :func:`register_op`, then call
:func:`spdnn.spec.rebuild_layer_union` so netspecs accept it. The class declares:

* fields: ``op: Literal["Name"]`` (the class name) and the layer's parameters (pydantic);
* shape and cost: :meth:`~Op.infer_shape`, :meth:`~Op.num_params`, :meth:`~Op.macs`;
* torch: :meth:`~Op.module` (a :class:`Call`; ``None`` when stateless) and, when the call names
  a module class of your own rather than ``torch.nn``, :attr:`~Op.helpers`: a tuple of
  :class:`Helper` pointing at that class (``Helper("your.module:YourModule")``; its source is
  copied into emitted files, so it may use only ``torch`` and ``nn``); :meth:`~Op.apply` and
  :meth:`~Op.forward_expr` when the layer is not called as ``module(x)``;
* SPDNN (thesis ch. 3.1): :attr:`~Op.kind` (``compute``, ``resample``, ``junction``,
  ``reshape`` or ``rider``, see :data:`~spdnn.ops.base.OpKind`), :meth:`~Op.structure` (the
  structure code of a compute op), :meth:`~Op.input_roles` and :meth:`~Op.is_spdnn_node`,
  :meth:`~Op.resample_factor` (sticky pooling factor), :attr:`~Op.clears_factor` (as Linear),
  :meth:`~Op.resampling_layer` (how the merge's rebuild re-creates a pool/unpool of this
  class), :attr:`~Op.mergeable`, :meth:`~Op.out_channels_of` / :meth:`~Op.with_width` (the
  channel budget);
* inputs: :attr:`~Op.min_inputs`, :attr:`~Op.max_inputs`, :attr:`~Op.reads_class_indices`
  (may read an ``int64`` class-index input, as Embedding);
* drawing: :meth:`~Op.label_parts` (label text) and :attr:`~Op.draw_class` (colour class:
  ``conv``, ``deconv``, ``linear`` or the kind), :attr:`~Op.shown_on_edges`.

Every default is the plain case (a one-input ``rider`` op with no parameters), so a class
overrides only what differs. No compiler stage tests op names: render, graph, shapes and
codegen ask the op. ``tests/test_op_plugin.py`` defines, registers and uses such a class end to
end (validate, merge, render, emit, ONNX export) and unregisters it again.
"""

from spdnn.ops import conv as _conv  # noqa: F401  (registers ops)
from spdnn.ops import extra as _extra  # noqa: F401
from spdnn.ops import gan as _gan  # noqa: F401
from spdnn.ops import imaging as _imaging  # noqa: F401
from spdnn.ops import layers as _layers  # noqa: F401
from spdnn.ops import norm as _norm  # noqa: F401
from spdnn.ops import sensing as _sensing  # noqa: F401
from spdnn.ops.base import OPS, Call, Helper, Op, OpKind, Shape, register_op
from spdnn.ops.layers import resampling_layer

__all__ = ["OPS", "Call", "Helper", "Op", "OpKind", "Shape", "register_op", "resampling_layer"]

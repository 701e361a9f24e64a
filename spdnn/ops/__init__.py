"""The op registry: every layer type a netspec may use (``spdnn ops`` lists them).

Importing this package registers the built-in ops. A new op is one class: subclass
:class:`~spdnn.ops.base.Op`, declare ``op: Literal["Name"]`` and its parameters, implement the
shape/cost/module methods, decorate it with :func:`register_op`, then call
:func:`spdnn.spec.rebuild_layer_union`.
"""

from spdnn.ops import conv as _conv  # noqa: F401  (registers ops)
from spdnn.ops import extra as _extra  # noqa: F401
from spdnn.ops import gan as _gan  # noqa: F401
from spdnn.ops import imaging as _imaging  # noqa: F401
from spdnn.ops import layers as _layers  # noqa: F401
from spdnn.ops import norm as _norm  # noqa: F401
from spdnn.ops import sensing as _sensing  # noqa: F401
from spdnn.ops.base import OPS, Call, Op, Shape, register_op

__all__ = ["OPS", "Call", "Op", "Shape", "register_op"]

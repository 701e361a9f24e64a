"""Helper modules that generated code may need beyond ``torch.nn``.

The source of each helper a network uses is copied into its emitted file, so emitted files
import only ``torch``. Every built-in op of this version maps onto ``torch.nn`` directly, so
the list is empty; ops that need a custom module add their class here and to ``__all__``.
"""

__all__: list[str] = []

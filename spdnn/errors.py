"""Errors raised by spdnn.

Every error a user can cause derives from :class:`SpdnnError`. Each carries enough context to be
printed as one line of the form ``file:line: field: what is wrong (what to do)``; the command line
prints exactly that line and exits with code 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SpdnnError(Exception):
    """Base class of every user-facing error.

    Attributes:
        message: what is wrong, one sentence, no trailing period needed.
        file: the netspec or recipe file the error is about, if any.
        line: 1-based line in ``file``, if known.
        field: dotted path of the offending field, e.g. ``layers[3].kernel_size``.
        hint: what to do about it.
    """

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None
    hint: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def one_line(self) -> str:
        """Render the error as a single line (no newlines, whatever the message held)."""
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        fld = f"{self.field}: " if self.field else ""
        hint = f" ({self.hint})" if self.hint else ""
        text = f"{where}{fld}{self.message}{hint}"
        return " ".join(text.split())

    def __str__(self) -> str:
        return self.one_line()

    def located(self, file: str | None = None, line: int | None = None) -> SpdnnError:
        """Fill in the file/line if they are not known yet; returns ``self``."""
        if self.file is None and file is not None:
            self.file = file
        if self.line is None and line is not None:
            self.line = line
        return self


class SpecError(SpdnnError):
    """A netspec (or recipe) is malformed: bad YAML, bad field, unknown op, bad graph."""


class ShapeError(SpecError):
    """Shapes do not fit: a layer cannot take the tensor its inputs produce."""


class MergeError(SpdnnError):
    """SPDNN merging cannot proceed for the given parents (e.g. they do not share inputs)."""


def validated(model: Any, data: Any, field: str, hint: str | None = None,
              error: type[SpdnnError] = SpdnnError) -> Any:
    """``model.model_validate(data)`` (``model`` a pydantic model) with the first
    validation error as one ``error`` at ``<field>.<location>`` (``field`` itself for an error
    of the whole section) with pydantic's message and ``hint``.

    Raises:
        SpdnnError (or ``error``): the data does not validate.
    """
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise error(err["msg"], field=f"{field}.{loc}" if loc else field, hint=hint) from None

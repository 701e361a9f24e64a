"""Constrained field types shared by op definitions (strict: YAML ``true`` is not a kernel size)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict

PosInt = Annotated[int, Strict(), Field(gt=0)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
Size2 = PosInt | tuple[PosInt, PosInt]
Pad2 = NonNegInt | tuple[NonNegInt, NonNegInt]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]

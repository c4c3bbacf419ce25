"""Tensor types as the lowering handles them: shapes and dtype names out of xDSL types, and
back (the element types of the rdu ops it builds), plus the whole-tensor access ranges.

Shared by the unit mapping, sections, kernels and the host side, which all move between the
IR's `TensorType`s and the program's plain shapes and dtype names.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import (
    BFloat16Type,
    Float16Type,
    Float32Type,
    IntegerType,
    TensorType,
)
from xdsl.ir import Attribute, SSAValue


def shape_of(value: SSAValue | Attribute) -> list[int]:
    """The shape of a tensor-typed value (or of a tensor type)."""
    t = value.type if isinstance(value, SSAValue) else value
    assert isinstance(t, TensorType)
    return list(t.get_shape())


def dtype_of(value: SSAValue | Attribute) -> str:
    """The element type's name (`bf16`, `f32`, ...), as the program schema spells dtypes."""
    t = value.type if isinstance(value, SSAValue) else value
    assert isinstance(t, TensorType)
    return str(t.element_type)


def whole(shape: Sequence[int]) -> list[tuple[int, int]]:
    """The access ranges covering all of a tensor of `shape`."""
    return [(0, n) for n in shape]


def element_type(dtype: str) -> Attribute:
    """The xDSL element type of a program dtype name (the inverse of :func:`dtype_of`)."""
    return {
        "bf16": BFloat16Type(),
        "f16": Float16Type(),
        "f32": Float32Type(),
        "i32": IntegerType(32),
        "i64": IntegerType(64),
    }[dtype]

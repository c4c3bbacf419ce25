"""Tensor types as the lowering handles them: shapes as lists, the element types of the rdu ops
it builds from program dtype names, and the whole-tensor access ranges.

Shared by the unit mapping, sections, kernels and the host side, which all move between the
IR's `TensorType`s and the program's plain shapes and dtype names (reading a value's type is
`rdu_dialect/tensors.py`'s).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from xdsl.dialects.builtin import (
    BFloat16Type,
    Float16Type,
    Float32Type,
    IntegerType,
    TensorType,
)
from xdsl.ir import Attribute, SSAValue

from rdu_compiler.rdu_dialect import rdu
from rdu_compiler.rdu_dialect.tensors import tensor_shape


def shape_of(value: SSAValue | Attribute) -> list[int]:
    """The shape of a tensor-typed value as a list: the lowering builds access ranges and
    buffer shapes from it and edits its own copy."""
    return list(tensor_shape(value))


def whole(shape: Sequence[int]) -> list[tuple[int, int]]:
    """The access ranges covering all of a tensor of `shape`."""
    return [(0, n) for n in shape]


# Element types of the program's dtype names, built once (xDSL verifies each on construction)
_ELEMENT_TYPES: dict[str, Attribute] = {
    "bf16": BFloat16Type(),
    "f16": Float16Type(),
    "f32": Float32Type(),
    "i32": IntegerType(32),
    "i64": IntegerType(64),
}


def tensor_of(dtype: str, shape: Sequence[int]) -> TensorType[Attribute]:
    """The tensor type of a program dtype name (its element type: the inverse of
    `rdu_dialect.tensors.dtype_name`) and shape."""
    return _interned_tensor(dtype, tuple(shape))


@lru_cache(maxsize=1 << 12)
def _interned_tensor(dtype: str, shape: tuple[int, ...]) -> TensorType[Attribute]:
    """Types are immutable values, and a model's layers repeat a few shapes: built (and
    verified by xDSL) once each rather than once per value, tensor and buffer."""
    return TensorType(_ELEMENT_TYPES[dtype], shape)


def stream_of(dtype: str, elements: int, depth: int) -> rdu.StreamType:
    """The stream type of `depth` tiles of `elements` elements of a program dtype."""
    return _interned_stream(dtype, elements, depth)


@lru_cache(maxsize=1 << 12)
def _interned_stream(dtype: str, elements: int, depth: int) -> rdu.StreamType:
    """Interned as :func:`tensor_of` is: a stream type's verifier prints its element type, the
    costliest attribute the kernels' lowering builds, and a kernel has few distinct ones."""
    return rdu.StreamType(tensor_of(dtype, [elements]), depth)

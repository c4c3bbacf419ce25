"""The tensor type of a value, its shape and its dtype name, for code past the verifiers.

xDSL's `TensorType` has `get_shape()` and `element_type`, but `SSAValue.type` is any
`Attribute`: every pass would narrow it itself. The llm and dfk verifiers guarantee tensors
where these are called, so a non-tensor here is a compiler bug (an assertion), not a user
error. The lowest layer that reads tensor types (the dialects) owns the one helper; passes and
the lowering import it.
"""

from __future__ import annotations

from functools import cache

from xdsl.dialects.builtin import TensorType
from xdsl.ir import Attribute, SSAValue

__all__ = ["dtype_name", "tensor_shape", "tensor_type"]


def tensor_type(v: SSAValue | Attribute) -> TensorType[Attribute]:
    """The tensor type of a value (or the type itself)."""
    ty = v.type if isinstance(v, SSAValue) else v
    assert isinstance(ty, TensorType), f"expected a tensor type, got {ty}"
    return ty


def tensor_shape(v: SSAValue | Attribute) -> tuple[int, ...]:
    """The shape of a tensor-typed value (or of a tensor type)."""
    return tensor_type(v).get_shape()


def dtype_name(v: SSAValue | Attribute) -> str:
    """The element type's name (`bf16`, `f32`, `i32`, ...), as the program schema and the
    numerics spell dtypes."""
    return _element_name(tensor_type(v).element_type)


@cache
def _element_name(element: Attribute) -> str:
    """Printing an attribute runs xDSL's printer: a handful of element types, printed once."""
    return str(element)

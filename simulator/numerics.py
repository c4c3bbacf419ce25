"""Numeric contract of every ``llm`` op: the one numpy implementation of the math.

This module is on the simulator's side of the program-file contract: it imports only numpy,
ml_dtypes and the standard library (never xDSL, never the compiler). The compiler's llm-level
reference interpreter and the simulator's functional mode both call these functions, so the math
of each op exists exactly once in the project.

Conventions (the contract)
--------------------------
* **Storage dtypes.** Tensors are stored as ``bf16`` (``ml_dtypes.bfloat16``), ``f16`` or ``f32``;
  integer operands (token ids, positions) are any integer dtype and results of ``argmax`` are
  ``int32``. ``dtype_from_name`` / ``dtype_name`` map between the names ``"bf16" | "f16" | "f32" |
  "i32" | "i64"`` and numpy dtypes; ``bytes_of`` sizes a tensor by its shape and dtype name.
* **Compute in f32, round once.** Every op converts its floating operands to float32, computes in
  float32 (all accumulations - matmuls, norms' means, softmax sums, attention - in float32) and
  rounds its result to the storage dtype *once*, at the end, with round-to-nearest-even
  (``ml_dtypes`` casting). Intermediate values inside one op are never rounded to bf16 (Hugging Face
  eager code sometimes does - e.g. attention scores, ``cos``/``sin`` tables, RMSNorm before the
  weight multiply - so results may differ from HF by about one bf16 ulp; that is the tolerance the
  project compares with).
* **Result dtype.** ``out_dtype`` (a name or numpy dtype) when given, otherwise the promotion of the
  floating operands' dtypes as torch does it: bf16 with bf16 -> bf16, anything with f32 -> f32,
  bf16 with f16 -> f32; float64 operands count as f32 (f32 is the widest storage dtype).
* **Shapes.** One decode step: activations are 2-D ``[B, features]`` (B batch entries); attention
  heads are not separate dims (``q`` is ``[B, num_heads * head_dim]``, head ``h`` occupying columns
  ``h*head_dim : (h+1)*head_dim``). Positions are one int per batch entry (entries may differ).
  Weights use the Hugging Face layout (``linear`` weight ``[out, in]``).
* **Dispatch.** ``OPS[name]`` maps an llm op's short name (and the parts of an op that units
  split: ``attention_partial`` / ``attention_merge`` / ``attention_combine``, ``moe_partial`` /
  ``moe_combine``) to its function. Positional parameters are the op's operands in IR order;
  keyword parameters are its attributes. Every op accepts ``out_dtype=`` to override the result
  dtype.
* **Split reductions.** ``linear(..., accumulate_only=True)`` returns the float32 accumulator
  unrounded, so a caller that splits the reduction (input) dimension over units or sockets can sum
  partial results in float32 with ``all_reduce(parts, out_dtype=...)`` and round once. (Pass the
  bias to exactly one part.) The sum of partials equals the full product up to float32
  re-association, far inside bf16 tolerance.
* **Aliasing.** ``kv_cache_write_`` updates the cache buffer in place and returns it (the updated
  cache aliases its input, as the program file records); ``kv_cache_write`` is the copying form.
  Both share one implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

__all__ = [
    "BF16",
    "F16",
    "F32",
    "I32",
    "I64",
    "DTYPES",
    "OPS",
    "RopeScaling",
    "add",
    "all_gather",
    "all_reduce",
    "argmax",
    "attention",
    "attention_combine",
    "attention_merge",
    "attention_partial",
    "bytes_of",
    "dtype_from_name",
    "dtype_name",
    "embedding",
    "gelu",
    "kv_cache_write",
    "kv_cache_write_",
    "layer_norm",
    "linear",
    "moe",
    "moe_expert",
    "moe_combine",
    "moe_partial",
    "moe_route",
    "moe_selected_experts",
    "mul",
    "result_dtype",
    "rms_norm",
    "rope",
    "rope_cos_sin",
    "rope_inv_freq",
    "round_to",
    "silu",
    "softmax",
    "to_f32",
]

# --------------------------------------------------------------------------------------------
# dtypes and rounding
# --------------------------------------------------------------------------------------------

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
I32 = np.dtype(np.int32)
I64 = np.dtype(np.int64)

#: name -> numpy dtype, for the names used in IR types and program files.
DTYPES: dict[str, np.dtype] = {"bf16": BF16, "f16": F16, "f32": F32, "i32": I32, "i64": I64}
_NAMES: dict[np.dtype, str] = {v: k for k, v in DTYPES.items()}
_ALIASES = {
    "bfloat16": "bf16",
    "float16": "f16",
    "half": "f16",
    "float32": "f32",
    "float": "f32",
    "int32": "i32",
    "int64": "i64",
}
_STORAGE_FLOATS = (BF16, F16, F32)

DTypeLike = Any  # a name ("bf16", "f32", ...) or anything np.dtype() accepts


def dtype_from_name(dtype: DTypeLike) -> np.dtype:
    """``"bf16"|"f16"|"f32"|"i32"|"i64"`` (or a numpy dtype / ``"bfloat16"``...) -> numpy dtype."""
    if isinstance(dtype, str):
        key = _ALIASES.get(dtype.lower(), dtype.lower())
        if key in DTYPES:
            return DTYPES[key]
        raise ValueError(f"unknown dtype name {dtype!r}; expected one of {sorted(DTYPES)}")
    try:
        return np.dtype(dtype)
    except TypeError as e:
        raise ValueError(f"not a dtype: {dtype!r}") from e


def dtype_name(dtype: DTypeLike) -> str:
    """numpy dtype (or name) -> its short name ``"bf16"|"f16"|"f32"|"i32"|"i64"``."""
    dt = dtype_from_name(dtype)
    if dt not in _NAMES:
        raise ValueError(f"dtype {dt} has no short name; supported: {sorted(DTYPES)}")
    return _NAMES[dt]


def bytes_of(shape: Sequence[int], dtype: str) -> int:
    """Bytes of a dense ``shape`` tensor of the short-named ``dtype`` (``"bf16"``, ...). The
    cost model, the lowering's buffer plan, the program validator and the simulator's memory
    and traffic figures all count with it, so they cannot disagree on a tensor's size."""
    return math.prod(shape) * DTYPES[dtype].itemsize


def _storage(dt: np.dtype) -> np.dtype:
    """The storage dtype a floating dtype counts as (float64 and others -> f32)."""
    return dt if dt in _STORAGE_FLOATS else F32


def result_dtype(*arrays: Any, out_dtype: DTypeLike = None) -> np.dtype:
    """Result storage dtype: ``out_dtype`` if given, else torch-like promotion of the floating
    operands (bf16+bf16 -> bf16, f16+f16 -> f16, anything else mixed -> f32). Non-floating
    operands (ids, positions, None) are ignored; no floating operand -> f32."""
    if out_dtype is not None:
        return dtype_from_name(out_dtype)
    found: set[np.dtype] = set()
    for a in arrays:
        if a is None:
            continue
        dt = np.asarray(a).dtype if not hasattr(a, "dtype") else np.dtype(a.dtype)
        if dt == BF16 or np.issubdtype(dt, np.floating):
            found.add(_storage(dt))
    if len(found) == 1:
        return found.pop()
    return F32


def to_f32(x: Any) -> np.ndarray:
    """Any array-like -> float32 ndarray (exact for bf16/f16; no copy if already f32)."""
    return np.asarray(x).astype(np.float32, copy=False)


def round_to(x: Any, dtype: DTypeLike) -> np.ndarray:
    """Round ``x`` to storage ``dtype`` (round-to-nearest-even, via ml_dtypes/numpy casting).

    For integer targets values are rounded to the nearest integer (not truncated)."""
    dt = dtype_from_name(dtype)
    a = np.asarray(x)
    if a.dtype == dt:
        return a
    if np.issubdtype(dt, np.integer):
        return np.rint(a).astype(dt)
    with np.errstate(over="ignore"):
        return a.astype(dt)


def _finish(y: np.ndarray, dt: np.dtype, accumulate_only: bool = False) -> np.ndarray:
    return np.asarray(y, dtype=np.float32) if accumulate_only else round_to(y, dt)


def _ints(a: Any, what: str) -> np.ndarray:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        if a.size and np.all(np.mod(a, 1) == 0):
            return a.astype(np.int64)
        raise TypeError(f"{what} must be integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


# --------------------------------------------------------------------------------------------
# elementwise and normalization ops
# --------------------------------------------------------------------------------------------


def embedding(table: np.ndarray, ids: Any, *, out_dtype: DTypeLike = None) -> np.ndarray:
    """``table [V, H]``, ``ids [B]`` int -> ``table[ids]`` ``[B, H]`` (a gather: no arithmetic)."""
    table = np.asarray(table)
    ids = _ints(ids, "embedding ids")
    if table.ndim != 2:
        raise ValueError(f"embedding table must be 2-D [vocab, hidden], got shape {table.shape}")
    v = table.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= v):
        bad = ids[(ids < 0) | (ids >= v)]
        raise IndexError(f"embedding ids {bad.tolist()} out of range for vocab size {v}")
    return round_to(table[ids], result_dtype(table, out_dtype=out_dtype))


def rms_norm(
    x: np.ndarray, w: np.ndarray, *, eps: float = 1e-6, out_dtype: DTypeLike = None
) -> np.ndarray:
    """RMSNorm over contiguous groups of ``G = len(w)`` features of ``x [..., N]`` (G divides N).

    ``y = x / sqrt(mean(x_g**2) + eps) * w`` per group: ``G == N`` is the usual norm, ``G ==
    head_dim`` is Qwen3's per-head q/k norm. HF LlamaRMSNorm order: normalize in f32, then
    multiply by the weight (here also in f32, one rounding at the end)."""
    x32 = to_f32(x)
    w32 = to_f32(w)
    if w32.ndim != 1:
        raise ValueError(f"rms_norm weight must be 1-D, got shape {w32.shape}")
    n, g = x32.shape[-1], w32.shape[0]
    if g == 0 or n % g:
        raise ValueError(f"rms_norm weight size {g} does not divide feature size {n}")
    xg = x32.reshape(*x32.shape[:-1], n // g, g)
    var = np.mean(np.square(xg), axis=-1, keepdims=True, dtype=np.float32)
    y = xg * (np.float32(1.0) / np.sqrt(var + np.float32(eps)))
    y = (y * w32).reshape(x32.shape)
    return round_to(y, result_dtype(x, w, out_dtype=out_dtype))


def layer_norm(
    x: np.ndarray,
    w: np.ndarray | None = None,
    b: np.ndarray | None = None,
    *,
    eps: float = 1e-5,
    out_dtype: DTypeLike = None,
) -> np.ndarray:
    """LayerNorm over the last dim: ``(x - mean) / sqrt(var + eps) * w + b`` (biased variance)."""
    x32 = to_f32(x)
    mean = np.mean(x32, axis=-1, keepdims=True, dtype=np.float32)
    d = x32 - mean
    var = np.mean(np.square(d), axis=-1, keepdims=True, dtype=np.float32)
    y = d / np.sqrt(var + np.float32(eps))
    if w is not None:
        y = y * to_f32(w)
    if b is not None:
        y = y + to_f32(b)
    return round_to(y, result_dtype(x, w, b, out_dtype=out_dtype))


def silu(x: np.ndarray, *, out_dtype: DTypeLike = None) -> np.ndarray:
    """``x * sigmoid(x)`` = ``x / (1 + exp(-x))`` (torch's formulation), in f32."""
    x32 = to_f32(x)
    with np.errstate(over="ignore"):
        y = x32 / (np.float32(1.0) + np.exp(-x32))
    return round_to(y, result_dtype(x, out_dtype=out_dtype))


_erfc64 = np.vectorize(math.erfc, otypes=[np.float64])


def gelu(x: np.ndarray, *, approximate: str = "none", out_dtype: DTypeLike = None) -> np.ndarray:
    """GELU. ``approximate="none"``: ``0.5 x (1 + erf(x / sqrt 2))``, evaluated as ``0.5 x
    erfc(-x / sqrt 2)`` in f64 (no cancellation for negative x; the one place this module
    computes above f32, since numpy has no f32 erf); ``"tanh"``: ``0.5 x (1 + tanh(sqrt(2/pi)
    (x + 0.044715 x^3)))`` in f32."""
    x32 = to_f32(x)
    if approximate == "none":
        x64 = x32.astype(np.float64)
        y = (0.5 * x64 * _erfc64(-x64 / math.sqrt(2.0))).astype(np.float32)
    elif approximate == "tanh":
        c = np.float32(math.sqrt(2.0 / math.pi))
        y = (
            np.float32(0.5)
            * x32
            * (np.float32(1.0) + np.tanh(c * (x32 + np.float32(0.044715) * x32 * x32 * x32)))
        )
    else:
        raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    return round_to(y, result_dtype(x, out_dtype=out_dtype))


def add(a: np.ndarray, b: np.ndarray, *, out_dtype: DTypeLike = None) -> np.ndarray:
    """Elementwise (broadcasting) ``a + b`` in f32, rounded once."""
    return round_to(to_f32(a) + to_f32(b), result_dtype(a, b, out_dtype=out_dtype))


def mul(a: np.ndarray, b: np.ndarray, *, out_dtype: DTypeLike = None) -> np.ndarray:
    """Elementwise (broadcasting) ``a * b`` in f32, rounded once."""
    return round_to(to_f32(a) * to_f32(b), result_dtype(a, b, out_dtype=out_dtype))


def _softmax32(x32: np.ndarray) -> np.ndarray:
    m = np.max(x32, axis=-1, keepdims=True)
    e = np.exp(x32 - m)
    return e / np.sum(e, axis=-1, keepdims=True, dtype=np.float32)


def softmax(x: np.ndarray, *, out_dtype: DTypeLike = None) -> np.ndarray:
    """Softmax over the last axis, in f32 (max-subtracted)."""
    return round_to(_softmax32(to_f32(x)), result_dtype(x, out_dtype=out_dtype))


def argmax(x: np.ndarray, *, out_dtype: DTypeLike = "i32") -> np.ndarray:
    """``x [B, V]`` -> int32 ``[B]``: index of the maximum of each row; ties -> the first index
    (as torch.argmax); a NaN counts as the maximum (as torch)."""
    x32 = to_f32(x)
    return np.argmax(x32, axis=-1).astype(dtype_from_name(out_dtype))


# --------------------------------------------------------------------------------------------
# linear and the collectives (all_reduce, all_gather)
# --------------------------------------------------------------------------------------------

_LINEAR_CHUNK = 1 << 24  # weight elements converted to f32 at a time (bounds peak memory)


def linear(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    accumulate_only: bool = False,
    out_dtype: DTypeLike = None,
) -> np.ndarray:
    """``x [B, IN] @ w[OUT, IN].T + b[OUT]`` with f32 accumulation; rounded once to the result
    dtype, or returned as the unrounded f32 accumulator when ``accumulate_only`` (for split
    reductions summed by :func:`all_reduce`). Large weights are converted to f32 in row chunks."""
    xa, wa = np.asarray(x), np.asarray(w)
    if wa.ndim != 2:
        raise ValueError(f"linear weight must be 2-D [out, in], got shape {wa.shape}")
    if xa.shape[-1] != wa.shape[1]:
        raise ValueError(
            f"linear: input features {xa.shape[-1]} != weight in-features {wa.shape[1]} "
            f"(x {xa.shape}, w {wa.shape})"
        )
    x32 = to_f32(xa)
    n_out = wa.shape[0]
    rows = max(1, _LINEAR_CHUNK // max(1, wa.shape[1]))
    if wa.dtype == F32 or rows >= n_out:
        y = x32 @ to_f32(wa).T
    else:
        y = np.empty((*x32.shape[:-1], n_out), dtype=np.float32)
        for r0 in range(0, n_out, rows):
            y[..., r0 : r0 + rows] = x32 @ to_f32(wa[r0 : r0 + rows]).T
    if b is not None:
        b32 = to_f32(b)
        if b32.shape != (n_out,):
            raise ValueError(f"linear bias shape {b32.shape} != ({n_out},)")
        y = y + b32
    return _finish(y, result_dtype(xa, wa, b, out_dtype=out_dtype), accumulate_only)


def _parts(
    parts: Sequence[np.ndarray] | np.ndarray, more: Sequence[np.ndarray], what: str
) -> list[np.ndarray]:
    """A collective's per-rank parts, given as one list or as one operand per rank."""
    out = [*(parts if isinstance(parts, (list, tuple)) else [parts]), *more]
    if not out:
        raise ValueError(f"{what} needs at least one part")
    return out


def all_reduce(
    parts: Sequence[np.ndarray] | np.ndarray,
    *more: np.ndarray,
    reduction: str = "sum",
    out_dtype: DTypeLike = None,
) -> np.ndarray:
    """Elementwise sum of the parts (in order) in f32, rounded once to ``out_dtype`` (default:
    promotion of the parts' dtypes, so pass ``out_dtype`` when the parts are f32 partial
    accumulators of a bf16 result). Called as ``all_reduce([p0, p1, ...])`` or, like an op with
    one operand per rank, ``all_reduce(p0, p1, ...)``. ``reduction`` must be ``"sum"`` (the
    only kind llm.all_reduce has)."""
    if reduction != "sum":
        raise ValueError(f"all_reduce: unsupported reduction {reduction!r} (only 'sum')")
    parts = _parts(parts, more, "all_reduce")
    acc = to_f32(parts[0]).copy()
    for p in parts[1:]:
        p32 = to_f32(p)
        if p32.shape != acc.shape:
            raise ValueError(f"all_reduce: part shapes differ: {acc.shape} vs {p32.shape}")
        acc += p32
    return round_to(acc, result_dtype(*parts, out_dtype=out_dtype))


def all_gather(
    parts: Sequence[np.ndarray] | np.ndarray,
    *more: np.ndarray,
    dim: int,
    out_dtype: DTypeLike = None,
) -> np.ndarray:
    """The parts (one per rank, in rank order) concatenated along ``dim``: what every rank of
    an all-gather gets (a vocab-parallel LM head's logits). Called like :func:`all_reduce`.
    Moves values only, so with the parts' own dtype it is exact."""
    parts = _parts(parts, more, "all_gather")
    return round_to(np.concatenate(parts, axis=dim), result_dtype(*parts, out_dtype=out_dtype))


# --------------------------------------------------------------------------------------------
# rope
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RopeScaling:
    """HF ``rope_scaling``: ``kind`` ``"llama3"`` (Llama 3.1 frequency-dependent scaling) or
    ``"linear"`` (positions / factor). The other fields are used by llama3 only."""

    kind: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self) -> None:
        if self.kind not in ("llama3", "linear"):
            raise ValueError(f"unsupported rope scaling kind {self.kind!r} (llama3, linear)")
        if not self.factor > 0:
            raise ValueError(f"rope scaling factor must be > 0, got {self.factor}")
        if self.kind == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise ValueError("llama3 rope scaling needs high_freq_factor > low_freq_factor")

    @staticmethod
    def from_hf(cfg: Mapping[str, Any] | None) -> RopeScaling | None:
        """Parse a HF config's ``rope_scaling`` dict (``rope_type`` or legacy ``type`` key);
        ``None`` or ``rope_type == "default"`` -> ``None``."""
        if cfg is None:
            return None
        kind = cfg.get("rope_type", cfg.get("type"))
        if kind in (None, "default"):
            return None
        if kind == "linear":
            return RopeScaling("linear", float(cfg["factor"]))
        if kind == "llama3":
            return RopeScaling(
                "llama3",
                float(cfg["factor"]),
                float(cfg.get("low_freq_factor", 1.0)),
                float(cfg.get("high_freq_factor", 4.0)),
                int(cfg.get("original_max_position_embeddings", 8192)),
            )
        raise ValueError(f"unsupported rope_scaling type {kind!r} (supported: llama3, linear)")


def _scaling(s: Any) -> RopeScaling | None:
    if s is None or isinstance(s, RopeScaling):
        return s
    if isinstance(s, Mapping):
        if "kind" in s:
            return RopeScaling(**s)
        return RopeScaling.from_hf(s)
    raise TypeError(f"rope scaling must be None, RopeScaling or a dict, got {type(s).__name__}")


def rope_inv_freq(
    head_dim: int, theta: float, scaling: RopeScaling | Mapping[str, Any] | None = None
) -> np.ndarray:
    """f32 ``[head_dim // 2]`` inverse frequencies ``1 / theta**(2i/d)`` (HF
    ``_compute_default_rope_parameters``, in f32), then scaled as HF
    ``_compute_llama3_parameters`` / ``_compute_linear_scaling_rope_parameters`` do."""
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"rope head_dim must be a positive even number, got {head_dim}")
    exps = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv = (np.float32(1.0) / np.power(np.float32(theta), exps)).astype(np.float32)
    s = _scaling(scaling)
    if s is None:
        return inv
    if s.kind == "linear":
        return (inv / np.float32(s.factor)).astype(np.float32)
    # llama3 (transformers.modeling_rope_utils._compute_llama3_parameters)
    factor = np.float32(s.factor)
    old = float(s.original_max_position_embeddings)
    low_wavelen = old / s.low_freq_factor
    high_wavelen = old / s.high_freq_factor
    wavelen = np.float32(2 * math.pi) / inv
    inv_l = np.where(wavelen > low_wavelen, inv / factor, inv).astype(np.float32)
    smooth = (
        (np.float32(old) / wavelen - np.float32(s.low_freq_factor))
        / np.float32(s.high_freq_factor - s.low_freq_factor)
    ).astype(np.float32)
    smoothed = (np.float32(1) - smooth) * inv_l / factor + smooth * inv_l
    is_medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(is_medium, smoothed, inv_l).astype(np.float32)


def rope_cos_sin(
    pos: Any, head_dim: int, theta: float, scaling: RopeScaling | Mapping[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """f32 ``cos, sin`` tables ``[B, head_dim]`` for positions ``pos [B]``: ``freqs = pos *
    inv_freq`` (f32), ``emb = concat(freqs, freqs)`` (HF layout)."""
    p = _ints(pos, "rope positions").astype(np.float32)
    freqs = p[:, None] * rope_inv_freq(head_dim, theta, scaling)[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb), np.sin(emb)


def rope(
    x: np.ndarray,
    pos: Any,
    *,
    head_dim: int,
    theta: float = 10000.0,
    scaling: RopeScaling | Mapping[str, Any] | None = None,
    out_dtype: DTypeLike = None,
) -> np.ndarray:
    """Rotary embedding of ``x [B, n*head_dim]`` at positions ``pos [B]``, HF ``rotate_half``
    convention (non-interleaved: element i of a head pairs with element i + head_dim/2):
    ``y = x * cos + rotate_half(x) * sin``, all in f32, rounded once."""
    x32 = to_f32(x)
    b, f = x32.shape
    if f % head_dim:
        raise ValueError(f"rope: features {f} not a multiple of head_dim {head_dim}")
    p = _ints(pos, "rope positions").reshape(-1)
    if p.shape[0] != b:
        raise ValueError(f"rope: {p.shape[0]} positions for {b} batch entries")
    cos, sin = rope_cos_sin(p, head_dim, theta, scaling)
    xh = x32.reshape(b, f // head_dim, head_dim)
    half = head_dim // 2
    rot = np.concatenate([-xh[..., half:], xh[..., :half]], axis=-1)
    y = xh * cos[:, None, :] + rot * sin[:, None, :]
    return round_to(y.reshape(b, f), result_dtype(x, out_dtype=out_dtype))


# --------------------------------------------------------------------------------------------
# kv cache and attention
# --------------------------------------------------------------------------------------------


def _check_cache(cache: np.ndarray, what: str) -> tuple[int, int, int, int]:
    if cache.ndim != 4:
        raise ValueError(
            f"{what} must be 4-D [batch, kv_heads, max_context, head_dim], got shape {cache.shape}"
        )
    return cache.shape  # type: ignore[return-value]


def _positions(pos: Any, b: int, s: int, what: str) -> np.ndarray:
    p = _ints(pos, f"{what} positions").reshape(-1)
    if p.shape[0] != b:
        raise ValueError(f"{what}: {p.shape[0]} positions for {b} batch entries")
    if p.size and (p.min() < 0 or p.max() >= s):
        raise IndexError(f"{what}: positions {p.tolist()} out of range for max_context {s}")
    return p


def kv_cache_write_(
    cache: np.ndarray, new: np.ndarray, pos: Any, *, row_offset: int = 0, row_stride: int = 1
) -> np.ndarray:
    """In place: for each entry b and kv head h, ``cache[b, h, pos[b], :] = new[b, h*D:(h+1)*D]``
    (rounded to the cache's dtype). Returns ``cache`` itself (the result aliases the operand).

    A cache holding every ``row_stride``-th position (a sequence split over sockets: its row
    ``t`` is position ``row_offset + t * row_stride``) takes the rows of the entries whose
    position it holds and leaves the others to the caches holding theirs."""
    b, kvh, s, d = _check_cache(cache, "kv cache")
    new_a = np.asarray(new)
    if new_a.shape != (b, kvh * d):
        raise ValueError(
            f"kv_cache_write: new rows have shape {new_a.shape}, expected "
            f"{(b, kvh * d)} for cache {cache.shape}"
        )
    p = _positions(pos, b, s * row_stride, "kv_cache_write")
    here = (p - row_offset) % row_stride == 0
    rows = (p[here] - row_offset) // row_stride
    cache[np.flatnonzero(here), :, rows, :] = round_to(new_a[here], cache.dtype).reshape(-1, kvh, d)
    return cache


def kv_cache_write(
    cache: np.ndarray,
    new: np.ndarray,
    pos: Any,
    *,
    inplace: bool = False,
    row_offset: int = 0,
    row_stride: int = 1,
) -> np.ndarray:
    """Value-semantic cache write: returns a copy of ``cache`` with the new rows (or, with
    ``inplace=True``, updates and returns ``cache`` itself, as :func:`kv_cache_write_`)."""
    return kv_cache_write_(
        cache if inplace else np.array(cache, copy=True),
        new,
        pos,
        row_offset=row_offset,
        row_stride=row_stride,
    )


def _attended_rows(position: int, sliding_window: int | None) -> tuple[int, int]:
    """The cache rows ``lo .. hi - 1`` an entry at ``position`` attends."""
    hi = position + 1
    return (0 if sliding_window is None else max(0, hi - sliding_window)), hi


def _scores(
    q_row: np.ndarray, k: np.ndarray, num_kv_heads: int, head_dim: int, scale: float | None
) -> np.ndarray:
    """f32 ``q.k * scale`` of one entry's query heads (``q_row [NH*D]``, grouped by kv head)
    over its attended rows ``k [KVH, L, D]``: ``[KVH, G, L]``."""
    sc = np.float32(1.0 / math.sqrt(head_dim) if scale is None else scale)
    qi = q_row.reshape(num_kv_heads, -1, head_dim)
    return np.matmul(qi, k.transpose(0, 2, 1)) * sc


def attention(
    q: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    pos: Any,
    *,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    scale: float | None = None,
    sliding_window: int | None = None,
    out_dtype: DTypeLike = None,
) -> np.ndarray:
    """Decode attention of ``q [B, NH*D]`` over ``k_cache, v_cache [B, KVH, S, D]``.

    Grouped-query: q head h reads kv head ``h // (NH // KVH)``. Entry b attends cache rows
    ``max(0, pos[b] - sliding_window + 1) .. pos[b]`` inclusive (no window: ``0 .. pos[b]``), so
    the current token's row must already be written. Scores ``q.k * scale`` (default
    ``1/sqrt(head_dim)``), softmax and the weighted sum of v are all f32; one rounding at the end.
    Only the attended rows are read from the caches."""
    q32 = to_f32(q)
    b = q32.shape[0]
    if num_heads % num_kv_heads:
        raise ValueError(
            f"attention: num_heads {num_heads} not a multiple of num_kv_heads {num_kv_heads}"
        )
    if q32.shape != (b, num_heads * head_dim):
        raise ValueError(f"attention: q shape {q32.shape} != {(b, num_heads * head_dim)}")
    for c, what in ((k_cache, "k_cache"), (v_cache, "v_cache")):
        shp = _check_cache(np.asarray(c), what)
        if shp[0] != b or shp[1] != num_kv_heads or shp[3] != head_dim:
            raise ValueError(
                f"attention: {what} shape {shp} does not match batch {b}, "
                f"kv heads {num_kv_heads}, head_dim {head_dim}"
            )
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"attention: k_cache {k_cache.shape} != v_cache {v_cache.shape}")
    if sliding_window is not None and sliding_window < 1:
        raise ValueError(f"attention: sliding_window must be >= 1, got {sliding_window}")
    s = k_cache.shape[2]
    p = _positions(pos, b, s, "attention")
    g = num_heads // num_kv_heads
    out = np.empty((b, num_kv_heads, g, head_dim), dtype=np.float32)
    for i in range(b):
        lo, hi = _attended_rows(int(p[i]), sliding_window)
        k = to_f32(k_cache[i, :, lo:hi, :])  # [KVH, L, D]
        v = to_f32(v_cache[i, :, lo:hi, :])
        scores = _scores(q32[i], k, num_kv_heads, head_dim, scale)
        out[i] = np.matmul(_softmax32(scores), v)  # [KVH, G, D]
    return round_to(out.reshape(b, num_heads * head_dim), result_dtype(q, out_dtype=out_dtype))


def attention_partial(
    q: np.ndarray,
    k_block: np.ndarray,
    v_block: np.ndarray,
    pos: Any,
    *,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_start: int,
    row_stride: int = 1,
    scale: float | None = None,
    sliding_window: int | None = None,
    out_dtype: DTypeLike = None,
) -> np.ndarray:
    """One context block of a split (flash-decoding) :func:`attention`: the cache rows
    ``block_start .. block_start + L - 1`` given as ``k_block, v_block [B, KVH, L, D]``; with
    ``row_stride`` k (a cache split over sockets along the sequence, every k-th position on
    one socket), row ``r`` of the block is position ``block_start + r * k``.

    Returns float32 ``[B, NH, D + 2]``, per query head: the unnormalized weighted sum of the
    block's attended v rows (``sum_r exp(s_r - m) v_r``, ``D`` values), the block's largest
    score ``m`` and ``sum_r exp(s_r - m)``; a block with no attended row (all after ``pos`` or
    before the window) gives ``m = -inf`` and zeros. :func:`attention_combine` merges the
    blocks. Never rounded (``out_dtype`` is accepted for the dispatch convention only): the
    partials are f32 accumulators, like ``linear(accumulate_only=True)``."""
    del out_dtype
    q32 = to_f32(q)
    b = q32.shape[0]
    kb = np.asarray(k_block)
    _, kvh, rows, d = _check_cache(kb, "k block")
    if num_heads % num_kv_heads or kvh != num_kv_heads or d != head_dim:
        raise ValueError(
            f"attention_partial: block {kb.shape} does not match {num_kv_heads} kv heads of "
            f"dim {head_dim} for {num_heads} query heads"
        )
    p = _ints(pos, "attention_partial positions").reshape(-1)
    g = num_heads // num_kv_heads
    out = np.zeros((b, num_kv_heads, g, head_dim + 2), dtype=np.float32)
    out[..., head_dim] = -np.inf
    for i in range(b):
        lo, hi = _attended_rows(int(p[i]), sliding_window)
        first = max(0, -(-(lo - block_start) // row_stride))
        last = min(rows, max(0, -(-(hi - block_start) // row_stride)))
        if first >= last:
            continue
        k = to_f32(kb[i, :, first:last, :])  # [KVH, L, D]
        v = to_f32(np.asarray(v_block)[i, :, first:last, :])
        scores = _scores(q32[i], k, num_kv_heads, head_dim, scale)
        m = np.max(scores, axis=-1, keepdims=True)
        e = np.exp(scores - m)
        out[i, :, :, :head_dim] = np.matmul(e, v)
        out[i, :, :, head_dim] = m[..., 0]
        out[i, :, :, head_dim + 1] = np.sum(e, axis=-1, dtype=np.float32)
    return out.reshape(b, num_heads, head_dim + 2)


def attention_merge(partials: np.ndarray, *, out_dtype: DTypeLike = None) -> np.ndarray:
    """Merge the blocks of :func:`attention_partial` into one partial, still unnormalized:
    ``partials [B, blocks, NH, D + 2]`` (f32) -> ``[B, 1, NH, D + 2]`` f32 with the largest
    block maximum ``M``, ``sum_j e^(m_j - M) o_j`` and ``sum_j e^(m_j - M) l_j`` (blocks with no
    attended row drop out; none at all gives ``M = -inf`` and zeros). What a socket holding
    part of a sequence sends to the others of its group, whatever its number of blocks; never
    rounded (``out_dtype`` only for the dispatch convention)."""
    del out_dtype
    p32 = to_f32(partials)
    if p32.ndim != 4:
        raise ValueError(f"attention_merge: partials must be [B, blocks, NH, D+2], got {p32.shape}")
    d = p32.shape[3] - 2
    m = p32[..., d]
    top = np.max(m, axis=1, keepdims=True)  # [B, 1, NH]
    with np.errstate(invalid="ignore"):
        w = np.where(np.isneginf(m), np.float32(0), np.exp(m - top))  # [B, blocks, NH]
    out = np.empty((p32.shape[0], 1, *p32.shape[2:]), np.float32)
    out[..., :d] = np.sum(w[..., None] * p32[..., :d], axis=1, keepdims=True, dtype=np.float32)
    out[..., d] = top
    out[..., d + 1] = np.sum(w * p32[..., d + 1], axis=1, keepdims=True, dtype=np.float32)
    return out


def attention_combine(
    partials: np.ndarray,
    *,
    head_start: int = 0,
    heads: int | None = None,
    out_dtype: DTypeLike = None,
) -> np.ndarray:
    """Merge the blocks of :func:`attention_partial`: ``partials [B, blocks, NH, D + 2]`` (f32)
    -> ``[B, NH * D]``, ``sum_j e^(m_j - M) o_j / sum_j e^(m_j - M) l_j`` with ``M`` the largest
    block maximum, in f32, rounded once (default: bf16, attention's storage dtype). Only the
    ``heads`` query heads from ``head_start`` on, when given (a socket's own heads of partials
    that cover its group's: a cache dealt along the sequence over sockets)."""
    p32 = to_f32(partials)
    if p32.ndim != 4:
        raise ValueError(
            f"attention_combine: partials must be [B, blocks, NH, D+2], got {p32.shape}"
        )
    stop = p32.shape[2] if heads is None else head_start + heads
    if not 0 <= head_start < stop <= p32.shape[2]:
        raise ValueError(
            f"attention_combine: heads {head_start}..{stop - 1} out of the partials' "
            f"{p32.shape[2]} heads"
        )
    p32 = p32[:, :, head_start:stop]
    b, _, count, width = p32.shape
    d = width - 2
    m = p32[..., d]
    top = np.max(m, axis=1, keepdims=True)  # [B, 1, NH]: finite, the current row is attended
    with np.errstate(invalid="ignore"):
        w = np.where(np.isneginf(m), np.float32(0), np.exp(m - top))  # [B, blocks, NH]
    num = np.sum(w[..., None] * p32[..., :d], axis=1, dtype=np.float32)
    den = np.sum(w * p32[..., d + 1], axis=1, dtype=np.float32)
    out = num / np.expand_dims(den, -1)
    return round_to(out.reshape(b, count * d), BF16 if out_dtype is None else out_dtype)


# --------------------------------------------------------------------------------------------
# mixture of experts
# --------------------------------------------------------------------------------------------


def moe_route(
    x: np.ndarray, router: np.ndarray, *, top_k: int, normalize_top_k: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Router of a sparse MoE block (HF MixtralSparseMoeBlock order).

    ``logits = linear(x, router)`` (rounded to x's storage dtype, as the HF gate Linear does),
    ``p = softmax(logits)`` in f32, the ``top_k`` largest (ties -> lower expert index, as
    torch.topk), optionally renormalized to sum 1 in f32. Returns ``(experts [B, k] int64, in
    descending-weight order; weights [B, k] f32)`` - the weights are NOT yet rounded."""
    xa = np.asarray(x)
    e = np.asarray(router).shape[0]
    if not 1 <= top_k <= e:
        raise ValueError(f"moe: top_k {top_k} not in 1..{e} experts")
    logits = to_f32(linear(xa, router, out_dtype=result_dtype(xa)))
    probs = _softmax32(logits)
    # stable sort of -p: equal probabilities keep ascending expert index
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
    w = np.take_along_axis(probs, order, axis=-1)
    if normalize_top_k:
        w = w / np.sum(w, axis=-1, keepdims=True, dtype=np.float32)
    return order.astype(np.int64), w.astype(np.float32)


def moe_selected_experts(x: np.ndarray, router: np.ndarray, *, top_k: int) -> np.ndarray:
    """``[B, top_k]`` int64 expert indices each batch entry routes to (for active-byte reports)."""
    return moe_route(x, router, top_k=top_k, normalize_top_k=False)[0]


def moe_expert(
    x: np.ndarray,
    gate: np.ndarray,
    up: np.ndarray,
    down: np.ndarray,
    *,
    accumulate_only: bool = False,
    out_dtype: DTypeLike = None,
) -> np.ndarray:
    """One SiLU-gated expert, rounded exactly like the dense llm MLP built from separate ops:
    ``linear(mul(silu(linear(x, gate)), linear(x, up)), down)`` (each op rounds once; with
    ``accumulate_only`` the down projection's f32 accumulator, for a split intermediate dim)."""
    dt = result_dtype(x, out_dtype=out_dtype)
    g = linear(x, gate, out_dtype=dt)
    u = linear(x, up, out_dtype=dt)
    return linear(mul(silu(g), u), down, accumulate_only=accumulate_only, out_dtype=dt)


def _check_moe(
    x: np.ndarray,
    router: Any,
    gate: Any,
    up: Any,
    down: Any,
    num_experts: Any,
    expert_start: int,
) -> None:
    """The weights hold experts ``expert_start ..`` of the router's (all of them unless the
    experts are dealt over sockets)."""
    local, inter, hidden = np.asarray(gate).shape
    if np.asarray(up).shape != (local, inter, hidden) or np.asarray(down).shape != (
        local,
        hidden,
        inter,
    ):
        raise ValueError(
            f"moe: expert weight shapes gate {np.shape(gate)}, up {np.shape(up)}, "
            f"down {np.shape(down)} do not agree ([E,I,H],[E,I,H],[E,H,I])"
        )
    e = np.asarray(router).shape[0]
    if num_experts is not None and num_experts != e:
        raise ValueError(f"moe: num_experts {num_experts} but the router has {e}")
    if not 0 <= expert_start <= e - local:
        raise ValueError(
            f"moe: experts {expert_start}..{expert_start + local - 1} held, but the router has {e}"
        )
    if np.asarray(router).shape != (e, hidden) or x.shape[-1] != hidden:
        raise ValueError(
            f"moe: router {np.shape(router)} / x {x.shape} do not match "
            f"{e} experts, hidden {hidden}"
        )


def moe_partial(
    x: np.ndarray,
    router: np.ndarray,
    gate: np.ndarray,
    up: np.ndarray,
    down: np.ndarray,
    *,
    top_k: int,
    normalize_top_k: bool,
    num_experts: int | None = None,
    expert_start: int = 0,
    out_dtype: DTypeLike = None,
) -> np.ndarray:
    """The routed experts of :func:`moe` over one block of their intermediate dim: ``gate, up
    [E, I', H]`` and ``down [E, H, I']`` hold rows / columns of that block. Returns float32
    ``[B, top_k, H]``: per batch entry and routing slot, its expert's down projection over the
    block, unrounded (gate, up, silu and mul round as in :func:`moe_expert`, each element being
    whole). :func:`moe_combine` sums the blocks, rounds each expert's output once and weights
    them; one block of the whole dim is :func:`moe` itself. Experts dealt over sockets: the
    weights hold ``E'`` experts from ``expert_start`` on (routing is over all the router's);
    slots routed to other experts stay 0."""
    del out_dtype  # the partials are f32; the experts round to x's storage dtype
    xa = np.asarray(x)
    return _moe_blocks(
        xa, router, gate, up, down, top_k, normalize_top_k, num_experts, expert_start, None
    )


def _moe_blocks(
    x: np.ndarray,
    router: Any,
    gate: Any,
    up: Any,
    down: Any,
    top_k: int,
    normalize_top_k: bool,
    num_experts: int | None,
    expert_start: int,
    out_dtype: DTypeLike,
) -> np.ndarray:
    """:func:`moe_partial`, its experts rounding to ``result_dtype(x, out_dtype)``."""
    _check_moe(x, router, gate, up, down, num_experts, expert_start)
    dt = result_dtype(x, out_dtype=out_dtype)
    experts, _ = moe_route(x, router, top_k=top_k, normalize_top_k=normalize_top_k)
    ys = np.zeros((x.shape[0], top_k, x.shape[-1]), dtype=np.float32)
    held = range(expert_start, expert_start + np.shape(gate)[0])
    for ex in np.unique(experts):  # each expert once, on the entries that selected it
        if ex not in held:
            continue
        rows, slot = np.nonzero(experts == ex)
        local = ex - expert_start
        ys[rows, slot] = moe_expert(
            x[rows], gate[local], up[local], down[local], accumulate_only=True, out_dtype=dt
        )
    return ys


def moe_combine(
    x: np.ndarray,
    router: np.ndarray,
    partials: np.ndarray,
    *,
    top_k: int,
    normalize_top_k: bool,
    num_experts: int | None = None,
    accumulate_only: bool = False,
    out_dtype: DTypeLike = None,
) -> np.ndarray:
    """Finish :func:`moe` from the blocks of :func:`moe_partial` (``partials [B, blocks,
    top_k, H]``, f32): each routed expert's output is the blocks' sum rounded once, weighted by
    its routing weight (rounded to the storage dtype) and accumulated in f32 in
    descending-weight order, rounded once (with ``accumulate_only``: the f32 accumulator, for a
    sum over sockets each holding some of the experts). The router runs again (it is cheap
    and its weights are on chip), so the partials carry no routing state."""
    xa = np.asarray(x)
    dt = result_dtype(xa, out_dtype=out_dtype)
    if num_experts is not None and num_experts != np.asarray(router).shape[0]:
        raise ValueError(f"moe: num_experts {num_experts} but the router has {np.shape(router)[0]}")
    _, w = moe_route(xa, router, top_k=top_k, normalize_top_k=normalize_top_k)
    w = to_f32(round_to(w, dt))
    p32 = to_f32(partials)
    ys = p32[:, 0] if p32.shape[1] == 1 else np.sum(p32, axis=1, dtype=np.float32)
    ys = to_f32(round_to(ys, dt))
    acc = w[:, 0, None] * ys[:, 0]
    for k in range(1, top_k):
        acc = acc + w[:, k, None] * ys[:, k]
    return acc if accumulate_only else round_to(acc, dt)


def moe(
    x: np.ndarray,
    router: np.ndarray,
    gate: np.ndarray,
    up: np.ndarray,
    down: np.ndarray,
    *,
    top_k: int,
    normalize_top_k: bool,
    num_experts: int | None = None,
    expert_start: int = 0,
    accumulate_only: bool = False,
    out_dtype: DTypeLike = None,
) -> np.ndarray:
    """Sparse MoE block: ``x [B, H]``, ``router [E, H]``, ``gate, up [E, I, H]``, ``down [E, H,
    I]`` -> ``[B, H]``. ``normalize_top_k`` has no default (the IR's unit attribute means False
    when absent; Mixtral sets it); ``num_experts``, if given, is checked against E.

    Rounding order (close to HF MixtralSparseMoeBlock): router logits rounded to the storage
    dtype; softmax / top-k / renormalization in f32 (:func:`moe_route`); the k routing weights
    rounded to the storage dtype (HF ``routing_weights.to(hidden_states.dtype)``); each selected
    expert computed by :func:`moe_expert` (rounded like the dense MLP); then ``sum_k w_k *
    expert_k`` accumulated in f32 in descending-weight order and rounded once (HF multiplies and
    index-adds in bf16, in expert-index order - a difference of at most about one bf16 ulp).
    It is :func:`moe_partial` over the whole intermediate dim, then :func:`moe_combine`.
    Experts dealt over sockets: the weights hold experts ``expert_start ..`` (the others
    contribute 0) and ``accumulate_only`` returns the f32 sum, to be summed over the sockets."""
    xa = np.asarray(x)
    blocks = _moe_blocks(
        xa, router, gate, up, down, top_k, normalize_top_k, num_experts, expert_start, out_dtype
    )
    return moe_combine(
        xa,
        router,
        blocks[:, None],
        top_k=top_k,
        normalize_top_k=normalize_top_k,
        num_experts=num_experts,
        accumulate_only=accumulate_only,
        out_dtype=out_dtype,
    )


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------

#: llm op short name -> implementation. Positional args = operands (IR order), keywords =
#: attributes. ``kv_cache_write`` is the copying form; the simulator uses ``kv_cache_write_``.
OPS: dict[str, Callable[..., np.ndarray]] = {
    "embedding": embedding,
    "rms_norm": rms_norm,
    "layer_norm": layer_norm,
    "linear": linear,
    "rope": rope,
    "kv_cache_write": kv_cache_write,
    "attention": attention,
    "attention_partial": attention_partial,
    "attention_combine": attention_combine,
    "attention_merge": attention_merge,
    "silu": silu,
    "gelu": gelu,
    "add": add,
    "mul": mul,
    "softmax": softmax,
    "argmax": argmax,
    "moe": moe,
    "moe_partial": moe_partial,
    "moe_combine": moe_combine,
    "all_reduce": all_reduce,
    "all_gather": all_gather,
}

"""Weights by name: seeded random init and safetensors checkpoints (Hugging Face layout).

Simulator-side contract code (numpy, ml_dtypes, safetensors, the stdlib and
:mod:`simulator.numerics` only; never xDSL). Both the llm-level reference and the simulator bind
weights through a :class:`WeightSource`, by checkpoint tensor name, so the two engines see
bit-identical parameters.

Random init (:func:`init_weight`)
---------------------------------
Deterministic in ``(name, shape, seed)`` only - never in the order of calls: the per-tensor stream
is ``numpy.random.Generator(PCG64(k))`` with ``k`` from a BLAKE2b hash of ``(seed, name, shape)``.
Values are drawn in f32 and rounded once (round-to-nearest-even) to the requested dtype.
Distributions (chosen so that activations of a tiny random model stay O(1) and every tensor
visibly affects the output, which HF's ``std=0.02`` does not give for small hidden sizes):

* norm weights (name ends in ``norm.weight``, ``ln_*.weight`` or ``ln_f.weight``): ``1 + N(0,
  0.1)`` - close to HF's ones, but a wrong per-feature index is visible;
* biases (name ends in ``.bias``) and other 1-D tensors: ``N(0, 0.1)``;
* embeddings (``embed_tokens``, ``wte``, ``wpe``, ``embeddings``): ``N(0, 1)`` so the residual
  stream starts at O(1) (with tied embeddings the logits then have std ~sqrt(hidden): wide
  top-2 margins, which keeps greedy comparisons robust);
* every other tensor of rank >= 2 (linear weights ``[out, in]``, routers, stacked experts
  ``[E, out, in]``): ``N(0, 1/sqrt(fan_in))`` with ``fan_in = shape[-1]``, so each linear maps
  O(1) inputs to O(1) outputs.

Checkpoints (:func:`load_safetensors`)
--------------------------------------
A ``.safetensors`` file, or a model folder holding ``model.safetensors`` or a sharded checkpoint
with ``model.safetensors.index.json`` (its ``weight_map`` names the shard of every tensor). The
result is a lazy read-only mapping: headers are parsed and validated up front (clear
:class:`WeightError` for a missing file, a truncated or non-JSON header, out-of-range offsets, a
shard named by the index but absent), tensors are read on access only (``safe_open`` with the
numpy framework, so a slice reads only its bytes). BF16 tensors come back as
``ml_dtypes.bfloat16``; safetensors versions whose numpy API cannot produce bf16 are handled by
reading the raw little-endian bytes at the header's offsets.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from rdu_compiler.simulator.numerics import dtype_from_name, round_to

__all__ = [
    "CheckpointWeights",
    "RandomWeights",
    "SafetensorsCheckpoint",
    "WeightError",
    "WeightSource",
    "init_std",
    "init_weight",
    "load_safetensors",
    "open_weights",
    "save_safetensors",
]


class WeightError(Exception):
    """A weight could not be provided: missing/corrupt file, missing tensor, wrong shape."""


# --------------------------------------------------------------------------------------------
# seeded random init
# --------------------------------------------------------------------------------------------

NORM_NOISE_STD = 0.1
BIAS_STD = 0.1
EMBEDDING_STD = 1.0

_NORM_RE = re.compile(r"(norm\.weight|(^|\.)ln_[A-Za-z0-9]*\.weight)$")
_EMBED_RE = re.compile(r"(^|\.)(embed_tokens|wte|wpe|embeddings?|word_embeddings)(\.|$)")


def _tensor_seed(name: str, shape: tuple[int, ...], seed: int) -> int:
    key = f"rdu-init-v1\0{int(seed)}\0{name}\0{','.join(map(str, shape))}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "little")


def init_std(name: str, shape: Sequence[int]) -> tuple[float, float]:
    """``(mean, std)`` of the normal distribution :func:`init_weight` draws ``name`` from."""
    shape = tuple(int(s) for s in shape)
    if _NORM_RE.search(name):
        return 1.0, NORM_NOISE_STD
    if name.endswith(".bias") or name == "bias" or len(shape) <= 1:
        return 0.0, BIAS_STD
    if _EMBED_RE.search(name):
        return 0.0, EMBEDDING_STD
    return 0.0, 1.0 / float(np.sqrt(max(1, shape[-1])))


def init_weight(name: str, shape: Sequence[int], dtype: Any = "bf16", seed: int = 0) -> np.ndarray:
    """Seeded random tensor for checkpoint name ``name``: depends only on (name, shape, seed);
    drawn in f32 and rounded once to ``dtype`` (see the module docstring for distributions)."""
    shape = tuple(int(s) for s in shape)
    dt = dtype_from_name(dtype)
    if not (dt == np.dtype(ml_dtypes.bfloat16) or np.issubdtype(dt, np.floating)):
        raise WeightError(f"no random init for tensor {name!r} of non-floating dtype {dt}")
    mean, std = init_std(name, shape)
    rng = np.random.Generator(np.random.PCG64(_tensor_seed(name, shape, seed)))
    x = rng.standard_normal(shape, dtype=np.float32)
    x *= np.float32(std)
    if mean:
        x += np.float32(mean)
    return round_to(x, dt)


# --------------------------------------------------------------------------------------------
# safetensors reading
# --------------------------------------------------------------------------------------------

_ST_DTYPES: dict[str, np.dtype] = {
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U8": np.dtype("u1"),
    "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "U64": np.dtype("<u8"),
    "BOOL": np.dtype("bool"),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
_MAX_HEADER = 100_000_000  # safetensors' own limit


class _FileHeader:
    """Parsed and validated header of one .safetensors file."""

    def __init__(self, path: Path):
        self.path = path
        if not path.is_file():
            raise WeightError(f"weights file not found: {path}")
        size = path.stat().st_size
        try:
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise WeightError(
                        f"corrupt safetensors file {path}: {size} bytes, too short "
                        "for the 8-byte header length"
                    )
                (n,) = struct.unpack("<Q", head)
                if n > _MAX_HEADER or 8 + n > size:
                    raise WeightError(
                        f"corrupt safetensors file {path}: header length {n} "
                        f"exceeds the file size {size} (truncated file?)"
                    )
                raw = f.read(n)
        except OSError as e:
            raise WeightError(f"cannot read weights file {path}: {e}") from e
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise WeightError(
                f"corrupt safetensors file {path}: header is not valid JSON ({e})"
            ) from e
        if not isinstance(header, dict):
            raise WeightError(f"corrupt safetensors file {path}: header is not a JSON object")
        self.data_start = 8 + n
        self.metadata = header.pop("__metadata__", None) or {}
        self.tensors: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
        data_len = size - self.data_start
        for name, info in header.items():
            try:
                st_dt = info["dtype"]
                shape = tuple(int(s) for s in info["shape"])
                start, end = (int(o) for o in info["data_offsets"])
            except (TypeError, KeyError, ValueError) as e:
                raise WeightError(
                    f"corrupt safetensors file {path}: bad header entry for "
                    f"tensor {name!r}: {info!r}"
                ) from e
            if st_dt not in _ST_DTYPES:
                raise WeightError(f"tensor {name!r} in {path} has unsupported dtype {st_dt}")
            dt = _ST_DTYPES[st_dt]
            nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            if not (0 <= start <= end <= data_len) or end - start != nbytes:
                raise WeightError(
                    f"corrupt safetensors file {path}: tensor {name!r} ({st_dt} {list(shape)}) "
                    f"has data offsets [{start}, {end}] but the data section holds {data_len} "
                    f"bytes and the tensor needs {nbytes} (truncated file?)"
                )
            self.tensors[name] = (dt, shape, start, end)


def _read_raw(h: _FileHeader, name: str, index: Any = None) -> np.ndarray:
    """Read a tensor (or ``index`` of it) straight from the bytes at the header's offsets."""
    dt, shape, start, _ = h.tensors[name]
    if int(np.prod(shape, dtype=np.int64)) == 0:
        arr = np.zeros(shape, dtype=dt)
        return arr if index is None else np.array(arr[index])
    mm = np.memmap(h.path, dtype=dt, mode="r", offset=h.data_start + start, shape=shape)
    try:
        return np.array(mm if index is None else mm[index], copy=True)
    finally:
        del mm


_USE_SAFE_OPEN = True  # tests flip this to exercise the raw reader


def _read(h: _FileHeader, name: str, index: Any = None) -> np.ndarray:
    dt = h.tensors[name][0]
    use_st = _USE_SAFE_OPEN
    if use_st:
        try:
            from safetensors import safe_open

            with safe_open(str(h.path), framework="numpy") as f:
                if index is None:
                    arr = f.get_tensor(name)
                else:
                    arr = f.get_slice(name)[index]
            arr = np.asarray(arr)
            if arr.dtype == dt:
                return arr
            # an older safetensors without bf16/f8 support in its numpy API: read the raw bytes
        except Exception:
            pass  # fall through to the raw reader, which raises clear errors itself
    try:
        return _read_raw(h, name, index)
    except OSError as e:
        raise WeightError(f"cannot read tensor {name!r} from {h.path}: {e}") from e


class SafetensorsCheckpoint(Mapping):
    """Lazy read-only mapping ``name -> np.ndarray`` over one or several safetensors files."""

    def __init__(
        self,
        files: Sequence[Path],
        weight_map: Mapping[str, str] | None = None,
        root: Path | None = None,
    ):
        self.root = root
        self._headers: dict[Path, _FileHeader] = {}
        self._where: dict[str, _FileHeader] = {}
        for p in files:
            h = _FileHeader(Path(p))
            self._headers[h.path] = h
            for name in h.tensors:
                if weight_map is not None and weight_map.get(name) != h.path.name:
                    continue  # the index says this tensor lives elsewhere
                if name in self._where:
                    raise WeightError(
                        f"tensor {name!r} appears in both {self._where[name].path} and {h.path}"
                    )
                self._where[name] = h
        if weight_map is not None:
            for name, fname in weight_map.items():
                if name not in self._where:
                    raise WeightError(
                        f"tensor {name!r} is listed in the index for shard "
                        f"{fname} but that file does not contain it"
                    )

    def _describe(self) -> str:
        if self.root is not None:
            return str(self.root)
        return ", ".join(str(p) for p in self._headers)

    def _header(self, name: str) -> _FileHeader:
        try:
            return self._where[name]
        except KeyError:
            raise WeightError(
                f"tensor {name!r} not found in checkpoint {self._describe()} "
                f"({len(self._where)} tensors)"
            ) from None

    def __getitem__(self, name: str) -> np.ndarray:
        return _read(self._header(name), name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def shape(self, name: str) -> tuple[int, ...]:
        return self._header(name).tensors[name][1]

    def dtype(self, name: str) -> np.dtype:
        return self._header(name).tensors[name][0]

    def file_of(self, name: str) -> Path:
        return self._header(name).path

    def read(self, name: str, index: Any = None) -> np.ndarray:
        """The tensor, or ``tensor[index]`` reading only that part of the file."""
        return _read(self._header(name), name, index)

    @property
    def metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for h in self._headers.values():
            out.update(h.metadata)
        return out


def load_safetensors(path: str | os.PathLike) -> SafetensorsCheckpoint:
    """Open a ``.safetensors`` file or a HF model folder (``model.safetensors``, or a sharded
    checkpoint with ``model.safetensors.index.json``) as a lazy :class:`SafetensorsCheckpoint`."""
    p = Path(path)
    if not p.exists():
        raise WeightError(f"weights path not found: {p}")
    if p.is_file():
        if p.name.endswith(".index.json"):
            return _load_index(p)
        return SafetensorsCheckpoint([p], root=p)
    index = p / "model.safetensors.index.json"
    if index.is_file():
        return _load_index(index)
    single = p / "model.safetensors"
    if single.is_file():
        return SafetensorsCheckpoint([single], root=p)
    indexes = sorted(p.glob("*.safetensors.index.json"))
    if len(indexes) == 1:
        return _load_index(indexes[0])
    files = sorted(p.glob("*.safetensors"))
    if files:
        return SafetensorsCheckpoint(files, root=p)
    raise WeightError(
        f"no safetensors checkpoint in folder {p} (expected model.safetensors or "
        "model.safetensors.index.json)"
    )


def _load_index(index: Path) -> SafetensorsCheckpoint:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise WeightError(f"corrupt checkpoint index {index}: {e}") from e
    files = []
    for fname in sorted(set(weight_map.values())):
        f = index.parent / fname
        if not f.is_file():
            some = next(n for n, v in weight_map.items() if v == fname)
            raise WeightError(
                f"shard file {f} (listed in {index.name} for tensor {some!r} and others) not found"
            )
        files.append(f)
    return SafetensorsCheckpoint(files, weight_map=weight_map, root=index.parent)


# --------------------------------------------------------------------------------------------
# safetensors writing
# --------------------------------------------------------------------------------------------


def _write_file(
    path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None
) -> None:
    """Write one safetensors file (format spec: 8-byte LE header length, JSON header padded with
    spaces to a multiple of 8, then the little-endian C-order tensor bytes)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    off = 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        if a.dtype not in _ST_NAMES:
            le = a.dtype.newbyteorder("<")
            if le in _ST_NAMES:
                a = a.astype(le)
            else:
                raise WeightError(f"cannot save tensor {name!r}: unsupported dtype {a.dtype}")
        b = np.ascontiguousarray(a).tobytes()
        header[name] = {
            "dtype": _ST_NAMES[a.dtype],
            "shape": list(a.shape),
            "data_offsets": [off, off + len(b)],
        }
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def save_safetensors(
    path: str | os.PathLike,
    mapping: Mapping[str, np.ndarray],
    *,
    metadata: Mapping[str, str] | None = None,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write ``mapping`` as a checkpoint in HF layout (bf16 included).

    ``path`` ending in ``.safetensors``: one file. Otherwise ``path`` is a model folder (created):
    ``model.safetensors``, or, with ``max_shard_bytes``, shards ``model-00001-of-0000N.safetensors``
    plus ``model.safetensors.index.json`` (HF's naming). Tensors are assigned to shards in name
    order. Returns the file or folder written."""
    p = Path(path)
    md = {"format": "np", **(metadata or {})}
    if p.suffix == ".safetensors":
        p.parent.mkdir(parents=True, exist_ok=True)
        _write_file(p, mapping, md)
        return p
    p.mkdir(parents=True, exist_ok=True)
    if max_shard_bytes is None:
        _write_file(p / "model.safetensors", mapping, md)
        return p
    shards: list[list[str]] = [[]]
    size = 0
    for name in sorted(mapping):
        nb = np.asarray(mapping[name]).nbytes
        if shards[-1] and size + nb > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nb
    n = len(shards)
    weight_map: dict[str, str] = {}
    total = 0
    for i, names in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{n:05d}.safetensors"
        _write_file(p / fname, {k: mapping[k] for k in names}, md)
        for k in names:
            weight_map[k] = fname
            total += np.asarray(mapping[k]).nbytes
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (p / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return p


# --------------------------------------------------------------------------------------------
# weight sources
# --------------------------------------------------------------------------------------------


def _check_shape(name: str, got: tuple[int, ...], want: Sequence[int] | None, where: str) -> None:
    if want is not None and tuple(got) != tuple(int(s) for s in want):
        raise WeightError(
            f"tensor {name!r} in {where} has shape {list(got)}, expected {[int(s) for s in want]}"
        )


class WeightSource(ABC):
    """Where an engine gets parameters from, by checkpoint name.

    ``get(name, shape, dtype, index=None)`` returns the tensor converted to storage ``dtype``
    (round-to-nearest-even, e.g. an f32 checkpoint into bf16) after checking its full shape
    against ``shape`` (``None`` skips the check); ``index`` (a tuple of slices) returns only that
    part (a shard or a tile), read lazily where the backing store allows."""

    @abstractmethod
    def get(
        self, name: str, shape: Sequence[int] | None = None, dtype: Any = "bf16", index: Any = None
    ) -> np.ndarray: ...

    @abstractmethod
    def describe(self) -> str: ...

    def has(self, name: str) -> bool:
        return True


class RandomWeights(WeightSource):
    """Seeded random init (:func:`init_weight`); needs the shape of every tensor asked for."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def get(self, name, shape=None, dtype="bf16", index=None):
        if shape is None:
            raise WeightError(f"random init of tensor {name!r} needs its shape")
        a = init_weight(name, shape, dtype, self.seed)
        return a if index is None else np.array(a[index])

    def describe(self) -> str:
        return f"random init (seed {self.seed})"


class CheckpointWeights(WeightSource):
    """A safetensors checkpoint (file or HF folder), read lazily."""

    def __init__(self, path: str | os.PathLike | SafetensorsCheckpoint):
        self.ckpt = path if isinstance(path, SafetensorsCheckpoint) else load_safetensors(path)

    def get(self, name, shape=None, dtype="bf16", index=None):
        _check_shape(name, self.ckpt.shape(name), shape, str(self.ckpt.file_of(name)))
        a = self.ckpt.read(name, index)
        return round_to(a, dtype_from_name(dtype))

    def has(self, name: str) -> bool:
        return name in self.ckpt

    def describe(self) -> str:
        return f"checkpoint {self.ckpt._describe()}"


def open_weights(weights: str | os.PathLike | None = None, seed: int | None = None) -> WeightSource:
    """``--weights PATH`` -> :class:`CheckpointWeights`; otherwise ``--seed N`` (default 0) ->
    :class:`RandomWeights`."""
    if weights is not None:
        if seed is not None:
            raise WeightError("give either a weights path or a seed, not both")
        return CheckpointWeights(weights)
    return RandomWeights(0 if seed is None else seed)

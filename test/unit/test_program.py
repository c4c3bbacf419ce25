"""The program file: schema round trip, deterministic bytes, every rejection with its message,
and - with a minimal executor written only from the documented semantics - that a program alone
says what every unit computes (looped = unlooped, sharded = unsharded, a corrupted tile offset
gives a wrong answer)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from toy_program import B, H, build_toy, reference, toy_data

from rdu_compiler.simulator import numerics as N
from rdu_compiler.simulator.hardware import get_preset
from rdu_compiler.simulator.program import (
    Kernel,
    Launch,
    Program,
    ProgramError,
    Source,
    Tensor,
    compiled_hardware,
    decode_program,
    encode_program,
    load_program,
)

ROOT = Path(__file__).resolve().parents[2]
SN40L = get_preset("sn40l")

# ------------------------------------------------------------------------------------------
# A minimal executor, written from the documented semantics only (independent of the real
# one, simulator/functional.py): every unit of every socket, in list order, on numpy blocks.
# ------------------------------------------------------------------------------------------


def _slices(ranges: Any, step: Any, j: int) -> tuple[slice, ...]:
    return tuple(
        slice(a + j * (step[d] if step else 0), b + j * (step[d] if step else 0))
        for d, (a, b) in enumerate(ranges)
    )


def _source_blocks(src: Source, tensor: Tensor, socket: int) -> tuple[tuple, tuple, list[int]]:
    shard = socket // src.socket_group if src.socket_step else 0
    in_value = _slices([(a, a + n) for a, n in zip(src.start, src.shape)], src.socket_step, shard)
    extra = len(src.shape) - len(tensor.shape)
    shape = src.shape[extra:] if extra > 0 else [1] * -extra + src.shape
    in_tensor = tuple(slice(a, a + n) for a, n in zip(src.at, shape))
    return in_value, in_tensor, shape


def execute(program: Program, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One step: ``data`` gives params and inputs by value name; returns outputs and state
    (read from socket 0)."""
    values = {v.name: v for v in program.values}
    sockets = range(program.sockets)
    mem: list[dict[str, np.ndarray]] = [{} for _ in sockets]
    for s in sockets:
        for t in program.tensors:
            if t.aliases is None:
                buf = mem[s][t.name] = np.zeros(t.shape, N.DTYPES[t.dtype])
                for src in t.sources:
                    if values[src.value].role != "output" and src.value in data:
                        in_value, in_tensor, shape = _source_blocks(src, t, s)
                        buf[in_tensor] = data[src.value][in_value].reshape(shape)
        for t in program.tensors:
            if t.aliases is not None:
                mem[s][t.name] = mem[s][t.aliases]
    kernels = {k.name: k for k in program.kernels}
    for step in program.schedule:
        if isinstance(step, Launch):
            _launch(kernels[step.kernel], step, mem)
    result: dict[str, np.ndarray] = {}
    for t in program.tensors:
        for src in t.sources:
            v = values[src.value]
            if v.role in ("output", "state"):
                out = result.setdefault(v.name, np.zeros(v.shape, N.DTYPES[v.dtype]))
                in_value, in_tensor, _ = _source_blocks(src, t, 0)
                out[in_value] = mem[0][t.name][in_tensor].reshape(out[in_value].shape)
    return result


def _launch(kernel: Kernel, launch: Launch, mem: list[dict[str, np.ndarray]]) -> None:
    trips = kernel.loop.trips if kernel.loop else 1
    stacked = set(kernel.loop.stacked) if kernel.loop else set()
    rank = {p.name: len(p.shape) for p in kernel.params}
    n = len(kernel.sections)
    begin, end = kernel.loop.sections if kernel.loop and kernel.loop.sections else (0, n)
    # the sections before the loop's range once, the range every trip, the sections after once
    order = [(range(begin), 0), *((range(begin, end), i) for i in range(trips)), (range(end, n), 0)]
    for sections, i in order:
        params = []
        for m in mem:
            bound = {}
            for b in launch.bindings:
                views = [m[v.tensor][tuple(v.index)] for v in b.tensors]
                if b.param not in stacked:
                    bound[b.param] = views[0]
                elif len(views) == 1 and views[0].ndim == rank[b.param] + 1:
                    bound[b.param] = views[0][i]
                else:
                    bound[b.param] = views[i]
            params.append(bound)
        for section in (kernel.sections[s] for s in sections):
            store_ = [
                {**p, **{b.name: np.zeros(b.shape, N.DTYPES[b.dtype]) for b in section.buffers}}
                for p in params
            ]
            for unit in section.units:
                for j in range(unit.count):
                    ins = [
                        [st[a.name][_slices(a.ranges, a.step, j)] for a in unit.reads]
                        for st in store_
                    ]
                    outs = [st[unit.write.name] for st in store_]
                    where = _slices(unit.write.ranges, unit.write.step, j)
                    if unit.op == "all_reduce":
                        total = N.all_reduce([x[0] for x in ins], out_dtype=outs[0].dtype)
                        results = [total] * len(ins)
                    elif unit.op in ("load", "store", "copy"):
                        results = [x[0] for x in ins]
                    elif unit.op == "kv_cache_write":
                        results = [N.kv_cache_write_(*x) for x in ins]
                    else:
                        results = [
                            N.OPS[unit.op](*x, **unit.attrs, out_dtype=o.dtype)
                            for x, o in zip(ins, outs)
                        ]
                    for o, r in zip(outs, results):
                        o[where] = np.asarray(r).reshape(o[where].shape)


def f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


# ------------------------------------------------------------------------------------------
# round trip, determinism, the documented example
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("looped", [False, True, "one_launch"])
@pytest.mark.parametrize("sockets", [1, 2])
def test_round_trip_and_deterministic_bytes(looped, sockets, tmp_path):
    def build() -> Program:
        if looped == "one_launch":
            return build_toy(looped=True, sockets=sockets, one_launch=True)
        return build_toy(looped=looped, sockets=sockets)

    program = build()
    data = encode_program(program)
    assert data == encode_program(build())
    path = tmp_path / "toy.json"
    path.write_bytes(data)
    assert load_program(path) == program
    assert load_program(data) == program
    pretty = encode_program(program, pretty=True)
    assert load_program(pretty) == program and pretty == encode_program(program, pretty=True)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    # struct fields in schema order, format and version first
    assert data.startswith(b'{"format":"rdu-program","version":1,"model":"toy-mlp"')


def test_doc_example_is_the_toy_program():
    """docs/program_format.md shows the toy program: its first ```json block is the unlooped
    program (``encode_program(build_toy(looped=False), pretty=True)``), later ones are excerpts
    of the looped one (illustrations of other programs use ```jsonc)."""
    text = (ROOT / "docs" / "program_format.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    assert decode_program(blocks[0].encode()) == build_toy(looped=False)
    looped = encode_program(build_toy(looped=True), pretty=True).decode()
    one_launch = encode_program(build_toy(looped=True, one_launch=True), pretty=True).decode()
    for fragment in blocks[1:]:
        assert fragment.strip() in looped or fragment.strip() in one_launch
    # a program without the one-launch fields is written as before they existed
    assert "configured_with_previous" not in looped and '"sections":[' not in looped


def test_looping_changes_only_the_schedule():
    flat, looped = build_toy(looped=False), build_toy(looped=True)
    layer, looped_layer = flat.kernels[1], looped.kernels[1]
    assert layer.params == looped_layer.params and layer.sections == looped_layer.sections
    assert layer.loop is None and looped_layer.loop is not None
    assert (flat.values, flat.tensors) == (looped.values, looped.tensors)
    assert [type(s).__name__ for s in looped.schedule] == ["Launch"] * 3 + ["Sync"]
    assert len(flat.schedule) == 5


# ------------------------------------------------------------------------------------------
# the program alone says what every unit computes
# ------------------------------------------------------------------------------------------


def test_executes_from_index_ranges():
    data = toy_data()
    want = reference(data)
    flat = execute(build_toy(looped=False), data)
    for looped in (
        build_toy(looped=True),
        build_toy(looped=True, one_launch=True),
        build_toy(looped=True, one_launch=False),
    ):
        got = execute(looped, data)
        for key in want:  # looped and unlooped run the same units on the same data
            assert np.array_equal(f32(flat[key]), f32(got[key])), key
    np.testing.assert_allclose(f32(flat["logits"]), f32(want["logits"]), rtol=2e-2, atol=2e-2)
    assert np.array_equal(flat["next_token"], want["next_token"])
    assert np.array_equal(f32(flat["k_cache"]), f32(want["k_cache"]))
    assert np.count_nonzero(f32(flat["k_cache"])) == 2 * B * H  # one row per layer and entry


@pytest.mark.parametrize("one_launch", [None, True])
@pytest.mark.parametrize("sockets", [2, 4])
def test_sharded_program_matches(sockets, one_launch):
    data = toy_data()
    want = reference(data)
    got = execute(build_toy(looped=True, sockets=sockets, one_launch=one_launch), data)
    flat = execute(build_toy(looped=False, sockets=sockets), data)
    assert all(np.array_equal(f32(got[key]), f32(flat[key])) for key in want)
    np.testing.assert_allclose(f32(got["logits"]), f32(want["logits"]), rtol=2e-2, atol=2e-2)
    assert np.array_equal(f32(got["k_cache"]), f32(want["k_cache"]))


def test_corrupted_tile_offset_gives_a_wrong_answer():
    data = toy_data()
    program = build_toy(looped=True)
    builtins = msgspec.to_builtins(program)
    units = builtins["kernels"][1]["sections"][0]["units"]
    up = next(u for u in units if u["id"] == "up")
    up["reads"][1]["step"] = [0, 0]  # both PCUs read the first half of the weight
    corrupted = load_program(msgspec.json.encode(builtins))  # still a valid program
    good, bad = execute(program, data), execute(corrupted, data)
    assert not np.allclose(f32(good["logits"]), f32(bad["logits"]), rtol=2e-2, atol=2e-2)


def test_compact_for_many_layers_and_sockets():
    """126 layers on 16 sockets (the shape of llama-3.1-405b's schedule): the SPMD program is
    described once for all sockets and the layer kernel once for all layers; size grows with
    the per-layer tensors and launches, not with the sockets."""
    flat = encode_program(build_toy(looped=False, sockets=16, layers=126))
    looped = encode_program(build_toy(looped=True, sockets=16, layers=126))
    small = encode_program(build_toy(looped=False, sockets=16, layers=2))
    one_socket = encode_program(build_toy(looped=False, sockets=1, layers=126))
    assert len(looped) < len(flat) < 126 * (len(small) // 2)
    assert len(flat) < 1.2 * len(one_socket)
    assert load_program(flat).sockets == 16  # loading speed: bench/pipeline_405b.py


# ------------------------------------------------------------------------------------------
# rejections: file level
# ------------------------------------------------------------------------------------------


def rejected(data: bytes | Path, *fragments: str, preset=None) -> str:
    with pytest.raises(ProgramError) as info:
        load_program(data, preset)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def as_dict(program: Program | None = None) -> dict[str, Any]:
    return msgspec.to_builtins(program or build_toy(looped=False))


def encoded(d: dict[str, Any]) -> bytes:
    return msgspec.json.encode(d)


def test_missing_file(tmp_path):
    rejected(tmp_path / "nope.json", f"{tmp_path / 'nope.json'}: cannot read the program file")


def test_empty_malformed_truncated(tmp_path):
    good = encode_program(build_toy(looped=False), pretty=True)
    path = tmp_path / "p.json"
    path.write_bytes(b"  \n")
    rejected(path, f"{path}: empty file")
    path.write_bytes(good[: len(good) // 2])
    rejected(path, f"{path}: truncated file")
    broken = good.replace(b'"model": "toy-mlp"', b'"model": toy-mlp"')
    msg = rejected(broken, "<bytes>: malformed JSON at line 4, column")
    assert "invalid character" in msg
    rejected(b"[1, 2]", "<bytes>: $: Expected `object`, got `array`")


def test_wrong_format_and_version():
    d = as_dict()
    rejected(
        encoded({**d, "format": "onnx"}),
        "$.format: not an rdu-program file: format 'onnx' (expected 'rdu-program')",
    )
    rejected(b'{"kernels": []}', "$.format: not an rdu-program file: no `format` field")
    rejected(
        encoded({**d, "version": 2}),
        "$.version: program format version 2 is not supported (this simulator reads version 1)",
    )
    rejected(encoded({**d, "version": "1"}), "$.version: program format version '1'")


def test_schema_errors_name_the_json_path():
    d = as_dict()
    del d["model"]
    rejected(encoded(d), "<bytes>: $: Object missing required field `model`")
    d = as_dict()
    d["kernels"][1]["sections"][0]["units"][3]["count"] = "2"
    rejected(encoded(d), "$.kernels[1].sections[0].units[3].count: Expected `int`, got `str`")
    d = as_dict()
    d["kernels"][1]["sections"][0]["units"][0]["reads"][0]["ranges"][0] = [0, 1, 2]
    rejected(
        encoded(d),
        "$.kernels[1].sections[0].units[0].reads[0].ranges[0]: Expected `array` of length 2",
    )
    d = as_dict()
    d["tensors"][0]["tier"] = "sram"
    rejected(encoded(d), "$.tensors[0].tier: Invalid enum value 'sram'")
    d = as_dict()
    d["kernels"][0]["sections"][0]["units"][0]["unit"] = "tpu"
    rejected(encoded(d), "$.kernels[0].sections[0].units[0].unit: Invalid value 'tpu'")
    d = as_dict()
    d["kernels"][0]["sections"][0]["units"][0]["cuont"] = 2
    rejected(encoded(d), "Object contains unknown field `cuont`")
    d = as_dict()
    d["sockets"] = 0
    rejected(encoded(d), "$.sockets: Expected `int` >= 1")


# ------------------------------------------------------------------------------------------
# rejections: semantic checks (each mutation of a valid program, and the message it gets)
# ------------------------------------------------------------------------------------------


def units_of(d: dict[str, Any], kernel: int = 1) -> list[dict[str, Any]]:
    return d["kernels"][kernel]["sections"][0]["units"]


def unit(d: dict[str, Any], uid: str, kernel: int = 1) -> dict[str, Any]:
    return next(u for u in units_of(d, kernel) if u["id"] == uid)


def tensor(d: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in d["tensors"] if t["name"] == name)


def launch(d: dict[str, Any], index: int) -> dict[str, Any]:
    return d["schedule"][index]


def binding(d: dict[str, Any], index: int, param: str) -> dict[str, Any]:
    return next(b for b in launch(d, index)["bindings"] if b["param"] == param)


def _swap_streams(d):
    s = d["kernels"][1]["sections"][0]["streams"][0]
    s["producer"], s["consumer"] = s["consumer"], s["producer"]


def _overlapping_sources(d):
    t = tensor(d, "embed")
    half = dict(t["sources"][0], shape=[16, 16])
    t["sources"] = [half, dict(half, at=[8, 0], start=[16, 0])]


U = "$.kernels[1].sections[0].units"

# name -> (mutation of the toy program's JSON, the message it must get[, looped program])
SEMANTIC: dict[str, tuple[Any, ...]] = {
    "unknown preset": (
        lambda d: d.update(hardware="tpu"),
        "$.hardware: unknown hardware preset 'tpu'; known: sn40l",
    ),
    "too many sockets": (
        lambda d: d.update(sockets=32),
        "$.sockets: 32 sockets, but sn40l has at most 16",
    ),
    "duplicate tensor": (
        lambda d: d["tensors"].append(tensor(d, "hidden")),
        "$.tensors[16].name: duplicate name 'hidden'",
    ),
    "alias unknown": (
        lambda d: tensor(d, "k_cache.out").update(aliases="kv"),
        "$.tensors[12].aliases: aliases unknown tensor 'kv'",
    ),
    "alias shape": (
        lambda d: tensor(d, "k_cache.out").update(shape=[2, 2, 1, 8, 16]),
        "$.tensors[12].aliases: 'k_cache.out' [2, 2, 1, 8, 16] bf16 in hbm aliases "
        "'k_cache' [2, 2, 1, 4, 16] bf16 in hbm: an alias is the same buffer",
    ),
    "alias tier": (
        lambda d: tensor(d, "k_cache.out").update(tier="ddr"),
        "$.tensors[12].aliases: 'k_cache.out' [2, 2, 1, 4, 16] bf16 in ddr aliases "
        "'k_cache' [2, 2, 1, 4, 16] bf16 in hbm: an alias is the same buffer, so "
        "shape, dtype and tier must match",
    ),
    "alias of itself": (
        lambda d: tensor(d, "k_cache.out").update(aliases="k_cache.out"),
        "$.tensors[12].aliases: tensor 'k_cache.out' aliases itself",
    ),
    "alias chain": (
        lambda d: tensor(d, "hidden").update(aliases="k_cache.out"),
        "$.tensors[13].aliases: aliases 'k_cache.out', which is itself an alias",
    ),
    "alias sources": (
        lambda d: tensor(d, "k_cache.out").update(sources=tensor(d, "k_cache")["sources"]),
        "$.tensors[12].sources: an alias has no sources",
    ),
    "unknown value": (
        lambda d: tensor(d, "embed")["sources"][0].update(value="wte"),
        "$.tensors[0].sources[0].value: unknown value 'wte'",
    ),
    "role mismatch": (
        lambda d: tensor(d, "embed")["sources"][0].update(value="tokens"),
        "$.tensors[0].sources[0].value: a weight tensor holds param values, but "
        "'tokens' has role 'input'",
    ),
    "weight without source": (
        lambda d: tensor(d, "embed").update(sources=[]),
        "$.tensors[0].sources: a weight tensor needs sources",
    ),
    "activation with source": (
        lambda d: tensor(d, "hidden").update(sources=tensor(d, "tokens")["sources"]),
        "$.tensors[13].sources: an activation tensor has no sources",
    ),
    "source rank": (
        lambda d: tensor(d, "embed")["sources"][0].update(start=[0]),
        "$.tensors[0].sources[0].start: 1 entries for value 'model.embed_tokens.weight' of rank 2",
    ),
    "source outside value": (
        lambda d: tensor(d, "embed")["sources"][0].update(start=[1, 0]),
        "$.tensors[0].sources[0].start: shard 0 (sockets 0..0) reads "
        "[1, 33) of dimension 0 of 'model.embed_tokens.weight' [32, 16]",
    ),
    "source outside tensor": (
        lambda d: tensor(d, "embed")["sources"][0].update(at=[0, 1]),
        "$.tensors[0].sources[0].at: block [1, 17) of dimension 1 lies "
        "outside tensor 'embed' [32, 16]",
    ),
    "sources do not tile": (
        lambda d: tensor(d, "embed")["sources"][0].update(shape=[16, 16]),
        "$.tensors[0].sources: sources cover 256 of the 512 elements of "
        "'embed': they must tile it exactly",
    ),
    "overlapping sources": (
        _overlapping_sources,
        "$.tensors[0].sources[1]: overlaps sources[0] in tensor 'embed'",
    ),
    "hbm capacity": (
        lambda d: tensor(d, "hidden").update(shape=[1 << 20, 1 << 16]),
        "$.tensors: tensors in hbm need 137438958296 bytes per socket, but sn40l has 68719476736",
    ),
    "unknown compute op": (
        lambda d: unit(d, "act").update(op="gelu_tanh"),
        f"{U}[10].op: unknown compute op 'gelu_tanh' for a pcu",
    ),
    "pcu all_reduce": (
        lambda d: unit(d, "act").update(op="all_reduce"),
        f"{U}[10].op: unknown compute op 'all_reduce' for a pcu",
    ),
    "agcu op": (
        lambda d: unit(d, "ld_h").update(op="linear"),
        f"{U}[0].op: op 'linear' is not one a agcu runs; known: all_gather, all_reduce, "
        "copy, load, store",
    ),
    "pmu op": (
        lambda d: unit(d, "stage_up").update(op="load"),
        f"{U}[8].op: op 'load' is not one a pmu runs; known: copy",
    ),
    "pcu reads a param": (
        lambda d: unit(d, "act")["reads"][0].update(name="h"),
        f"{U}[10].reads[0].name: no buffer 'h' here (this op accesses buffers)",
    ),
    "load writes a param": (
        lambda d: unit(d, "ld_h")["write"].update(name="h"),
        f"{U}[0].write.name: no buffer 'h' here",
    ),
    "load reads a buffer": (
        lambda d: unit(d, "ld_h")["reads"][0].update(name="x"),
        f"{U}[0].reads[0].name: no param 'x' here (this op accesses params)",
    ),
    "out of bounds": (
        lambda d: unit(d, "up")["reads"][1].update(step=[20, 0]),
        f"{U}[9].reads[1].ranges[0]: unit 1 of 2 accesses [20, 36) of dimension 0"
        " of 'w_up' [32, 16]",
    ),
    "empty range": (
        lambda d: unit(d, "act")["reads"][0]["ranges"].__setitem__(0, [1, 1]),
        f"{U}[10].reads[0].ranges[0]: empty range [1, 1)",
    ),
    "rank": (
        lambda d: unit(d, "act")["reads"][0]["ranges"].pop(),
        f"{U}[10].reads[0]: ranges / step do not match the rank of 'a' [2, 32]",
    ),
    "overlapping writes": (
        lambda d: unit(d, "up")["write"].pop("step"),
        f"{U}[9].write.step: the 2 units write overlapping blocks of 'a'",
    ),
    "read before write": (
        lambda d: units_of(d).insert(0, units_of(d).pop(10)),
        f"{U}[0].reads[0].name: buffer 'a' is read before any unit writes it",
    ),
    "arity": (
        lambda d: unit(d, "act")["reads"].append(unit(d, "act")["reads"][0]),
        f"{U}[10].reads: silu takes 1..1 operands, got 2",
    ),
    "unknown attr": (
        lambda d: unit(d, "norm").update(attrs={"epsilon": 1e-5}),
        f"{U}[2].attrs.epsilon: rms_norm has no attribute 'epsilon'; it takes eps",
    ),
    "required attr": (
        lambda d: unit(d, "act").update(op="attention", reads=[unit(d, "act")["reads"][0]] * 4),
        f"{U}[10].attrs: attention needs attribute 'head_dim'",
    ),
    "kv write not in place": (
        lambda d: unit(d, "kv_write")["write"].update(ranges=[[0, 1], [0, 1], [0, 4], [0, 16]]),
        f"{U}[5].write: kv_cache_write updates its cache in place",
    ),
    "move reads one": (
        lambda d: unit(d, "ld_h")["reads"].append(unit(d, "ld_h")["reads"][0]),
        f"{U}[0].reads: load reads exactly one block, got 2",
    ),
    "move attrs": (
        lambda d: unit(d, "ld_h").update(attrs={"x": 1}),
        f"{U}[0].attrs: load takes no attributes",
    ),
    "move volume": (
        lambda d: unit(d, "ld_h")["write"].update(ranges=[[0, 1], [0, 16]]),
        f"{U}[0]: load reads 32 elements but writes 16",
    ),
    "move dtype": (
        lambda d: unit(d, "ld_pos")["write"].update(name="x", ranges=[[0, 1], [0, 2]]),
        f"{U}[3]: load cannot convert i32 to bf16",
    ),
    "resources": (
        lambda d: d["kernels"][1]["sections"][0]["resources"].update(pcus=6),
        "$.kernels[1].sections[0].resources.pcus: declares 6 but its units use 7",
    ),
    "does not fit": (
        lambda d: unit(d, "act").update(count=1040),
        "$.kernels[1].sections[0].resources.pcus: needs 1046 but sn40l has 1040 "
        "per socket: split the kernel into sections",
    ),
    "pmu bytes": (
        lambda d: unit(d, "stage_up").update(sram_bytes=1 << 20),
        f"{U}[8].sram_bytes: 1048576 bytes per PMU, but a PMU of sn40l has 524288",
    ),
    "duplicate unit": (
        lambda d: unit(d, "act").update(id="up"),
        f"{U}[10].id: duplicate unit id 'up'",
    ),
    "buffer named like a param": (
        lambda d: d["kernels"][1]["sections"][0]["buffers"][0].update(name="h"),
        "$.kernels[1].sections[0].buffers[0].name: buffer 'h' has the name of a param",
    ),
    "stream endpoint": (
        lambda d: d["kernels"][1]["sections"][0]["streams"][0].update(consumer="nobody"),
        "$.kernels[1].sections[0].streams[0].consumer: no unit 'nobody'",
    ),
    "stream order": (
        _swap_streams,
        "$.kernels[1].sections[0].streams[0]: producer 'norm' does not precede consumer 'ld_h'",
    ),
    "unknown kernel": (
        lambda d: launch(d, 1).update(kernel="layer2"),
        "$.schedule[1].kernel: launches unknown kernel 'layer2'",
    ),
    "unknown param": (
        lambda d: binding(d, 1, "h").update(param="hh"),
        "$.schedule[1].bindings[0].param: kernel 'layer' has no param 'hh'",
    ),
    "unbound param": (
        lambda d: launch(d, 1)["bindings"].pop(0),
        "$.schedule[1].bindings: param 'h' of kernel 'layer' is not bound",
    ),
    "bound twice": (
        lambda d: launch(d, 1)["bindings"].append(binding(d, 1, "h")),
        "$.schedule[1].bindings[7].param: param 'h' bound twice",
    ),
    "unknown tensor": (
        lambda d: binding(d, 1, "h")["tensors"][0].update(tensor="x"),
        "$.schedule[1].bindings[0].tensors[0].tensor: unknown tensor 'x'",
    ),
    "view index": (
        lambda d: binding(d, 1, "kc")["tensors"][0].update(index=[2]),
        "$.schedule[1].bindings[5].tensors[0].index: index [2] is outside tensor "
        "'k_cache' [2, 2, 1, 4, 16]",
    ),
    "view shape": (
        lambda d: binding(d, 1, "up")["tensors"][0].update(tensor="l0.down"),
        "$.schedule[1].bindings[3].tensors[0]: view is [16, 32] bf16, but param "
        "'up' needs [32, 16] bf16",
    ),
    "view dtype": (
        lambda d: binding(d, 1, "pos")["tensors"][0].update(tensor="hidden"),
        "$.schedule[1].bindings[1].tensors[0]: view is [2, 16] bf16, but param 'pos' needs [2] i32",
    ),
    "not stacked": (
        lambda d: binding(d, 1, "up")["tensors"].append({"tensor": "l1.up"}),
        "$.schedule[1].bindings[3].tensors: param 'up' is not stacked: bind one view, got 2",
    ),
    "layers": (
        lambda d: launch(d, 1).update(layers=[0, 1, 2]),
        "$.schedule[1].layers: 3 layers do not split evenly over the 2 trips of kernel "
        "'layer.looped'",
        True,
    ),
    "no final sync": (
        lambda d: d["schedule"].pop(),
        "$.schedule: the schedule must end with a sync",
    ),
}


@pytest.mark.parametrize("name", sorted(SEMANTIC))
def test_semantic_rejections(name):
    mutate, message, *looped = SEMANTIC[name]
    d = as_dict(build_toy(looped=bool(looped)))
    mutate(d)
    rejected(encoded(d), f"<bytes>: {message}")


def _gathering_toy(**changes: Any) -> dict[str, Any]:
    """The 2-socket toy whose all-reduce is turned into an all-gather of half-width bf16
    blocks along dim 1 (valid as it stands), then `changes` applied to that unit."""
    d = as_dict(build_toy(looped=False, sockets=2))
    part = next(b for b in d["kernels"][1]["sections"][0]["buffers"] if b["name"] == "part")
    part["dtype"] = "bf16"
    gather = unit(d, "all_reduce")
    width = gather["reads"][0]["ranges"][1][1]
    gather.update(op="all_gather", attrs={"dim": 1})
    gather["reads"][0]["ranges"][1] = [0, width // 2]
    gather.update(changes)
    return d


def test_all_gather_validation():
    load_program(encoded(_gathering_toy()))
    where = "$.kernels[1].sections[0].units[13]"
    rejected(
        encoded(_gathering_toy(attrs={})),
        f"{where}.attrs: all_gather takes an integer 'dim' and maybe an integer 'group'",
    )
    rejected(
        encoded(_gathering_toy(attrs={"dim": 1, "group": 3})),
        f"{where}.attrs.group: group 3 does not divide the 2 sockets",
    )
    rejected(  # a group of one socket gathers only its own block
        encoded(_gathering_toy(attrs={"dim": 1, "group": 1})),
        f"{where}: all_gather along dim 1 over 1 socket(s) of a [2, 8] block writes [2, 8], "
        "not [2, 16]",
    )
    rejected(
        encoded(_gathering_toy(attrs={"dim": 0})),
        f"{where}: all_gather along dim 0 over 2 socket(s) of a [2, 8] block writes "
        "[4, 8], not [2, 16]",
    )
    rejected(encoded(_gathering_toy(attrs={"dim": 2})), "writes nothing (no such dim), not [2, 16]")


def test_dealt_cache_validation():
    """A cache dealt along the sequence over 2 sockets: its sources' interleave must divide
    the sockets sharing the block, and per-socket attributes need one entry per socket."""
    from compiled import compiled

    mqa = str(Path(__file__).parent / "configs" / "tiny-llama-mqa.json")
    program = compiled(mqa, sockets=2, batch=1, context=8, kv_seq_split=2)
    d = msgspec.to_builtins(program)
    load_program(encoded(d))
    t = next(i for i, t in enumerate(d["tensors"]) if t["name"] == "k_cache")
    d["tensors"][t]["sources"][0]["interleave"] = [1, 1, 1, 4, 1]
    rejected(
        encoded(d),
        f"$.tensors[{t}].sources[0].interleave: interleave [1, 1, 1, 4, 1] deals rows over 4 "
        "sockets, which must divide the 2 sockets holding the block",
    )
    d = msgspec.to_builtins(program)
    units = [u for k in d["kernels"] for s in k["sections"] for u in s["units"]]
    next(u for u in units if u["id"] == "attn")["attr_by_socket"]["head_start"] = [0, 2, 4]
    rejected(encoded(d), "attr_by_socket.head_start: 3 entries for the program's 2 socket(s)")


def _fused_program_units() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """tiny-llama's program as JSON (its layer runs rope, silu, mul and the residual adds fused
    into neighbouring units) and its units by id."""
    from compiled import compiled

    d = msgspec.to_builtins(compiled("tiny-llama", batch=1, context=8))
    return d, {u["id"]: u for k in d["kernels"] for s in k["sections"] for u in s["units"]}


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda u: u["gu"]["fused"][0].update(op="softmax"), "'softmax' cannot be fused"),
        (lambda u: u["kc.ld"]["fused"][0].update(operand=3), "the unit has no read 3"),
        (lambda u: u["kc.ld"]["fused"][0].update(attrs={}), "rope: needs attribute 'head_dim'"),
        (
            lambda u: u["gu"]["fused"][1]["reads"][0].update(name="gu"),  # its own write
            "buffer 'gu' is read before any unit writes it",
        ),
        (
            lambda u: u["gu"]["fused"][1]["reads"][0].update(ranges=[[0, 1], [0, 4]]),
            "mul: operands",
        ),
        (lambda u: u["gu"]["fused"][0].update(reads=u["gu"]["reads"][:1]), "silu takes 1..1"),
        (
            lambda u: u["pmu.gate_proj"].update(fused=u["gu"]["fused"]),
            "a pmu copy runs no fused ops",
        ),
    ],
    ids=["op", "operand", "attrs", "read-order", "shape", "arity", "pmu"],
)
def test_fused_op_validation(mutate, message):
    d, units = _fused_program_units()
    load_program(encoded(d))
    mutate(units)
    rejected(encoded(d), message)


def test_expert_sources_validation():
    """Experts dealt over 4 sockets (`moe=expert`): each expert's source names the sockets
    holding it; on every socket the sources holding there tile the tensor; a transfer's
    `roofline_bytes` belongs to an off-chip transfer and is at most what it moves."""
    from compiled import compiled

    program = compiled("tiny-mixtral", sockets=4, batch=1, context=8, moe="expert")
    d = msgspec.to_builtins(program)
    load_program(encoded(d))
    t = next(
        i
        for i, t in enumerate(d["tensors"])
        if t["name"].endswith("layers.0.block_sparse_moe.experts.w1.weight")
    )
    where = f"$.tensors[{t}].sources"
    for held, why in (
        ([], "[] must be"),
        ([4], "[4] must be"),
        ([1, 1], "[1, 1] must be"),
    ):
        d = msgspec.to_builtins(program)
        d["tensors"][t]["sources"][1]["sockets"] = held
        rejected(
            encoded(d),
            f"{where}[1].sockets: sockets {why} increasing socket indices in 0..3 (at least one)",
        )
    d = msgspec.to_builtins(program)
    d["tensors"][t]["sources"][2]["sockets"] = [3]  # socket 2 holds nothing, 3 two experts
    rejected(
        encoded(d),
        f"{where}: sources cover 0 of the 8192 elements of '{d['tensors'][t]['name']}' on "
        "socket 2: they must tile it exactly",
    )
    d = msgspec.to_builtins(program)
    d["tensors"][t]["sources"][1]["sockets"] = [0, 1]
    rejected(encoded(d), f"{where}[1]: overlaps sources[0] in tensor", "on socket 0")
    d = msgspec.to_builtins(program)
    units = [u for k in d["kernels"] for s in k["sections"] for u in s["units"]]
    load = next(u for u in units if u["id"] == "ld.w1")
    moved = load["work"]["bytes_read"] + load["work"]["bytes_written"]
    load["work"]["roofline_bytes"] = moved + 1
    next(u for u in units if u["id"] == "moe.part")["work"]["roofline_bytes"] = 1
    rejected(
        encoded(d),
        f"work.roofline_bytes: {moved + 1} bytes: only an off-chip transfer",
        "work.roofline_bytes: 1 bytes: only an off-chip transfer (an agcu load, store or copy) "
        "has them, at most the bytes it moves",
    )


def replace_unit(program: Program, kernel: int, index: int, **changes: Any) -> Program:
    k = program.kernels[kernel]
    units = list(k.sections[0].units)
    units[index] = msgspec.structs.replace(units[index], **changes)
    section = msgspec.structs.replace(k.sections[0], units=units)
    kernels = list(program.kernels)
    kernels[kernel] = msgspec.structs.replace(k, sections=[section])
    return msgspec.structs.replace(program, kernels=kernels)


def test_non_finite_attribute_rejected_before_writing():
    """JSON has no NaN (msgspec would write null): caught on the Python side."""
    program = replace_unit(build_toy(looped=False), 1, 2, attrs={"eps": float("nan")})
    message = f"<program>: {U}[2].attrs.eps: nan cannot be written to JSON"
    with pytest.raises(ProgramError, match=re.escape(message)):
        encode_program(program)
    assert encode_program(program, check=False)  # the escape hatch for tests of the loader


def test_attribute_keys_sorted():
    program = replace_unit(
        build_toy(looped=False),
        1,
        2,
        attrs={"zeta": 1, "eps": 1e-5, "alpha": [0.1, {"b": 1, "a": 2}]},
    )
    data = encode_program(program, check=False)
    assert b'"attrs":{"alpha":[0.1,{"a":2,"b":1}],"eps":0.00001,"zeta":1}' in data


def test_stacked_bindings_vs_trips():
    d = as_dict(build_toy(looped=True))
    d["kernels"][1]["loop"]["trips"] = 3
    msg = rejected(encoded(d))
    assert (
        "$.schedule[1].bindings[2].tensors: stacked param 'norm' needs 3 views (one per "
        "trip) or one stacked view, got 2"
    ) in msg
    assert (
        "$.schedule[1].bindings[5].tensors[0]: stacked view has leading dimension 2 but "
        "the loop runs 3 trips"
    ) in msg
    d = as_dict(build_toy(looped=True))
    d["kernels"][1]["loop"]["stacked"] += ["zz", "norm"]
    msg = rejected(encoded(d))
    assert "$.kernels[1].loop.stacked[5]: stacked 'zz' is not a param of kernel" in msg
    assert "$.kernels[1].loop.stacked[6]: 'norm' listed twice" in msg


def _one_launch(**loop: Any) -> dict[str, Any]:
    """The one-launch toy program (embedding, looped layer, head: one kernel, configured
    together) as JSON, with `loop` fields changed."""
    d = as_dict(build_toy(looped=True, one_launch=True))
    d["kernels"][0]["loop"].update(loop)
    return d


def test_loop_section_range_and_configurations():
    load_program(encoded(_one_launch()))
    rejected(
        encoded(_one_launch(sections=[1])),
        "$.kernels[0].loop.sections: Expected `array` of length 2",
    )
    rejected(
        encoded(_one_launch(sections=[-1, 2])), "$.kernels[0].loop.sections[0]: Expected `int` >= 0"
    )
    rejected(
        encoded(_one_launch(sections="1-2")), "$.kernels[0].loop.sections: Expected `array | null`"
    )
    for bad in ([1, 1], [2, 1], [0, 4]):
        rejected(
            encoded(_one_launch(sections=bad)),
            f"<bytes>: $.kernels[0].loop.sections: [{bad[0]}, {bad[1]}) is not a non-empty "
            "range of the kernel's 3 section(s)",
        )
    d = _one_launch()
    d["kernels"][0]["sections"][0]["configured_with_previous"] = True
    rejected(
        encoded(d),
        "<bytes>: $.kernels[0].sections[0].configured_with_previous: the first section has no "
        "previous section to be configured with",
    )
    d["kernels"][0]["sections"][0]["configured_with_previous"] = "yes"
    rejected(encoded(d), "$.kernels[0].sections[0].configured_with_previous: Expected `bool`")
    # the head reads a stacked weight, but runs once after the loop
    d = _one_launch()
    d["kernels"][0]["sections"][2]["units"][1]["reads"][0]["name"] = "norm"
    rejected(
        encoded(d),
        "<bytes>: $.kernels[0].sections[2].units[1]: section 2 runs once, outside the loop's "
        "sections [1, 2), but accesses stacked param 'norm' (one tensor per trip)",
    )
    # configured together, the three sections need 1 + 7 + 4 PCUs (each alone fits 10)
    rejected(
        encoded(_one_launch()),
        "<bytes>: $.kernels[0].sections[2].configured_with_previous: sections 0..2 are "
        "configured together and need 12 pcus but sn40l with pcus=10 has 10 per socket",
        preset=SN40L.replace(pcus=10),
    )
    d = _one_launch()
    for section in d["kernels"][0]["sections"][1:]:
        section["configured_with_previous"] = False
    load_program(encoded(d), SN40L.replace(pcus=10))  # three configurations fit one by one
    # the loop's prefetch set of the layer's 1 KiB of staging, beside the head's PMUs
    d = _one_launch()
    head = d["kernels"][0]["sections"][2]
    head["units"].append(
        {
            "unit": "pmu",
            "id": "head.stage",
            "op": "copy",
            "reads": [{"name": "w_lm", "ranges": [[0, 32], [0, 16]]}],
            "write": {"name": "w_lm", "ranges": [[0, 32], [0, 16]]},
            "work": {"flops": 0, "bytes_read": 0, "bytes_written": 0, "tiles": 0},
            "sram_bytes": 1000,
        }
    )
    head["resources"].update(pmus=1, sram_bytes=1000)
    rejected(
        encoded(d),
        "<bytes>: $.kernels[0].loop.prefetch: prefetch 1 reserves 3048 bytes of SRAM (1 + "
        "prefetch sets of 1024, plus 1000 of sections run once) but sn40l with sram_bytes=3000 "
        "has 3000",
        preset=SN40L.replace(sram_bytes=3000),
    )


def test_socket_dependent_sources():
    d = as_dict(build_toy(looped=True, sockets=2))
    tensor(d, "l0.up")["sources"][0]["socket_step"] = [24, 0]
    rejected(
        encoded(d),
        "$.tensors[2].sources[0].start: shard 1 (sockets 1..1) reads [24, 40) "
        "of dimension 0 of 'model.layers.0.mlp.up_proj.weight' [32, 16]",
    )
    d = as_dict(build_toy(looped=True, sockets=4))
    tensor(d, "l0.up")["sources"][0]["socket_group"] = 3
    rejected(
        encoded(d),
        "$.tensors[2].sources[0].socket_group: socket_group 3 does not divide the 4 sockets",
    )


def test_many_problems_are_listed_and_capped():
    d = as_dict()
    for t in d["tensors"]:
        t["sources"] = [{"value": "nope", "start": [0], "shape": [1], "at": [0]}] * 3
    message = rejected(encoded(d))
    assert message.count("\n") == 20 and message.endswith("more problems")


def test_validate_against_a_given_preset():
    program = encode_program(build_toy(looped=False))
    small = get_preset("sn40l").replace(pcus=4)
    rejected(
        program,
        "$.kernels[1].sections[0].resources.pcus: needs 7 but sn40l with pcus=4 has 4",
        preset=small,
    )


def test_checked_against_and_recording_the_hardware_it_was_compiled_for():
    """A program records the figures it was compiled for beyond its preset's; the loader checks
    it against them (not the bare preset), and writes nothing of them when there are none."""
    d = as_dict()
    assert b"hardware_overrides" not in encoded(d)
    d["hardware_overrides"] = {"pcus": 4}
    rejected(
        encoded(d), "$.kernels[1].sections[0].resources.pcus: needs 7 but sn40l with pcus=4 has 4"
    )
    d["hardware_overrides"] = {"pcus": 4000, "hbm_bandwidth": 1e12}
    program = load_program(encoded(d))
    assert compiled_hardware(program).hbm_bandwidth == 1e12
    assert load_program(encode_program(program)) == program
    d["hardware_overrides"] = {"pcu": 4}
    rejected(encoded(d), "$.hardware_overrides: unknown hardware parameter 'pcu'")
    d["hardware_overrides"] = {"pcus": -4}
    rejected(encoded(d), "$.hardware_overrides: hardware parameter pcus")


def test_dtypes_match_numerics():
    from rdu_compiler.simulator.program import DType

    assert set(DType.__args__) == set(N.DTYPES)


def test_no_xdsl_or_compiler_import():
    code = (
        "import rdu_compiler.simulator.program, rdu_compiler.simulator.hardware, sys; "
        "bad = [m for m in sys.modules if m.split('.')[0] == 'xdsl' or m.split('.')[:2] in "
        "(['rdu_compiler', p] for p in "
        "('rdu_dialect', 'passes', 'lowering', 'frontend', 'tools'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)

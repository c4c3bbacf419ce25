"""The program file: schema round trip, deterministic bytes, every rejection with its message,
and - with a minimal executor written only from the documented semantics - that a program alone
says what every unit computes (looped = unlooped, sharded = unsharded, a corrupted tile offset
gives a wrong answer)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from simulator import numerics as N
from simulator.hardware import get_preset
from simulator.program import (
    Access,
    Agcu,
    Binding,
    Buffer,
    Kernel,
    Launch,
    Loop,
    Param,
    Pcu,
    Pmu,
    Program,
    ProgramError,
    Resources,
    Section,
    Source,
    Stream,
    Sync,
    Tensor,
    Value,
    View,
    Work,
    decode_program,
    encode_program,
    load_program,
    validate_program,
)

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------
# A toy decode step (the example of docs/program_format.md): embedding, L layers of
# x += down(silu(up(rms_norm(x)))) with a KV-cache-style write of rms_norm(x), LM head, argmax.
# Tensor parallel over `sockets`: up is column-split, down row-split with an all_reduce.
# ------------------------------------------------------------------------------------------

V, H, F, B, S = 32, 16, 32, 2, 4
EPS = 1e-5


def block(name: str, *ranges: tuple[int, int], step: list[int] | None = None) -> Access:
    return Access(name=name, ranges=list(ranges), step=step)


def whole(name: str, shape: list[int]) -> Access:
    return Access(name=name, ranges=[(0, n) for n in shape])


def work(flops: int = 0, read: int = 0, written: int = 0, tiles: int = 1) -> Work:
    return Work(flops=flops, bytes_read=read, bytes_written=written, tiles=tiles)


def load(uid: str, param: str, buffer: str, shape: list[int], size: int) -> Agcu:
    return Agcu(id=uid, op="load", reads=[whole(param, shape)], write=whole(buffer, shape),
                work=work(read=size, written=size))


def store(uid: str, buffer: str, param: str, shape: list[int], size: int) -> Agcu:
    return Agcu(id=uid, op="store", reads=[whole(buffer, shape)], write=whole(param, shape),
                work=work(read=size, written=size))


def stream(producer: str, consumer: str, size: int) -> Stream:
    return Stream(producer=producer, consumer=consumer, bytes=size,
                  tile_bytes=min(size, 256) or 256, depth=2)


def buffers(*specs: tuple[str, list[int], str]) -> list[Buffer]:
    return [Buffer(name=n, shape=shape, dtype=dtype) for n, shape, dtype in specs]


def layer_kernel(sockets: int, loop: Loop | None, name: str) -> Kernel:
    f = F // sockets  # this socket's share of the MLP width
    h2, bh2 = H * 2, B * H * 2
    half = [f // 2, 0]
    units: list[Any] = [
        load("ld_h", "h", "x", [B, H], bh2),
        load("ld_norm", "norm", "wn", [H], h2),
        Pcu(id="norm", op="rms_norm", mode="simd", reads=[whole("x", [B, H]), whole("wn", [H])],
            write=whole("xn", [B, H]), attrs={"eps": EPS},
            work=work(read=bh2 + h2, written=bh2)),
        load("ld_pos", "pos", "p", [B], B * 4),
        # the cache block is loaded only to be updated in place: no old row really moves
        Agcu(id="ld_kc", op="load", reads=[whole("kc", [B, 1, S, H])],
             write=whole("cache", [B, 1, S, H]), work=work(tiles=0)),
        Pcu(id="kv_write", op="kv_cache_write", mode="simd",
            reads=[whole("cache", [B, 1, S, H]), whole("xn", [B, H]), whole("p", [B])],
            write=whole("cache", [B, 1, S, H]), work=work(read=bh2 + B * 4, written=bh2)),
        Agcu(id="st_kc", op="store", reads=[whole("cache", [B, 1, S, H])],
             write=whole("kc_out", [B, 1, S, H]), work=work(read=bh2, written=bh2)),
        Agcu(id="ld_up", op="load", count=2, reads=[block("up", (0, f // 2), (0, H), step=half)],
             write=block("w_up_in", (0, f // 2), (0, H), step=half),
             work=work(read=f * h2, written=f * h2, tiles=2)),
        Pmu(id="stage_up", op="copy", count=2, sram_bytes=f * H, buffers=2,
            reads=[block("w_up_in", (0, f // 2), (0, H), step=half)],
            write=block("w_up", (0, f // 2), (0, H), step=half),
            work=work(read=f * h2, written=f * h2, tiles=2)),
        Pcu(id="up", op="linear", mode="systolic", count=2,
            reads=[whole("xn", [B, H]), block("w_up", (0, f // 2), (0, H), step=half)],
            write=block("a", (0, B), (0, f // 2), step=[0, f // 2]),
            work=work(flops=2 * B * f * H, read=f * h2 + bh2, written=B * f * 2, tiles=2)),
        Pcu(id="act", op="silu", mode="simd", reads=[whole("a", [B, f])],
            write=whole("s", [B, f]), work=work(read=B * f * 2, written=B * f * 2)),
        load("ld_down", "down", "w_down", [H, f], f * h2),
    ]
    bufs = buffers(("x", [B, H], "bf16"), ("wn", [H], "bf16"), ("xn", [B, H], "bf16"),
                   ("p", [B], "i32"), ("cache", [B, 1, S, H], "bf16"),
                   ("w_up_in", [f, H], "bf16"), ("w_up", [f, H], "bf16"), ("a", [B, f], "bf16"),
                   ("s", [B, f], "bf16"), ("w_down", [H, f], "bf16"), ("y", [B, H], "bf16"))
    down_work = work(flops=2 * B * H * f, read=f * h2 + B * f * 2, written=bh2)
    if sockets == 1:
        units.append(Pcu(id="down", op="linear", mode="systolic",
                         reads=[whole("s", [B, f]), whole("w_down", [H, f])],
                         write=whole("y", [B, H]), work=down_work))
        reduced = "down"
    else:  # row-split: f32 partial products, summed over the sockets
        bufs += buffers(("part", [B, H], "f32"))
        units += [Pcu(id="down", op="linear", mode="systolic", attrs={"accumulate_only": True},
                      reads=[whole("s", [B, f]), whole("w_down", [H, f])],
                      write=whole("part", [B, H]), work=down_work),
                  Agcu(id="all_reduce", op="all_reduce", reads=[whole("part", [B, H])],
                       write=whole("y", [B, H]), work=work(read=B * H * 4, written=bh2))]
        reduced = "all_reduce"
    units += [
        Pcu(id="residual", op="add", mode="simd", reads=[whole("x", [B, H]), whole("y", [B, H])],
            write=whole("h2", [B, H]), work=work(read=2 * bh2, written=bh2)),
        store("st_h", "h2", "h", [B, H], bh2),
    ]
    bufs += buffers(("h2", [B, H], "bf16"))
    streams = [stream("ld_h", "norm", bh2), stream("ld_norm", "norm", h2),
               stream("norm", "kv_write", bh2), stream("ld_pos", "kv_write", B * 4),
               stream("ld_kc", "kv_write", 0), stream("kv_write", "st_kc", bh2),
               stream("norm", "up", bh2), stream("ld_up", "stage_up", f * h2),
               stream("stage_up", "up", f * h2), stream("up", "act", B * f * 2),
               stream("act", "down", B * f * 2), stream("ld_down", "down", f * h2),
               *([stream("down", "all_reduce", B * H * 4)] if sockets > 1 else []),
               stream(reduced, "residual", bh2), stream("ld_h", "residual", bh2),
               stream("residual", "st_h", bh2)]
    return Kernel(
        name=name,
        params=[Param(name="h", shape=[B, H], dtype="bf16"),
                Param(name="norm", shape=[H], dtype="bf16"),
                Param(name="up", shape=[f, H], dtype="bf16"),
                Param(name="down", shape=[H, f], dtype="bf16"),
                Param(name="pos", shape=[B], dtype="i32"),
                Param(name="kc", shape=[B, 1, S, H], dtype="bf16"),
                Param(name="kc_out", shape=[B, 1, S, H], dtype="bf16")],
        sections=[Section(resources=Resources(pcus=7, pmus=2, sram_bytes=2 * f * H),
                          buffers=bufs, units=units, streams=streams)],
        loop=loop,
    )


def embed_kernel() -> Kernel:
    units = [
        load("ld_ids", "ids", "token_ids", [B], B * 4),
        Agcu(id="ld_table", op="load", count=2,
             reads=[block("table", (0, V // 2), (0, H), step=[V // 2, 0])],
             write=block("rows", (0, V // 2), (0, H), step=[V // 2, 0]),
             work=work(read=B * H * 2, written=B * H * 2)),  # a gather: only B rows move
        Pcu(id="embed", op="embedding", mode="simd",
            reads=[whole("rows", [V, H]), whole("token_ids", [B])], write=whole("x", [B, H]),
            work=work(read=B * H * 2 + B * 4, written=B * H * 2)),
        store("st_h", "x", "h", [B, H], B * H * 2),
    ]
    return Kernel(
        name="embed",
        params=[Param(name="table", shape=[V, H], dtype="bf16"),
                Param(name="ids", shape=[B], dtype="i32"),
                Param(name="h", shape=[B, H], dtype="bf16")],
        sections=[Section(
            resources=Resources(pcus=1, pmus=0, sram_bytes=0),
            buffers=buffers(("token_ids", [B], "i32"), ("rows", [V, H], "bf16"),
                            ("x", [B, H], "bf16")),
            units=units,
            streams=[stream("ld_ids", "embed", B * 4), stream("ld_table", "embed", B * H * 2),
                     stream("embed", "st_h", B * H * 2)])],
    )


def head_kernel() -> Kernel:
    bh2 = B * H * 2
    units = [
        load("ld_h", "h", "x", [B, H], bh2),
        load("ld_norm", "norm", "wn", [H], H * 2),
        Pcu(id="norm", op="rms_norm", mode="simd", reads=[whole("x", [B, H]), whole("wn", [H])],
            write=whole("xn", [B, H]), attrs={"eps": EPS},
            work=work(read=bh2 + H * 2, written=bh2)),
        Agcu(id="ld_lm", op="load", count=2,
             reads=[block("lm", (0, V // 2), (0, H), step=[V // 2, 0])],
             write=block("w_lm", (0, V // 2), (0, H), step=[V // 2, 0]),
             work=work(read=V * H * 2, written=V * H * 2, tiles=2)),
        Pcu(id="lm_head", op="linear", mode="systolic", count=2,
            reads=[whole("xn", [B, H]), block("w_lm", (0, V // 2), (0, H), step=[V // 2, 0])],
            write=block("scores", (0, B), (0, V // 2), step=[0, V // 2]),
            work=work(flops=2 * B * V * H, read=V * H * 2 + bh2, written=B * V * 2, tiles=2)),
        Pcu(id="argmax", op="argmax", mode="simd", reads=[whole("scores", [B, V])],
            write=whole("token", [B]), work=work(read=B * V * 2, written=B * 4)),
        store("st_logits", "scores", "logits", [B, V], B * V * 2),
        store("st_token", "token", "next_token", [B], B * 4),
    ]
    return Kernel(
        name="head",
        params=[Param(name="h", shape=[B, H], dtype="bf16"),
                Param(name="norm", shape=[H], dtype="bf16"),
                Param(name="lm", shape=[V, H], dtype="bf16"),
                Param(name="logits", shape=[B, V], dtype="bf16"),
                Param(name="next_token", shape=[B], dtype="i32")],
        sections=[Section(
            resources=Resources(pcus=4, pmus=0, sram_bytes=0),
            buffers=buffers(("x", [B, H], "bf16"), ("wn", [H], "bf16"), ("xn", [B, H], "bf16"),
                            ("w_lm", [V, H], "bf16"), ("scores", [B, V], "bf16"),
                            ("token", [B], "i32")),
            units=units,
            streams=[stream("ld_h", "norm", bh2), stream("ld_norm", "norm", H * 2),
                     stream("norm", "lm_head", bh2), stream("ld_lm", "lm_head", V * H * 2),
                     stream("lm_head", "argmax", B * V * 2),
                     stream("lm_head", "st_logits", B * V * 2),
                     stream("argmax", "st_token", B * 4)])],
    )


def param_names(layer: int) -> tuple[str, str, str]:
    p = f"model.layers.{layer}"
    return (f"{p}.post_attention_layernorm.weight", f"{p}.mlp.up_proj.weight",
            f"{p}.mlp.down_proj.weight")


def build_toy(*, looped: bool, sockets: int = 1, layers: int = 2) -> Program:
    """The toy decode step; layer 1's weights live in DDR (a per-slice tier)."""
    f = F // sockets
    values = [Value(name="model.embed_tokens.weight", role="param", shape=[V, H], dtype="bf16")]
    tensors = [Tensor(name="embed", kind="weight", shape=[V, H], dtype="bf16", tier="hbm",
                      sources=[Source(value="model.embed_tokens.weight", start=[0, 0],
                                      shape=[V, H], at=[0, 0])])]
    for layer in range(layers):
        norm, up, down = param_names(layer)
        tier = "ddr" if layer == 1 else "hbm"
        values += [Value(name=norm, role="param", shape=[H], dtype="bf16"),
                   Value(name=up, role="param", shape=[F, H], dtype="bf16"),
                   Value(name=down, role="param", shape=[H, F], dtype="bf16")]
        split = sockets > 1
        tensors += [
            Tensor(name=f"l{layer}.norm", kind="weight", shape=[H], dtype="bf16", tier=tier,
                   sources=[Source(value=norm, start=[0], shape=[H], at=[0])]),
            Tensor(name=f"l{layer}.up", kind="weight", shape=[f, H], dtype="bf16", tier=tier,
                   sources=[Source(value=up, start=[0, 0], shape=[f, H], at=[0, 0],
                                   socket_step=[f, 0] if split else None)]),
            Tensor(name=f"l{layer}.down", kind="weight", shape=[H, f], dtype="bf16", tier=tier,
                   sources=[Source(value=down, start=[0, 0], shape=[H, f], at=[0, 0],
                                   socket_step=[0, f] if split else None)]),
        ]
    cache = [layers, B, 1, S, H]
    values += [
        Value(name="model.norm.weight", role="param", shape=[H], dtype="bf16"),
        Value(name="lm_head.weight", role="param", shape=[V, H], dtype="bf16"),
        Value(name="tokens", role="input", shape=[B], dtype="i32"),
        Value(name="positions", role="input", shape=[B], dtype="i32"),
        Value(name="k_cache", role="state", shape=cache, dtype="bf16"),
        Value(name="logits", role="output", shape=[B, V], dtype="bf16"),
        Value(name="next_token", role="output", shape=[B], dtype="i32"),
    ]

    def held(name: str, kind: Any, shape: list[int], dtype: Any) -> Tensor:
        return Tensor(name=name, kind=kind, shape=shape, dtype=dtype, tier="hbm",
                      sources=[Source(value=value_of[name], start=[0] * len(shape), shape=shape,
                                      at=[0] * len(shape))])

    value_of = {"final_norm": "model.norm.weight", "lm_head": "lm_head.weight",
                "tokens": "tokens", "positions": "positions", "k_cache": "k_cache",
                "logits": "logits", "next_token": "next_token"}
    tensors += [
        held("final_norm", "weight", [H], "bf16"),
        held("lm_head", "weight", [V, H], "bf16"),
        held("tokens", "input", [B], "i32"),
        held("positions", "input", [B], "i32"),
        held("k_cache", "kv_cache", cache, "bf16"),
        Tensor(name="k_cache.out", kind="kv_cache", shape=cache, dtype="bf16", tier="hbm",
               aliases="k_cache"),
        Tensor(name="hidden", kind="activation", shape=[B, H], dtype="bf16", tier="hbm"),
        held("logits", "output", [B, V], "bf16"),
        held("next_token", "output", [B], "i32"),
    ]

    def bind(param: str, *tensors_: str | View) -> Binding:
        return Binding(param=param, tensors=[t if isinstance(t, View) else View(tensor=t)
                                             for t in tensors_])

    steps: list[Any] = [Launch(kernel="embed", label="embed",
                               bindings=[bind("table", "embed"), bind("ids", "tokens"),
                                         bind("h", "hidden")])]
    shared = [bind("h", "hidden"), bind("pos", "positions")]
    if looped:
        kernel = layer_kernel(sockets, Loop(trips=layers, prefetch=1,
                                            stacked=["norm", "up", "down", "kc", "kc_out"]),
                              "layer.looped")
        steps.append(Launch(
            kernel=kernel.name, label=f"layers 0-{layers - 1}", layers=list(range(layers)),
            bindings=[*shared,
                      bind("norm", *(f"l{i}.norm" for i in range(layers))),
                      bind("up", *(f"l{i}.up" for i in range(layers))),
                      bind("down", *(f"l{i}.down" for i in range(layers))),
                      bind("kc", "k_cache"), bind("kc_out", "k_cache.out")]))
    else:
        kernel = layer_kernel(sockets, None, "layer")
        steps += [Launch(kernel="layer", label=f"layer {i}", layers=[i],
                         bindings=[*shared, bind("norm", f"l{i}.norm"), bind("up", f"l{i}.up"),
                                   bind("down", f"l{i}.down"),
                                   bind("kc", View(tensor="k_cache", index=[i])),
                                   bind("kc_out", View(tensor="k_cache.out", index=[i]))])
                  for i in range(layers)]
    steps += [Launch(kernel="head", label="head",
                     bindings=[bind("h", "hidden"), bind("norm", "final_norm"),
                               bind("lm", "lm_head"), bind("logits", "logits"),
                               bind("next_token", "next_token")]),
              Sync()]
    return Program(model="toy-mlp", hardware="sn40l", sockets=sockets, launch_mode="software",
                   batch=B, context=S, dtype="bf16", values=values, tensors=tensors,
                   kernels=[embed_kernel(), kernel, head_kernel()], schedule=steps)


# ------------------------------------------------------------------------------------------
# A minimal executor, written from the documented semantics only (the real functional
# simulator is issue 6's): every unit of every socket, in list order, on numpy blocks.
# ------------------------------------------------------------------------------------------


def _slices(ranges: Any, step: Any, j: int) -> tuple[slice, ...]:
    return tuple(slice(a + j * (step[d] if step else 0), b + j * (step[d] if step else 0))
                 for d, (a, b) in enumerate(ranges))


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
    for i in range(trips):
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
        for section in kernel.sections:
            store_ = [{**p, **{b.name: np.zeros(b.shape, N.DTYPES[b.dtype])
                               for b in section.buffers}} for p in params]
            for unit in section.units:
                for j in range(unit.count):
                    ins = [[st[a.name][_slices(a.ranges, a.step, j)] for a in unit.reads]
                           for st in store_]
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
                        results = [N.OPS[unit.op](*x, **unit.attrs, out_dtype=o.dtype)
                                   for x, o in zip(ins, outs)]
                    for o, r in zip(outs, results):
                        o[where] = np.asarray(r).reshape(o[where].shape)


def toy_data(layers: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    from simulator.weights import init_weight

    program = build_toy(looped=False, layers=layers)
    data = {v.name: init_weight(v.name, v.shape, "bf16", seed)
            for v in program.values if v.role == "param"}
    data["tokens"] = np.array([3, 17], dtype=np.int32)
    data["positions"] = np.array([1, 2], dtype=np.int32)
    return data


def reference(data: dict[str, np.ndarray], layers: int = 2) -> dict[str, np.ndarray]:
    x = N.embedding(data["model.embed_tokens.weight"], data["tokens"])
    cache = np.zeros([layers, B, 1, S, H], N.BF16)
    for layer in range(layers):
        norm, up, down = (data[n] for n in param_names(layer))
        xn = N.rms_norm(x, norm, eps=EPS)
        N.kv_cache_write_(cache[layer], xn, data["positions"])
        x = N.add(x, N.linear(N.silu(N.linear(xn, up)), down))
    logits = N.linear(N.rms_norm(x, data["model.norm.weight"], eps=EPS), data["lm_head.weight"])
    return {"logits": logits, "next_token": N.argmax(logits), "k_cache": cache}


def f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


# ------------------------------------------------------------------------------------------
# round trip, determinism, the documented example
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("looped", [False, True])
@pytest.mark.parametrize("sockets", [1, 2])
def test_round_trip_and_deterministic_bytes(looped, sockets, tmp_path):
    program = build_toy(looped=looped, sockets=sockets)
    data = encode_program(program)
    assert data == encode_program(build_toy(looped=looped, sockets=sockets))
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
    for fragment in blocks[1:]:
        assert fragment.strip() in looped


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
    looped = execute(build_toy(looped=True), data)
    for key in want:  # looped and unlooped run the same units on the same data
        assert np.array_equal(f32(flat[key]), f32(looped[key])), key
    np.testing.assert_allclose(f32(flat["logits"]), f32(want["logits"]), rtol=2e-2, atol=2e-2)
    assert np.array_equal(flat["next_token"], want["next_token"])
    assert np.array_equal(f32(flat["k_cache"]), f32(want["k_cache"]))
    assert np.count_nonzero(f32(flat["k_cache"])) == 2 * B * H  # one row per layer and entry


@pytest.mark.parametrize("sockets", [2, 4])
def test_sharded_program_matches(sockets):
    data = toy_data()
    want = reference(data)
    got = execute(build_toy(looped=True, sockets=sockets), data)
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


def test_compact_and_fast_for_many_layers_and_sockets():
    """126 layers on 16 sockets (the shape of llama-3.1-405b's schedule): the SPMD program is
    described once for all sockets and the layer kernel once for all layers; size grows with
    the per-layer tensors and launches, not with the sockets."""
    flat = encode_program(build_toy(looped=False, sockets=16, layers=126))
    looped = encode_program(build_toy(looped=True, sockets=16, layers=126))
    small = encode_program(build_toy(looped=False, sockets=16, layers=2))
    one_socket = encode_program(build_toy(looped=False, sockets=1, layers=126))
    assert len(looped) < len(flat) < 126 * (len(small) // 2)
    assert len(flat) < 1.2 * len(one_socket)
    start = time.perf_counter()
    load_program(flat)
    assert time.perf_counter() - start < 1.0


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
    path.write_bytes(good[:len(good) // 2])
    rejected(path, f"{path}: truncated file")
    broken = good.replace(b'"model": "toy-mlp"', b'"model": toy-mlp"')
    msg = rejected(broken, "<bytes>: malformed JSON at line 4, column")
    assert "invalid character" in msg
    rejected(b"[1, 2]", "<bytes>: $: Expected `object`, got `array`")


def test_wrong_format_and_version():
    d = as_dict()
    rejected(encoded({**d, "format": "onnx"}),
             "$.format: not an rdu-program file: format 'onnx' (expected 'rdu-program')")
    rejected(b'{"kernels": []}', "$.format: not an rdu-program file: no `format` field")
    rejected(encoded({**d, "version": 2}),
             "$.version: program format version 2 is not supported (this simulator reads "
             "version 1)")
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
    rejected(encoded(d), "$.kernels[1].sections[0].units[0].reads[0].ranges[0]: Expected "
                         "`array` of length 2")
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
    "unknown preset": (lambda d: d.update(hardware="tpu"),
                       "$.hardware: unknown hardware preset 'tpu'; known: sn40l"),
    "too many sockets": (lambda d: d.update(sockets=32),
                         "$.sockets: 32 sockets, but sn40l has at most 16"),
    "duplicate tensor": (lambda d: d["tensors"].append(tensor(d, "hidden")),
                         "$.tensors[16].name: duplicate name 'hidden'"),
    "alias unknown": (lambda d: tensor(d, "k_cache.out").update(aliases="kv"),
                      "$.tensors[12].aliases: aliases unknown tensor 'kv'"),
    "alias shape": (lambda d: tensor(d, "k_cache.out").update(shape=[2, 2, 1, 8, 16]),
                    "$.tensors[12].aliases: 'k_cache.out' [2, 2, 1, 8, 16] bf16 in hbm aliases "
                    "'k_cache' [2, 2, 1, 4, 16] bf16 in hbm: an alias is the same buffer"),
    "alias tier": (lambda d: tensor(d, "k_cache.out").update(tier="ddr"),
                   "$.tensors[12].aliases: 'k_cache.out' [2, 2, 1, 4, 16] bf16 in ddr aliases "
                   "'k_cache' [2, 2, 1, 4, 16] bf16 in hbm: an alias is the same buffer, so "
                   "shape, dtype and tier must match"),
    "alias of itself": (lambda d: tensor(d, "k_cache.out").update(aliases="k_cache.out"),
                        "$.tensors[12].aliases: tensor 'k_cache.out' aliases itself"),
    "alias chain": (lambda d: tensor(d, "hidden").update(aliases="k_cache.out"),
                    "$.tensors[13].aliases: aliases 'k_cache.out', which is itself an alias"),
    "alias sources": (lambda d: tensor(d, "k_cache.out").update(
        sources=tensor(d, "k_cache")["sources"]),
        "$.tensors[12].sources: an alias has no sources"),
    "unknown value": (lambda d: tensor(d, "embed")["sources"][0].update(value="wte"),
                      "$.tensors[0].sources[0].value: unknown value 'wte'"),
    "role mismatch": (lambda d: tensor(d, "embed")["sources"][0].update(value="tokens"),
                      "$.tensors[0].sources[0].value: a weight tensor holds param values, but "
                      "'tokens' has role 'input'"),
    "weight without source": (lambda d: tensor(d, "embed").update(sources=[]),
                              "$.tensors[0].sources: a weight tensor needs sources"),
    "activation with source": (lambda d: tensor(d, "hidden").update(
        sources=tensor(d, "tokens")["sources"]),
        "$.tensors[13].sources: an activation tensor has no sources"),
    "source rank": (lambda d: tensor(d, "embed")["sources"][0].update(start=[0]),
                    "$.tensors[0].sources[0].start: 1 entries for value "
                    "'model.embed_tokens.weight' of rank 2"),
    "source outside value": (lambda d: tensor(d, "embed")["sources"][0].update(start=[1, 0]),
                             "$.tensors[0].sources[0].start: shard 0 (sockets 0..0) reads "
                             "[1, 33) of dimension 0 of 'model.embed_tokens.weight' [32, 16]"),
    "source outside tensor": (lambda d: tensor(d, "embed")["sources"][0].update(at=[0, 1]),
                              "$.tensors[0].sources[0].at: block [1, 17) of dimension 1 lies "
                              "outside tensor 'embed' [32, 16]"),
    "sources do not tile": (lambda d: tensor(d, "embed")["sources"][0].update(shape=[16, 16]),
                            "$.tensors[0].sources: sources cover 256 of the 512 elements of "
                            "'embed': they must tile it exactly"),
    "overlapping sources": (_overlapping_sources,
                            "$.tensors[0].sources[1]: overlaps sources[0] in tensor 'embed'"),
    "hbm capacity": (lambda d: tensor(d, "hidden").update(shape=[1 << 20, 1 << 16]),
                     "$.tensors: tensors in hbm need 137438958296 bytes per socket, but sn40l "
                     "has 68719476736"),
    "unknown compute op": (lambda d: unit(d, "act").update(op="gelu_tanh"),
                           f"{U}[10].op: unknown compute op 'gelu_tanh' for a pcu"),
    "pcu all_reduce": (lambda d: unit(d, "act").update(op="all_reduce"),
                       f"{U}[10].op: unknown compute op 'all_reduce' for a pcu"),
    "agcu op": (lambda d: unit(d, "ld_h").update(op="linear"),
                f"{U}[0].op: op 'linear' is not one a agcu runs; known: all_reduce, copy, load, "
                "store"),
    "pmu op": (lambda d: unit(d, "stage_up").update(op="load"),
               f"{U}[8].op: op 'load' is not one a pmu runs; known: copy"),
    "pcu reads a param": (lambda d: unit(d, "act")["reads"][0].update(name="h"),
                          f"{U}[10].reads[0].name: no buffer 'h' here (this op accesses "
                          "buffers)"),
    "load writes a param": (lambda d: unit(d, "ld_h")["write"].update(name="h"),
                            f"{U}[0].write.name: no buffer 'h' here"),
    "load reads a buffer": (lambda d: unit(d, "ld_h")["reads"][0].update(name="x"),
                            f"{U}[0].reads[0].name: no param 'x' here (this op accesses "
                            "params)"),
    "out of bounds": (lambda d: unit(d, "up")["reads"][1].update(step=[20, 0]),
                      f"{U}[9].reads[1].ranges[0]: unit 1 of 2 accesses [20, 36) of dimension 0"
                      " of 'w_up' [32, 16]"),
    "empty range": (lambda d: unit(d, "act")["reads"][0]["ranges"].__setitem__(0, [1, 1]),
                    f"{U}[10].reads[0].ranges[0]: empty range [1, 1)"),
    "rank": (lambda d: unit(d, "act")["reads"][0]["ranges"].pop(),
             f"{U}[10].reads[0]: ranges / step do not match the rank of 'a' [2, 32]"),
    "overlapping writes": (lambda d: unit(d, "up")["write"].pop("step"),
                           f"{U}[9].write.step: the 2 units write overlapping blocks of 'a'"),
    "read before write": (lambda d: units_of(d).insert(0, units_of(d).pop(10)),
                          f"{U}[0].reads[0].name: buffer 'a' is read before any unit writes it"),
    "arity": (lambda d: unit(d, "act")["reads"].append(unit(d, "act")["reads"][0]),
              f"{U}[10].reads: silu takes 1..1 operands, got 2"),
    "unknown attr": (lambda d: unit(d, "norm").update(attrs={"epsilon": 1e-5}),
                     f"{U}[2].attrs.epsilon: rms_norm has no attribute 'epsilon'; it takes eps"),
    "required attr": (lambda d: unit(d, "act").update(
        op="attention", reads=[unit(d, "act")["reads"][0]] * 4),
        f"{U}[10].attrs: attention needs attribute 'head_dim'"),
    "kv write not in place": (lambda d: unit(d, "kv_write")["write"].update(
        ranges=[[0, 1], [0, 1], [0, 4], [0, 16]]),
        f"{U}[5].write: kv_cache_write updates its cache in place"),
    "move reads one": (lambda d: unit(d, "ld_h")["reads"].append(unit(d, "ld_h")["reads"][0]),
                       f"{U}[0].reads: load reads exactly one block, got 2"),
    "move attrs": (lambda d: unit(d, "ld_h").update(attrs={"x": 1}),
                   f"{U}[0].attrs: load takes no attributes"),
    "move volume": (lambda d: unit(d, "ld_h")["write"].update(ranges=[[0, 1], [0, 16]]),
                    f"{U}[0]: load reads 32 elements but writes 16"),
    "move dtype": (lambda d: unit(d, "ld_pos")["write"].update(name="x", ranges=[[0, 1],
                                                                                  [0, 2]]),
                   f"{U}[3]: load cannot convert i32 to bf16"),
    "resources": (lambda d: d["kernels"][1]["sections"][0]["resources"].update(pcus=6),
                  "$.kernels[1].sections[0].resources.pcus: declares 6 but its units use 7"),
    "does not fit": (lambda d: unit(d, "act").update(count=1040),
                     "$.kernels[1].sections[0].resources.pcus: needs 1046 but sn40l has 1040 "
                     "per socket: split the kernel into sections"),
    "pmu bytes": (lambda d: unit(d, "stage_up").update(sram_bytes=1 << 20),
                  f"{U}[8].sram_bytes: 1048576 bytes per PMU, but a sn40l PMU has 524288"),
    "duplicate unit": (lambda d: unit(d, "act").update(id="up"),
                       f"{U}[10].id: duplicate unit id 'up'"),
    "buffer named like a param": (
        lambda d: d["kernels"][1]["sections"][0]["buffers"][0].update(name="h"),
        "$.kernels[1].sections[0].buffers[0].name: buffer 'h' has the name of a param"),
    "stream endpoint": (lambda d: d["kernels"][1]["sections"][0]["streams"][0].update(
        consumer="nobody"), "$.kernels[1].sections[0].streams[0].consumer: no unit 'nobody'"),
    "stream order": (_swap_streams,
                     "$.kernels[1].sections[0].streams[0]: producer 'norm' does not precede "
                     "consumer 'ld_h'"),
    "unknown kernel": (lambda d: launch(d, 1).update(kernel="layer2"),
                       "$.schedule[1].kernel: launches unknown kernel 'layer2'"),
    "unknown param": (lambda d: binding(d, 1, "h").update(param="hh"),
                      "$.schedule[1].bindings[0].param: kernel 'layer' has no param 'hh'"),
    "unbound param": (lambda d: launch(d, 1)["bindings"].pop(0),
                      "$.schedule[1].bindings: param 'h' of kernel 'layer' is not bound"),
    "bound twice": (lambda d: launch(d, 1)["bindings"].append(binding(d, 1, "h")),
                    "$.schedule[1].bindings[7].param: param 'h' bound twice"),
    "unknown tensor": (lambda d: binding(d, 1, "h")["tensors"][0].update(tensor="x"),
                       "$.schedule[1].bindings[0].tensors[0].tensor: unknown tensor 'x'"),
    "view index": (lambda d: binding(d, 1, "kc")["tensors"][0].update(index=[2]),
                   "$.schedule[1].bindings[5].tensors[0].index: index [2] is outside tensor "
                   "'k_cache' [2, 2, 1, 4, 16]"),
    "view shape": (lambda d: binding(d, 1, "up")["tensors"][0].update(tensor="l0.down"),
                   "$.schedule[1].bindings[3].tensors[0]: view is [16, 32] bf16, but param "
                   "'up' needs [32, 16] bf16"),
    "view dtype": (lambda d: binding(d, 1, "pos")["tensors"][0].update(tensor="hidden"),
                   "$.schedule[1].bindings[1].tensors[0]: view is [2, 16] bf16, but param "
                   "'pos' needs [2] i32"),
    "not stacked": (lambda d: binding(d, 1, "up")["tensors"].append({"tensor": "l1.up"}),
                    "$.schedule[1].bindings[3].tensors: param 'up' is not stacked: bind one "
                    "view, got 2"),
    "layers": (lambda d: launch(d, 1).update(layers=[0, 1, 2]),
               "$.schedule[1].layers: 3 layers do not split evenly over the 2 trips of kernel "
               "'layer.looped'", True),
    "no final sync": (lambda d: d["schedule"].pop(),
                      "$.schedule: the schedule must end with a sync"),
}


@pytest.mark.parametrize("name", sorted(SEMANTIC))
def test_semantic_rejections(name):
    mutate, message, *looped = SEMANTIC[name]
    d = as_dict(build_toy(looped=bool(looped)))
    mutate(d)
    rejected(encoded(d), f"<bytes>: {message}")


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
    program = replace_unit(build_toy(looped=False), 1, 2,
                           attrs={"zeta": 1, "eps": 1e-5, "alpha": [0.1, {"b": 1, "a": 2}]})
    data = encode_program(program, check=False)
    assert b'"attrs":{"alpha":[0.1,{"a":2,"b":1}],"eps":0.00001,"zeta":1}' in data


def test_stacked_bindings_vs_trips():
    d = as_dict(build_toy(looped=True))
    d["kernels"][1]["loop"]["trips"] = 3
    msg = rejected(encoded(d))
    assert ("$.schedule[1].bindings[2].tensors: stacked param 'norm' needs 3 views (one per "
            "trip) or one stacked view, got 2") in msg
    assert ("$.schedule[1].bindings[5].tensors[0]: stacked view has leading dimension 2 but "
            "the loop runs 3 trips") in msg
    d = as_dict(build_toy(looped=True))
    d["kernels"][1]["loop"]["stacked"] += ["zz", "norm"]
    msg = rejected(encoded(d))
    assert "$.kernels[1].loop.stacked[5]: stacked 'zz' is not a param of kernel" in msg
    assert "$.kernels[1].loop.stacked[6]: 'norm' listed twice" in msg


def test_socket_dependent_sources():
    d = as_dict(build_toy(looped=True, sockets=2))
    tensor(d, "l0.up")["sources"][0]["socket_step"] = [24, 0]
    rejected(encoded(d), "$.tensors[2].sources[0].start: shard 1 (sockets 1..1) reads [24, 40) "
                         "of dimension 0 of 'model.layers.0.mlp.up_proj.weight' [32, 16]")
    d = as_dict(build_toy(looped=True, sockets=4))
    tensor(d, "l0.up")["sources"][0]["socket_group"] = 3
    rejected(encoded(d), "$.tensors[2].sources[0].socket_group: socket_group 3 does not divide "
                         "the 4 sockets")


def test_many_problems_are_listed_and_capped():
    d = as_dict()
    for t in d["tensors"]:
        t["sources"] = [{"value": "nope", "start": [0], "shape": [1], "at": [0]}] * 3
    message = rejected(encoded(d))
    assert message.count("\n") == 20 and message.endswith("more problems")


def test_validate_against_a_given_preset():
    program = encode_program(build_toy(looped=False))
    small = get_preset("sn40l").replace(pcus=4)
    rejected(program, "$.kernels[1].sections[0].resources.pcus: needs 7 but sn40l has 4",
             preset=small)


def test_dtypes_match_numerics():
    from simulator.program import DType

    assert set(DType.__args__) == set(N.DTYPES)


def test_no_xdsl_or_compiler_import():
    code = ("import simulator.program, simulator.hardware, sys; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('xdsl', 'rdu_dialect', 'passes', 'lowering', 'frontend', 'tools')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)

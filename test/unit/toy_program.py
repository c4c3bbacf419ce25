"""A toy decode step written by hand in the program-file schema (the example of
docs/program_format.md), shared by the program-file tests and the simulator's tests until the
lowering emits real programs: embedding, L layers of ``x += down(silu(up(rms_norm(x))))`` with a
KV-cache-style write of ``rms_norm(x)``, LM head, argmax; tensor parallel over ``sockets`` (up
column-split, down row-split with an all_reduce). ``toy_data`` / ``reference`` give its inputs
and the expected result computed directly with the numerics."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from rdu_compiler.simulator import numerics as N
from rdu_compiler.simulator.program import (
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
    Resources,
    Section,
    Source,
    Stream,
    Sync,
    Tensor,
    Value,
    View,
    Work,
)

V, H, F, B, S = 32, 16, 32, 2, 4
EPS = 1e-5


def block(name: str, *ranges: tuple[int, int], step: list[int] | None = None) -> Access:
    return Access(name=name, ranges=list(ranges), step=step)


def whole(name: str, shape: list[int]) -> Access:
    return Access(name=name, ranges=[(0, n) for n in shape])


def work(flops: int = 0, read: int = 0, written: int = 0, tiles: int = 1) -> Work:
    return Work(flops=flops, bytes_read=read, bytes_written=written, tiles=tiles)


def load(uid: str, param: str, buffer: str, shape: list[int], size: int) -> Agcu:
    return Agcu(
        id=uid,
        op="load",
        reads=[whole(param, shape)],
        write=whole(buffer, shape),
        work=work(read=size, written=size),
    )


def store(uid: str, buffer: str, param: str, shape: list[int], size: int) -> Agcu:
    return Agcu(
        id=uid,
        op="store",
        reads=[whole(buffer, shape)],
        write=whole(param, shape),
        work=work(read=size, written=size),
    )


def stream(producer: str, consumer: str, size: int) -> Stream:
    return Stream(
        producer=producer, consumer=consumer, bytes=size, tile_bytes=min(size, 256) or 256, depth=2
    )


def buffers(*specs: tuple[str, list[int], str]) -> list[Buffer]:
    return [Buffer(name=n, shape=shape, dtype=dtype) for n, shape, dtype in specs]


def layer_kernel(sockets: int, loop: Loop | None, name: str) -> Kernel:
    f = F // sockets  # this socket's share of the MLP width
    h2, bh2 = H * 2, B * H * 2
    half = [f // 2, 0]
    units: list[Any] = [
        load("ld_h", "h", "x", [B, H], bh2),
        load("ld_norm", "norm", "wn", [H], h2),
        Pcu(
            id="norm",
            op="rms_norm",
            mode="simd",
            reads=[whole("x", [B, H]), whole("wn", [H])],
            write=whole("xn", [B, H]),
            attrs={"eps": EPS},
            work=work(read=bh2 + h2, written=bh2),
        ),
        load("ld_pos", "pos", "p", [B], B * 4),
        # the cache block is loaded only to be updated in place: no old row really moves
        Agcu(
            id="ld_kc",
            op="load",
            reads=[whole("kc", [B, 1, S, H])],
            write=whole("cache", [B, 1, S, H]),
            work=work(tiles=0),
        ),
        Pcu(
            id="kv_write",
            op="kv_cache_write",
            mode="simd",
            reads=[whole("cache", [B, 1, S, H]), whole("xn", [B, H]), whole("p", [B])],
            write=whole("cache", [B, 1, S, H]),
            work=work(read=bh2 + B * 4, written=bh2),
        ),
        Agcu(
            id="st_kc",
            op="store",
            reads=[whole("cache", [B, 1, S, H])],
            write=whole("kc_out", [B, 1, S, H]),
            work=work(read=bh2, written=bh2),
        ),
        Agcu(
            id="ld_up",
            op="load",
            count=2,
            reads=[block("up", (0, f // 2), (0, H), step=half)],
            write=block("w_up_in", (0, f // 2), (0, H), step=half),
            work=work(read=f * h2, written=f * h2, tiles=2),
        ),
        Pmu(
            id="stage_up",
            op="copy",
            count=2,
            sram_bytes=f * H,
            buffers=2,
            reads=[block("w_up_in", (0, f // 2), (0, H), step=half)],
            write=block("w_up", (0, f // 2), (0, H), step=half),
            work=work(read=f * h2, written=f * h2, tiles=2),
        ),
        Pcu(
            id="up",
            op="linear",
            mode="systolic",
            count=2,
            reads=[whole("xn", [B, H]), block("w_up", (0, f // 2), (0, H), step=half)],
            write=block("a", (0, B), (0, f // 2), step=[0, f // 2]),
            work=work(flops=2 * B * f * H, read=f * h2 + bh2, written=B * f * 2, tiles=2),
        ),
        Pcu(
            id="act",
            op="silu",
            mode="simd",
            reads=[whole("a", [B, f])],
            write=whole("s", [B, f]),
            work=work(read=B * f * 2, written=B * f * 2),
        ),
        load("ld_down", "down", "w_down", [H, f], f * h2),
    ]
    bufs = buffers(
        ("x", [B, H], "bf16"),
        ("wn", [H], "bf16"),
        ("xn", [B, H], "bf16"),
        ("p", [B], "i32"),
        ("cache", [B, 1, S, H], "bf16"),
        ("w_up_in", [f, H], "bf16"),
        ("w_up", [f, H], "bf16"),
        ("a", [B, f], "bf16"),
        ("s", [B, f], "bf16"),
        ("w_down", [H, f], "bf16"),
        ("y", [B, H], "bf16"),
    )
    down_work = work(flops=2 * B * H * f, read=f * h2 + B * f * 2, written=bh2)
    if sockets == 1:
        units.append(
            Pcu(
                id="down",
                op="linear",
                mode="systolic",
                reads=[whole("s", [B, f]), whole("w_down", [H, f])],
                write=whole("y", [B, H]),
                work=down_work,
            )
        )
        reduced = "down"
    else:  # row-split: f32 partial products, summed over the sockets
        bufs += buffers(("part", [B, H], "f32"))
        units += [
            Pcu(
                id="down",
                op="linear",
                mode="systolic",
                attrs={"accumulate_only": True},
                reads=[whole("s", [B, f]), whole("w_down", [H, f])],
                write=whole("part", [B, H]),
                work=down_work,
            ),
            Agcu(
                id="all_reduce",
                op="all_reduce",
                reads=[whole("part", [B, H])],
                write=whole("y", [B, H]),
                work=work(read=B * H * 4, written=bh2),
            ),
        ]
        reduced = "all_reduce"
    units += [
        Pcu(
            id="residual",
            op="add",
            mode="simd",
            reads=[whole("x", [B, H]), whole("y", [B, H])],
            write=whole("h2", [B, H]),
            work=work(read=2 * bh2, written=bh2),
        ),
        store("st_h", "h2", "h", [B, H], bh2),
    ]
    bufs += buffers(("h2", [B, H], "bf16"))
    streams = [
        stream("ld_h", "norm", bh2),
        stream("ld_norm", "norm", h2),
        stream("norm", "kv_write", bh2),
        stream("ld_pos", "kv_write", B * 4),
        stream("ld_kc", "kv_write", 0),
        stream("kv_write", "st_kc", bh2),
        stream("norm", "up", bh2),
        stream("ld_up", "stage_up", f * h2),
        stream("stage_up", "up", f * h2),
        stream("up", "act", B * f * 2),
        stream("act", "down", B * f * 2),
        stream("ld_down", "down", f * h2),
        *([stream("down", "all_reduce", B * H * 4)] if sockets > 1 else []),
        stream(reduced, "residual", bh2),
        stream("ld_h", "residual", bh2),
        stream("residual", "st_h", bh2),
    ]
    return Kernel(
        name=name,
        params=[
            Param(name="h", shape=[B, H], dtype="bf16"),
            Param(name="norm", shape=[H], dtype="bf16"),
            Param(name="up", shape=[f, H], dtype="bf16"),
            Param(name="down", shape=[H, f], dtype="bf16"),
            Param(name="pos", shape=[B], dtype="i32"),
            Param(name="kc", shape=[B, 1, S, H], dtype="bf16"),
            Param(name="kc_out", shape=[B, 1, S, H], dtype="bf16"),
        ],
        sections=[
            Section(
                resources=Resources(pcus=7, pmus=2, sram_bytes=2 * f * H),
                buffers=bufs,
                units=units,
                streams=streams,
            )
        ],
        loop=loop,
    )


def embed_kernel() -> Kernel:
    units = [
        load("ld_ids", "ids", "token_ids", [B], B * 4),
        Agcu(
            id="ld_table",
            op="load",
            count=2,
            reads=[block("table", (0, V // 2), (0, H), step=[V // 2, 0])],
            write=block("rows", (0, V // 2), (0, H), step=[V // 2, 0]),
            work=work(read=B * H * 2, written=B * H * 2),
        ),  # a gather: only B rows move
        Pcu(
            id="embed",
            op="embedding",
            mode="simd",
            reads=[whole("rows", [V, H]), whole("token_ids", [B])],
            write=whole("x", [B, H]),
            work=work(read=B * H * 2 + B * 4, written=B * H * 2),
        ),
        store("st_h", "x", "h", [B, H], B * H * 2),
    ]
    return Kernel(
        name="embed",
        params=[
            Param(name="table", shape=[V, H], dtype="bf16"),
            Param(name="ids", shape=[B], dtype="i32"),
            Param(name="h", shape=[B, H], dtype="bf16"),
        ],
        sections=[
            Section(
                resources=Resources(pcus=1, pmus=0, sram_bytes=0),
                buffers=buffers(
                    ("token_ids", [B], "i32"), ("rows", [V, H], "bf16"), ("x", [B, H], "bf16")
                ),
                units=units,
                streams=[
                    stream("ld_ids", "embed", B * 4),
                    stream("ld_table", "embed", B * H * 2),
                    stream("embed", "st_h", B * H * 2),
                ],
            )
        ],
    )


def head_kernel() -> Kernel:
    bh2 = B * H * 2
    units = [
        load("ld_h", "h", "x", [B, H], bh2),
        load("ld_norm", "norm", "wn", [H], H * 2),
        Pcu(
            id="norm",
            op="rms_norm",
            mode="simd",
            reads=[whole("x", [B, H]), whole("wn", [H])],
            write=whole("xn", [B, H]),
            attrs={"eps": EPS},
            work=work(read=bh2 + H * 2, written=bh2),
        ),
        Agcu(
            id="ld_lm",
            op="load",
            count=2,
            reads=[block("lm", (0, V // 2), (0, H), step=[V // 2, 0])],
            write=block("w_lm", (0, V // 2), (0, H), step=[V // 2, 0]),
            work=work(read=V * H * 2, written=V * H * 2, tiles=2),
        ),
        Pcu(
            id="lm_head",
            op="linear",
            mode="systolic",
            count=2,
            reads=[whole("xn", [B, H]), block("w_lm", (0, V // 2), (0, H), step=[V // 2, 0])],
            write=block("scores", (0, B), (0, V // 2), step=[0, V // 2]),
            work=work(flops=2 * B * V * H, read=V * H * 2 + bh2, written=B * V * 2, tiles=2),
        ),
        Pcu(
            id="argmax",
            op="argmax",
            mode="simd",
            reads=[whole("scores", [B, V])],
            write=whole("token", [B]),
            work=work(read=B * V * 2, written=B * 4),
        ),
        store("st_logits", "scores", "logits", [B, V], B * V * 2),
        store("st_token", "token", "next_token", [B], B * 4),
    ]
    return Kernel(
        name="head",
        params=[
            Param(name="h", shape=[B, H], dtype="bf16"),
            Param(name="norm", shape=[H], dtype="bf16"),
            Param(name="lm", shape=[V, H], dtype="bf16"),
            Param(name="logits", shape=[B, V], dtype="bf16"),
            Param(name="next_token", shape=[B], dtype="i32"),
        ],
        sections=[
            Section(
                resources=Resources(pcus=4, pmus=0, sram_bytes=0),
                buffers=buffers(
                    ("x", [B, H], "bf16"),
                    ("wn", [H], "bf16"),
                    ("xn", [B, H], "bf16"),
                    ("w_lm", [V, H], "bf16"),
                    ("scores", [B, V], "bf16"),
                    ("token", [B], "i32"),
                ),
                units=units,
                streams=[
                    stream("ld_h", "norm", bh2),
                    stream("ld_norm", "norm", H * 2),
                    stream("norm", "lm_head", bh2),
                    stream("ld_lm", "lm_head", V * H * 2),
                    stream("lm_head", "argmax", B * V * 2),
                    stream("lm_head", "st_logits", B * V * 2),
                    stream("argmax", "st_token", B * 4),
                ],
            )
        ],
    )


def param_names(layer: int) -> tuple[str, str, str]:
    p = f"model.layers.{layer}"
    return (
        f"{p}.post_attention_layernorm.weight",
        f"{p}.mlp.up_proj.weight",
        f"{p}.mlp.down_proj.weight",
    )


def held(
    name: str,
    value: str,
    kind: Any,
    shape: list[int],
    dtype: Any = "bf16",
    tier: Any = "hbm",
    socket_step: list[int] | None = None,
) -> Tensor:
    """An off-chip tensor holding all of `value` (each socket its `socket_step` slice)."""
    zero = [0] * len(shape)
    source = Source(value=value, start=zero, shape=shape, at=zero, socket_step=socket_step)
    return Tensor(name=name, kind=kind, shape=shape, dtype=dtype, tier=tier, sources=[source])


def renamed(kernel: Kernel, prefix: str, params: dict[str, str]) -> Kernel:
    """``kernel`` with its unit ids prefixed and its params renamed (``params``: old -> new),
    in the accesses and streams too: a part of a one-launch kernel."""

    def access(a: Access) -> Access:
        return msgspec.structs.replace(a, name=params.get(a.name, a.name))

    sections = [
        msgspec.structs.replace(
            section,
            units=[
                msgspec.structs.replace(
                    u, id=prefix + u.id, reads=[access(a) for a in u.reads], write=access(u.write)
                )
                for u in section.units
            ],
            streams=[
                msgspec.structs.replace(
                    st, producer=prefix + st.producer, consumer=prefix + st.consumer
                )
                for st in section.streams
            ],
        )
        for section in kernel.sections
    ]
    return msgspec.structs.replace(
        kernel,
        params=[msgspec.structs.replace(p, name=params.get(p.name, p.name)) for p in kernel.params],
        sections=sections,
    )


def one_launch_kernel(loop_kernel: Kernel, together: bool) -> Kernel:
    """The embedding, the looped layer and the head as one kernel (``Loop.sections`` over the
    layer's section), the prologue and epilogue ``configured_with_previous`` if
    ``together``: what `merge-launches` makes of the looped program's three launches."""
    embed = renamed(embed_kernel(), "embed.", {})
    head = renamed(head_kernel(), "head.", {"norm": "final_norm"})
    assert loop_kernel.loop is not None
    sections = [
        *embed.sections,
        msgspec.structs.replace(loop_kernel.sections[0], configured_with_previous=together),
        msgspec.structs.replace(head.sections[0], configured_with_previous=together),
    ]
    params = {p.name: p for k in (embed, loop_kernel, head) for p in k.params}
    return Kernel(
        name="embed+layer.looped+head",
        params=list(params.values()),
        sections=sections,
        loop=msgspec.structs.replace(loop_kernel.loop, sections=(1, 2)),
    )


def build_toy(
    *, looped: bool, sockets: int = 1, layers: int = 2, one_launch: bool | None = None
) -> Program:
    """The toy decode step; layer 1's weights live in DDR (a per-slice tier). With
    ``one_launch`` (looped only) the embedding, the loop and the head are one launch of one
    kernel, configured together (True) or in three configurations (False)."""
    f = F // sockets
    values = [Value(name="model.embed_tokens.weight", role="param", shape=[V, H], dtype="bf16")]
    tensors = [held("embed", "model.embed_tokens.weight", "weight", [V, H])]
    for layer in range(layers):
        norm, up, down = param_names(layer)
        tier = "ddr" if layer == 1 else "hbm"
        values += [
            Value(name=norm, role="param", shape=[H], dtype="bf16"),
            Value(name=up, role="param", shape=[F, H], dtype="bf16"),
            Value(name=down, role="param", shape=[H, F], dtype="bf16"),
        ]
        split = sockets > 1  # up column-split, down row-split
        up_step, down_step = ([f, 0], [0, f]) if split else (None, None)
        tensors += [
            held(f"l{layer}.norm", norm, "weight", [H], tier=tier),
            held(f"l{layer}.up", up, "weight", [f, H], tier=tier, socket_step=up_step),
            held(f"l{layer}.down", down, "weight", [H, f], tier=tier, socket_step=down_step),
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
    tensors += [
        held("final_norm", "model.norm.weight", "weight", [H]),
        held("lm_head", "lm_head.weight", "weight", [V, H]),
        held("tokens", "tokens", "input", [B], "i32"),
        held("positions", "positions", "input", [B], "i32"),
        held("k_cache", "k_cache", "kv_cache", cache),
        Tensor(
            name="k_cache.out",
            kind="kv_cache",
            shape=cache,
            dtype="bf16",
            tier="hbm",
            aliases="k_cache",
        ),
        Tensor(name="hidden", kind="activation", shape=[B, H], dtype="bf16", tier="hbm"),
        held("logits", "logits", "output", [B, V]),
        held("next_token", "next_token", "output", [B], "i32"),
    ]

    def bind(param: str, *tensors_: str | View) -> Binding:
        return Binding(
            param=param, tensors=[t if isinstance(t, View) else View(tensor=t) for t in tensors_]
        )

    steps: list[Any] = [
        Launch(
            kernel="embed",
            label="embed",
            bindings=[bind("table", "embed"), bind("ids", "tokens"), bind("h", "hidden")],
        )
    ]
    shared = [bind("h", "hidden"), bind("pos", "positions")]
    if looped:
        kernel = layer_kernel(
            sockets,
            Loop(trips=layers, prefetch=1, stacked=["norm", "up", "down", "kc", "kc_out"]),
            "layer.looped",
        )
        steps.append(
            Launch(
                kernel=kernel.name,
                label=f"layers 0-{layers - 1}",
                layers=list(range(layers)),
                bindings=[
                    *shared,
                    bind("norm", *(f"l{i}.norm" for i in range(layers))),
                    bind("up", *(f"l{i}.up" for i in range(layers))),
                    bind("down", *(f"l{i}.down" for i in range(layers))),
                    bind("kc", "k_cache"),
                    bind("kc_out", "k_cache.out"),
                ],
            )
        )
    else:
        kernel = layer_kernel(sockets, None, "layer")
        steps += [
            Launch(
                kernel="layer",
                label=f"layer {i}",
                layers=[i],
                bindings=[
                    *shared,
                    bind("norm", f"l{i}.norm"),
                    bind("up", f"l{i}.up"),
                    bind("down", f"l{i}.down"),
                    bind("kc", View(tensor="k_cache", index=[i])),
                    bind("kc_out", View(tensor="k_cache.out", index=[i])),
                ],
            )
            for i in range(layers)
        ]
    steps += [
        Launch(
            kernel="head",
            label="head",
            bindings=[
                bind("h", "hidden"),
                bind("norm", "final_norm"),
                bind("lm", "lm_head"),
                bind("logits", "logits"),
                bind("next_token", "next_token"),
            ],
        ),
        Sync(),
    ]
    kernels = [embed_kernel(), kernel, head_kernel()]
    if one_launch is not None:
        assert looped, "one launch per step needs the looped layers"
        kernel = one_launch_kernel(kernel, one_launch)
        embed, loop, head = steps[:3]
        bindings = {b.param: b for b in (*embed.bindings, *loop.bindings)}
        for b in head.bindings:
            name = "final_norm" if b.param == "norm" else b.param
            bindings[name] = msgspec.structs.replace(b, param=name)
        kernels = [kernel]
        steps = [
            Launch(
                kernel=kernel.name,
                label=f"embed, {loop.label}, head",
                layers=loop.layers,
                bindings=list(bindings.values()),
            ),
            Sync(),
        ]
    return Program(
        model="toy-mlp",
        hardware="sn40l",
        sockets=sockets,
        launch_mode="software",
        batch=B,
        context=S,
        dtype="bf16",
        values=values,
        tensors=tensors,
        kernels=kernels,
        schedule=steps,
    )


def toy_data(layers: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    from rdu_compiler.simulator.weights import init_weight

    program = build_toy(looped=False, layers=layers)
    data = {
        v.name: init_weight(v.name, v.shape, "bf16", seed)
        for v in program.values
        if v.role == "param"
    }
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

"""`rdu-run MODEL`: run decode steps of a model.

The prompt's token ids are fed one per decode step (teacher forcing), then `--steps N` tokens
are generated greedily (like HF `max_new_tokens`: the last one is not fed back), so
`len(prompt) + N - 1` decode steps run, at positions 0, 1, ... Every batch entry gets the same
prompt for now (so all entries produce the same tokens).

Only `--engine reference` exists so far: the llm-level numpy semantics (the module from
`frontend.builder`, handed in-process to `rdu_dialect.interpreter`). The options that belong to
the simulator engine (`--engine sim`, `--sockets` > 1, `--no-kernel-looping`, `--functional`,
`--launch`) are accepted by the parser and refused with a message saying so, rather than
silently ignored.

`--json` prints `{"model", "engine", "sockets", "batch", "context", "tokens", ...}` with
`tokens` one list of generated ids per batch entry; `--logits-out FILE.npy` saves the last
step's logits as float32 `[batch, vocab]` (the bf16 values, exactly).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence

from tools.cli import UserError, run_tool, write_atomically

PROG = "rdu-run"
SIM_ONLY = "the simulator engine is not available yet (only --engine reference runs for now)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL",
                   help="preset name, HF config.json, or HF model folder")
    p.add_argument("--engine", choices=("reference", "sim"), default="reference",
                   help="reference: llm-level numpy semantics (sim: not available yet)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--weights", metavar="PATH",
                        help="safetensors file or HF model folder (HF tensor names)")
    source.add_argument("--seed", type=int, help="seeded random init (default: seed 0)")
    p.add_argument("--prompt", default="1", metavar="IDS",
                   help="comma-separated token ids fed one per step (default: 1)")
    p.add_argument("--steps", type=int, default=8, metavar="N",
                   help="tokens to generate greedily after the prompt (default: 8)")
    p.add_argument("--batch", type=int, default=1, metavar="B",
                   help="batch entries (all get the same prompt for now)")
    p.add_argument("--context", type=int, metavar="S",
                   help="KV cache length (default: min(max positions, 4096))")
    p.add_argument("--layers", type=int, metavar="N", help="use only the first N layers")
    p.add_argument("--dtype", choices=("bf16", "f32"), default="bf16",
                   help="data type of weights, activations and caches")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--logits-out", metavar="FILE.npy", help="save the last step's logits")
    sim = p.add_argument_group("simulator engine options (not available yet)")
    sim.add_argument("--sockets", type=int, default=1, metavar="N")
    sim.add_argument("--no-kernel-looping", action="store_true")
    sim.add_argument("--functional", action="store_true")
    sim.add_argument("--launch", metavar="MODE")
    return p


def _refuse_sim_options(args: argparse.Namespace) -> None:
    used = [flag for flag, on in (
        ("--engine sim", args.engine == "sim"),
        (f"--sockets {args.sockets}", args.sockets != 1),
        ("--no-kernel-looping", args.no_kernel_looping),
        ("--functional", args.functional),
        (f"--launch {args.launch}", args.launch is not None),
    ) if on]
    if used:
        raise UserError(f"{', '.join(used)}: {SIM_ONLY}")


def _prompt(text: str, vocab: int, model: str) -> list[int]:
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--prompt must be comma-separated token ids, got {text!r}") from None
    if not ids:
        raise UserError("--prompt needs at least one token id")
    for t in ids:
        if not 0 <= t < vocab:
            raise UserError(f"--prompt token {t} is out of range for the vocabulary of {model} "
                            f"({vocab} tokens: 0..{vocab - 1})")
    return ids


def _positive(name: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise UserError(f"{name} must be >= {minimum}, got {value}")


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _refuse_sim_options(args)
    for name, value in (("--batch", args.batch), ("--context", args.context),
                        ("--layers", args.layers)):
        _positive(name, value)
    _positive("--steps", args.steps, 0)

    import numpy as np

    from frontend.builder import build_decode_step, default_context
    from frontend.config import load_model_config
    from rdu_dialect.interpreter import ReferenceEngine, ReferenceEngineError
    from simulator.weights import open_weights

    config = load_model_config(args.model, layers=args.layers)
    prompt = _prompt(args.prompt, config.vocab_size, config.name)
    context = default_context(config) if args.context is None else args.context
    n_steps = len(prompt) + max(args.steps, 1) - 1
    if context < n_steps:
        raise UserError(f"--context {context} is too small for a {len(prompt)}-token prompt and "
                        f"{args.steps} generated tokens: {n_steps} decode steps need at least "
                        f"{n_steps} cache rows")
    weights = open_weights(args.weights, args.seed)
    module = build_decode_step(config, batch=args.batch, context=context, dtype=args.dtype)
    try:
        engine = ReferenceEngine(module, weights)
        k_cache, v_cache = engine.new_caches()
        generated: list[np.ndarray] = []
        for position in range(n_steps):
            fed = prompt[position] if position < len(prompt) else generated[-1]
            tokens = np.full(args.batch, fed, np.int32)
            logits, next_tokens, k_cache, v_cache = engine.step(
                tokens, np.full(args.batch, position, np.int32), k_cache, v_cache)
            if position >= len(prompt) - 1 and len(generated) < args.steps:
                generated.append(next_tokens)
    except ReferenceEngineError as error:
        raise UserError(str(error)) from None
    per_entry = np.stack(generated, axis=1).tolist() if generated else [[]] * args.batch

    if args.logits_out:
        buffer = io.BytesIO()
        np.save(buffer, logits.astype(np.float32))
        write_atomically(args.logits_out, buffer.getvalue())
    if args.json:
        print(json.dumps({
            "model": config.name, "engine": args.engine, "sockets": args.sockets,
            "batch": args.batch, "context": context, "tokens": per_entry,
            "prompt": prompt, "dtype": args.dtype, "weights": weights.describe(),
        }))
    else:
        print(f"{config.name}: {args.engine} engine, {weights.describe()}, batch {args.batch}, "
              f"context {context}, {args.dtype}")
        print(f"prompt: {', '.join(map(str, prompt))}")
        for b, tokens in enumerate(per_entry):
            label = "generated" if args.batch == 1 else f"entry {b}"
            print(f"{label}: {', '.join(map(str, tokens))}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(PROG, lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Generate golden decode logits from Hugging Face ``transformers`` for the tiny presets.

NOT a test, and not run by CI (CI has no PyTorch): a maintainer runs it in a separate venv that
has torch + transformers, and commits the resulting ``test/golden/<preset>.npz`` fixtures. Tests
only read those files. See ``test/golden/README.md`` for the exact command and versions.

For each preset the fixture is produced from nothing but the preset's ``config.json`` and the
project's seeded init (``RandomWeights(seed).get(name, shape, "bf16")``, by checkpoint name):

1. The HF model is built from the config dict (``AutoConfig.for_model`` +
   ``AutoModelForCausalLM.from_config``), float32, eval mode, eager attention (and eager MoE
   experts).
2. Every HF parameter is filled from the seeded init (bf16 values upcast exactly to float32).
   Names are matched strictly against ``ModelConfig.checkpoint_tensors()``: an HF parameter with
   no checkpoint tensor, or a checkpoint tensor HF does not use, is an error. transformers >= 5
   stores Mixtral experts fused (``mlp.experts.gate_up_proj [E, 2F, H]`` = cat(w1, w3),
   ``mlp.experts.down_proj [E, H, F]`` = w2, ``mlp.gate`` = ``block_sparse_moe.gate``); that
   mapping is cross-checked by also saving the checkpoint with the project's
   ``save_safetensors`` and loading it through HF's own ``from_pretrained`` (its checkpoint
   conversion): both models must hold bit-identical parameters, with no missing / unexpected /
   mismatched keys.
3. Decode, one token per step with HF's KV cache (teacher forcing), batch 2 at different
   positions: entry 0 feeds ``STEPS`` tokens at positions 0..STEPS-1; entry 1 first feeds
   ``PAD`` left-padding steps (masked out through ``attention_mask``), then ``STEPS - PAD``
   tokens at positions 0..STEPS-PAD-1 (explicit ``position_ids``). The batched run is checked
   against (a) a batch-1 cached decode of each entry alone and (b) a single no-cache forward of
   each entry's whole sequence; any disagreement beyond ``CHECK_TOL`` aborts.

Output ``test/golden/<preset>.npz`` (``np.load(..., allow_pickle=False)`` works):

* ``tokens``    [steps, B] int32  - token fed at each step (``PAD_TOKEN`` on padding steps)
* ``positions`` [steps, B] int32  - RoPE position of that token; -1 on padding steps
* ``valid``     [steps, B] bool   - False on padding steps
* ``logits``    [steps, B, vocab] float32 - next-token logits after feeding that token
  (exactly 0.0 on padding steps: never compare them)
* scalars: ``preset``, ``seed``, ``weight_dtype`` ("bf16": the init was rounded to bf16),
  ``dtype`` (compute dtype, "float32"), ``transformers_version``, ``torch_version``,
  ``attn_implementation``, ``token_seed``.

Usage (from the repo root)::

    /work/golden-venv/bin/python test/golden/make_golden.py [--presets tiny-llama tiny-mixtral]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from rdu_compiler.frontend.config import load_model_config, read_config_dict  # noqa: E402
from rdu_compiler.simulator.weights import RandomWeights, save_safetensors  # noqa: E402

TINY_PRESETS = (
    "tiny-llama",
    "tiny-mistral",
    "tiny-qwen2",
    "tiny-mixtral",
    "tiny-qwen3",
    "tiny-alternating",
)
SEED = 0  # RandomWeights seed
TOKEN_SEED = 1234  # numpy seed for the teacher-forced token ids
STEPS = 16  # decode steps (entry 0 ends at position 15: windows of 8 slide)
PAD = 4  # left-padding steps of entry 1 (entry 1 ends at position 11)
PAD_TOKEN = 0
BATCH = 2
CHECK_TOL = 1e-4  # batched-vs-single and cached-vs-uncached agreement (float32)
ATTN = "eager"


# --------------------------------------------------------------------------------------------
# model + weights
# --------------------------------------------------------------------------------------------


def build_hf_config(preset: str):
    cfg = read_config_dict(preset)
    hf_cfg = AutoConfig.for_model(**cfg)
    return cfg, hf_cfg


def seeded_checkpoint(preset: str, seed: int) -> dict[str, np.ndarray]:
    """Checkpoint name -> bf16 (ml_dtypes) array, for every tensor the project lists."""
    mc = load_model_config(preset)
    rw = RandomWeights(seed=seed)
    out: dict[str, np.ndarray] = {}
    for spec in mc.checkpoint_tensors():
        if spec.name in out:
            raise RuntimeError(f"{preset}: checkpoint tensor {spec.name} listed twice")
        out[spec.name] = rw.get(spec.name, spec.shape, "bf16")
    return out


def hf_parameter_values(preset: str, model, ckpt: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF parameter name -> float32 value, built from the checkpoint by name. Strict both ways."""
    mc = load_model_config(preset)
    f32 = {k: np.asarray(v, dtype=np.float32) for k, v in ckpt.items()}
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in f32:
            raise RuntimeError(
                f"{preset}: HF needs checkpoint tensor {name!r}, which "
                f"checkpoint_tensors() does not list"
            )
        used.add(name)
        return f32[name]

    values: dict[str, np.ndarray] = {}
    for hf_name, p in model.named_parameters():  # tied lm_head is deduplicated away
        shape = tuple(p.shape)
        parts = hf_name.split(".")
        if mc.is_moe and ".mlp.experts." in hf_name:
            i = int(parts[2])
            E = mc.num_experts
            pre = f"model.layers.{i}.block_sparse_moe.experts"
            if parts[-1] == "gate_up_proj":  # [E, 2F, H] = cat(w1 (gate), w3 (up)) on dim 1
                v = np.stack(
                    [
                        np.concatenate(
                            [take(f"{pre}.{j}.w1.weight"), take(f"{pre}.{j}.w3.weight")], axis=0
                        )
                        for j in range(E)
                    ]
                )
            elif parts[-1] == "down_proj":  # [E, H, F] = w2
                v = np.stack([take(f"{pre}.{j}.w2.weight") for j in range(E)])
            else:
                raise RuntimeError(f"{preset}: unknown HF expert parameter {hf_name}")
        elif mc.is_moe and hf_name.endswith(".mlp.gate.weight"):
            v = take(hf_name.replace(".mlp.gate.", ".block_sparse_moe.gate."))
        else:
            v = take(hf_name)
        if v.shape != shape:
            raise RuntimeError(
                f"{preset}: HF parameter {hf_name} has shape {shape}, the "
                f"checkpoint gives {v.shape}"
            )
        values[hf_name] = v

    unused = sorted(set(f32) - used)
    if unused:
        raise RuntimeError(f"{preset}: checkpoint tensors HF does not use: {unused}")
    # tied embeddings: HF must share the tensor, and our list must not have a separate lm_head
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    if tied != mc.tie_word_embeddings:
        raise RuntimeError(
            f"{preset}: HF tied={tied} but ModelConfig.tie_word_embeddings={mc.tie_word_embeddings}"
        )
    return values


def build_model(preset: str, seed: int):
    cfg, hf_cfg = build_hf_config(preset)
    model = AutoModelForCausalLM.from_config(
        hf_cfg,
        dtype=torch.float32,
        attn_implementation=ATTN,
        **({"experts_implementation": "eager"} if load_model_config(preset).is_moe else {}),
    )
    model.eval()
    ckpt = seeded_checkpoint(preset, seed)
    values = hf_parameter_values(preset, model, ckpt)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, v in values.items():
            params[name].copy_(torch.from_numpy(v))
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise RuntimeError(f"{preset}: model is not float32")

    # Cross-check the name mapping through HF's own checkpoint loader.
    with tempfile.TemporaryDirectory() as tmp:
        hf_cfg.save_pretrained(tmp)
        save_safetensors(Path(tmp) / "model.safetensors", ckpt, metadata={"format": "pt"})
        loaded, info = AutoModelForCausalLM.from_pretrained(
            tmp,
            dtype=torch.float32,
            attn_implementation=ATTN,
            output_loading_info=True,
            **({"experts_implementation": "eager"} if load_model_config(preset).is_moe else {}),
        )
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise RuntimeError(f"{preset}: HF from_pretrained of the project checkpoint reports {bad}")
    sd_a, sd_b = model.state_dict(), loaded.state_dict()
    if set(sd_a) != set(sd_b):
        raise RuntimeError(f"{preset}: state_dict keys differ: {set(sd_a) ^ set(sd_b)}")
    for k in sd_a:
        if not torch.equal(sd_a[k], sd_b[k]):
            raise RuntimeError(f"{preset}: {k} differs between the by-name fill and HF's loader")
    return model


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------


def make_inputs(vocab: int):
    """tokens/positions/valid [STEPS, BATCH] for the left-padded layout (see module doc)."""
    rng = np.random.default_rng(TOKEN_SEED)
    seq0 = rng.integers(3, vocab, size=STEPS)  # avoid pad/bos/eos ids 0..2
    seq1 = rng.integers(3, vocab, size=STEPS - PAD)
    tokens = np.full((STEPS, BATCH), PAD_TOKEN, dtype=np.int32)
    positions = np.full((STEPS, BATCH), -1, dtype=np.int32)
    tokens[:, 0] = seq0
    positions[:, 0] = np.arange(STEPS)
    tokens[PAD:, 1] = seq1
    positions[PAD:, 1] = np.arange(STEPS - PAD)
    return tokens, positions, positions >= 0


@torch.no_grad()
def decode(model, tokens: np.ndarray, positions: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Step-by-step cached decode; returns logits [steps, B, vocab] (0 on padding steps)."""
    steps, b = tokens.shape
    past = None
    out = []
    for s in range(steps):
        ids = torch.from_numpy(tokens[s].astype(np.int64)).view(b, 1)
        pos = torch.from_numpy(np.maximum(positions[s], 0).astype(np.int64)).view(b, 1)
        mask = torch.from_numpy(valid[: s + 1].T.astype(np.int64))  # [B, past + 1]
        r = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=past,
            use_cache=True,
        )
        past = r.past_key_values
        lg = r.logits[:, -1, :].float().numpy().copy()
        lg[~valid[s]] = 0.0
        out.append(lg)
    return np.stack(out).astype(np.float32)


@torch.no_grad()
def full_forward(model, seq: np.ndarray) -> np.ndarray:
    ids = torch.from_numpy(seq.astype(np.int64)).view(1, -1)
    return model(input_ids=ids, use_cache=False).logits[0].float().numpy()


def check(preset: str, what: str, a: np.ndarray, b: np.ndarray) -> float:
    d = float(np.max(np.abs(a - b)))
    if not np.isfinite(d) or d > CHECK_TOL:
        raise RuntimeError(f"{preset}: {what}: max |diff| {d:.3g} > {CHECK_TOL}")
    return d


def make_golden(preset: str, out_dir: Path) -> Path:
    torch.manual_seed(0)
    model = build_model(preset, SEED)
    vocab = model.config.vocab_size
    tokens, positions, valid = make_inputs(vocab)
    logits = decode(model, tokens, positions, valid)
    if not np.all(np.isfinite(logits)):
        raise RuntimeError(f"{preset}: non-finite logits")

    # Self-consistency: each entry decoded alone (batch 1, no padding) and in one full forward.
    diffs = []
    for e in range(BATCH):
        rows = valid[:, e]
        t1, p1, v1 = tokens[rows, e : e + 1], positions[rows, e : e + 1], valid[rows, e : e + 1]
        single = decode(model, t1, p1, v1)[:, 0]
        diffs.append(
            check(preset, f"entry {e}: batched vs batch-1 decode", logits[rows, e], single)
        )
        diffs.append(
            check(
                preset,
                f"entry {e}: cached decode vs full forward",
                single,
                full_forward(model, t1[:, 0]),
            )
        )

    path = out_dir / f"{preset}.npz"
    np.savez_compressed(
        path,
        tokens=tokens,
        positions=positions,
        valid=valid,
        logits=logits,
        preset=np.array(preset),
        seed=np.array(SEED, dtype=np.int64),
        token_seed=np.array(TOKEN_SEED, dtype=np.int64),
        weight_dtype=np.array("bf16"),
        dtype=np.array("float32"),
        attn_implementation=np.array(ATTN),
        transformers_version=np.array(transformers.__version__),
        torch_version=np.array(torch.__version__),
    )
    print(
        f"{preset}: wrote {path.relative_to(REPO)} ({path.stat().st_size} bytes); "
        f"logits std {logits[valid].std():.3f}; self-consistency max |diff| {max(diffs):.2e}"
    )
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=list(TINY_PRESETS), metavar="PRESET")
    ap.add_argument("--out-dir", type=Path, default=HERE)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # deterministic reductions
    transformers.utils.logging.disable_progress_bar()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for p in args.presets:
        make_golden(p, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write a Hugging Face style model folder for a preset: `config.json`, `model.safetensors` with
seeded random weights (the same values `--seed N` gives), and a small word-level
`tokenizer.json`, so that the README's `--weights` and text-prompt examples run without a
download.

    python examples/make_model_folder.py tiny-qwen2 ./ckpt --seed 3
    rdu-run tiny-qwen2 --engine reference --weights ./ckpt/ --json
    rdu-run ./ckpt --functional --prompt 'the cat sat on the mat'

The tokenizer is a toy (one id per word of a fixed list, the rest `w<N>`): the weights are
random, so no tokenizer makes the output meaningful; it shows the plumbing.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers

from rdu_compiler.frontend.config import load_model_config, preset_path
from rdu_compiler.simulator.weights import RandomWeights, save_safetensors

WORDS = "[UNK] the a cat dog sat on mat hello world is and of to in it".split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", help="a bundled preset (rdu-run --list-models)")
    parser.add_argument("folder", type=Path, help="where to write the model folder")
    parser.add_argument("--seed", type=int, default=0, help="random init seed (default 0)")
    args = parser.parse_args()
    config = load_model_config(args.preset)
    args.folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(preset_path(args.preset), args.folder / "config.json")
    weights = RandomWeights(args.seed)
    save_safetensors(
        args.folder, {t.name: weights.get(t.name, t.shape) for t in config.checkpoint_tensors()}
    )
    vocab = WORDS + [f"w{i}" for i in range(len(WORDS), config.vocab_size)]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(args.folder / "tokenizer.json"))
    print(f"wrote {args.folder}: config.json, model.safetensors (seed {args.seed}), tokenizer.json")


if __name__ == "__main__":
    main()

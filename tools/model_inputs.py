"""What rdu-run reads besides the model's configuration: its weights (a checkpoint given with
`--weights`, the one in the model folder, or seeded random init), checked against the tensors
the configuration uses; its tokenizer (`tokenizer.json` in the model folder, or `--tokenizer`);
and the prompt, as token ids or, with a tokenizer, as text.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdu_compiler.tools.cli import UserError, parse_prompt

_IDS = re.compile(r"^\s*\d+(\s*,\s*\d+)*\s*,?\s*$")
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def model_folder(model: str) -> Path | None:
    """The HF model folder MODEL names (the folder, or the folder of its `config.json`), else
    None (a preset name, or another file)."""
    from rdu_compiler.frontend.config import list_presets

    if model.strip().lower() in list_presets():
        return None
    path = Path(model).expanduser()
    if path.is_file() and path.name == "config.json":
        return path.parent
    return path if path.is_dir() else None


def has_checkpoint(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json"))


def open_model_weights(model: str, weights: str | None, seed: int | None, config: Any) -> Any:
    """The weight source of a run that computes numbers: `--weights PATH`, else the model
    folder's checkpoint when it has one, else seeded random init (seed 0 unless `--seed`).
    A checkpoint must hold every tensor the configuration uses (else an error naming the first
    missing ones); tensors it holds that the configuration does not use get a warning on stderr
    (a checkpoint of another architecture, say), except the layers `--layers` leaves out."""
    from rdu_compiler.simulator.weights import open_weights

    folder = model_folder(model)
    if weights is None and seed is None and folder is not None and has_checkpoint(folder):
        weights = str(folder)
    source = open_weights(weights, seed)
    if weights is not None:
        _check_tensors(source, config, weights)
    return source


def _check_tensors(source: Any, config: Any, path: str) -> None:
    wanted = {t.name for t in config.checkpoint_tensors()}
    held = set(source.ckpt)
    missing = sorted(wanted - held)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UserError(
            f"checkpoint {path} lacks {len(missing)} tensor(s) {config.name} needs: "
            f"{', '.join(missing[:3])}{more}"
        )
    unused = sorted(
        name
        for name in held - wanted
        if not ((m := _LAYER.search(name)) and int(m.group(1)) >= config.num_layers)
    )
    if unused:
        more = f" and {len(unused) - 3} more" if len(unused) > 3 else ""
        print(
            f"rdu-run: warning: checkpoint {path} holds {len(unused)} tensor(s) {config.name} "
            f"does not use (another architecture?): {', '.join(unused[:3])}{more}",
            file=sys.stderr,
        )


@dataclass
class Tokenizer:
    """A `tokenizers` tokenizer and where it came from."""

    path: str
    impl: Any

    def encode(self, text: str) -> list[int]:
        return self.impl.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.impl.decode(ids, skip_special_tokens=False)


def open_tokenizer(model: str, explicit: str | None) -> Tokenizer | None:
    """`--tokenizer PATH` (a tokenizer.json, or a folder holding one), else the model folder's
    tokenizer.json, else None."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise UserError(f"--tokenizer {explicit}: no such tokenizer.json")
    else:
        folder = model_folder(model)
        if folder is None or not (folder / "tokenizer.json").is_file():
            return None
        path = folder / "tokenizer.json"
    from tokenizers import Tokenizer as HfTokenizer

    try:
        return Tokenizer(str(path), HfTokenizer.from_file(str(path)))
    except Exception as error:  # noqa: BLE001 - the library raises bare Exceptions on bad files
        raise UserError(f"{path}: not a tokenizers tokenizer.json: {error}") from None


def read_prompt(text: str, tokenizer: Tokenizer | None, vocab: int, model: str) -> list[int]:
    """`--prompt`: comma-separated token ids (always understood), or text through the
    tokenizer (ids out of the model's vocabulary are refused either way)."""
    if _IDS.match(text) or tokenizer is None:
        if tokenizer is None and not _IDS.match(text):
            raise UserError(
                f"--prompt {text!r} is text, and {model} has no tokenizer: give token ids "
                "(1,2,3), a model folder holding tokenizer.json, or --tokenizer PATH"
            )
        return parse_prompt(text, vocab, model)
    ids = tokenizer.encode(text)
    if not ids:
        raise UserError(f"--prompt {text!r} encodes to no tokens with {tokenizer.path}")
    return parse_prompt(",".join(map(str, ids)), vocab, model)

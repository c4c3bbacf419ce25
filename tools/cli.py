"""What every rdu-compiler command-line tool shares: user errors reported without tracebacks,
output files written whole or not at all, and (rdu-run, rdu-sim) one prompt syntax, decode loop
and token printout, so the engines are driven and compared alike."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any, NoReturn


class UserError(Exception):
    """A problem with the user's input or options: reported as one message, exit status 1."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input, not a bug (imported lazily: keeps start-up cheap)."""
    from xdsl.utils.exceptions import DiagnosticException, ParseError

    from rdu_compiler.frontend.config import ConfigError
    from rdu_compiler.simulator.hardware import PresetError
    from rdu_compiler.simulator.weights import WeightError

    return (
        UserError,
        ConfigError,
        WeightError,
        PresetError,
        ParseError,
        DiagnosticException,
        OSError,
    )


def run_tool(
    prog: str,
    main: Callable[[], int | None],
    errors: tuple[type[BaseException], ...] | None = None,
    smaller: str = "fewer --layers, a shorter --context or a smaller --batch",
) -> int:
    """Run a tool's `main`, turning user errors (`errors`, default :func:`user_error_types`)
    into `prog: error: message` and exit 1. Tools that must not import xDSL (rdu-sim) pass
    their own `errors`; `smaller` says how to ask a run for less memory."""
    handled = user_error_types() if errors is None else errors
    try:
        code = main() or 0
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at exit
        return code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return reader_went_away()
    except MemoryError:
        # Estimates refuse what cannot fit before allocating; this catches what they miss
        # (other processes taking memory meanwhile, numpy temporaries).
        print(
            f"{prog}: error: out of memory: this run needs more memory than the machine has "
            f"available (try {smaller})",
            file=sys.stderr,
        )
        return 1
    except handled as error:
        print(describe_error(prog, error), file=sys.stderr)
        return 1


# The exit status of a process killed by SIGPIPE, what `yes | head -1` reports for `yes`.
EXIT_BROKEN_PIPE = 128 + 13


def reader_went_away() -> int:
    """The reader of stdout closed it (`rdu-sim step.json | head -1`): stop quietly, as
    command-line tools do, instead of printing `[Errno 32] Broken pipe`. Stdout is pointed at
    /dev/null so that the interpreter's final flush does not complain again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def describe_error(prog: str, error: BaseException) -> str:
    """One line for a user error: `file:line:col: error: message` for a parse error (xDSL's
    own rendering spans several lines, with a caret), else `prog: error: message`."""
    span = getattr(error, "span", None)
    if span is not None and hasattr(span, "get_location"):
        return f"{span.get_location()}: error: {getattr(error, 'msg', error)}"
    return f"{prog}: error: {error}".rstrip("\n")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose option errors are user errors like any other: one line through
    :func:`run_tool`, `prog: error: message (see prog --help)`, exit 1 (argparse's own prints
    its whole usage above the message and exits 2)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")


def integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum], so a count of zero or a negative
    seed is refused while the options are read, naming the option (`argument --seed: must be
    >= 0, got -1`), instead of being used or failing deep inside a run."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        return _in_range(value, minimum, maximum)

    return parse


def integers(minimum: int) -> Callable[[str], list[int]]:
    """An argparse type: `8` or `1,8,32` -> [1, 8, 32], each value at least `minimum` (the
    sweep lists of rdu-run's --batch, --context and --sockets)."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer or a comma-separated list, got '{text}'"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        return [_in_range(value, minimum, None) for value in values]

    return parse


def _in_range(value: int, minimum: int, maximum: int | None) -> int:
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
    return value


def check_context(context: int, max_positions: int) -> None:
    """Refuse a KV-cache length the model has no positions for (rope tables, trained range):
    the one rule of rdu-import and rdu-run."""
    if context > max_positions:
        raise UserError(
            f"--context {context} exceeds the model's max_position_embeddings ({max_positions})"
        )


def is_ir_file(path: str) -> bool:
    """Whether a MODEL / PROGRAM argument names an IR decode step (`.mlir`, read by
    `tools.ir_file`) rather than a model name or a program file."""
    return path.endswith(".mlir")


def read_text_file(path: str) -> str:
    """The text of the file `path`; one that cannot be read, or is not text, is a UserError."""
    try:
        with open(path) as stream:
            return stream.read()
    except OSError as error:
        raise UserError(f"cannot read '{path}': {error.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"'{path}' is not a text file") from None


def write_atomically(path: str, data: str | bytes) -> None:
    """Write `path` via a temporary file in the same folder, so it is never half-written.

    A path that exists and is not a regular file (`/dev/null`, a pipe) is written directly:
    renaming over it would replace the device or pipe with a file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        if os.path.exists(path) and not os.path.isfile(path):
            with open(path, mode) as stream:
                stream.write(data)
            return
        with tempfile.NamedTemporaryFile(
            mode, dir=directory, delete=False, prefix=f".{os.path.basename(path)}."
        ) as tmp:
            tmp.write(data)
        # NamedTemporaryFile makes the file private (0600); give it the permissions a plain
        # open() would (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp.name, 0o666 & ~umask)
        os.replace(tmp.name, path)
    except OSError as error:
        raise UserError(f"cannot write '{path}': {error.strerror}") from None


def parse_prompt(text: str, vocab: int, model: str) -> list[int]:
    """`--prompt 1,2,3` -> token ids, each checked against the vocabulary."""
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--prompt must be comma-separated token ids, got {text!r}") from None
    if not ids:
        raise UserError("--prompt needs at least one token id")
    for t in ids:
        if not 0 <= t < vocab:
            raise UserError(
                f"--prompt token {t} is out of range for the vocabulary of {model} "
                f"({vocab} tokens: 0..{vocab - 1})"
            )
    return ids


def decode_steps(prompt: list[int], steps: int) -> int:
    """Decode steps to feed the prompt one token per step and then generate `steps` tokens
    greedily (the last one is not fed back, like HF `max_new_tokens`)."""
    return len(prompt) + max(steps, 1) - 1


def decode_loop(
    step: Callable[[Any, Any], tuple[Any, Any]], prompt: list[int], steps: int, batch: int
) -> tuple[list[list[int]], Any]:
    """Run :func:`decode_steps` steps at positions 0, 1, ...: `step(tokens [B], positions [B])
    -> (logits, next_tokens)`; every batch entry is fed the same token. Returns the generated
    tokens per batch entry and the last step's logits. Shared by every engine of rdu-run and by
    rdu-sim, so they decode identically."""
    import numpy as np

    generated: list[Any] = []
    logits = None
    for position in range(decode_steps(prompt, steps)):
        fed = prompt[position] if position < len(prompt) else int(generated[-1][0])
        logits, next_tokens = step(
            np.full(batch, fed, np.int32), np.full(batch, position, np.int32)
        )
        if position >= len(prompt) - 1 and len(generated) < steps:
            generated.append(np.asarray(next_tokens).reshape(batch))
    tokens = np.stack(generated, axis=1).tolist() if generated else [[] for _ in range(batch)]
    return tokens, logits


def print_generated(tokens: list[list[int]]) -> None:
    """The human-readable result of :func:`decode_loop`: one line per batch entry, so rdu-run
    and rdu-sim print their tokens alike (and their outputs can be compared)."""
    for b, row in enumerate(tokens):
        print(f"{'generated' if len(tokens) == 1 else f'entry {b}'}: {', '.join(map(str, row))}")


class Progress:
    """A progress bar on stderr (``[#####-----] 3/8 what``), rewritten in place; only when
    stderr is a terminal, so logs and pipes stay clean. :meth:`advance` starts the next of
    ``total`` items, :meth:`wrap` counts the calls of a decode step."""

    WIDTH = 20

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.on = sys.stderr.isatty()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.on:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    def advance(self, text: str) -> None:
        self.done += 1
        if self.on:
            filled = self.WIDTH * (self.done - 1) // max(self.total, 1)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            sys.stderr.write(f"\r\033[K[{bar}] {self.done}/{self.total} {text}")
            sys.stderr.flush()

    def wrap(self, step: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def counted(tokens: Any, positions: Any) -> Any:
            self.advance("decode step")
            return step(tokens, positions)

        return counted

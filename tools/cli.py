"""What every rdu-compiler command-line tool shares: user errors reported without tracebacks,
and output files written whole or not at all."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's input or options: reported as one message, exit status 1."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input, not a bug (imported lazily: keeps start-up cheap)."""
    from frontend.config import ConfigError
    from simulator.weights import WeightError
    from xdsl.utils.exceptions import DiagnosticException, ParseError

    return (UserError, ConfigError, WeightError, ParseError, DiagnosticException, OSError)


def run_tool(prog: str, main: Callable[[], int | None]) -> int:
    """Run a tool's `main`, turning user errors into `prog: error: message` and exit 1."""
    try:
        return main() or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except user_error_types() as error:
        print(f"{prog}: error: {error}".rstrip("\n"), file=sys.stderr)
        return 1


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
        os.replace(tmp.name, path)
    except OSError as error:
        raise UserError(f"cannot write '{path}': {error.strerror}") from None

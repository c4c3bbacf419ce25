"""The command-line tools of the lit suite, run warm: one server imports xDSL and the compiler
once, and every tool run forks from it, instead of paying about a second of imports each.

`serve(socket, shims)` writes, into the folder `shims`, one executable per tool of `TOOLS`
(named like the tool, to be put first on PATH). A shim is a bare Python (`-S`, no imports
beyond the standard library) that hands its argv, working directory, environment and its
stdin / stdout / stderr file descriptors to the server over a Unix socket and exits with the
status the tool ends with. The server forks a child per run, which becomes that process: it
takes the descriptors as fds 0-2, the directory and environment, and calls the tool's
console-script entry point exactly as the installed script does (`sys.exit(main())`: an
uncaught exception prints its traceback and exits 1). Forked from a server that has only
imported, no run can see another's state.

Only the entry point's process start-up differs from the installed scripts; those are run
as they are by the packaging and tool tests, and by `lit` run directly.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

TOOLS = ("rdu-opt", "rdu-import", "xdsl-opt", "filecheck")
_MAX_MESSAGE = 1 << 20  # argv + cwd + environment of one run
_NO_STATUS = 125  # the shim's status when the forked run died without reporting one


def client(socket_path: str) -> int:
    """In a shim: run `sys.argv` on the server; the tool's exit status."""
    message = json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ)})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(socket_path)
        socket.send_fds(conn, [message.encode()], [0, 1, 2])
        conn.shutdown(socket.SHUT_WR)
        status = conn.recv(16)
    if not status:
        tool = Path(sys.argv[0]).name
        print(f"{tool}: the warm run died without an exit status", file=sys.stderr)
        return _NO_STATUS
    return int(status)


def _entry_points() -> dict[str, object]:
    import importlib.metadata

    scripts = importlib.metadata.entry_points(group="console_scripts")
    return {tool: scripts[tool].load() for tool in TOOLS}


def _preload() -> dict[str, object]:
    """Import what the runs use: the tools, and every dialect, pass and target (their modules
    are imported when first named)."""
    mains = _entry_points()
    from rdu_compiler.tools.universe import DIALECTS, PASSES, TARGETS

    for factory in (*DIALECTS.values(), *PASSES.values(), *TARGETS.values()):
        factory()
    return mains


def _run_forked(conn: socket.socket, mains: dict[str, object]) -> None:
    """In the forked child: become the client's process, run its tool, report the status."""
    data, fds, _, _ = socket.recv_fds(conn, _MAX_MESSAGE, 3)
    while len(data) < _MAX_MESSAGE and (more := conn.recv(_MAX_MESSAGE)):
        data += more
    request = json.loads(data)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    # Streams as the interpreter makes them: stderr line-buffered, stdout only on a terminal
    # (the order of `2>&1` output depends on it).
    encoding, errors = sys.stdout.encoding, sys.stdout.errors
    sys.stdin = open(0, encoding=encoding, errors=errors, closefd=False)  # noqa: SIM115
    sys.stdout = open(  # noqa: SIM115
        1, "w", buffering=1 if os.isatty(1) else -1, encoding=encoding, errors=errors,
        closefd=False,
    )  # fmt: skip
    sys.stderr = open(  # noqa: SIM115
        2, "w", buffering=1, encoding=encoding, errors="backslashreplace", closefd=False
    )
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = request["argv"]
    try:
        sys.exit(mains[Path(sys.argv[0]).name]())  # type: ignore[operator]
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            code = exit.code or 0
        else:
            print(exit.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - as the interpreter does for an uncaught exception
        import traceback

        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a reader that went away, as `python` ignores at exit
            pass
    conn.sendall(str(code).encode())
    os._exit(code)


def serve(socket_path: str, shims: str) -> None:
    """Preload, write the shims, print "ready", and serve until the parent process ends."""
    parent = os.getppid()
    mains = _preload()
    here = Path(__file__).resolve().parent
    for tool in TOOLS:
        shim = Path(shims) / tool
        shim.write_text(
            f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {str(here)!r})\n"
            f"from warm_tools import client\nsys.exit(client({socket_path!r}))\n"
        )
        shim.chmod(0o755)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(socket_path)
        listener.listen(64)
        listener.settimeout(1.0)
        print("ready", flush=True)
        while os.getppid() == parent:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                conn = None
            if conn is not None:
                conn.settimeout(None)
                if os.fork() == 0:
                    listener.close()
                    _run_forked(conn, mains)
                conn.close()
            while True:  # reap finished runs
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])

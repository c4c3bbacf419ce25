"""The installed package is one import name, `rdu_compiler`, and plugs into other xDSL flows.

Built as a wheel and installed non-editable in a fresh virtual environment (the editable install
hides layout mistakes), with a user's own `tools/` and `passes/` packages first on PYTHONPATH:
plain `xdsl-opt` must still work on upstream-only IR and run our passes on our IR. The venv
shares this environment's third-party dependencies but xDSL's (see `_shared_dependencies`).
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stderr[-3000:]}"
    return result


def _shared_dependencies(folder: Path) -> Path:
    """A folder of links to what this environment has installed but rdu-compiler itself and
    xDSL: the test's venv takes its other dependencies from here, instead of installing
    numpy, matplotlib, optuna... again (over a minute); xDSL, whose `xdsl-opt` the tests run,
    is installed for real."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    folder.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if not name.startswith(("rdu_compiler", "__editable__", "xdsl")):
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh venv with the wheel installed, and an environment whose PYTHONPATH holds a
    user's own `tools` and `passes` packages."""
    tmp = tmp_path_factory.mktemp("wheel")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp / "dist"),
            str(ROOT),
        ]
    )
    wheel = next((tmp / "dist").glob("rdu_compiler-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    venv_site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    shared = _shared_dependencies(tmp / "shared")
    (Path(venv_site.stdout.strip()) / "shared_dependencies.pth").write_text(f"{shared}\n")
    # This pip installs into the venv: the wheel, and what of its dependencies the venv lacks.
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)])
    user = tmp / "user"
    for name in ("tools", "passes"):
        (user / name).mkdir(parents=True)
        (user / name / "__init__.py").write_text(f"USER_OWN_{name.upper()} = True\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(user), "HOME": str(tmp)}
    return venv, env


def test_wheel_holds_one_import_package(installed):
    venv, env = installed
    code = textwrap.dedent("""
        import importlib.metadata as md, sys, sysconfig
        files = md.distribution("rdu-compiler").files
        tops = sorted({f.parts[0] for f in files if f.suffix == ".py"})
        print(tops)
        import tools, passes, rdu_compiler.passes.kernel_looping, xdsl
        assert tools.USER_OWN_TOOLS and passes.USER_OWN_PASSES
        (ep,) = md.entry_points(group="xdsl.universe", name="rdu_compiler")
        print(ep.value)
        site = sysconfig.get_path("purelib")
        print(rdu_compiler.__file__.startswith(site), xdsl.__file__.startswith(site))
    """)
    out = _run([str(venv / "bin" / "python"), "-c", code], env=env, cwd="/").stdout.split("\n")
    assert out[0] == "['rdu_compiler']"
    assert out[1] == "rdu_compiler.tools.universe:RDU_UNIVERSE"
    assert out[2] == "True True"  # the wheel's package and the venv's own xDSL


def test_plain_xdsl_opt_on_upstream_ir(installed):
    venv, env = installed
    ir = (
        "func.func @f(%a: i32) -> i32 {\n"
        "  %b = arith.addi %a, %a : i32\n  func.return %b : i32\n}\n"
    )
    out = _run(
        [str(venv / "bin" / "xdsl-opt"), "-p", "canonicalize"], input=ir, env=env, cwd="/"
    ).stdout
    assert "arith.addi" in out


def test_plain_xdsl_opt_runs_kernel_looping_on_our_ir(installed):
    venv, env = installed
    ir = (ROOT / "examples" / "tiny_llama_step.mlir").read_text()
    out = _run(
        [str(venv / "bin" / "xdsl-opt"), "-p", "outline-kernels,kernel-looping"],
        input=ir,
        env=env,
        cwd="/",
    ).stdout
    assert "dfk.loop" in out and "@decoder_layer.looped" in out


FUNC_CALL_CHAIN = """
func.func private @layer(%x: tensor<4xf32>, %w: tensor<4xf32>) -> tensor<4xf32> {
  %y = arith.mulf %x, %w : tensor<4xf32>
  func.return %y : tensor<4xf32>
}
func.func @chain(%x0: tensor<4xf32>, %w: tensor<4xf32>) -> tensor<4xf32> {
  %x1 = func.call @layer(%x0, %w) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %x2 = func.call @layer(%x1, %w) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %x3 = func.call @layer(%x2, %w) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %x4 = func.call @layer(%x3, %w) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %x4 : tensor<4xf32>
}
"""


def test_plain_xdsl_opt_loops_a_func_call_chain(installed):
    """Kernel looping for any xDSL flow: four calls of a func.func become one scf.for."""
    venv, env = installed
    result = _run(
        [str(venv / "bin" / "xdsl-opt"), "-p", "kernel-looping{remarks=true}"],
        input=FUNC_CALL_CHAIN,
        env=env,
        cwd="/",
    )
    out = result.stdout
    assert out.count("scf.for") == 1 and out.count("func.call @layer(") == 1
    assert "1 run(s) looped; calls 4 -> 1" in result.stderr


def test_version_names_our_package_and_xdsl(installed):
    venv, env = installed
    out = _run([str(venv / "bin" / "rdu-opt"), "--version"], env=env, cwd="/").stdout
    assert out.startswith("rdu-opt (rdu-compiler 0.1.0)") and "xdsl version 0.74" in out

"""The venvs the benchmark needs besides the project's own.

Upstream PiCaS gets a venv of its own so that it runs with exactly what
``pip install picas==1.1.2`` brings, and so that its ``picas`` package can
never be confused with ours. matplotlib, only needed for ``--plot``, gets
another, so that it stays out of the project's dependencies.

Our picas runs from the project's venv, where it is installed in editable
mode, and so it is byte-compiled here as pip does for an installed package.
"""
from __future__ import annotations

import compileall
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
UPSTREAM_VENV = HERE / ".upstream-venv"
PLOT_VENV = HERE / ".plot-venv"
UPSTREAM_REQUIREMENT = "picas==1.1.2"
PLOT_REQUIREMENT = "matplotlib"


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def _answers(venv: Path, code: str, expected: str) -> bool:
    python = python_of(venv)
    if not python.exists():
        return False
    # Run from the venv itself: the current folder must not shadow its packages.
    done = subprocess.run([str(python), "-c", code], cwd=venv, capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip() == expected


def _create(venv: Path, requirement: str, log: Path) -> None:
    print(f"installing {requirement} into {venv} (once; log in {log})", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        for argv in ([sys.executable, "-m", "venv", "--clear", str(venv)],
                     [str(python_of(venv)), "-m", "pip", "install", "--quiet", requirement]):
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise SystemExit(f"could not install {requirement} into {venv}: see {log}")


def upstream_python(log: Path) -> Path:
    """The interpreter of a venv holding upstream PiCaS 1.1.2, made on first use."""
    check = "import importlib.metadata as m; print(m.version('picas'))"
    if not _answers(UPSTREAM_VENV, check, "1.1.2"):
        _create(UPSTREAM_VENV, UPSTREAM_REQUIREMENT, log)
        if not _answers(UPSTREAM_VENV, check, "1.1.2"):
            raise SystemExit(f"{UPSTREAM_VENV} does not hold picas 1.1.2 after installing it")
    return python_of(UPSTREAM_VENV)


def byte_compile_ours() -> None:
    """Give our picas the .pyc files that pip gives an installed package.

    An editable install gets none, and where PYTHONDONTWRITEBYTECODE is set
    (it is on this machine) Python never writes them: every pilot would then
    compile picas from source at start (50 ms of CPU per pilot) while
    upstream's pip-installed copy loads its .pyc files.
    """
    if not compileall.compile_dir(HERE.parent / "picas", quiet=1):
        raise SystemExit("could not byte-compile picas/")


def plot_python(log: Path) -> Path:
    """The interpreter of a venv with matplotlib, made on first use."""
    check = "import matplotlib; print('ok')"
    if not _answers(PLOT_VENV, check, "ok"):
        _create(PLOT_VENV, PLOT_REQUIREMENT, log)
    return python_of(PLOT_VENV)

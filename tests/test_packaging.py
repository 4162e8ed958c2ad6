"""``pip install .`` into a fresh venv gives a picas that pushes its views
without a checkout."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import ROOT

#: What the build must not see (mirrors .gitignore, plus the repository itself).
SKIP_NAMES = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", "build", ".picas"}
SKIP_PATHS = {"tests/artifacts", "bench/out"}

USE_INSTALLED = textwrap.dedent("""
    import json, os, sysconfig
    from pathlib import Path
    import picas
    from picas import designdocs
    from picas.database import Database
    from picas.transport import Transport

    db = Database(Transport(os.environ["PICAS_URL"], os.environ["PICAS_USERNAME"],
                            os.environ["PICAS_PASSWORD"]), os.environ["PICAS_DATABASE"])
    report = designdocs.push(db)
    print(json.dumps({
        "picas": str(Path(picas.__file__).resolve()),
        "source_dir": str(designdocs.source_dir().resolve()),
        "purelib": str(Path(sysconfig.get_paths()["purelib"]).resolve()),
        "added": {name: r.added for name, r in report.items()},
        "todo_rows": db.view("Monitor", "todo")["rows"],
    }))
""")


def _ignore(directory: str, names: list[str]) -> set[str]:
    rel = Path(directory).resolve().relative_to(ROOT)
    return {n for n in names
            if n in SKIP_NAMES or n.endswith(".egg-info") or (rel / n).as_posix() in SKIP_PATHS}


def test_an_installed_picas_pushes_its_views_without_the_checkout(tmp_path, couch, empty_db):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_ignore)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", str(source)],
                             env=env, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    shutil.rmtree(source)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env.update(PICAS_URL=couch.url, PICAS_USERNAME=couch.username,
               PICAS_PASSWORD=couch.password, PICAS_DATABASE=empty_db.name)
    run = subprocess.run([str(python), "-c", USE_INSTALLED], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    purelib = Path(found["purelib"])
    assert Path(found["picas"]).is_relative_to(purelib)
    assert Path(found["source_dir"]).is_relative_to(purelib)
    assert not Path(found["source_dir"]).is_relative_to(ROOT)

    from picas import designdocs
    shipped = designdocs.load(ROOT / "couchviews")
    assert {name: sorted(views) for name, views in found["added"].items()} == {
        name: sorted(doc["views"]) for name, doc in shipped.items()}
    for name, doc in shipped.items():
        assert empty_db.get(f"_design/{name}")["views"] == doc["views"]
    assert found["todo_rows"] == []


def test_every_couchviews_folder_is_a_listed_package():
    """setuptools warns, 40 lines a folder, about package-data folders that
    `packages` does not list; a new view's folder must be added there."""
    config = (ROOT / "pyproject.toml").read_text()
    folders = [path for path in (ROOT / "couchviews").rglob("*")
               if path.is_dir() and path.name != "__pycache__"]
    assert folders
    missing = [str(path.relative_to(ROOT)) for path in folders
               if '"picas.couchviews.{}"'.format(
                   ".".join(path.relative_to(ROOT / "couchviews").parts)) not in config]
    assert missing == []

"""The local CouchDB-compatible server: pouchdb-server from npm.

A development and test server, not a production one: it enforces less
security than Apache CouchDB. Two ways to run it:

* in memory, for tests: :class:`LocalServer` owns the process;
* on disk, for the demo and ``picas server start``: a small supervisor
  process restarts pouchdb-server if it dies (some ordinary requests kill
  it) and stops it on SIGTERM. LevelDB keeps acknowledged writes across
  such a crash.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from .errors import ConfigError, ConnectionFailed

log = logging.getLogger(__name__)

NODE_NAME = "node1@127.0.0.1"
PID_FILE = "picas-server.pid"
STATE_FILE = "picas-server.json"


def project_home() -> Path | None:
    """The checkout's ``server/`` folder (holding package.json), if any."""
    here = Path(__file__).resolve().parent.parent / "server"
    return here if (here / "package.json").exists() else None


def server_home() -> Path:
    """Where pouchdb-server is installed: $PICAS_SERVER_HOME or the checkout's server/."""
    env = os.environ.get("PICAS_SERVER_HOME")
    home = Path(env) if env else project_home()
    if home is None:
        raise ConfigError("cannot find the local server: set PICAS_SERVER_HOME to the "
                          "folder where `npm ci` installed pouchdb-server")
    return home


def executable(home: Path | None = None) -> Path:
    home = server_home() if home is None else home
    script = home / "node_modules" / "pouchdb-server" / "bin" / "pouchdb-server"
    if not script.exists():
        raise ConfigError(f"pouchdb-server is not installed in {home}: run "
                          f"`npm ci --prefix {home}` (or scripts/setup.sh)")
    return script


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: Request lines at "info" cost about a quarter of the server's time per request.
LOG_LEVEL = "warning"


def write_config(config_dir: Path) -> Path:
    """pouchdb-server's config.json, with its log in ``config_dir`` at warning level.

    The server also keeps its admins there (hashed): existing settings stay.
    """
    path = config_dir / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        config = {}
    log_config = config.setdefault("log", {})
    log_config.setdefault("file", str(config_dir / "log.txt"))
    log_config.setdefault("level", LOG_LEVEL)
    path.write_text(json.dumps(config, indent=2))
    return path


def command(port: int, data_dir: Path | None, config_dir: Path,
            home: Path | None = None) -> list[str]:
    """The argv that starts pouchdb-server on 127.0.0.1 only."""
    argv = ["node", str(executable(home)), "--port", str(port), "--host", "127.0.0.1",
            "--no-stdout-logs", "--no-color", "--config", str(write_config(config_dir))]
    if data_dir is None:
        argv.append("--in-memory")
    else:
        argv += ["--dir", str(data_dir)]
    return argv


def wait_until_up(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    """Poll ``GET /`` (pouchdb-server has no ``/_up``) until it answers."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            raise ConnectionFailed(f"pouchdb-server exited with code {process.returncode} "
                                   "while starting")
        try:
            if requests.get(url + "/", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise ConnectionFailed(f"pouchdb-server did not answer at {url} within {timeout:.0f} s")


def ensure_admin(url: str, username: str, password: str) -> None:
    """Create the server admin unless it exists (as a real CouchDB has one)."""
    admin_url = f"{url}/_node/{NODE_NAME}/_config/admins/{username}"
    if requests.get(admin_url, auth=(username, password), timeout=10).ok:
        return
    response = requests.put(admin_url, data=json.dumps(password), timeout=10)
    if response.status_code == 401:
        raise ConfigError(f"the local server already has admins, and {username}'s password "
                          "does not match: use that admin's credentials")
    response.raise_for_status()


class LocalServer:
    """A pouchdb-server process this object starts and stops (by PID)."""

    def __init__(self, port: int | None = None, data_dir: Path | None = None,
                 log_path: Path | None = None, home: Path | None = None) -> None:
        self.port = port
        self.data_dir = data_dir
        self.log_path = log_path
        self.home = home
        self.process: subprocess.Popen | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> LocalServer:
        if self.port is None:
            self.port = free_port()
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            cwd = self.data_dir
        else:
            self._scratch = tempfile.TemporaryDirectory(prefix="picas-server-")
            cwd = Path(self._scratch.name)
        argv = command(self.port, self.data_dir, cwd, self.home)
        # Closed below, once the child holds its own copy; DEVNULL is no file.
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            # Its own session, so that Ctrl-C in a terminal reaches us, not it.
            self.process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            if not isinstance(out, int):  # a file, not DEVNULL
                out.close()
        try:
            wait_until_up(self.url, timeout, self.process)
        except ConnectionFailed:
            self.stop()
            raise
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


# -- the supervised, on-disk server ------------------------------------------------

def read_state(data_dir: Path) -> dict | None:
    """The running supervisor's pid and url, or None when it is not running."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
        os.kill(int(state["pid"]), 0)
        return state
    except (OSError, ValueError, KeyError):
        return None


def start_supervised(data_dir: Path, port: int, timeout: float = 60.0) -> dict:
    """Start (or find) the supervisor for ``data_dir``; return its state."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    running = read_state(data_dir)
    if running:
        return {**running, "already_running": True}
    executable()  # fail early, with the install hint, if pouchdb-server is missing
    with open(data_dir / "supervisor.log", "ab") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "picas.server", str(data_dir), str(port)],
                                stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": _import_path()})
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, timeout, proc)
    return {"pid": proc.pid, "url": url, "port": port, "data_dir": str(data_dir),
            "already_running": False}


def _import_path() -> str:
    parent = str(Path(__file__).resolve().parent.parent)
    rest = os.environ.get("PYTHONPATH")
    return parent + (os.pathsep + rest if rest else "")


def stop_supervised(data_dir: Path, timeout: float = 20.0) -> bool:
    """Stop the supervisor of ``data_dir`` by its PID; False if none ran."""
    state = read_state(data_dir.resolve())
    if state is None:
        return False
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            # Reap it if this process started it: a zombie still answers kill(0).
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    return True


def registry_dir() -> Path:
    """Where running supervisors note their data directory by port, so that
    ``picas server stop`` finds the server of a URL without being told."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "picas" / "servers"


def registered(port: int) -> Path | None:
    """The data directory of the running server that picas started on ``port``."""
    try:
        data_dir = Path((registry_dir() / str(port)).read_text().strip())
    except OSError:
        return None
    state = read_state(data_dir)
    return data_dir if state and int(state.get("port", -1)) == port else None


def _register(port: int, data_dir: Path) -> None:
    try:
        registry_dir().mkdir(parents=True, exist_ok=True)
        (registry_dir() / str(port)).write_text(str(data_dir))
    except OSError as exc:  # only a convenience: the server runs without it
        print(f"could not note the server in {registry_dir()}: {exc}", flush=True)


def _unregister(port: int, data_dir: Path) -> None:
    entry = registry_dir() / str(port)
    try:
        if entry.read_text().strip() == str(data_dir):
            entry.unlink()
    except OSError:
        pass


def supervise(data_dir: Path, port: int) -> int:
    """Run pouchdb-server on ``data_dir`` and restart it when it dies."""
    from . import shutdown
    shutdown.install()
    (data_dir / STATE_FILE).write_text(json.dumps({
        "pid": os.getpid(), "url": f"http://127.0.0.1:{port}", "port": port,
        "data_dir": str(data_dir)}))
    _register(port, data_dir)
    restarts: list[float] = []
    server = LocalServer(port, data_dir, log_path=data_dir / "pouchdb-server.log")
    try:
        while not shutdown.requested.is_set():
            if not server.alive():
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < 60] + [now]
                if len(restarts) > 10:
                    print("pouchdb-server keeps dying; giving up", flush=True)
                    return 1
                print(f"starting pouchdb-server on port {port}", flush=True)
                try:
                    server.start()
                except ConnectionFailed as exc:
                    print(exc, flush=True)
            shutdown.requested.wait(0.5)
    finally:
        server.stop()
        (data_dir / STATE_FILE).unlink(missing_ok=True)
        _unregister(port, data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(supervise(Path(sys.argv[1]), int(sys.argv[2])))

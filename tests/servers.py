"""Real server processes for tests that need more than one process (or `make serve` itself): uvicorn serving
config.asgi against the suite's PostgreSQL test database and Redis, each its own OS process."""
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_env(**extra) -> dict:
    """The environment of a server process on the suite's test database and Redis."""
    db = connection.settings_dict
    env = {
        "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": os.environ["REDIS_URL"], "LOG_LEVEL": "WARNING",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def wait_until_serving(base: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            httpx.get(f"{base}/v1/models", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing served {base}")


@contextmanager
def uvicorn_processes(count: int, **env):
    """`count` uvicorn processes (one worker each); yields [(base URL, Popen)]. Killed on exit."""
    procs = []
    try:
        for _ in range(count):
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port",
                 str(port), "--no-access-log", "--lifespan", "off", "--log-level", "warning"],
                cwd=ROOT, env=server_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
            procs.append((f"http://127.0.0.1:{port}", proc))
        for base, proc in procs:
            wait_until_serving(base, proc)
        yield procs
    finally:
        for _, proc in procs:
            stop(proc)


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def serve_command(host: str, port: int, workers: int) -> list[str]:
    """The uvicorn command line of the Makefile's `serve` recipe, read from the Makefile (so a change there changes
    what the tests run), with HOST, PORT and WEB_CONCURRENCY filled in and this interpreter's uvicorn."""
    recipe = re.search(r"^serve:.*\n((?:\t.*\n?)*)", (ROOT / "Makefile").read_text(), re.M)[1].replace("\\\n", " ")
    words = shlex.split(next(line for line in recipe.splitlines() if "/uvicorn " in line))
    if words[0] == "exec":
        words = words[1:]
    assert words[0].endswith("/uvicorn"), words
    values = {"$(HOST)": host, "$(PORT)": str(port), "$(WEB_CONCURRENCY)": str(workers)}
    return [sys.executable, "-m", "uvicorn", *(values.get(word, word) for word in words[1:])]


@contextmanager
def web_hosts(addresses: list[str], *, workers: int = 1, **env):
    """One `make serve`-equivalent web host per loopback address (127.0.0.2, ...), each its own process group on its
    own address, all on the suite's database and Redis; yields [(base URL, Popen)]. Killed on exit.
    (Static files are not collected: these hosts serve the API, which names none.)"""
    procs = []
    try:
        for address in addresses:
            port = free_port(address)
            proc = subprocess.Popen(serve_command(address, port, workers), cwd=ROOT, env=server_env(**env),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            procs.append((f"http://{address}:{port}", proc))
        for base, proc in procs:
            wait_until_serving(base, proc)
        yield procs
    finally:
        for _, proc in procs:
            stop(proc)


@contextmanager
def celery_worker(schedule_dir: Path, *, beat: bool = True, **env):
    """`make worker`'s Celery worker on the suite's database and Redis, with beat embedded (-B, its schedule file in
    `schedule_dir`) when `beat`; yields the Popen. Stopped on exit."""
    args = [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=WARNING", "--concurrency=1",
            "--without-gossip", "--without-mingle", "-n", f"scale-{os.getpid()}@%h"]
    if beat:
        args += ["-B", "-s", str(Path(schedule_dir) / "celerybeat-schedule")]
    proc = subprocess.Popen(args, cwd=ROOT, env=server_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        yield proc
    finally:
        stop(proc)

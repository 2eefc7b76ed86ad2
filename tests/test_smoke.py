"""Start the service exactly as `make run` does (SQLite, no environment) and generate an image over HTTP."""
import base64
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.smoke
def test_make_run_serves_an_image():
    port = _free_port()
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "PORT": str(port)}
    proc = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    output: list[str] = []
    try:
        key = None
        deadline = time.monotonic() + 180
        while key is None:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "make run exited early:\n" + "".join(output)
            output.append(line)
            match = re.match(r"IMAGEGATE_API_KEY=(\S+)", line)
            key = match.group(1) if match else None
            assert time.monotonic() < deadline, "no API key printed:\n" + "".join(output)
        assert any("demo@imagegate.local" in line for line in output)
        base = f"http://127.0.0.1:{port}"
        while True:
            try:
                if httpx.get(f"{base}/accounts/login/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "server did not come up:\n" + "".join(output)
            time.sleep(0.2)

        client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
        result = client.images.generate(model="local-preview", prompt="smoke test", size="256x256",
                                        response_format="b64_json")
        assert base64.b64decode(result.data[0].b64_json)[:4] == b"\x89PNG"
        url = client.images.generate(model="local-preview", prompt="smoke test", size="256x256").data[0].url
        assert url.startswith(base) and httpx.get(url).content[:4] == b"\x89PNG"
        # No beat process runs here: the ledger rows were sealed right after they were written.
        check = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "manage.py", "verify_ledger", "--no-seal"],
                               cwd=ROOT, env=env, capture_output=True, text=True)
        assert check.returncode == 0 and "Ledger OK" in check.stdout and "waiting" not in check.stdout, check
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.smoke
def test_make_serve_runs_the_production_server(transactional_db, api_key):
    """`make serve`: DJANGO_DEBUG off, the environment's PostgreSQL and Redis, HOST/PORT, WEB_CONCURRENCY workers,
    static files collected (pages work with the manifest storage), no migrations or demo data of its own."""
    from tests.servers import server_env, stop

    port = _free_port()
    env = server_env(DJANGO_DEBUG="off", DJANGO_SECRET_KEY="serve-test-" + "k" * 50,
                     DJANGO_ALLOWED_HOSTS="127.0.0.1", DJANGO_SECURE_SSL_REDIRECT="off", HOST="127.0.0.1",
                     PORT=port, WEB_CONCURRENCY=2)
    proc = subprocess.Popen(["make", "--no-print-directory", "serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                page = httpx.get(f"{base}/accounts/login/", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.2)
        assert page.status_code == 200
        stylesheet = re.search(r'href="(/static/[^"]+\.css)"', page.text).group(1)
        assert re.search(r"\.[0-9a-f]{12}\.css$", stylesheet)  # the manifest's hashed name: collectstatic ran
        assert httpx.get(base + stylesheet).status_code == 200
        workers = _descendants(proc.pid)
        assert sum("multiprocessing.spawn" in cmd for cmd in workers.values()) == 2  # two workers (WEB_CONCURRENCY)
        client = OpenAI(base_url=f"{base}/v1", api_key=api_key[1], max_retries=0)
        result = client.images.generate(model="local-preview", prompt="served", size="256x256",
                                        response_format="b64_json")
        assert base64.b64decode(result.data[0].b64_json)[:4] == b"\x89PNG"
    finally:
        stop(proc)


def _descendants(pid: int) -> dict[int, str]:
    found, stack = {}, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                found[p] = f.read().replace(b"\0", b" ").decode()
            with open(f"/proc/{p}/task/{p}/children") as f:
                stack.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            continue
    return found

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
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

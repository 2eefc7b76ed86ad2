"""What every emulator shares: a Starlette app served by uvicorn on 127.0.0.1 in a background thread, a fault
switchboard the tests drive, and a deterministic PNG maker.

Usage in a test module:

    @pytest.fixture(scope="module")
    def stability():
        with serve(build_app()) as emulator:   # build_app(faults) -> Starlette app
            yield emulator                     # emulator.url, emulator.faults, emulator.requests

Faults are set per test: `emulator.faults.set("generate", Fault(status=429, ...))`, cleared with
`emulator.faults.clear()`. `emulator.requests` records what the adapter sent (method, path, headers, body).
"""
import contextlib
import hashlib
import io
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from PIL import Image


@dataclass
class Fault:
    """One injected behaviour. `times` = how many requests it affects (None = until cleared)."""

    status: int | None = None  # answer with this HTTP status and `body`
    body: Any = None  # dict → JSON; bytes/str → raw (malformed replies)
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (slow answers, timeouts)
    kind: str = ""  # emulator-specific behaviours: "refuse", "moderated", "malformed", "drop", ...
    times: int | None = None


class Faults:
    def __init__(self):
        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {}

    def set(self, name: str, fault: Fault) -> None:
        with self._lock:
            self._faults[name] = fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, name: str) -> Fault | None:
        """The fault for `name`, counting one use; None when nothing is injected."""
        with self._lock:
            fault = self._faults.get(name)
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[name]
            return fault


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: bytes


@dataclass
class Emulator:
    url: str
    faults: Faults
    requests: list[Recorded]
    state: dict

    def reset(self) -> None:
        self.faults.clear()
        self.requests.clear()
        self.state.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Thread(threading.Thread):
    def __init__(self, app, port: int):
        super().__init__(daemon=True)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    access_log=False, lifespan="off", backlog=4096,
                                                    timeout_keep_alive=30))

    def run(self):
        self.server.run()


@contextlib.contextmanager
def serve(app, *, faults: Faults | None = None, requests: list | None = None, state: dict | None = None):
    """Serve `app` on a free loopback port for the duration of the block."""
    port = free_port()
    thread = _Thread(app, port)
    thread.start()
    deadline = time.monotonic() + 15
    while not thread.server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("emulator did not start")
        time.sleep(0.02)
    try:
        yield Emulator(url=f"http://127.0.0.1:{port}", faults=faults if faults is not None else Faults(),
                       requests=requests if requests is not None else [], state=state if state is not None else {})
    finally:
        thread.server.should_exit = True
        thread.join(timeout=10)


def make_png(seed: str, width: int = 64, height: int = 64) -> bytes:
    """A small deterministic PNG standing in for a generated image (emulators answer fast and small)."""
    digest = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:3], "big")
    color = (digest & 255, (digest >> 8) & 255, (digest >> 16) & 255)
    out = io.BytesIO()
    Image.new("RGB", (max(1, min(width, 64)), max(1, min(height, 64))), color).save(out, format="PNG")
    return out.getvalue()

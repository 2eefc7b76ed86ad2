"""Input images are decoded once, bounded in pixels, CPU and memory (generation/pipeline/input_images.py; issue 10,
item 1)."""
import io
import resource
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from PIL import Image

from generation.pipeline import input_images as images
from tests.images_util import png
from tests.servers import uvicorn_processes


def _declared_png(width: int, height: int) -> bytes:
    """A small PNG whose header declares width × height and whose IDAT holds that many zero bytes, compressed (a
    decompression bomb: ~47 KB for 7000x7000 grey)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compress(b"\x00" * ((width + 1) * height), 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _empty_png(width: int = 64, height: int = 64) -> bytes:
    """Valid chunks, valid CRCs, and no image data at all."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _gradient_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((side, side)).convert("RGB").save(out, format="PNG", compress_level=1)
    return out.getvalue()


def test_a_small_file_declaring_huge_dimensions_is_refused_before_decoding(openai_client, live_url, api_key):
    bomb = _declared_png(7000, 7000)
    assert len(bomb) < 60_000
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    response = httpx.post(f"{live_url}/v1/images/edits", headers={"Authorization": f"Bearer {api_key[1]}"},
                          data={"model": "local-preview", "prompt": "x", "n": "10"},
                          files=[("image[]", (f"b{i}.png", bomb, "image/png")) for i in range(4)], timeout=30)
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "image_too_large" and "7000x7000" in error["message"]
    assert "16,777,216 pixels" in error["message"]  # the model's cap, named
    assert time.monotonic() - started < 2.0
    assert (after.ru_utime - before.ru_utime) < 1.0  # the server shares this process: seconds of CPU are gone


@pytest.mark.parametrize("endpoint", ["edits", "variations"])
def test_a_png_with_valid_chunks_and_no_image_data_is_a_400(openai_client, endpoint):
    call = openai_client.images.edit if endpoint == "edits" else openai_client.images.create_variation
    extra = {"prompt": "x"} if endpoint == "edits" else {}
    with pytest.raises(openai.BadRequestError) as info:
        call(model="local-preview", image=("empty.png", _empty_png(), "image/png"), **extra)
    assert info.value.code == "invalid_image" and info.value.param == "image"


def test_each_input_is_decoded_once_per_request_whatever_n(openai_client, monkeypatch):
    decodes = []
    real = images.decode

    def counting(data, **kwargs):
        decodes.append(len(data))
        return real(data, **kwargs)

    monkeypatch.setattr(images, "decode", counting)
    opened = []
    real_open = Image.open

    def counting_open(*args, **kwargs):
        opened.append(threading.current_thread().name)
        return real_open(*args, **kwargs)

    result = openai_client.images.edit(model="local-preview", prompt="a red balloon", n=10, size="256x256",
                                       image=[("a.png", png(300, 300), "image/png"), ("b.png", png(200, 200),
                                                                                      "image/png")],
                                       response_format="b64_json")
    assert len(result.data) == 10 and len(decodes) == 2  # two inputs, ten outputs, two decodes
    monkeypatch.setattr(Image, "open", counting_open)
    decodes.clear()
    openai_client.images.create_variation(model="local-preview", image=("a.png", png(300, 300), "image/png"), n=6,
                                          size="256x256", response_format="b64_json")
    assert len(decodes) == 1 and len(opened) == 2  # the header read and the one decode: the renderer reuses it


def test_decode_memory_is_bounded_and_returns_to_its_baseline(transactional_db, prices, api_key):
    """Four requests at once, each with four 4096x4096 inputs (64 MB each once decoded): the server process stays
    within its decode budget and hands the memory back afterwards."""
    big = _gradient_png(4096)
    with uvicorn_processes(1) as [(base, proc)]:
        def rss() -> int:
            with open(f"/proc/{proc.pid}/status") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

        def edit(i):
            return httpx.post(f"{base}/v1/images/edits", headers={"Authorization": f"Bearer {api_key[1]}"},
                              data={"model": "local-preview", "prompt": f"p{i}", "size": "256x256",
                                    "response_format": "b64_json"},
                              files=[("image[]", (f"{k}.png", big, "image/png")) for k in range(4)], timeout=120)

        assert edit(-1).status_code == 200  # warm: code loaded, caches filled
        time.sleep(0.5)
        baseline = rss()
        peak = [baseline]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss())
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        with ThreadPoolExecutor(4) as pool:
            statuses = [r.status_code for r in pool.map(edit, range(4))]
        done.set()
        sampler.join()
        time.sleep(1.0)
        settled = rss()
    assert statuses == [200] * 4
    mib = 2 ** 20
    # 16 decodes of 64 MB would be 1 GiB at once; the budget keeps them to DECODE_BUDGET_BYTES at a time
    assert peak[0] - baseline <= images.DECODE_BUDGET_BYTES + 192 * mib, (baseline // mib, peak[0] // mib)
    assert settled - baseline <= 96 * mib, (baseline // mib, settled // mib)

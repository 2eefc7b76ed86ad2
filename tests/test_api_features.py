"""Idempotency-Key, moderation and the `image` URL parameter, end to end with the official SDK on a live server."""
import http.server
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from billing.models import LedgerEntry
from generation.pipeline import fetch
from tests.images_util import png
from tests.test_api_errors import ScriptedProvider, inject  # noqa: F401  (fixture)


def _rows(api_key):
    return list(LedgerEntry.objects.for_organization(api_key[0].organization).order_by("id"))


# --- Idempotency-Key ---------------------------------------------------------------------------------------------

def test_retry_with_the_same_key_and_body_replays_without_a_second_charge(openai_client, api_key):
    headers = {"Idempotency-Key": "order-1234"}
    first = openai_client.images.with_raw_response.generate(model="local-preview", prompt="idempotent", n=2,
                                                            size="256x256", extra_headers=headers)
    second = openai_client.images.with_raw_response.generate(model="local-preview", prompt="idempotent", n=2,
                                                             size="256x256", extra_headers=headers)
    assert first.http_response.json() == second.http_response.json()  # same image URLs, same usage
    assert first.headers["x-request-id"] == second.headers["x-request-id"]
    assert second.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    rows = _rows(api_key)
    assert len(rows) == 1 and rows[0].cost_micros == 2000 and rows[0].request_id == first.headers["x-request-id"]


def test_same_key_different_body_is_409(openai_client, api_key):
    headers = {"Idempotency-Key": "order-1"}
    openai_client.images.generate(model="local-preview", prompt="one", size="256x256", extra_headers=headers)
    with pytest.raises(openai.ConflictError) as info:
        openai_client.images.generate(model="local-preview", prompt="two", size="256x256", extra_headers=headers)
    assert info.value.status_code == 409 and info.value.code == "idempotency_key_reused"
    assert len(_rows(api_key)) == 1


def test_concurrent_duplicates_run_once(openai_client, api_key, inject):  # noqa: F811
    slow = inject(ScriptedProvider("local"))
    headers = {"Idempotency-Key": "burst-7"}

    def call(_):
        return openai_client.images.with_raw_response.generate(
            model="local-preview", prompt="burst", size="256x256", response_format="b64_json", extra_headers=headers)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(call, range(8)))
    assert len(slow.calls) == 1
    assert len({r.headers["x-request-id"] for r in responses}) == 1
    assert len({r.http_response.text for r in responses}) == 1
    assert len(_rows(api_key)) == 1


def test_client_errors_are_replayed_too(openai_client, api_key):
    headers = {"Idempotency-Key": "bad-1"}
    for _ in range(2):
        with pytest.raises(openai.BadRequestError):
            openai_client.images.generate(model="local-preview", prompt="x", size="9x9", extra_headers=headers)
    assert len(_rows(api_key)) == 1


def test_invalid_idempotency_key(openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="local-preview", prompt="x", extra_headers={"Idempotency-Key": "x" * 300})
    assert info.value.code == "invalid_idempotency_key"


# --- Moderation ----------------------------------------------------------------------------------------------------

def test_moderation_refuses_before_any_upstream_call_and_charges_nothing(openai_client, api_key, inject):  # noqa: F811
    upstream = inject(ScriptedProvider("local"))
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="local-preview", prompt="a castle with a FORBIDDEN test term")
    assert info.value.code == "content_policy_violation" and info.value.param == "prompt"
    assert upstream.calls == []
    (row,) = _rows(api_key)
    assert (row.status, row.cost_micros, row.error_code) == ("refused", 0, "content_policy_violation")


def test_moderation_applies_to_edits(openai_client, api_key):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.edit(model="local-preview", image=("a.png", png(), "image/png"),
                                  prompt="forbidden-test-term please")
    assert info.value.code == "content_policy_violation"


# --- The `image` URL parameter -----------------------------------------------------------------------------------

@pytest.fixture
def image_server(monkeypatch):
    """A real HTTP server on 127.0.0.1 serving a PNG, allowed (only it) by the fetcher's address policy."""
    body = png(96, 96, color=(0, 200, 0, 255))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/cat.png":
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")  # a lying header: content is sniffed
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path == "/to-metadata":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.end_headers()
            else:
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                self.wfile.write(b"<html>not an image</html>")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(fetch, "DEFAULT_POLICY", fetch.AddressPolicy(allow=[("127.0.0.1", port)]))
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def test_image_url_is_fetched_and_modified(openai_client, api_key, image_server):
    result = openai_client.images.generate(model="local-preview", prompt="make it autumn", size="256x256",
                                           response_format="b64_json", extra_body={"image": f"{image_server}/cat.png"})
    assert result.data[0].b64_json
    assert _rows(api_key)[0].status == "succeeded"


@pytest.mark.parametrize("path,needle", [("/to-metadata", "metadata"), ("/not-an-image", "not a PNG")])
def test_image_url_refusals_are_clear_400s(openai_client, api_key, image_server, path, needle):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="local-preview", prompt="x", extra_body={"image": image_server + path})
    assert info.value.param == "image" and needle in info.value.message
    assert _rows(api_key)[0].cost_micros == 0


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/a.png", "http://169.254.169.254/latest/meta-data/",
                                 "file:///etc/passwd", "http://localhost/a.png", "http://[::1]/a.png"])
def test_image_url_to_internal_addresses_is_refused(openai_client, url):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="local-preview", prompt="x", extra_body={"image": url})
    assert info.value.param == "image"

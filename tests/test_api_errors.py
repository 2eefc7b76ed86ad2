"""Every error class in OpenAI's envelope, with faults injected into a provider of the live server."""
import asyncio

import httpx
import openai
import pytest

from billing.models import LedgerEntry
from generation import providers
from generation.providers import base as pb
from generation.providers.local import LocalProvider
from tests.images_util import png


class ScriptedProvider:
    """A provider that fails as told, or renders with the local model while counting calls."""

    def __init__(self, name: str, fail: Exception | None = None, cost: int = 1000):
        self.name = name
        self.fail = fail
        self.cost = cost
        self.calls: list[int] = []

    def serves(self) -> set[str]:
        from generation import catalog

        return {spec.id for spec in catalog.MODELS.values() if self.name in spec.providers}

    def upstream_cost_micros(self, request) -> int:
        return self.cost * request.n

    async def run(self, request):
        self.calls.append(request.n)
        if self.fail is not None:
            raise self.fail
        await asyncio.sleep(0.05)
        return await LocalProvider().run(pb.ImageRequest(**{**request.__dict__, "size": "256x256"}))


@pytest.fixture
def inject(monkeypatch):
    def _inject(provider):
        monkeypatch.setattr(providers, "_registry", {"local": providers.LocalProvider(), provider.name: provider})
        return provider
    return _inject


def _envelope(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"].startswith("req_")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in error["message"] and "File \"" not in error["message"]
    return error


def _ledger(api_key):
    return LedgerEntry.objects.for_organization(api_key[0].organization).get()


@pytest.mark.parametrize("fault,status,exc,type_,code", [
    (RuntimeError("boom at line 42"), 500, openai.InternalServerError, "server_error", None),
    (pb.UpstreamUnavailable("HTTP 503 from upstream"), 502, openai.InternalServerError, "server_error",
     "upstream_error"),
    (pb.UpstreamTimeout("no answer in 60 s"), 504, openai.InternalServerError, "server_error", "upstream_timeout"),
    (pb.UpstreamRateLimited("429"), 429, openai.RateLimitError, "requests", "rate_limit_exceeded"),
    (pb.ContentRefused("refused"), 400, openai.BadRequestError, "invalid_request_error", "content_policy_violation"),
    (pb.UpstreamInvalidRequest("width must be a multiple of 64"), 400, openai.BadRequestError,
     "invalid_request_error", "invalid_parameter"),
])
def test_provider_faults_map_to_enveloped_errors_and_cost_nothing(openai_client, api_key, inject, fault, status,
                                                                  exc, type_, code):
    inject(ScriptedProvider("local", fail=fault))
    with pytest.raises(exc) as info:
        openai_client.images.generate(model="local-preview", prompt="x", size="256x256")
    assert info.value.status_code == status
    assert info.value.type == type_ and info.value.code == code
    assert "line 42" not in info.value.message
    assert info.value.request_id.startswith("req_")
    row = _ledger(api_key)
    assert row.cost_micros == 0 and row.status in {"failed", "refused", "invalid"}
    assert row.request_id == info.value.request_id


def test_upstream_validation_error_carries_the_upstreams_reason(openai_client, inject):
    inject(ScriptedProvider("local", fail=pb.UpstreamInvalidRequest("width must be a multiple of 64")))
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="local-preview", prompt="x")
    assert "width must be a multiple of 64" in info.value.message


def test_n_beyond_native_limit_runs_parallel_calls_and_sums_the_cost(openai_client, api_key, inject):
    upstream = inject(ScriptedProvider("openai"))
    raw = openai_client.images.with_raw_response.generate(model="dall-e-3", prompt="parallel", n=3,
                                                          response_format="b64_json")
    result = raw.parse()
    assert upstream.calls == [1, 1, 1]  # dall-e-3 returns one image per call
    assert len(result.data) == 3
    assert raw.http_response.json()["usage"]["cost"] == pytest.approx(3 * 0.044)
    assert raw.headers["x-provider"] == "openai"
    row = _ledger(api_key)
    assert (row.n, row.cost_micros, row.provider) == (3, 3 * 44_000, "openai")


def test_405_method_not_allowed(live_url, api_key):
    response = httpx.get(f"{live_url}/v1/images/generations", headers={"Authorization": f"Bearer {api_key[1]}"})
    assert response.status_code == 405
    assert _envelope(response)["code"] == "method_not_allowed"


def test_413_body_too_large(live_url, api_key, monkeypatch):
    from config import asgi

    monkeypatch.setattr(asgi.application, "limits", [("/v1/", 1024)])
    response = httpx.post(f"{live_url}/v1/images/generations", headers={"Authorization": f"Bearer {api_key[1]}"},
                          json={"prompt": "x" * 4000})
    assert response.status_code == 413
    assert _envelope(response)["code"] == "request_too_large"

    def chunks():
        for _ in range(10):
            yield b"x" * 512

    response = httpx.post(f"{live_url}/v1/images/edits", headers={"Authorization": f"Bearer {api_key[1]}"},
                          content=chunks())
    assert response.status_code == 413


def test_415_wrong_content_type(live_url, api_key):
    response = httpx.post(f"{live_url}/v1/images/generations", content=b"prompt=x",
                          headers={"Authorization": f"Bearer {api_key[1]}", "Content-Type": "text/plain"})
    assert response.status_code == 415
    assert _envelope(response)["code"] == "unsupported_media_type"


def test_401_and_404_envelopes(live_url, api_key):
    assert _envelope(httpx.get(f"{live_url}/v1/models"))["code"] is None
    assert _envelope(httpx.get(f"{live_url}/v1/models", headers={"Authorization": "Bearer nope"}))["code"] == \
        "invalid_api_key"
    for path in ["/v1/nothing", "/v1/images", "/v1/images/generations/extra", "/v1/"]:
        response = httpx.post(f"{live_url}{path}", headers={"Authorization": f"Bearer {api_key[1]}"})
        assert response.status_code == 404, path
        assert _envelope(response)["code"] == "unknown_url"


def test_503_when_no_price_is_configured(openai_client, api_key):
    from billing.models import Price
    from billing.selectors import clear_price_cache

    Price.objects.filter(model="local-preview", size="512x512").delete()
    clear_price_cache()
    with pytest.raises(openai.InternalServerError) as info:
        openai_client.images.generate(model="local-preview", prompt="x", size="512x512")
    assert info.value.status_code == 503 and info.value.code == "model_unavailable"
    assert _ledger(api_key).cost_micros == 0


def test_unavailable_models_are_404_on_every_endpoint(openai_client):
    with pytest.raises(openai.NotFoundError):
        openai_client.images.generate(model="dall-e-3", prompt="x")
    with pytest.raises(openai.NotFoundError):
        openai_client.images.create_variation(model="dall-e-2", image=("a.png", png(), "image/png"))
    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve("gpt-image-1")

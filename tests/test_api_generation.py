"""The first image, end to end, with the official OpenAI Python SDK as the client against a live ASGI server."""
import base64
import io

import httpx
import openai
import pytest
from django.core import signing
from PIL import Image

from accounts import services as account_services
from billing.models import LedgerEntry
from generation.models import StoredImage
from generation.pipeline import storage

SIZES = ["256x256", "512x512", "1024x1024", "1024x1792", "1792x1024"]


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize("size", SIZES)
def test_b64_json_at_every_size(openai_client, size):
    result = openai_client.images.generate(model="local-preview", prompt="A serene lake at sunset", size=size,
                                           response_format="b64_json")
    assert len(result.data) == 1
    image = _png(base64.b64decode(result.data[0].b64_json))
    assert image.size == tuple(int(x) for x in size.split("x"))
    assert result.data[0].revised_prompt == "A serene lake at sunset"
    assert result.data[0].url is None


def test_response_has_exactly_the_product_shape(openai_client, api_key):
    raw = openai_client.images.with_raw_response.generate(model="local-preview", prompt="red fox", n=2,
                                                          size="256x256", response_format="b64_json")
    body = raw.http_response.json()
    assert set(body) == {"created", "data", "usage"}
    assert isinstance(body["created"], int)
    assert all(set(item) == {"b64_json", "revised_prompt"} for item in body["data"])
    # OpenAI's token fields (zeros: the built-in renderer counts no tokens) beside ours.
    assert set(body["usage"]) == {"input_tokens", "input_tokens_details", "output_tokens", "total_tokens", "cost",
                                  "latency_ms", "image_size", "model_used"}
    assert body["usage"]["input_tokens_details"] == {"text_tokens": 0, "image_tokens": 0}
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] == body["usage"]["output_tokens"] == 0
    assert body["usage"]["cost"] == pytest.approx(0.002)
    assert body["usage"]["image_size"] == "256x256"
    assert body["usage"]["model_used"] == "local-preview"
    assert isinstance(body["usage"]["latency_ms"], int) and body["usage"]["latency_ms"] >= 0
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-provider"] == "local"


def test_deterministic_for_identical_requests_and_varies_with_prompt_and_seed(openai_client, live_url, api_key):
    def one(prompt, seed=None):
        extra = {"seed": seed} if seed is not None else None
        r = openai_client.images.generate(model="local-preview", prompt=prompt, size="256x256",
                                          response_format="b64_json", extra_body=extra)
        return r.data[0].b64_json

    assert one("a blue whale") == one("a blue whale")
    assert one("a blue whale", seed=7) == one("a blue whale", seed=7)
    assert one("a blue whale") != one("a green forest")
    assert one("a blue whale", seed=7) != one("a blue whale", seed=8)


def test_n_images_are_distinct_and_charged_per_image(openai_client, api_key):
    result = openai_client.images.generate(model="local-preview", prompt="mountains", n=3, size="256x256",
                                           response_format="b64_json")
    images = [r.b64_json for r in result.data]
    assert len(images) == 3 and len(set(images)) == 3
    row = LedgerEntry.objects.for_organization(api_key[0].organization).get()
    assert (row.n, row.cost_micros, row.unit_price_micros, row.status) == (3, 3000, 1000, "succeeded")
    assert row.price is not None and row.price.model == "local-preview"


def test_url_points_at_signed_storage_and_serves_the_png(openai_client):
    result = openai_client.images.generate(model="local-preview", prompt="lighthouse", size="512x512")
    url = result.data[0].url
    assert url and url.endswith(".png")
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert _png(response.content).size == (512, 512)
    # A tampered token is refused.
    assert httpx.get(url.replace(".png", "x.png")).status_code == 404


def test_url_expires_after_sixty_minutes_then_410_and_the_object_is_deleted(openai_client, monkeypatch):
    result = openai_client.images.generate(model="local-preview", prompt="lighthouse", size="256x256")
    url = result.data[0].url
    real_time = signing.time.time
    monkeypatch.setattr(signing.time, "time", lambda: real_time() + 59 * 60)
    assert httpx.get(url).status_code == 200
    monkeypatch.setattr(signing.time, "time", lambda: real_time() + 61 * 60)
    expired = httpx.get(url)
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "url_expired"

    stored = StoredImage.all_tenants_unsafe.get()
    from datetime import timedelta

    from django.core.files.storage import default_storage

    assert default_storage.exists(stored.name)
    assert storage.delete_expired(now=stored.expires_at + timedelta(seconds=1)) == 1
    assert not default_storage.exists(stored.name)
    monkeypatch.setattr(signing.time, "time", real_time)
    assert httpx.get(url).status_code == 404


def test_missing_prompt_is_a_400_naming_the_parameter(openai_client, api_key):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="local-preview", prompt=None)
    assert info.value.status_code == 400
    assert info.value.code == "missing_required_parameter"
    assert info.value.param == "prompt"
    row = LedgerEntry.objects.for_organization(api_key[0].organization).get()
    assert (row.status, row.cost_micros, row.error_code) == ("invalid", 0, "missing_required_parameter")


def test_unknown_model_is_a_404_model_not_found(openai_client):
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.images.generate(model="no-such-model", prompt="x")
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"
    assert "no-such-model" in info.value.message


def test_unsupported_size_names_the_allowed_sizes(openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="local-preview", prompt="x", size="1536x1024")
    assert info.value.param == "size"
    assert info.value.code == "invalid_size"
    for size in SIZES:
        assert size in info.value.message


@pytest.mark.parametrize("n", [0, 11])
def test_n_out_of_range(openai_client, n):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="local-preview", prompt="x", n=n)
    assert info.value.param == "n"


def test_unknown_response_format(openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="local-preview", prompt="x", extra_body={"response_format": "gif"})
    assert info.value.param == "response_format"
    assert "b64_json" in info.value.message


def test_missing_key_is_401_with_null_code(live_url):
    response = httpx.post(f"{live_url}/v1/images/generations", json={"prompt": "x"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] is None and error["type"] == "invalid_request_error"
    assert response.headers["x-request-id"].startswith("req_")


def test_unknown_and_revoked_keys_are_401_invalid_api_key(live_url, api_key):
    bad = openai.OpenAI(base_url=f"{live_url}/v1", api_key="ig_notakey_xxxxxxxxxxxxxxxxxxxx", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.images.generate(model="local-preview", prompt="x")
    assert info.value.code == "invalid_api_key"

    row, raw = api_key
    good = openai.OpenAI(base_url=f"{live_url}/v1", api_key=raw, max_retries=0)
    good.models.list()
    account_services.revoke_api_key(api_key=row)
    with pytest.raises(openai.AuthenticationError) as info:
        good.images.generate(model="local-preview", prompt="x")
    assert info.value.code == "invalid_api_key"
    assert raw not in info.value.message  # never echo the secret


def test_models_list_and_retrieve(openai_client):
    models = openai_client.models.list()
    ids = [m.id for m in models.data]
    assert "local-preview" in ids
    model = openai_client.models.retrieve("local-preview")
    assert model.id == "local-preview" and model.object == "model" and model.owned_by == "imagegate"
    assert model.model_extra["sizes"] == SIZES
    assert "generate" in model.model_extra["capabilities"]
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.models.retrieve("dall-e-9")
    assert info.value.code == "model_not_found"


def test_unknown_path_under_v1_is_an_enveloped_404(live_url, api_key):
    response = httpx.get(f"{live_url}/v1/does/not/exist", headers={"Authorization": f"Bearer {api_key[1]}"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"
    assert response.headers["content-type"] == "application/json"


def test_malformed_json_is_a_400(live_url, api_key):
    response = httpx.post(f"{live_url}/v1/images/generations", content=b"{nope",
                          headers={"Authorization": f"Bearer {api_key[1]}", "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"

"""OpenAI's exact response (issue 13, "Must show" 2): every catalog model's generation, edit and variation response
(where the model supports them), served through the whole gateway from the emulators, is an `ImagesResponse` by the
official Python SDK's own types — `openai.types.ImagesResponse.model_validate(body, strict=True)` on the raw JSON,
and the SDK client's parsed result — with OpenAI's token fields in `usage` beside our cost (read the way the README
says: `result.usage.model_extra["cost"]`), and the top-level fields of GPT image models saying what was produced.
"""
import io

import pytest
from openai.types import ImagesResponse
from openai.types.images_response import Usage
from PIL import Image

from billing.models import LedgerEntry
from generation import catalog, providers
from tests import test_upstreams_e2e as e2e

# The upstream emulators and the gateway configured for all of them (tests/test_upstreams_e2e.py).
upstreams = e2e.upstreams
configured = e2e.configured

SELF_HOSTED = "sdxl-turbo-selfhosted"
MODES = {"generate": "generations", "edit": "edits", "variation": "variations"}
CASES = [(spec.id, mode) for spec in catalog.MODELS.values() if spec.owned_by != "self-hosted"
         for mode in MODES if spec.supports(mode)] + [(SELF_HOSTED, "generate")]


def _png(size: int = 512) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (size, size), (30, 120, 200, 255)).save(out, format="PNG")
    return out.getvalue()


def _call(client, model: str, mode: str):
    providers.registry()  # registers the configured self-hosted model in the catalog
    spec = catalog.MODELS[model]
    kwargs = {"response_format": "b64_json"} if spec.response_formats else {}
    image = ("in.png", _png(), "image/png")
    if mode == "generate":
        return client.images.with_raw_response.generate(model=model, prompt="a lighthouse at dusk", **kwargs)
    if mode == "edit":
        return client.images.with_raw_response.edit(model=model, image=image, prompt="add a red balloon", **kwargs)
    return client.images.with_raw_response.create_variation(model=model, image=image, **kwargs)


def test_every_model_and_mode_is_covered():
    assert {m for m, _ in CASES} >= {m.id for m in catalog.MODELS.values() if m.owned_by != "self-hosted"}
    assert {"edit", "variation"} <= {mode for _, mode in CASES}


@pytest.mark.parametrize("model, mode", CASES, ids=lambda v: v)
def test_the_response_is_the_sdks_images_response(configured, openai_client, api_key, model, mode):
    raw = _call(openai_client, model, mode)
    body = raw.http_response.json()

    strict = ImagesResponse.model_validate(body, strict=True)  # the SDK's own type, no coercion
    parsed = raw.parse()  # what `client.images.generate(...)` returns
    assert isinstance(parsed, ImagesResponse) and isinstance(parsed.usage, Usage)
    assert strict.data and all(item.b64_json for item in strict.data)

    (row,) = LedgerEntry.objects.for_organization(api_key[0].organization)
    assert row.status == "succeeded" and row.cost_micros > 0
    usage = parsed.usage
    assert usage.model_extra["cost"] == pytest.approx(row.cost_micros / 1e6)
    assert usage.model_extra["image_size"] == row.size
    assert usage.model_extra["model_used"] in (model, row.served_model)
    assert isinstance(usage.model_extra["latency_ms"], int)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens == usage.input_tokens_details.text_tokens + usage.input_tokens_details.image_tokens

    spec = catalog.MODELS[model]
    if spec.output_formats:  # OpenAI's GPT image models: the upstream's token counts, what was produced
        assert usage.output_tokens > 0 and usage.input_tokens_details.text_tokens > 0
        assert (parsed.background, parsed.output_format, parsed.quality) == ("opaque", "png", "medium")
        assert parsed.size == row.size == "1024x1024"
        if mode == "edit":
            assert usage.input_tokens_details.image_tokens > 0
    else:  # no token counts from this upstream: zeros, and none of the GPT image fields
        assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (0, 0, 0)
        assert parsed.background is parsed.output_format is parsed.quality is parsed.size is None


def test_gpt_image_1_echoes_the_background_the_upstream_produced(configured, openai_client):
    """Asked `background: auto`, OpenAI answers what it made; so do we (issue 13: "opaque" came from the upstream)."""
    for produced in ("opaque", "transparent"):
        configured["openai"].state["auto_background"] = produced
        raw = openai_client.images.with_raw_response.generate(model="gpt-image-1", prompt="a sticker",
                                                              background="auto")
        body = raw.http_response.json()
        assert body["background"] == produced
        assert ImagesResponse.model_validate(body, strict=True).background == produced


def test_token_counts_are_the_upstreams(configured, openai_client):
    configured["openai"].state["auto_quality"] = "high"
    body = openai_client.images.with_raw_response.generate(model="gpt-image-2", prompt="p" * 400, size="2048x1152",
                                                           n=2).http_response.json()
    from tests.emulators.openai import gpt_image_2_tokens

    usage = body["usage"]
    assert usage["output_tokens"] == 2 * gpt_image_2_tokens("2048x1152", "high")
    assert usage["input_tokens_details"] == {"text_tokens": 100, "image_tokens": 0}
    assert usage["output_tokens_details"] == {"text_tokens": 0, "image_tokens": usage["output_tokens"]}
    assert (body["quality"], body["size"], usage["image_size"]) == ("high", "2048x1152", "2048x1152")


def test_without_upstream_token_counts_the_fields_are_zeros(configured, openai_client):
    configured["openai"].state["no_usage"] = True
    result = openai_client.images.generate(model="gpt-image-1.5", prompt="x", quality="low", size="1024x1024")
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.total_tokens) == (0, 0, 0)
    assert result.usage.model_extra["cost"] > 0

"""OpenAI's current GPT image models (issue 13, "Must show" 1) through the whole gateway: the official SDK → /v1 →
router → OpenAIProvider → the OpenAI emulator on 127.0.0.1, with the ledger checked.

gpt-image-1-mini, gpt-image-1.5, gpt-image-2 (free-form sizes, refusals naming the rule), the alias
chatgpt-image-latest (the ledger records the dated model that served it), qualities, background, output_format,
output_compression, moderation, 16 input images, input_fidelity where the model takes it, moderation_blocked → our
refusal at $0, 429s, and prices from OpenAI's list (the adapter, the price list and the emulator agree).
"""
import base64
import io

import openai
import pytest
from PIL import Image

from billing import price_list
from billing.models import LedgerEntry, Price
from generation import catalog, providers
from generation.providers import openai as adapter
from tests.emulators import openai as openai_emu
from tests.emulators.base import Fault

NEW_MODELS = ["gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2", "chatgpt-image-latest"]


@pytest.fixture(scope="module")
def upstream():
    with openai_emu.emulator() as emu:
        yield emu


@pytest.fixture
def oa(upstream, settings, live_url):
    upstream.reset()
    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = openai_emu.API_KEY, upstream.url + "/v1"
    settings.PROVIDER_TIMEOUT_SECONDS = 10.0
    providers.reset_registry()
    yield upstream
    providers.reset_registry()


def _rows(api_key) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.for_organization(api_key[0].organization).order_by("id"))


def _posts(emu) -> list:
    return [r for r in emu.requests if r.method == "POST"]


def _sent_json(emu) -> dict:
    (post,) = _posts(emu)
    return openai_emu.recorded_json(post)


def _png(width=64, height=64) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (200, 30, 30, 255)).save(out, format="PNG")
    return out.getvalue()


# --- Prices: OpenAI's list, the adapter, our price list and the emulator agree -------------------------------------


def test_gpt_image_2_tokens_match_openais_published_1024_prices():
    """OpenAI's model page: 1024x1024 low / medium / high = $0.006 / $0.053 / $0.211 at $30 per 1M output tokens."""
    tokens = [adapter.gpt_image_2_output_tokens("1024x1024", q) for q in ("low", "medium", "high")]
    assert tokens == [196, 1_756, 7_024]
    assert [round(adapter.gpt_image_2_price("1024x1024", q) / 1e6, 3) for q in ("low", "medium", "high")] == [
        0.006, 0.053, 0.211]
    assert adapter.gpt_image_2_output_tokens("1536x1024", "high") == 5_488  # OpenAI's calculator
    for size in ("1024x1024", "1536x864", "3840x2160", "1024x3072", "2048x1152", "816x816"):
        w, h = (int(v) for v in size.split("x"))
        for quality in ("low", "medium", "high"):
            t = adapter.gpt_image_2_output_tokens(size, quality)
            assert t == price_list.gpt_image_2_output_tokens(w, h, quality) == openai_emu.gpt_image_2_tokens(
                size, quality)
            assert price_list.gpt_image_2_list_price_micros(size, quality) == -(
                -adapter.gpt_image_2_price(size, quality) * 11 // 10)


@pytest.mark.parametrize("model", NEW_MODELS)
def test_every_listed_size_and_quality_is_priced_at_openais_price_plus_ten_percent(model):
    provider = adapter.OpenAIProvider(api_key="k")
    spec = catalog.MODELS[model]
    ours = {(m, s, q): micros for m, s, q, micros, _ in price_list.PRICE_LIST if m == model}
    for size in spec.sizes:
        if size == "auto":
            continue
        for quality in ("low", "medium", "high"):
            request = adapter.ImageRequest(model=model, prompt="x", n=1, size=size, quality=quality)
            upstream = provider.upstream_cost_micros(request)
            assert upstream > 0
            assert ours[(model, size, quality)] == -(-upstream * 11 // 10)
    if model == "gpt-image-1-mini":  # OpenAI's model page
        assert [ours[(model, "1024x1024", q)] for q in ("low", "medium", "high")] == [5_500, 12_100, 39_600]


def test_the_size_rules_agree_everywhere():
    """catalog.FreeSizes, the adapter, billing and the emulator accept exactly the same gpt-image-2 sizes."""
    rules = catalog.GPT_IMAGE_2.free_sizes
    for w in range(0, 4200, 100):
        for h in range(16, 4200, 208):
            size = f"{w}x{h}"
            ok = rules.check(size) is None
            assert ok == (adapter._free_size_problem(size) is None) == price_list.gpt_image_2_size_ok(size) == (
                openai_emu.free_size_error(size) is None), size
    for size in ("1536x864", "3840x2160", "2160x3840", "1024x3072", "816x816"):
        assert rules.check(size) is None


# --- The models through the gateway -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", NEW_MODELS)
@pytest.mark.parametrize("quality", ["low", "medium", "high", "auto"])
def test_each_new_model_and_quality_generates_and_is_charged_its_price(oa, openai_client, api_key, model, quality):
    oa.state["auto_quality"] = "high"
    raw = openai_client.images.with_raw_response.generate(model=model, prompt="a lighthouse", size="1024x1536",
                                                          quality=quality)
    body = raw.http_response.json()
    produced = "high" if quality == "auto" else quality
    assert (body["quality"], body["size"], body["output_format"]) == (produced, "1024x1536", "png")
    sent = _sent_json(oa)
    assert sent["model"] == model and sent["quality"] == quality and "response_format" not in sent
    (row,) = _rows(api_key)
    price = Price.objects.get(model=model, size="1024x1536", quality=produced)
    assert (row.status, row.quality, row.cost_micros) == ("succeeded", produced, price.unit_price_micros)
    assert body["usage"]["cost"] == pytest.approx(price.unit_price_micros / 1e6)


def test_gpt_image_2_takes_a_free_form_size_priced_by_its_tokens(oa, openai_client, api_key):
    raw = openai_client.images.with_raw_response.generate(model="gpt-image-2", prompt="a wide harbour",
                                                          size="1536x864", quality="high")
    body = raw.http_response.json()
    assert body["size"] == body["usage"]["image_size"] == "1536x864"
    assert _sent_json(oa)["size"] == "1536x864"
    (row,) = _rows(api_key)
    expected = price_list.gpt_image_2_list_price_micros("1536x864", "high")
    assert (row.size, row.cost_micros, row.price.unit_price_micros) == ("1536x864", expected, expected)
    # What OpenAI bills us: the tokens it reported ($5 text in, $8 image in, $30 image out per 1M).
    usage = body["usage"]
    assert row.upstream_cost_micros == 5 * usage["input_tokens_details"]["text_tokens"] + 30 * usage[
        "output_tokens"] < expected
    # The emulator reported its tokens; they are the response's.
    assert body["usage"]["output_tokens"] == openai_emu.gpt_image_2_tokens("1536x864", "high")
    # A second request at the same size finds the row the first one made.
    openai_client.images.generate(model="gpt-image-2", prompt="again", size="1536x864", quality="high")
    assert Price.objects.filter(model="gpt-image-2", size="1536x864", quality="high").count() == 1


@pytest.mark.parametrize("size, rule", [
    ("1000x1000", "multiples of 16"),
    ("3840x1024", "between 1:3 and 3:1"),
    ("4096x2304", "at most 3840x2160"),
    ("3840x2176", "at most 3840x2160"),
    ("512x512", "at least 655,360 pixels"),
    ("wide", "WIDTHxHEIGHT"),
])
def test_gpt_image_2_refusals_name_the_rule_and_cost_nothing(oa, openai_client, api_key, size, rule):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="gpt-image-2", prompt="x", size=size)
    error = info.value.body
    assert (info.value.status_code, error["code"], error["param"]) == (400, "invalid_size", "size")
    assert rule in error["message"] and "3840x2160" in error["message"]
    assert _posts(oa) == []
    (row,) = _rows(api_key)
    assert (row.status, row.cost_micros) == ("invalid", 0)


def test_other_gpt_image_models_keep_the_standard_sizes(oa, openai_client):
    for model in ("gpt-image-1-mini", "gpt-image-1.5", "chatgpt-image-latest"):
        with pytest.raises(openai.BadRequestError) as info:
            openai_client.images.generate(model=model, prompt="x", size="1536x864")
        assert info.value.code == "invalid_size" and "1024x1024, 1536x1024, 1024x1536, auto" in info.value.message


def test_the_alias_records_the_dated_model_that_served_it(oa, openai_client, api_key):
    result = openai_client.images.generate(model="chatgpt-image-latest", prompt="a cat", quality="low",
                                           size="1024x1024")
    assert result.usage.model_extra["model_used"] == "gpt-image-2-2026-04-21"
    oa.state["alias_snapshot"] = "gpt-image-2-2026-11-02"  # OpenAI moved the alias
    openai_client.images.generate(model="chatgpt-image-latest", prompt="a dog", quality="low", size="1024x1024")
    first, second = _rows(api_key)
    assert (first.model, first.served_model) == ("chatgpt-image-latest", "gpt-image-2-2026-04-21")
    assert (second.model, second.served_model) == ("chatgpt-image-latest", "gpt-image-2-2026-11-02")
    assert first.cost_micros == Price.objects.get(model="gpt-image-2", size="1024x1024", quality="low")\
        .unit_price_micros
    # served_model is in the seal's hash when set; the chains still verify, and a row without it hashes as before.
    from billing import ledger, sealing

    verification = sealing.verify()
    assert verification.breaks == [] and verification.rows >= 2
    values = ledger.row_values(first, sequence=1)
    without = {k: v for k, v in values.items() if k != "served_model"}
    assert ledger.digest(values, ledger.GENESIS) != ledger.digest({**values, "served_model": ""}, ledger.GENESIS)
    assert ledger.digest(without, ledger.GENESIS) == ledger.digest({**values, "served_model": ""}, ledger.GENESIS)


def test_background_and_output_options_are_sent_and_what_was_produced_is_answered(oa, openai_client):
    raw = openai_client.images.with_raw_response.generate(
        model="gpt-image-1.5", prompt="a logo", background="transparent", output_format="webp",
        output_compression=60, moderation="low", size="1024x1024", quality="medium")
    body = raw.http_response.json()
    sent = _sent_json(oa)
    assert (sent["background"], sent["output_format"], sent["output_compression"], sent["moderation"]) == (
        "transparent", "webp", 60, "low")
    assert (body["background"], body["output_format"]) == ("transparent", "webp")
    assert base64.b64decode(body["data"][0]["b64_json"])[:4] == b"RIFF"
    # "auto": the upstream answers what it chose (opaque here), and so do we.
    oa.requests.clear()
    body = openai_client.images.with_raw_response.generate(model="gpt-image-1", prompt="a photo",
                                                           background="auto").http_response.json()
    assert _sent_json(oa)["background"] == "auto"
    assert (body["background"], body["quality"], body["size"]) == ("opaque", "medium", "1024x1024")


def test_a_transparent_jpeg_is_refused_before_the_upstream(oa, openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="gpt-image-2", prompt="x", background="transparent",
                                      output_format="jpeg")
    assert info.value.body["param"] == "background" and _posts(oa) == []


def test_edits_take_sixteen_images_and_no_more(oa, openai_client, api_key):
    images = [(f"in{i}.png", _png(), "image/png") for i in range(16)]
    result = openai_client.images.edit(model="gpt-image-1.5", image=images, prompt="a collage", size="1024x1024",
                                       quality="low")
    assert len(result.data) == 1
    fields, files = openai_emu.recorded_form(_posts(oa)[0])
    assert len(files["image[]"]) == 16 and fields["model"] == ["gpt-image-1.5"]
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.edit(model="gpt-image-1.5", image=images + [("x.png", _png(), "image/png")],
                                  prompt="a collage")
    assert "16" in info.value.message
    assert [r.status for r in _rows(api_key)] == ["succeeded", "invalid"]


@pytest.mark.parametrize("model, fidelity", [("gpt-image-1", "high"), ("gpt-image-1.5", "high"),
                                             ("gpt-image-1.5", "low"), ("gpt-image-1-mini", "low")])
def test_input_fidelity_where_the_model_takes_it(oa, openai_client, api_key, model, fidelity):
    result = openai_client.images.edit(model=model, image=("in.png", _png(), "image/png"), prompt="keep the face",
                                       input_fidelity=fidelity, size="1024x1024", quality="low")
    assert result.data[0].b64_json
    fields, _ = openai_emu.recorded_form(_posts(oa)[0])
    assert fields["input_fidelity"] == [fidelity]
    assert _rows(api_key)[0].status == "succeeded"


@pytest.mark.parametrize("model, fidelity, hint", [
    ("gpt-image-1-mini", "high", "must be one of: low"),
    ("gpt-image-2", "high", "It is supported by: gpt-image-1, gpt-image-1-mini, gpt-image-1.5"),
    ("chatgpt-image-latest", "low", "It is supported by:"),
])
def test_input_fidelity_is_refused_where_the_model_does_not_take_it(oa, openai_client, model, fidelity, hint):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.edit(model=model, image=("in.png", _png(), "image/png"), prompt="x",
                                  input_fidelity=fidelity)
    assert info.value.body["param"] == "input_fidelity" and hint in info.value.message
    assert _posts(oa) == []


@pytest.mark.parametrize("model", NEW_MODELS)
def test_moderation_blocked_is_our_refusal_at_zero(oa, openai_client, api_key, model):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model=model, prompt="a forbidden-upstream scene")
    assert info.value.code == "content_policy_violation"
    (post,) = _posts(oa)  # the upstream was asked and answered moderation_blocked
    (row,) = _rows(api_key)
    assert (row.status, row.cost_micros, row.error_code) == ("refused", 0, "content_policy_violation")


def test_the_emulator_answers_moderation_blocked_as_openai_documents(oa):
    import httpx

    reply = httpx.post(oa.url + "/v1/images/generations", headers={"Authorization": f"Bearer {openai_emu.API_KEY}"},
                       json={"model": "gpt-image-2", "prompt": "forbidden-upstream"})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert (error["type"], error["code"]) == ("image_generation_user_error", "moderation_blocked")
    reply = httpx.post(oa.url + "/v1/images/edits", headers={"Authorization": f"Bearer {openai_emu.API_KEY}"},
                       data={"model": "gpt-image-2", "prompt": "x", "input_fidelity": "high"},
                       files={"image": ("a.png", _png(), "image/png")})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "input_fidelity"


def test_an_upstream_429_is_a_retryable_429_at_zero(oa, openai_client, api_key):
    oa.faults.set("generate", Fault(kind="rate_limit"))
    with pytest.raises(openai.RateLimitError) as info:
        openai_client.images.generate(model="gpt-image-2", prompt="x", size="2048x1152")
    assert info.value.response.headers["retry-after"] == "2"
    (row,) = _rows(api_key)
    assert (row.status, row.cost_micros) == ("failed", 0)


def test_models_list_the_new_models_with_their_sizes(oa, openai_client):
    ids = {m.id for m in openai_client.models.list().data}
    assert set(NEW_MODELS) <= ids
    two = openai_client.models.retrieve("gpt-image-2")
    assert "3840x2160" in two.model_extra["sizes"] and two.model_extra["capabilities"] == ["edit", "generate",
                                                                                           "image_input"]


# --- The adapter alone: what a GPT image reply says ------------------------------------------------------------------


def test_the_adapter_keeps_what_the_reply_says_it_produced():
    usage = {"input_tokens": 12, "input_tokens_details": {"text_tokens": 10, "image_tokens": 2}, "output_tokens": 196,
             "total_tokens": 208}
    body = {"background": "opaque", "output_format": "webp", "usage": usage}
    produced = adapter._produced(body, {"openai-model": "gpt-image-2-2026-04-21"})
    assert produced == {"resolved_background": "opaque", "resolved_output_format": "webp",
                        "served_model": "gpt-image-2-2026-04-21", "usage": usage}
    # A body `model` (OpenAI-compatible hosts) wins over the header; "auto" or junk is not a produced value.
    assert adapter._produced({"model": "snap-1", "background": "auto"}, {"openai-model": "snap-2"}) == {
        "served_model": "snap-1"}
    # Token counts are kept only when every documented count is an integer (a missing detail counts 0).
    assert "usage" not in adapter._produced({"usage": {**usage, "output_tokens": "196"}}, {})
    partial = adapter._produced({"usage": {k: v for k, v in usage.items() if k != "input_tokens_details"}}, {})
    assert partial["usage"]["input_tokens_details"] == {"text_tokens": 0, "image_tokens": 0}


def test_gpt_image_2_upstream_cost_is_its_reported_tokens():
    provider = adapter.OpenAIProvider(api_key="k")
    usage = {"input_tokens": 1_010, "input_tokens_details": {"text_tokens": 10, "image_tokens": 1_000},
             "output_tokens": 7_024, "total_tokens": 8_034}
    assert provider._token_cost("gpt-image-2", usage) == 10 * 5 + 1_000 * 8 + 7_024 * 30
    assert provider._token_cost("chatgpt-image-latest", usage) == provider._token_cost("gpt-image-2", usage)
    assert provider._token_cost("gpt-image-1.5", usage) is None  # priced per image from OpenAI's table
    assert provider._token_cost("gpt-image-2", None) is None

"""Every upstream through the whole gateway: the official SDK → /v1 → router → adapter → emulator on 127.0.0.1.

Providers are switched on by configuration (their keys and base URLs), exactly as in production."""
import base64
import json
import time

import openai
import pytest

from billing.models import LedgerEntry
from billing.selectors import current_price
from generation import catalog, providers
from generation.models import ProviderAttempt
from tests.emulators import bedrock, bfl, gemini, ideogram, recraft, replicate, stability
from tests.emulators import openai as openai_emu
from tests.emulators.base import Fault
from tests.images_util import png

UPSTREAM_MODELS = [m for m in catalog.MODELS.values() if m.id != "local-preview"
                   and m.owned_by != "self-hosted"]


@pytest.fixture(scope="module")
def upstreams():
    with openai_emu.emulator(extra_models={"sdxl-turbo-selfhosted": None}) as oa, stability.emulator() as st, \
            bfl.emulator() as bf, replicate.emulator() as rp, bedrock.emulator() as br, \
            openai_emu.emulator(api_key="selfhosted-key", extra_models={"sdxl-turbo-selfhosted": None},
                                retired=()) as sh, \
            gemini.emulator() as gm, recraft.emulator() as rc, ideogram.emulator() as ig:
        yield {"openai": oa, "stability": st, "bfl": bf, "replicate": rp, "bedrock": br, "selfhosted": sh,
               "gemini": gm, "recraft": rc, "ideogram": ig}


@pytest.fixture
def configured(upstreams, settings, live_url):
    for emu in upstreams.values():
        emu.reset()
    upstreams["stability"].state["rate_limit"] = None
    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = openai_emu.API_KEY, upstreams["openai"].url + "/v1"
    settings.STABILITY_API_KEY, settings.STABILITY_BASE_URL = stability.API_KEY, upstreams["stability"].url
    settings.BFL_API_KEY, settings.BFL_BASE_URL = bfl.API_KEY, upstreams["bfl"].url
    settings.REPLICATE_API_TOKEN, settings.REPLICATE_BASE_URL = replicate.API_TOKEN, upstreams["replicate"].url
    settings.BEDROCK_ENABLED, settings.AWS_REGION = True, "us-east-1"
    settings.AWS_ACCESS_KEY_ID, settings.AWS_SECRET_ACCESS_KEY = bedrock.ACCESS_KEY, bedrock.SECRET_KEY
    settings.BEDROCK_ENDPOINT_URL = upstreams["bedrock"].url
    settings.GEMINI_API_KEY, settings.GEMINI_BASE_URL = gemini.API_KEY, upstreams["gemini"].url
    settings.RECRAFT_API_KEY, settings.RECRAFT_BASE_URL = recraft.API_KEY, upstreams["recraft"].url
    settings.IDEOGRAM_API_KEY, settings.IDEOGRAM_BASE_URL = ideogram.API_KEY, upstreams["ideogram"].url
    settings.OPENAI_COMPATIBLE_BASE_URL = upstreams["selfhosted"].url + "/v1"
    settings.OPENAI_COMPATIBLE_API_KEY = "selfhosted-key"
    settings.OPENAI_COMPATIBLE_UPSTREAM_COST_MICROS = 1_000
    # OpenAI retired dall-e-2 and dall-e-3 (its emulator answers 404 model_not_found, as OpenAI does): the
    # self-hosted OpenAI-compatible host still serves them, and the router fails over to it.
    settings.OPENAI_COMPATIBLE_MODELS = ["sdxl-turbo-selfhosted", "dall-e-2", "dall-e-3"]
    settings.PROVIDER_TIMEOUT_SECONDS = 10.0
    providers.reset_registry()
    from django.core.management import call_command

    call_command("sync_prices", verbosity=0)
    yield upstreams
    providers.reset_registry()
    catalog.MODELS.pop("sdxl-turbo-selfhosted", None)


def _rows(api_key):
    return list(LedgerEntry.objects.for_organization(api_key[0].organization).order_by("id"))


def test_models_lists_exactly_what_enabled_providers_serve(configured, openai_client):
    ids = {m.id for m in openai_client.models.list().data}
    assert ids == {m.id for m in UPSTREAM_MODELS} | {"local-preview", "sdxl-turbo-selfhosted"}
    sdxl = openai_client.models.retrieve("sdxl-1.0")
    assert sdxl.model_extra["providers"] == ["stability", "replicate"]
    assert openai_client.models.retrieve("dall-e-2").model_extra["providers"] == ["openai", "openai_compatible"]


def test_without_keys_only_local_preview_is_listed(openai_client):
    providers.reset_registry()
    assert [m.id for m in openai_client.models.list().data] == ["local-preview"]
    with pytest.raises(openai.NotFoundError):
        openai_client.images.generate(model="dall-e-3", prompt="x")


@pytest.mark.parametrize("spec", UPSTREAM_MODELS, ids=lambda s: s.id)
def test_every_model_generates_through_its_upstream_at_a_correct_nonzero_price(configured, openai_client, api_key,
                                                                               spec):
    kwargs = {"response_format": "b64_json"} if spec.response_formats else {}  # gpt-image: always base64
    raw = openai_client.images.with_raw_response.generate(model=spec.id, prompt="a lighthouse at dusk", n=1,
                                                          **kwargs)
    body = raw.http_response.json()
    image = base64.b64decode(body["data"][0]["b64_json"])
    assert image[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"RIFF") or image[:3] == b"\xff\xd8\xff"
    assert raw.headers["x-provider"] in spec.providers
    (row,) = _rows(api_key)
    size = spec.default_size if spec.default_size != "auto" else catalog.AUTO_SIZE
    quality = spec.default_quality if spec.default_quality != "auto" else catalog.AUTO_QUALITY
    price = current_price(model=spec.id, size=size, quality=quality)
    assert row.cost_micros == price.unit_price_micros > 0
    assert body["usage"]["cost"] == pytest.approx(price.unit_price_micros / 1e6)
    assert body["usage"]["model_used"] == (spec.alias_of or spec.id)  # an alias: the dated model that served it
    assert row.upstream_cost_micros and 0 < row.upstream_cost_micros < row.cost_micros  # our margin


def test_self_hosted_openai_compatible_server(configured, openai_client, api_key):
    result = openai_client.images.generate(model="sdxl-turbo-selfhosted", prompt="x", response_format="b64_json")
    assert base64.b64decode(result.data[0].b64_json)[:4] == b"\x89PNG"
    assert _rows(api_key)[0].provider == "openai_compatible" and _rows(api_key)[0].cost_micros == 2_000


@pytest.mark.parametrize("model", ["dall-e-3", "sdxl-1.0", "stable-image-core", "flux-pro-1.1", "flux-2-pro",
                                   "flux-schnell", "nova-canvas", "gemini-3.1-flash-image", "gemini-3-pro-image",
                                   "recraftv4_1", "ideogram-v3"])
def test_upstream_refusals_are_content_policy_violations_and_free(configured, openai_client, api_key, model):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model=model, prompt="a forbidden-upstream scene")
    assert info.value.code == "content_policy_violation"
    (row,) = _rows(api_key)
    assert (row.status, row.cost_micros) == ("refused", 0)
    assert [a.status for a in ProviderAttempt.objects.for_organization(api_key[0].organization)] == ["refused"]


def test_failover_between_real_upstreams(configured, openai_client, api_key):
    # sdxl-1.0: replicate is cheaper upstream, so it goes first; make it fail with 503s.
    configured["replicate"].faults.set("create", Fault(status=503))
    raw = openai_client.images.with_raw_response.generate(model="sdxl-1.0", prompt="failover", n=2,
                                                          response_format="b64_json")
    assert raw.headers["x-provider"] == "stability"
    assert len(raw.parse().data) == 2
    attempts = list(ProviderAttempt.objects.for_organization(api_key[0].organization).order_by("attempt"))
    assert [(a.provider, a.status) for a in attempts] == [("replicate", "failed"), ("stability", "succeeded")]
    assert _rows(api_key)[0].cost_micros == 2 * current_price(model="sdxl-1.0", size="1024x1024",
                                                               quality="standard").unit_price_micros


def test_explicit_provider_is_honoured(configured, openai_client):
    raw = openai_client.images.with_raw_response.generate(model="sdxl-1.0", prompt="x", response_format="b64_json",
                                                          extra_body={"provider": "stability"})
    assert raw.headers["x-provider"] == "stability"


def test_upstream_rate_limits_everywhere_become_our_429(configured, openai_client):
    configured["openai"].faults.set("generate", Fault(status=429))
    with pytest.raises(openai.RateLimitError) as info:
        openai_client.images.generate(model="gpt-image-1", prompt="x")
    assert info.value.code == "rate_limit_exceeded"


def test_upstream_timeout_is_504(configured, openai_client, settings, api_key):
    settings.PROVIDER_TIMEOUT_SECONDS = 0.5
    providers.reset_registry()
    configured["bfl"].state["delay"] = 3.0
    with pytest.raises(openai.InternalServerError) as info:
        openai_client.images.generate(model="flux-pro-1.1", prompt="x")
    assert info.value.status_code == 504 and info.value.code == "upstream_timeout"
    assert _rows(api_key)[0].cost_micros == 0


def test_malformed_upstream_reply_is_502(configured, openai_client):
    configured["openai"].faults.set("generate", Fault(kind="malformed"))
    with pytest.raises(openai.InternalServerError) as info:
        openai_client.images.generate(model="gpt-image-1", prompt="x")
    assert info.value.status_code == 502


def test_upstream_validation_error_passes_its_reason(configured, openai_client):
    configured["openai"].faults.set("generate", Fault(status=400, body={"error": {
        "message": "Your prompt was too vague for this model.", "type": "invalid_request_error", "param": "prompt",
        "code": "prompt_too_vague"}}))
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="gpt-image-1", prompt="x")
    assert "too vague" in info.value.message


def test_edits_and_variations_reach_their_upstreams(configured, openai_client, api_key):
    edit = openai_client.images.edit(model="dall-e-2", image=("a.png", png(64, 64), "image/png"), prompt="hat",
                                     response_format="b64_json")
    assert edit.data[0].b64_json
    variation = openai_client.images.create_variation(model="titan-image-generator-v2",
                                                      image=("a.png", png(64, 64), "image/png"),
                                                      response_format="b64_json", size="512x512")
    assert variation.data[0].b64_json
    # dall-e-2 is retired at OpenAI: the OpenAI-compatible host serves it (tests/test_model_lifecycle.py).
    assert [r.provider for r in _rows(api_key)] == ["openai_compatible", "bedrock"]


def test_dall_e_3_refuses_an_input_image(configured, openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="dall-e-3", prompt="x", extra_body={"image": "https://example.com/a.png"})
    assert info.value.param == "image"


# --- FLUX.2 on BFL: per-megapixel prices ------------------------------------------------------------------------------

@pytest.mark.parametrize("model, size, ours, bfl_cost", [
    # ours = ceil(BFL's price x 1.1); BFL's price = first + per-MP x (MP - 1), rounded up (docs/providers/bfl.md).
    ("flux-2-pro", "1024x1024", 33_802, 30_729),
    ("flux-2-pro", "2048x2048", 85_707, 77_915),
    ("flux-2-klein-4b", "512x512", 15_400, 14_000),
    ("flux-2-klein-9b", "1920x1088", 18_896, 17_178),
    ("flux-2-flex", "1536x1536", 129_762, 117_965),
    ("flux-2-max", "1088x1920", 112_936, 102_669),
])
def test_flux2_is_billed_per_megapixel_through_the_sdk(configured, openai_client, api_key, model, size, ours,
                                                       bfl_cost):
    raw = openai_client.images.with_raw_response.generate(model=model, prompt="a lighthouse at dusk", size=size,
                                                          n=2, response_format="b64_json")
    body = raw.http_response.json()
    assert raw.headers["x-provider"] == "bfl" and len(body["data"]) == 2
    assert all(base64.b64decode(item["b64_json"])[:4] == b"\x89PNG" for item in body["data"])
    submits = [r for r in configured["bfl"].requests if r.method == "POST"]
    assert [r.path for r in submits] == [f"/v1/{model}"] * 2  # one task per image
    width, height = map(int, size.split("x"))
    assert all((json.loads(r.body)["width"], json.loads(r.body)["height"]) == (width, height) for r in submits)
    (row,) = _rows(api_key)
    price = current_price(model=model, size=size, quality="standard")
    assert row.cost_micros == 2 * ours == 2 * price.unit_price_micros
    assert row.upstream_cost_micros == 2 * bfl_cost  # what BFL reported for the two tasks
    assert body["usage"]["cost"] == pytest.approx(2 * ours / 1e6)


def test_flux2_sizes_outside_the_catalog_are_refused_before_bfl(configured, openai_client, api_key):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="flux-2-max", prompt="x", size="1000x1000")
    assert info.value.code == "invalid_size" and "2048x2048" in info.value.message
    assert configured["bfl"].requests == []


def test_flux2_rate_limit_over_24_active_tasks_is_our_429_and_free(configured, openai_client, api_key):
    configured["bfl"].state["max_concurrent"] = 0  # every active-task slot is taken
    with pytest.raises(openai.RateLimitError) as info:
        openai_client.images.generate(model="flux-2-klein-9b", prompt="x")
    assert info.value.code == "rate_limit_exceeded"
    (row,) = _rows(api_key)
    assert row.cost_micros == 0


# --- Gemini, Recraft, Ideogram (issue 13) --------------------------------------------------------------------------


@pytest.mark.parametrize("model,kwargs,micros,upstream", [
    ("gemini-3-pro-image", {"size": "4096x4096"}, 264_000, 240_000),
    ("gemini-3.1-flash-image", {"size": "2752x1536"}, 110_880, 100_800),
    ("recraftv4_pro", {"size": "2688x1536", "n": 2}, 2 * 275_000, 2 * 250_000),
    ("recraftv3", {"size": "1820x1024", "style": "digital_illustration"}, 44_000, 40_000),
    ("ideogram-v3", {"size": "1312x736", "quality": "high", "n": 2}, 2 * 99_000, 2 * 90_000),
    ("ideogram-v3", {"quality": "low", "style": "realistic"}, 33_000, 30_000),
])
def test_new_upstreams_charge_their_size_and_quality_with_the_cost_in_usage(configured, openai_client, api_key,
                                                                           model, kwargs, micros, upstream):
    raw = openai_client.images.with_raw_response.generate(model=model, prompt="a lighthouse at dusk",
                                                          response_format="b64_json", **kwargs)
    body = raw.http_response.json()
    assert len(body["data"]) == kwargs.get("n", 1)
    assert all(base64.b64decode(item["b64_json"])[:4] == b"\x89PNG" for item in body["data"])
    assert body["usage"]["cost"] == pytest.approx(micros / 1e6)
    assert body["usage"]["image_size"] == kwargs.get("size", "1024x1024")
    (row,) = _rows(api_key)
    assert (row.status, row.cost_micros, row.upstream_cost_micros) == ("succeeded", micros, upstream)
    assert row.quality == kwargs.get("quality", catalog.MODELS[model].default_quality)


@pytest.mark.parametrize("model,n,calls", [("gemini-3.1-flash-image", 3, 3), ("recraftv4_1", 8, 2),
                                           ("ideogram-v3", 10, 2)])
def test_new_upstreams_serve_n_beyond_their_native_max_by_parallel_calls(configured, openai_client, api_key, model,
                                                                         n, calls):
    provider = catalog.MODELS[model].providers[0]
    result = openai_client.images.generate(model=model, prompt="tide pools", n=n, response_format="b64_json",
                                           extra_body={"seed": 40})
    assert len(result.data) == n
    sent = [r for r in configured[provider].requests if r.method == "POST"]
    assert len(sent) == calls
    (row,) = _rows(api_key)
    unit = current_price(model=model, size=catalog.MODELS[model].default_size,
                         quality=catalog.MODELS[model].default_quality).unit_price_micros
    assert (row.n, row.cost_micros) == (n, n * unit)
    if model == "gemini-3.1-flash-image":  # one call per image, each with its own seed
        seeds = sorted(gemini.recorded_payload(r)["generationConfig"]["seed"] for r in sent)
        assert seeds == [40, 41, 42]


@pytest.mark.parametrize("model,fault,retry_after", [
    ("gemini-3.1-flash-image", Fault(status=429), "38"),  # Google's RetryInfo.retryDelay "38s"
    ("recraftv4_1", Fault(status=429), "2"),
    ("ideogram-v3", Fault(status=429), "3"),
])
def test_new_upstreams_rate_limits_are_our_429_with_their_retry_hint_and_free(configured, openai_client, api_key,
                                                                             model, fault, retry_after):
    configured[catalog.MODELS[model].providers[0]].faults.set("generate", fault)
    with pytest.raises(openai.RateLimitError) as info:
        openai_client.images.generate(model=model, prompt="x")
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["retry-after"] == retry_after
    (row,) = _rows(api_key)
    assert (row.status, row.cost_micros) == ("failed", 0)


def test_a_gemini_size_it_cannot_make_is_refused_naming_the_sizes_it_can(configured, openai_client, api_key):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="gemini-3-pro-image", prompt="x", size="1536x1024")
    assert info.value.code == "invalid_size" and "1376x768" in info.value.message
    assert configured["gemini"].requests == []
    assert _rows(api_key)[0].cost_micros == 0


def test_a_gemini_blocked_output_costs_nothing(configured, openai_client, api_key):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="gemini-3-pro-image", prompt="a forbidden-output scene", n=2)
    assert info.value.code == "content_policy_violation"
    (row,) = _rows(api_key)
    assert (row.status, row.cost_micros, row.upstream_cost_micros) == ("refused", 0, None)


def test_upstream_retry_hints_are_passed_on_never_shorter_and_bounded():
    from generation.pipeline import service as services

    def hint(seconds):
        headers = services.upstream_retry_headers(seconds)
        return headers["retry-after"], headers["retry-after-ms"], headers.get("x-should-retry")

    assert hint(None) == hint(0) == hint(float("nan")) == ("1", "1000", None)
    assert hint(0.2) == ("1", "200", None)
    assert hint(37.5) == ("38", "37500", None)
    assert hint(20) == ("20", "20000", None)
    assert hint(90) == ("90", "90000", "false")  # longer than the SDKs wait by themselves: do not retry at once
    assert hint(86_400) == ("3600", "3600000", "false")


def test_an_upstream_429_passes_its_wait_on_to_the_client(configured, openai_client, api_key, live_url):
    """The only provider of the model answers 429 with `retry-after: 20`: the client is told 20 s (and 20,000 ms),
    not 1, and the SDK waits that long instead of hitting the upstream again at once."""
    emu = configured["openai"]
    limited = {"error": {"message": "Rate limit reached for images per minute.", "type": "requests", "param": None,
                         "code": "rate_limit_exceeded"}}
    emu.faults.set("generate", Fault(status=429, body=limited, headers={"retry-after": "20"}))
    with pytest.raises(openai.RateLimitError) as info:
        openai_client.images.generate(model="gpt-image-1", prompt="x", size="1024x1024", quality="low")
    headers = info.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("20", "20000")
    assert _rows(api_key)[-1].cost_micros == 0
    emu.faults.clear()
    emu.faults.set("generate", Fault(status=429, body=limited, headers={"retry-after": "2"}, times=1))
    hits_before = len([r for r in emu.requests if r.path.endswith("/images/generations")])
    patient = openai.OpenAI(base_url=f"{live_url}/v1", api_key=api_key[1], max_retries=2, timeout=30)
    started = time.monotonic()
    result = patient.images.generate(model="gpt-image-1", prompt="x", size="1024x1024", quality="low")
    waited = time.monotonic() - started
    hits = len([r for r in emu.requests if r.path.endswith("/images/generations")]) - hits_before
    assert result.data[0].b64_json and hits == 2 and waited >= 2.0  # one 429, one success, the wait honoured

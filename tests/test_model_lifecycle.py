"""Model lifecycle (issue 13, item 5), through the official openai SDK against the live server and emulators of every
upstream on 127.0.0.1: deprecated models serve with Deprecation / Sunset / Link headers and say so in /v1/models;
retired models answer 404 model_not_found naming their replacement, or are served by it for organizations that remap
(x-model-remapped, both names in the ledger); an upstream that says a model is gone (OpenAI for dall-e-2 and dall-e-3
since 2026-05-12) is failed over to an OpenAI-compatible host; the seed's models keep a working path."""
import base64
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import openai
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import services as account_services
from accounts.models import Membership
from billing.models import LedgerEntry
from billing.selectors import current_price
from config import process_cache
from generation import catalog, lifecycle, providers
from generation.models import ModelLifecycle, ProviderAttempt
from generation.pipeline import router
from tests import test_browser
from tests.emulators import bedrock, bfl, replicate, stability
from tests.emulators import openai as openai_emu
from tests.images_util import png

browser = test_browser.page  # the Chromium page fixture, as `browser`
DALL_E_DEPRECATED = int(datetime(2026, 5, 12, tzinfo=UTC).timestamp())  # 1778544000


@pytest.fixture(scope="module")
def upstreams():
    """OpenAI as it is now (dall-e-2 and dall-e-3 answer 404 model_not_found), an OpenAI-compatible host that still
    serves them, and the other seed models' upstreams."""
    with openai_emu.emulator() as oa, openai_emu.emulator(api_key="compat-key", retired=()) as compat, \
            stability.emulator() as st, bfl.emulator() as bf, replicate.emulator() as rp, bedrock.emulator() as br:
        yield {"openai": oa, "compat": compat, "stability": st, "bfl": bf, "replicate": rp, "bedrock": br}


def _configure(settings, upstreams, *, compat_models=("dall-e-2", "dall-e-3"), compat_cost=1_000):
    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = openai_emu.API_KEY, upstreams["openai"].url + "/v1"
    settings.STABILITY_API_KEY, settings.STABILITY_BASE_URL = stability.API_KEY, upstreams["stability"].url
    settings.BFL_API_KEY, settings.BFL_BASE_URL = bfl.API_KEY, upstreams["bfl"].url
    settings.REPLICATE_API_TOKEN, settings.REPLICATE_BASE_URL = replicate.API_TOKEN, upstreams["replicate"].url
    settings.BEDROCK_ENABLED, settings.AWS_REGION = True, "us-east-1"
    settings.AWS_ACCESS_KEY_ID, settings.AWS_SECRET_ACCESS_KEY = bedrock.ACCESS_KEY, bedrock.SECRET_KEY
    settings.BEDROCK_ENDPOINT_URL = upstreams["bedrock"].url
    settings.OPENAI_COMPATIBLE_BASE_URL = upstreams["compat"].url + "/v1"
    settings.OPENAI_COMPATIBLE_API_KEY = "compat-key"
    settings.OPENAI_COMPATIBLE_MODELS = list(compat_models)
    settings.OPENAI_COMPATIBLE_UPSTREAM_COST_MICROS = compat_cost
    settings.PROVIDER_TIMEOUT_SECONDS = 10.0
    providers.reset_registry()
    router.forget_gone()


@pytest.fixture
def configured(upstreams, settings, live_url):
    for emu in upstreams.values():
        emu.reset()
    upstreams["stability"].state["rate_limit"] = None
    _configure(settings, upstreams)
    yield upstreams
    providers.reset_registry()
    router.forget_gone()


def _rows(api_key):
    return list(LedgerEntry.objects.for_organization(api_key[0].organization).order_by("id"))


def _attempts(api_key):
    return [(a.provider, a.status) for a in
            ProviderAttempt.objects.for_organization(api_key[0].organization).order_by("request_id", "attempt")]


def _set(model, **fields):
    """What staff do in the admin: change a model's lifecycle row (the save invalidates every process's cache)."""
    row = ModelLifecycle.objects.get(model=model)
    for name, value in fields.items():
        setattr(row, name, value)
    row.save()


def _retire(model, replacement):
    _set(model, status="retired", deprecated_at=datetime(2026, 1, 1, tzinfo=UTC),
         sunset_at=datetime(2026, 6, 1, tzinfo=UTC), replacement=replacement)


def _remap(api_key, enabled=True):
    account_services.set_remap_retired_models(organization=api_key[0].organization, enabled=enabled)


# --- The data ---------------------------------------------------------------------------------------------------------


def test_every_catalog_model_has_a_lifecycle_row_and_dall_e_is_deprecated(db):
    rows = {row.model: row for row in ModelLifecycle.objects.all()}
    assert {m for m, s in catalog.MODELS.items() if s.owned_by != "self-hosted"} <= set(rows)
    for model in ("dall-e-2", "dall-e-3"):
        row = rows[model]
        assert (row.status, row.replacement) == ("deprecated", "gpt-image-1")
        assert row.deprecated_at == datetime(2026, 5, 12, tzinfo=UTC)  # OpenAI's retirement (docs/models.md)
        assert row.sunset_at == datetime(2027, 5, 12, tzinfo=UTC)
    assert {rows[m].status for m in ("sdxl-1.0", "stable-diffusion-2.1", "flux-dev", "titan-image-generator-v1")} \
        == {"active"}


def test_the_table_is_cached_per_process_and_a_save_drops_it(db):
    lifecycle.table()
    process_cache._watcher.poll()  # the watcher has seen the namespace's version: it drops nothing from here on
    lifecycle.invalidate()
    with CaptureQueriesContext(connection) as first:
        lifecycle.table()
    with CaptureQueriesContext(connection) as again:
        for _ in range(50):
            assert lifecycle.of("sdxl-1.0", lifecycle.table()).status == "active"
    assert len(first) == 1 and len(again) == 0  # no query per request on the hot path
    _retire("sdxl-1.0", "flux-dev")
    assert lifecycle.of("sdxl-1.0", lifecycle.table()).status == "retired"


def test_headers_follow_the_rfcs():
    lc = lifecycle.Lifecycle(model="m", status="deprecated", deprecated_at=datetime(2026, 5, 12, tzinfo=UTC),
                             sunset_at=datetime(2027, 5, 12, tzinfo=UTC), replacement="n",
                             info_url="https://example.com/deprecations")
    # RFC 9745: an sf-date, "@" and unix seconds; RFC 8594: an HTTP-date (IMF-fixdate).
    assert lc.headers() == {"Deprecation": "@1778544000", "Sunset": "Wed, 12 May 2027 00:00:00 GMT",
                            "Link": '<https://example.com/deprecations>; rel="deprecation"'}
    assert lifecycle.Lifecycle(model="m").headers() == {}
    past = lifecycle.Lifecycle(model="m", status="deprecated", deprecated_at=datetime(2025, 1, 1, tzinfo=UTC),
                               sunset_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert past.effective_status() == "retired"  # a passed sunset retires a deprecated model


def test_remapping_follows_a_chain_of_retired_models_and_refuses_a_cycle():
    table = {"a": lifecycle.Lifecycle(model="a", status="retired", replacement="b"),
             "b": lifecycle.Lifecycle(model="b", status="retired", replacement="c")}
    assert lifecycle.resolve("a", table, remap=True).served == "c"
    with pytest.raises(lifecycle.ModelRetired) as info:
        lifecycle.resolve("a", table, remap=False)
    assert "'b' instead" in info.value.message
    table["c"] = lifecycle.Lifecycle(model="c", status="retired", replacement="a")
    with pytest.raises(lifecycle.ModelRetired):
        lifecycle.resolve("a", table, remap=True)


def test_the_openapi_description_documents_the_lifecycle(client, db):
    schema = client.get("/v1/openapi.json").json()
    ok = schema["paths"]["/v1/images/generations"]["post"]["responses"]["200"]["headers"]
    assert {"Deprecation", "Sunset", "Link", "x-model-remapped"} <= set(ok)
    detail = schema["paths"]["/v1/models/{model_id}"]["get"]["responses"]["200"]["headers"]
    assert {"Deprecation", "Sunset", "Link"} <= set(detail) and "x-model-remapped" not in detail
    model = schema["components"]["schemas"]["Model"]["properties"]
    assert {"status", "deprecation_date", "sunset_date", "replacement"} <= set(model)


# --- Deprecated ------------------------------------------------------------------------------------------------------


def test_a_deprecated_model_serves_with_deprecation_sunset_and_link_headers(configured, openai_client, api_key):
    raw = openai_client.images.with_raw_response.generate(model="dall-e-3", prompt="a lighthouse",
                                                          response_format="b64_json")
    assert raw.parse().data[0].b64_json
    assert raw.headers["deprecation"] == f"@{DALL_E_DEPRECATED}"
    assert re.fullmatch(r"@\d+", raw.headers["deprecation"])
    assert parsedate_to_datetime(raw.headers["sunset"]) == datetime(2027, 5, 12, tzinfo=UTC)
    assert raw.headers["link"] == '<https://developers.openai.com/api/docs/deprecations>; rel="deprecation"'
    assert "x-model-remapped" not in raw.headers
    fresh = openai_client.images.with_raw_response.generate(model="sdxl-1.0", prompt="x", response_format="b64_json")
    assert "deprecation" not in fresh.headers and "sunset" not in fresh.headers


def test_models_lists_the_lifecycle(configured, openai_client):
    models = {m.id: m for m in openai_client.models.list().data}
    dalle = models["dall-e-2"].model_extra
    assert (dalle["status"], dalle["deprecation_date"], dalle["replacement"]) == \
        ("deprecated", DALL_E_DEPRECATED, "gpt-image-1")
    assert dalle["sunset_date"] == int(datetime(2027, 5, 12, tzinfo=UTC).timestamp())
    sdxl = models["sdxl-1.0"].model_extra
    assert (sdxl["status"], sdxl["deprecation_date"], sdxl["sunset_date"], sdxl["replacement"]) == \
        ("active", None, None, None)
    raw = openai_client.models.with_raw_response.retrieve("dall-e-3")
    assert raw.parse().model_extra["status"] == "deprecated"
    assert raw.headers["deprecation"] == f"@{DALL_E_DEPRECATED}"


# --- Retired ---------------------------------------------------------------------------------------------------------


def test_a_retired_model_is_404_naming_its_replacement_and_free(configured, openai_client, api_key):
    _retire("sdxl-1.0", "flux-dev")
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.images.generate(model="sdxl-1.0", prompt="x")
    assert info.value.code == "model_not_found" and info.value.param == "model"
    assert "'sdxl-1.0' has been retired" in info.value.message and "'flux-dev' instead" in info.value.message
    (row,) = _rows(api_key)
    assert (row.status, row.cost_micros, row.model, row.requested_model) == ("invalid", 0, "sdxl-1.0", "sdxl-1.0")
    assert configured["stability"].requests == [] and configured["replicate"].requests == []
    assert "sdxl-1.0" not in {m.id for m in openai_client.models.list().data}
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.models.retrieve("sdxl-1.0")
    assert "'flux-dev' instead" in info.value.message


def test_a_deprecated_model_past_its_sunset_is_retired(configured, openai_client, api_key):
    _set("dall-e-2", sunset_at=datetime(2026, 6, 1, tzinfo=UTC))
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.images.generate(model="dall-e-2", prompt="x")
    assert "'gpt-image-1' instead" in info.value.message


def test_remapping_serves_the_replacement_at_its_price_and_records_both_names(configured, openai_client, api_key):
    _retire("sdxl-1.0", "flux-dev")
    _remap(api_key)
    raw = openai_client.images.with_raw_response.generate(model="sdxl-1.0", prompt="x", response_format="b64_json")
    body = raw.http_response.json()
    assert raw.headers["x-model-remapped"] == "sdxl-1.0 -> flux-dev"
    assert raw.headers["x-provider"] in ("bfl", "replicate")
    assert body["usage"]["model_used"] == "flux-dev"
    (row,) = _rows(api_key)
    price = current_price(model="flux-dev", size="1024x1024", quality="standard").unit_price_micros
    assert (row.model, row.requested_model, row.cost_micros) == ("flux-dev", "sdxl-1.0", price)
    assert body["usage"]["cost"] == pytest.approx(price / 1e6)
    # Turned off again: the 404.
    _remap(api_key, enabled=False)
    with pytest.raises(openai.NotFoundError):
        openai_client.images.generate(model="sdxl-1.0", prompt="x")


def test_remapped_answers_replay_with_their_headers(configured, openai_client, api_key):
    _retire("sdxl-1.0", "flux-dev")
    _remap(api_key)
    first = openai_client.images.with_raw_response.generate(
        model="sdxl-1.0", prompt="x", response_format="b64_json", extra_headers={"Idempotency-Key": "life-1"})
    again = openai_client.images.with_raw_response.generate(
        model="sdxl-1.0", prompt="x", response_format="b64_json", extra_headers={"Idempotency-Key": "life-1"})
    assert again.headers["x-model-remapped"] == first.headers["x-model-remapped"] == "sdxl-1.0 -> flux-dev"
    assert len(_rows(api_key)) == 1


# --- An upstream says the model is gone ------------------------------------------------------------------------------


def test_openai_saying_dall_e_is_gone_fails_over_to_an_openai_compatible_host(configured, settings, openai_client,
                                                                               api_key):
    _configure(settings, configured, compat_cost=500_000)  # dearer than OpenAI: OpenAI is tried first
    raw = openai_client.images.with_raw_response.generate(model="dall-e-2", prompt="x", response_format="b64_json")
    assert raw.headers["x-provider"] == "openai_compatible"
    assert raw.headers["deprecation"] == f"@{DALL_E_DEPRECATED}"
    assert _attempts(api_key) == [("openai", "gone"), ("openai_compatible", "succeeded")]
    assert [r.path for r in configured["openai"].requests] == ["/v1/images/generations"]
    # OpenAI's answer is remembered: the next request goes straight to the compatible host.
    openai_client.images.generate(model="dall-e-2", prompt="y", response_format="b64_json")
    assert len(configured["openai"].requests) == 1
    row = _rows(api_key)[0]
    assert (row.model, row.requested_model, row.provider) == ("dall-e-2", "dall-e-2", "openai_compatible")


def test_gone_everywhere_answers_like_a_retired_model(configured, settings, openai_client, api_key):
    _configure(settings, configured, compat_models=())
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.images.generate(model="dall-e-3", prompt="x")
    assert info.value.code == "model_not_found"
    assert "'dall-e-3' is no longer offered" in info.value.message and "'gpt-image-1' instead" in info.value.message
    (row,) = _rows(api_key)
    assert (row.status, row.cost_micros) == ("invalid", 0)
    assert _attempts(api_key) == [("openai", "gone")]


def test_gone_everywhere_with_remapping_is_served_by_the_replacement(configured, settings, openai_client, api_key):
    _configure(settings, configured, compat_models=())
    _remap(api_key)
    raw = openai_client.images.with_raw_response.generate(model="dall-e-3", prompt="x")
    assert raw.headers["x-model-remapped"] == "dall-e-3 -> gpt-image-1"
    assert raw.parse().data[0].b64_json
    (row,) = _rows(api_key)
    assert (row.model, row.requested_model, row.status) == ("gpt-image-1", "dall-e-3", "succeeded")
    assert row.cost_micros == current_price(model="gpt-image-1", size="1024x1024", quality="medium").unit_price_micros
    assert _attempts(api_key) == [("openai", "gone"), ("openai", "succeeded")]


# --- The seed's models keep a working path ------------------------------------------------------------------------


SEED_GENERATIONS = ["dall-e-2", "dall-e-3", "sdxl-1.0", "stable-diffusion-2.1", "flux-pro-1.1", "flux-dev",
                    "flux-schnell", "titan-image-generator-v1", "titan-image-generator-v2"]


@pytest.mark.parametrize("model", SEED_GENERATIONS)
def test_seed_models_generate(configured, openai_client, api_key, model):
    result = openai_client.images.generate(model=model, prompt="a lighthouse at dusk", response_format="b64_json")
    assert base64.b64decode(result.data[0].b64_json)[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"RIFF") or \
        base64.b64decode(result.data[0].b64_json)[:3] == b"\xff\xd8\xff"
    (row,) = _rows(api_key)
    assert row.status == "succeeded" and row.cost_micros > 0 and row.model == row.requested_model == model


@pytest.mark.parametrize("model, size", [("dall-e-2", "256x256"), ("titan-image-generator-v1", "512x512"),
                                         ("titan-image-generator-v2", "512x512")])
def test_seed_models_edit_and_make_variations(configured, openai_client, api_key, model, size):
    edit = openai_client.images.edit(model=model, image=("a.png", png(64, 64), "image/png"), prompt="add a hat",
                                     response_format="b64_json", size=size)
    assert edit.data[0].b64_json
    variation = openai_client.images.create_variation(model=model, image=("a.png", png(64, 64), "image/png"),
                                                      response_format="b64_json", size=size)
    assert variation.data[0].b64_json
    rows = _rows(api_key)
    assert [(r.endpoint, r.status) for r in rows] == [("edits", "succeeded"), ("variations", "succeeded")]
    expected = "openai_compatible" if model == "dall-e-2" else "bedrock"
    assert {r.provider for r in rows} == {expected}


# --- The organization's setting ------------------------------------------------------------------------------------


def test_the_settings_page_turns_remapping_on_for_owners_only(client, user, organization):
    client.force_login(user)
    shown = client.get("/dashboard/settings/")
    assert shown.status_code == 200 and b'name="remap_retired_models"' in shown.content
    response = client.post("/dashboard/settings/", {"remap_retired_models": "on"})
    assert response.status_code == 302
    organization.refresh_from_db()
    assert organization.remap_retired_models is True
    client.post("/dashboard/settings/", {})
    organization.refresh_from_db()
    assert organization.remap_retired_models is False
    member, _ = account_services.get_or_create_user(email="member@example.com", password="member horse battery")
    Membership.objects.for_organization(organization).create(organization=organization, user=member, role="member")
    client.force_login(member)
    assert b"Only owners and admins" in client.get("/dashboard/settings/").content
    assert client.post("/dashboard/settings/", {"remap_retired_models": "on"}).status_code == 403
    organization.refresh_from_db()
    assert organization.remap_retired_models is False


def test_staff_change_a_lifecycle_in_the_admin_and_bad_replacements_are_refused(admin_client, settings, db):
    settings.ADMIN_REQUIRE_MFA = False  # the second factor is tests/test_admin_audit.py's business
    row = ModelLifecycle.objects.get(model="sdxl-1.0")
    url = f"/admin/generation/modellifecycle/{row.pk}/change/"
    form = {"model": "sdxl-1.0", "status": "retired", "deprecated_at_0": "2026-01-01", "deprecated_at_1": "00:00:00",
            "sunset_at_0": "2026-06-01", "sunset_at_1": "00:00:00", "replacement": "no-such-model", "info_url": "",
            "note": ""}
    refused = admin_client.post(url, form)
    assert refused.status_code == 200 and b"is not a catalog model" in refused.content
    assert admin_client.post(url, {**form, "replacement": "flux-dev"}).status_code == 302
    assert lifecycle.of("sdxl-1.0", lifecycle.table()).replacement == "flux-dev"


def test_an_owner_turns_remapping_on_in_the_browser(live_url, api_key, user, browser):
    """Chromium: sign in, open Settings from the top bar, tick the box, save; the page, reloaded from the database
    after the redirect, shows it on. (No ORM here: Playwright's sync API runs an event loop in this thread.)"""
    page = browser
    page.goto("/accounts/login/")
    page.fill('input[name="login"]', user.email)
    page.fill('input[name="password"]', "correct horse battery")
    page.locator('form:has(input[name="password"]) [type="submit"]').click()
    page.wait_for_url(re.compile(r"/dashboard/$"))
    page.click('header nav a:has-text("Settings")')
    page.wait_for_url(re.compile(r"/dashboard/settings/$"))
    checkbox = page.locator('input[name="remap_retired_models"]')
    assert not checkbox.is_checked()
    checkbox.check()
    page.click('[data-testid="save-settings"]')
    page.wait_for_url(re.compile(r"/dashboard/settings/$"))
    assert page.locator('input[name="remap_retired_models"]').is_checked()
    assert "now served by their replacement" in page.content()
    page.reload()
    assert page.locator('input[name="remap_retired_models"]').is_checked()


def test_the_playground_does_not_offer_retired_models(client, user, organization, prices):
    client.force_login(user)
    assert b'<option value="local-preview"' in client.get("/dashboard/playground/").content
    _retire("local-preview", "")
    assert b'<option value="local-preview"' not in client.get("/dashboard/playground/").content

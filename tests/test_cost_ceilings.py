"""Cost ceilings and quotes (issue 14): `max_cost` on every image request is held to the list price before any
upstream call (for "auto", to the dearest outcome) and refused with 400 cost_limit_exceeded naming the price; a key's
default ceiling applies when the request names none; POST /v1/images/quote prices a generation or an edit without
generating or charging; /v1/models/{id} lists each size and quality's price. The official SDK is the client."""
import httpx
import openai
import pytest

from accounts import services as account_services
from billing.models import LedgerEntry
from billing.selectors import current_price
from generation import providers
from tests.emulators import openai as openai_emu
from tests.images_util import png


def _rows(organization):
    """The organization's charged ledger rows (a refused request leaves a $0 row for the request log)."""
    rows = list(LedgerEntry.objects.for_organization(organization).order_by("id"))
    assert all(r.cost_micros == 0 for r in rows if r.status != "succeeded")
    return [r for r in rows if r.status == "succeeded"]


def _refusals(organization):
    return list(LedgerEntry.objects.for_organization(organization).filter(error_code="cost_limit_exceeded"))


def _price_usd(model, size, quality):
    return current_price(model=model, size=size, quality=quality).unit_price_micros / 1_000_000


@pytest.fixture(scope="module")
def upstream():
    with openai_emu.emulator(retired=()) as emu:  # OpenAI as it was before the dall-e retirement
        yield emu


@pytest.fixture
def openai_upstream(upstream, settings, live_url):
    """The OpenAI adapter switched on against the emulator (the gateway's configuration, as in production)."""
    upstream.reset()
    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = openai_emu.API_KEY, upstream.url + "/v1"
    providers.reset_registry()
    yield upstream
    providers.reset_registry()


# --- max_cost ---------------------------------------------------------------------------------------------------------


def test_max_cost_below_the_price_is_refused_before_any_upstream_call(openai_upstream, openai_client, api_key):
    price = _price_usd("dall-e-3", "1024x1024", "standard")
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="dall-e-3", prompt="a red fox", n=1, size="1024x1024",
                                      extra_body={"max_cost": price / 2})
    error = info.value.body
    assert info.value.status_code == 400 and error["code"] == "cost_limit_exceeded" and error["param"] == "max_cost"
    assert f"${price:.6f}" in error["message"] and "Nothing was generated or charged" in error["message"]
    assert openai_upstream.requests == [] and _rows(api_key[0].organization) == []
    (refusal,) = _refusals(api_key[0].organization)
    assert refusal.cost_micros == 0 and refusal.model == "dall-e-3"


def test_max_cost_at_the_price_serves_and_charges_the_price(openai_upstream, openai_client, api_key):
    price = _price_usd("dall-e-3", "1024x1024", "standard")
    result = openai_client.images.generate(model="dall-e-3", prompt="a red fox", n=1, size="1024x1024",
                                           response_format="b64_json", extra_body={"max_cost": price})
    assert len(result.data) == 1
    (row,) = _rows(api_key[0].organization)
    assert row.status == "succeeded" and row.cost_micros == round(price * 1_000_000)


def test_max_cost_counts_every_image_of_n(openai_client, api_key):
    price = _price_usd("local-preview", "256x256", "standard")
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="local-preview", prompt="fox", n=4, size="256x256",
                                      extra_body={"max_cost": price * 3})
    assert info.value.body["code"] == "cost_limit_exceeded" and "4 image(s)" in info.value.body["message"]
    result = openai_client.images.generate(model="local-preview", prompt="fox", n=4, size="256x256",
                                           extra_body={"max_cost": price * 4})
    assert len(result.data) == 4 and len(_rows(api_key[0].organization)) == 1


def test_auto_is_held_to_its_dearest_outcome(openai_upstream, openai_client, api_key):
    """gpt-image-1 with size and quality "auto": the upstream picks, so the ceiling must cover the dearest pick."""
    dearest = _price_usd("gpt-image-1", "1536x1024", "high")
    cheapest = _price_usd("gpt-image-1", "1024x1024", "low")
    assert cheapest < dearest
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="gpt-image-1", prompt="fox", size="auto", quality="auto",
                                      extra_body={"max_cost": (cheapest + dearest) / 2})
    assert info.value.body["code"] == "cost_limit_exceeded"
    assert f"${dearest:.6f}" in info.value.body["message"] and "dearest outcome" in info.value.body["message"]
    assert openai_upstream.requests == []
    openai_client.images.generate(model="gpt-image-1", prompt="fox", size="auto", quality="auto",
                                  extra_body={"max_cost": dearest})
    assert len(_rows(api_key[0].organization)) == 1


def test_edits_take_max_cost_as_a_form_field(openai_client, api_key):
    price = _price_usd("local-preview", "256x256", "standard")
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.edit(model="local-preview", image=("in.png", png(64, 64)), prompt="add snow",
                                  size="256x256", extra_body={"max_cost": str(price / 10)})
    assert info.value.body["code"] == "cost_limit_exceeded"
    openai_client.images.edit(model="local-preview", image=("in.png", png(64, 64)), prompt="add snow",
                              size="256x256", extra_body={"max_cost": str(price)})
    assert len(_rows(api_key[0].organization)) == 1


@pytest.mark.parametrize("value", [0, -1, "cheap", True, [1], 10**9, "1e400"])
def test_a_bad_max_cost_is_a_clear_400(openai_client, value):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="local-preview", prompt="fox", extra_body={"max_cost": value})
    assert info.value.body["code"] == "invalid_parameter" and info.value.body["param"] == "max_cost"
    assert "US dollars" in info.value.body["message"]


def test_a_keys_default_ceiling_applies_unless_the_request_names_its_own(live_url, api_key):
    organization = api_key[0].organization
    price_micros = current_price(model="local-preview", size="256x256", quality="standard").unit_price_micros
    key, raw = account_services.create_api_key(organization=organization, name="capped",
                                               max_cost_micros=price_micros - 1)
    client = openai.OpenAI(base_url=f"{live_url}/v1", api_key=raw, max_retries=0, timeout=30)
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(model="local-preview", prompt="fox", size="256x256")
    assert info.value.body["code"] == "cost_limit_exceeded" and info.value.body["param"] is None
    assert "this API key's default max_cost" in info.value.body["message"]
    client.images.generate(model="local-preview", prompt="fox", size="256x256",
                           extra_body={"max_cost": price_micros / 1_000_000})
    assert len(_rows(organization)) == 1
    rotated, _ = account_services.rotate_api_key(api_key=key)
    assert rotated.max_cost_micros == price_micros - 1


# --- Quotes -----------------------------------------------------------------------------------------------------------


def test_quote_prices_a_generation_without_generating_or_charging(openai_upstream, openai_client, api_key):
    quote = openai_client.post("/images/quote", cast_to=httpx.Response, body={
        "model": "dall-e-3", "prompt": "a red fox", "n": 2, "size": "1792x1024", "quality": "hd"}).json()
    price = _price_usd("dall-e-3", "1792x1024", "hd")
    assert quote == {"object": "image.quote", "model": "dall-e-3", "size": "1792x1024", "quality": "hd", "n": 2,
                     "currency": "usd", "unit_price": price, "cost": round(price * 2, 6),
                     "price_version": quote["price_version"]}
    assert quote["price_version"].endswith("Z") and quote["price_version"][:4].isdigit()
    assert openai_upstream.requests == [] and not LedgerEntry.objects.for_organization(api_key[0].organization)


def test_quote_gives_the_range_for_auto_and_says_whether_max_cost_holds(openai_upstream, openai_client):
    body = {"model": "gpt-image-1", "prompt": "fox", "size": "auto", "quality": "auto", "max_cost": 0.05}
    quote = openai_client.post("/images/quote", cast_to=httpx.Response, body=body).json()
    cheapest, dearest = _price_usd("gpt-image-1", "1024x1024", "low"), _price_usd("gpt-image-1", "1536x1024", "high")
    assert quote["range"] == {"min": cheapest, "max": dearest, "unit_min": cheapest, "unit_max": dearest}
    assert quote["cost"] == dearest and quote["within_max_cost"] is (dearest <= 0.05)


def test_quote_prices_an_edit_from_its_multipart_body(openai_client):
    url, auth = str(openai_client.base_url) + "images/quote", {"Authorization": f"Bearer {openai_client.api_key}"}
    image = {"image": ("in.png", png(64, 64), "image/png")}
    missing = httpx.post(url, headers=auth, data={"model": "local-preview"}, files=image)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "prompt"  # checked as an edit is
    quote = httpx.post(url, headers=auth, files=image,
                       data={"model": "local-preview", "prompt": "add snow", "size": "512x512", "n": "3"}).json()
    assert quote["model"] == "local-preview" and quote["n"] == 3
    assert quote["cost"] == round(_price_usd("local-preview", "512x512", "standard") * 3, 6)


def test_quote_refuses_what_the_request_would_refuse(openai_client, api_key):
    for body, status, code in (({"model": "no-such-model", "prompt": "x"}, 404, "model_not_found"),
                               ({"model": "local-preview", "prompt": "x", "size": "3x3"}, 400, "invalid_size"),
                               ({"model": "local-preview", "prompt": "x", "n": 99}, 400, "invalid_parameter"),
                               ({"model": "local-preview"}, 400, "missing_required_parameter")):
        response = httpx.post(str(openai_client.base_url) + "images/quote", json=body,
                              headers={"Authorization": f"Bearer {openai_client.api_key}"})
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
    unauthenticated = httpx.post(str(openai_client.base_url) + "images/quote", json={"prompt": "x"})
    assert unauthenticated.status_code == 401
    assert not LedgerEntry.objects.for_organization(api_key[0].organization)


def test_model_detail_lists_each_size_and_qualitys_price(openai_upstream, openai_client):
    model = openai_client.models.retrieve("gpt-image-1")
    pricing = model.model_extra["pricing"]
    combos = {(p["size"], p["quality"]) for p in pricing}
    assert combos == {(s, q) for s in ("1024x1024", "1536x1024", "1024x1536") for q in ("low", "medium", "high")}
    for row in pricing:
        price = current_price(model="gpt-image-1", size=row["size"], quality=row["quality"])
        assert row["unit_price_micros"] == price.unit_price_micros and row["currency"] == "usd"
        assert row["unit_price"] == price.unit_price_micros / 1_000_000


def test_the_keys_page_sets_a_keys_default_ceiling(client, user, organization):
    from accounts.models import ApiKey

    client.force_login(user)
    response = client.post("/dashboard/keys/", {"name": "capped", "rate_limit_rpm": "0", "permissions": "all",
                                                "max_cost_usd": "0.05"})
    assert response.status_code == 200 and b"Copy it now" in response.content
    key = ApiKey.objects.for_organization(organization).get(name="capped")
    assert key.max_cost_micros == 50_000
    bad = client.post("/dashboard/keys/", {"name": "bad", "permissions": "all", "max_cost_usd": "-1"})
    assert bad.status_code == 200 and not ApiKey.objects.for_organization(organization).filter(name="bad").exists()

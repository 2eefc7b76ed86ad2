"""The OpenAPI description of /v1 (/v1/openapi.json), the API reference page (/docs/api/), and Schemathesis fuzzing
the live server against the description: no 5xx, and every response matches it (status, content type, headers,
body) across at least 500 generated requests."""
import json
import random
import re
import time
import uuid
from collections import Counter

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts import services as account_services
from generation import catalog
from generation.api import openapi
from generation.pipeline import validation
from tests.images_util import png

V1_PATHS = {"/v1/images/generations", "/v1/images/edits", "/v1/images/variations", "/v1/models",
            "/v1/models/{model_id}", "/v1/organization/usage/images", "/v1/organization/costs",
            "/v1/organization/usage/records", "/v1/images/quote", "/v1/images/jobs", "/v1/images/jobs/{job_id}",
            "/v1/images/jobs/{job_id}/cancel", "/v1/webhook_endpoints", "/v1/webhook_endpoints/{endpoint_id}",
            "/v1/webhook_endpoints/{endpoint_id}/rotate_secret"}
REQUEST_SCHEMAS = {"generations": "ImageGenerationRequest", "edits": "ImageEditRequest",
                   "variations": "ImageVariationRequest"}


@pytest.fixture
def schema(client, db):
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


# --- The schema endpoint ----------------------------------------------------------------------------------------------

def test_schema_is_public_json_and_valid_openapi_3(live_url):
    response = httpx.get(f"{live_url}/v1/openapi.json")  # no API key
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"].startswith("req_")
    document = response.json()
    assert document["openapi"].startswith("3.")
    validate_openapi(document)  # raises on any violation of the OpenAPI 3 specification
    assert document["info"]["title"] == "Imagegate API"


def test_schema_describes_v1_only(schema):
    assert set(schema["paths"]) == V1_PATHS
    for path in schema["paths"]:
        assert path.startswith("/v1/")
        assert not any(word in path for word in ("dashboard", "admin", "accounts", "openapi", "docs"))
    operation_ids = {op["operationId"] for item in schema["paths"].values() for op in item.values()}
    assert operation_ids == {"createImage", "createImageEdit", "createImageVariation", "listModels", "retrieveModel",
                             "usageImages", "usageCosts", "listUsageRecords", "quoteImage", "listImageJobs",
                             "retrieveImageJob", "cancelImageJob", "listWebhookEndpoints", "createWebhookEndpoint",
                             "retrieveWebhookEndpoint", "deleteWebhookEndpoint", "rotateWebhookEndpointSecret"}


def test_every_operation_needs_a_bearer_key(schema):
    assert schema["components"]["securitySchemes"] == {"bearerAuth": {
        "type": "http", "scheme": "bearer", "bearerFormat": "ig_<8 characters>_<43 characters>",
        "description": "An API key from the dashboard's API keys page: `Authorization: Bearer ig_...`."}}
    for item in schema["paths"].values():
        for operation in item.values():
            assert operation["security"] == [{"bearerAuth": []}]
            assert "401" in operation["responses"]


def test_request_bodies_list_exactly_the_fields_validation_accepts(schema):
    schemas = schema["components"]["schemas"]
    for endpoint, name in REQUEST_SCHEMAS.items():
        assert openapi.undocumented_fields(endpoint) == set(), endpoint
        documented = set(schemas[name]["properties"])
        assert documented == validation.FIELDS[endpoint] | validation.FILE_FIELDS[endpoint], endpoint
        assert schemas[name]["additionalProperties"] is False
    assert schemas["ImageGenerationRequest"]["required"] == ["prompt"]
    assert schemas["ImageEditRequest"]["anyOf"] == [{"required": ["image"]}, {"required": ["image[]"]}]
    assert schemas["ImageVariationRequest"]["required"] == ["image"]
    edits = schema["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]
    assert list(edits) == ["multipart/form-data"]
    assert edits["multipart/form-data"]["schema"] == {"$ref": "#/components/schemas/ImageEditRequest"}
    assert schemas["ImageEditRequest"]["properties"]["image"]["format"] == "binary"
    assert schemas["ImageEditRequest"]["properties"]["image[]"]["items"]["format"] == "binary"
    assert schemas["ImageEditRequest"]["properties"]["mask"]["format"] == "binary"
    generations = schema["paths"]["/v1/images/generations"]["post"]["requestBody"]["content"]
    assert list(generations) == ["application/json"]


def test_allowed_values_come_from_the_catalog(schema):
    schemas = schema["components"]["schemas"]
    for endpoint, name in REQUEST_SCHEMAS.items():
        models = [m for m in catalog.MODELS.values() if m.supports(validation.MODE[endpoint])]
        props = schemas[name]["properties"]
        assert [v for v in props["model"]["enum"] if v is not None] == [m.id for m in models]
        sizes = {s for m in models for s in m.sizes}
        assert {v for v in props["size"]["enum"] if v is not None} == sizes
        assert props["n"]["maximum"] == max(m.max_n for m in models)
        assert props["n"]["minimum"] == 1
    generation = schemas["ImageGenerationRequest"]["properties"]
    assert {v for v in generation["quality"]["enum"] if v is not None} == {q for m in catalog.MODELS.values()
                                                                             for q in m.qualities}
    assert {v for v in generation["style"]["enum"] if v is not None} == {s for m in catalog.MODELS.values()
                                                                           for s in m.styles}
    assert generation["prompt"]["maxLength"] == max(m.max_prompt_chars for m in catalog.MODELS.values())
    assert generation["image"]["format"] == "uri"
    assert generation["size"]["nullable"] is True  # JSON takes null for "the model's default"
    capabilities = schemas["Model"]["properties"]["capabilities"]["items"]["enum"]
    assert set(capabilities) == {c for m in catalog.MODELS.values() for c in m.capabilities}


def test_the_document_carries_the_catalog(schema):
    table = {row["id"]: row for row in schema["x-imagegate-models"]}
    assert list(table) == list(catalog.MODELS)
    for model_id, spec in catalog.MODELS.items():
        row = table[model_id]
        assert (row["sizes"], row["default_size"], row["qualities"], row["styles"], row["max_n"]) == (
            list(spec.sizes), spec.default_size, list(spec.qualities), list(spec.styles), spec.max_n)
        assert row["capabilities"] == sorted(spec.capabilities)


def test_every_status_is_documented_with_the_error_envelope_and_headers(schema):
    images = ["200", "400", "401", "403", "404", "409", "413", "415", "429", "500", "502", "503", "504"]
    accepted = ["200", "202", *images[1:]]  # 202: `Prefer: respond-async`, an image job
    jobs = ["200", "400", "401", "403", "404", "429", "500"]
    expected = {"/v1/images/generations": accepted, "/v1/images/edits": accepted, "/v1/images/variations": images,
                "/v1/images/jobs": jobs, "/v1/images/jobs/{job_id}": jobs,
                "/v1/images/jobs/{job_id}/cancel": ["200", "400", "401", "403", "404", "409", "429", "500"],
                "/v1/models": ["200", "401", "403", "429", "500"],
                "/v1/models/{model_id}": ["200", "401", "403", "404", "429", "500"]}
    for path, statuses in expected.items():
        operation = next(iter(schema["paths"][path].values()))
        assert list(operation["responses"]) == statuses, path
        for status, response in operation["responses"].items():
            body = response["content"]["application/json"]["schema"]["$ref"]
            if status not in ("200", "202"):
                assert body == "#/components/schemas/Error"
            assert response["headers"]["x-request-id"]["required"] is True
            if status not in ("401", "413"):
                assert "x-ratelimit-remaining-requests" in response["headers"], (path, status)
        assert "retry-after" in operation["responses"]["429"]["headers"]
    error = schema["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"message", "type", "param", "code"}
    assert error["properties"]["param"]["nullable"] and error["properties"]["code"]["nullable"]
    codes = {row["code"] for row in schema["components"]["schemas"]["Error"]["x-error-codes"]}
    assert {"invalid_size", "model_not_found", "invalid_api_key", "rate_limit_exceeded", "unknown_parameter",
            "request_too_large", "idempotency_key_reused", "upstream_timeout"} <= codes
    usage = schema["components"]["schemas"]["ImageUsage"]
    assert set(usage["required"]) == {"input_tokens", "input_tokens_details", "output_tokens", "total_tokens", "cost",
                                      "latency_ms", "image_size", "model_used"}
    model_id = schema["paths"]["/v1/models/{model_id}"]["get"]["parameters"][0]
    assert (model_id["name"], model_id["in"], model_id["schema"]["type"]) == ("model_id", "path", "string")
    assert "pattern" not in model_id["schema"]  # ids may contain '/'


# --- The reference page -----------------------------------------------------------------------------------------------

def test_reference_page_renders_the_schema_for_anyone(client, db, schema):
    response = client.get("/docs/api/")
    assert response.status_code == 200
    page = response.content.decode()
    for path in V1_PATHS:
        assert path in page
    for summary in ("Create images", "Edit images", "Create image variations", "List models", "Retrieve a model"):
        assert summary in page
    # allowed values, response shapes, error codes, headers
    for text in ("1792x1024", "gpt-image-1", "b64_json", "ImagesResponse", "ModelList", "model_not_found",
                 "invalid_size", "rate_limit_exceeded", "x-ratelimit-remaining-requests", "Idempotency-Key",
                 "multipart/form-data", "/v1/openapi.json"):
        assert text in page, text
    # examples with curl and the Python SDK for generations, edits and variations, aimed at this server
    for call in ("client.images.generate(", "client.images.edit(", "client.images.create_variation(",
                 "curl http://testserver/v1/images/generations", "curl http://testserver/v1/images/edits",
                 "curl http://testserver/v1/images/variations", "-F image=@photo.png"):
        assert call in page, call
    for model_id in catalog.MODELS:  # the models table
        assert f"<code>{model_id}</code>" in page, model_id
    # no CDN and no inline script (the pages' CSP forbids it): only our own static files
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert all(re.search(r'src="/static/[^"]+"', tag) for tag in scripts), scripts
    assert "cdn" not in page.lower()
    assert 'href="/docs/api/"' in page  # the nav link, for visitors who are not logged in


def test_reference_page_is_linked_for_logged_in_users(client, user, organization):
    client.force_login(user)
    page = client.get("/dashboard/").content.decode()
    assert 'href="/docs/api/"' in page


# --- Schemathesis against the live server -------------------------------------------------------------------------

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
# Generated requests per operation and mode (hypothesis stops earlier when an operation has nothing left to vary,
# as GET /v1/models, which takes no parameters). Enough that more than 500 requests run in total.
BUDGET = {
    "POST /v1/images/generations": {GenerationMode.POSITIVE: 250, GenerationMode.NEGATIVE: 100},
    "POST /v1/images/edits": {GenerationMode.POSITIVE: 100, GenerationMode.NEGATIVE: 60},
    "POST /v1/images/variations": {GenerationMode.POSITIVE: 80, GenerationMode.NEGATIVE: 50},
    "POST /v1/images/quote": {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 30},
    "GET /v1/models": {GenerationMode.POSITIVE: 10},
    "GET /v1/models/{model_id}": {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 20},
    "GET /v1/organization/usage/images": {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 20},
    "GET /v1/organization/costs": {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 20},
    "GET /v1/organization/usage/records": {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 20},
    "GET /v1/images/jobs": {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 20},
    "GET /v1/images/jobs/{job_id}": {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10},
    "POST /v1/images/jobs/{job_id}/cancel": {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10},
    "GET /v1/webhook_endpoints": {GenerationMode.POSITIVE: 10},
    "POST /v1/webhook_endpoints": {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 20},
    "GET /v1/webhook_endpoints/{endpoint_id}": {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 10},
    "DELETE /v1/webhook_endpoints/{endpoint_id}": {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 10},
    "POST /v1/webhook_endpoints/{endpoint_id}/rotate_secret": {GenerationMode.POSITIVE: 10,
                                                               GenerationMode.NEGATIVE: 10},
}
MIN_CASES = 500


def _no_outbound_fetch(case):
    """Keep the run hermetic: a generated `image` URL would make the server fetch a random host on the internet.
    Point it at loopback instead, which the fetcher refuses before any DNS lookup or connection (400)."""
    if isinstance(case.body, dict) and type(case.body.get("image")) is str:  # a URL (files are a str subclass)
        case.body["image"] = "http://127.0.0.1/fuzz.png"
    return case


def _often_the_default_model(pair):
    """Half of the valid image requests are made valid for the default model too: it is named, and the optional
    fields it does not take are dropped (the catalog's other models are not enabled in the suite, and the schema's
    enums are unions over all models, so most generated requests would stop at a 404 or 400). The request stays
    valid for the schema, and exercises the whole path: render, store, bill, respond."""
    case, prefer = pair
    if prefer and isinstance(case.body, dict):
        spec = catalog.MODELS[catalog.DEFAULT_MODEL]
        case.body["model"] = spec.id
        allowed = {"size": spec.sizes, "quality": spec.qualities, "style": spec.styles,
                   "response_format": spec.response_formats, "background": spec.backgrounds,
                   "moderation": spec.moderations, "output_format": spec.output_formats,
                   "output_compression": range(101) if spec.output_compression else (), "provider": spec.providers}
        for name, values in allowed.items():
            if name in case.body and case.body[name] is not None and case.body[name] not in values:
                del case.body[name]
    return case


def _describe(case, response, exc: FailureGroup) -> str:
    body = response.text[:300]
    return (f"{case.operation.label} -> {response.status_code}: "
            + "; ".join(f"{f.title}: {f.message}".replace("\n", " ")[:300] for f in exc.exceptions)
            + f"\n    request: {case.as_curl_command()[:600]}\n    response: {body}")


def test_schemathesis_finds_no_server_error_and_no_schema_violation(live_url, organization):
    _, raw_key = account_services.create_api_key(organization=organization, name="schemathesis",
                                                 rate_limit_rpm=1_000_000)
    auth = {"Authorization": f"Bearer {raw_key}"}
    schema = schemathesis.openapi.from_url(f"{live_url}/v1/openapi.json")
    session = requests.Session()
    executed: Counter = Counter()
    statuses: Counter = Counter()
    codes: Counter = Counter()
    failures: dict[str, str] = {}
    started = time.monotonic()

    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == set(BUDGET)
    for operation in operations:
        for mode, budget in BUDGET[operation.label].items():
            strategy = operation.as_strategy(generation_mode=mode)
            if operation.label == "POST /v1/images/generations":
                strategy = strategy.map(_no_outbound_fetch)
            if operation.method.upper() == "POST":
                if mode is GenerationMode.POSITIVE:
                    strategy = st.tuples(strategy, st.booleans()).map(_often_the_default_model)

            @given(case=strategy)
            @settings(max_examples=budget, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def run(case):
                headers = dict(auth)
                key = (case.headers or {}).get("Idempotency-Key")
                if isinstance(key, str) and len(key) < 200 and random.random() < 0.9:
                    # Hypothesis reuses short keys ("0"), and a reused key answers 409 or a replay: keep one in ten
                    # (replays and conflicts must match the schema too), make the others unique.
                    headers["Idempotency-Key"] = f"{uuid.uuid4().hex}-{key}"
                response = case.call(session=session, headers=headers, timeout=60)
                executed[operation.label] += 1
                statuses[(operation.label, response.status_code)] += 1
                if response.status_code >= 400:
                    try:
                        code = json.loads(response.content)["error"]["code"]
                    except (ValueError, KeyError, TypeError):
                        code = "(not the envelope)"
                    codes[(operation.label, response.status_code, code)] += 1
                try:
                    case.validate_response(response, checks=CHECKS, headers=headers)
                except FailureGroup as exc:
                    signature = f"{operation.label} {response.status_code} " + ",".join(
                        sorted({type(f).__name__ for f in exc.exceptions}))
                    failures.setdefault(signature, _describe(case, response, exc))

            run()

    total = sum(executed.values())
    elapsed = time.monotonic() - started
    print(f"\nSchemathesis: {total} requests in {elapsed:.1f} s; per operation {dict(executed)}; "
          f"statuses {dict(sorted(statuses.items()))}; error codes "
          f"{dict(sorted(codes.items(), key=lambda item: str(item[0])))}")
    assert not failures, "\n".join(failures.values())
    assert total >= MIN_CASES, dict(executed)


# Requests Hypothesis does not generate (its strings are valid UTF-8, its JSON shallow, its forms small), sent raw and
# held to the same checks: the answer is a documented 4xx in the error envelope, never a 5xx.
_DEEP = "[" * 5000 + "]" * 5000
HOSTILE = {
    "lone surrogate in prompt": ("POST /v1/images/generations", {
        "data": b'{"prompt": "a\\ud800b", "size": "256x256", "response_format": "b64_json"}',
        "headers": {"Content-Type": "application/json"}}),
    "lone surrogate in model": ("POST /v1/images/generations", {
        "data": b'{"prompt": "x", "model": "\\ud800"}', "headers": {"Content-Type": "application/json"}}),
    "JSON nested 5000 deep": ("POST /v1/images/generations", {
        "data": ('{"prompt": ' + _DEEP + "}").encode(), "headers": {"Content-Type": "application/json"}}),
    "multipart with 1,100 fields": ("POST /v1/images/variations", {
        "data": {f"f{i}": "x" for i in range(1100)}, "files": {"image": ("a.png", png(), "image/png")}}),
    "multipart with 120 files": ("POST /v1/images/variations", {
        "files": [("image", (f"a{i}.png", b"x", "image/png")) for i in range(120)]}),
    "urlencoded form with 1,100 fields": ("POST /v1/images/edits", {
        "data": "&".join(f"f{i}=1" for i in range(1100)).encode(),
        "headers": {"Content-Type": "application/x-www-form-urlencoded"}}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_requests_answer_a_documented_4xx(live_url, organization, name):
    _, raw_key = account_services.create_api_key(organization=organization, name="hostile", rate_limit_rpm=1_000_000)
    label, kwargs = HOSTILE[name][0], dict(HOSTILE[name][1])
    operation = schemathesis.openapi.from_url(f"{live_url}/v1/openapi.json").find_operation_by_label(label)
    method, path = label.split(" ", 1)
    headers = {"Authorization": f"Bearer {raw_key}", **kwargs.pop("headers", {})}
    response = requests.request(method, f"{live_url}{path}", headers=headers, timeout=60, **kwargs)
    try:
        operation.Case().validate_response(response, checks=CHECKS)
    except FailureGroup as exc:
        pytest.fail(f"{label} with {name} answered {response.status_code} "
                    f"({', '.join(f.title for f in exc.exceptions)}): {response.text[:300]}", pytrace=False)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.json()["error"]["type"] == "invalid_request_error"

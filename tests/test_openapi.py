"""The OpenAPI description of /v1 (/v1/openapi.json), the API reference page (/docs/api/), and Schemathesis fuzzing
the live server against the description: no 5xx, and every response matches it (status, content type, headers,
body) across at least 500 generated requests."""
import time
from collections import Counter

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
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
from generation import catalog, openapi, validation

V1_PATHS = {"/v1/images/generations", "/v1/images/edits", "/v1/images/variations", "/v1/models",
            "/v1/models/{model_id}"}
REQUEST_SCHEMAS = {"generations": "ImageGenerationRequest", "edits": "ImageEditRequest",
                   "variations": "ImageVariationRequest"}


@pytest.fixture
def schema(client, db):
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


# --- The schema endpoint -----------------------------------------------------------------------------------------------

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
    assert operation_ids == {"createImage", "createImageEdit", "createImageVariation", "listModels", "retrieveModel"}


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
    assert {v for v in generation["style"]["enum"] if v is not None} == {"vivid", "natural"}
    assert generation["prompt"]["maxLength"] == max(m.max_prompt_chars for m in catalog.MODELS.values())
    assert generation["image"]["format"] == "uri"
    assert generation["size"]["nullable"] is True  # JSON takes null for "the model's default"
    capabilities = schemas["Model"]["properties"]["capabilities"]["items"]["enum"]
    assert set(capabilities) == {c for m in catalog.MODELS.values() for c in m.capabilities}


def test_every_status_is_documented_with_the_error_envelope_and_headers(schema):
    images = ["200", "400", "401", "403", "404", "409", "413", "415", "429", "500", "502", "503", "504"]
    expected = {"/v1/images/generations": images, "/v1/images/edits": images, "/v1/images/variations": images,
                "/v1/models": ["200", "401", "403", "429", "500"],
                "/v1/models/{model_id}": ["200", "401", "403", "404", "429", "500"]}
    for path, statuses in expected.items():
        operation = next(iter(schema["paths"][path].values()))
        assert list(operation["responses"]) == statuses, path
        for status, response in operation["responses"].items():
            body = response["content"]["application/json"]["schema"]["$ref"]
            if status != "200":
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
    assert set(usage["required"]) == {"cost", "latency_ms", "image_size", "model_used"}
    model_id = schema["paths"]["/v1/models/{model_id}"]["get"]["parameters"][0]
    assert (model_id["name"], model_id["in"], model_id["schema"]["type"]) == ("model_id", "path", "string")
    assert "pattern" not in model_id["schema"]  # ids may contain '/'


# --- The reference page ------------------------------------------------------------------------------------------------

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
    assert "<script" not in page and "cdn" not in page.lower()
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
    "POST /v1/images/generations": {GenerationMode.POSITIVE: 170, GenerationMode.NEGATIVE: 80},
    "POST /v1/images/edits": {GenerationMode.POSITIVE: 80, GenerationMode.NEGATIVE: 40},
    "POST /v1/images/variations": {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 40},
    "GET /v1/models": {GenerationMode.POSITIVE: 10},
    "GET /v1/models/{model_id}": {GenerationMode.POSITIVE: 60},
}
MIN_CASES = 500


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
    failures: dict[str, str] = {}
    started = time.monotonic()

    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == set(BUDGET)
    for operation in operations:
        for mode, budget in BUDGET[operation.label].items():
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=budget, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def run(case):
                response = case.call(session=session, headers=auth, timeout=60)
                executed[operation.label] += 1
                statuses[(operation.label, response.status_code)] += 1
                try:
                    case.validate_response(response, checks=CHECKS, headers=auth)
                except FailureGroup as exc:
                    key = f"{operation.label} {response.status_code} " + ",".join(
                        sorted({type(f).__name__ for f in exc.exceptions}))
                    failures.setdefault(key, _describe(case, response, exc))

            run()

    total = sum(executed.values())
    elapsed = time.monotonic() - started
    print(f"\nSchemathesis: {total} requests in {elapsed:.1f} s; per operation {dict(executed)}; "
          f"statuses {dict(sorted(statuses.items()))}")
    assert not failures, "\n".join(failures.values())
    assert total >= MIN_CASES, dict(executed)

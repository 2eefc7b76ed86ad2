"""Rate limits: the GCRA limiter against the real Redis (and its in-process twin), the DRF throttle, and the SDK's view
of it end to end (429 + retry-after, x-ratelimit-* headers on every authenticated /v1 response)."""
import hashlib
import random
import re
import threading
import uuid

import httpx
import openai
import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIRequestFactory

from accounts import services as account_services
from accounts.authentication import KeyPrincipal
from accounts.models import ApiKey, Organization
from generation.errors import RateLimited, api_exception_handler
from generation.pipeline import ratelimit
from generation.pipeline.ratelimit import format_duration

S = 1_000_000  # µs per second
T0 = 1_800_000_000 * S  # a fixed "now" for the deterministic tests
RL_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


def _redis():
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def _flush_ratelimit_keys():
    ratelimit._local_limiter.reset()
    if settings.REDIS_URL:
        client = _redis()
        for key in client.scan_iter(match="*:ratelimit:*", count=1000):
            client.delete(key)


@pytest.fixture(autouse=True)
def _clean_ratelimit_state():
    """Only this module's keys, only in this suite's Redis database."""
    _flush_ratelimit_keys()
    yield
    _flush_ratelimit_keys()


@pytest.fixture(params=["redis", "local"])
def backend(request):
    """Run a test against the Redis limiter and against the in-process fallback (REDIS_URL="")."""
    if request.param == "redis":
        assert settings.REDIS_URL, "the suite runs with Redis (make test sets REDIS_URL)"
        assert isinstance(ratelimit.get_limiter(), ratelimit.RedisLimiter)
        yield request.param
    else:
        with override_settings(REDIS_URL=""):
            assert isinstance(ratelimit.get_limiter(), ratelimit.LocalLimiter)
            yield request.param


def tenant(*, org_rpm=0, keys=(0,)):
    """An organization and its keys as authentication hands them over (unsaved rows: the limiter needs no DB)."""
    org = Organization(pk=random.randrange(10**9, 10**12), name="T", slug=f"t-{uuid.uuid4().hex[:8]}",
                       rate_limit_rpm=org_rpm)
    made = [ApiKey(pk=random.randrange(10**9, 10**12), organization=org, name="k", prefix=f"ig_{uuid.uuid4().hex[:8]}",
                   rate_limit_rpm=rpm) for rpm in keys]
    return org, made


def bucket(decision, scope):
    return next(b for b in decision.buckets if b.scope == scope)


# --- The duration format of x-ratelimit-reset-requests ----------------------------------------------------------------

@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (-3, "0s"), (0.0004, "1ms"), (0.012, "12ms"), (0.999, "999ms"), (1, "1s"), (1.5, "1.5s"),
    (17.25, "17.25s"), (19.9934, "19.994s"), (59.9999, "1m0s"), (60, "1m0s"), (90.5, "1m30.5s"), (360, "6m0s"),
    (3600, "1h0m0s"), (3723.25, "1h2m3.25s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
    assert DURATION.match(text)


# --- The algorithm (same answers from Redis's Lua and the in-process limiter) -----------------------------------------

def test_burst_then_one_per_interval_with_remaining_and_reset(backend):
    org, (key,) = tenant(keys=(3,))
    seen = [ratelimit.check(key, org, now_us=T0) for _ in range(3)]
    assert all(d.allowed for d in seen)
    assert [d.binding.remaining for d in seen] == [2, 1, 0]
    assert [d.binding.reset_us for d in seen] == [20 * S, 40 * S, 60 * S]  # until the bucket is full again
    assert [d.headers()["x-ratelimit-reset-requests"] for d in seen] == ["20s", "40s", "1m0s"]
    assert seen[0].headers() == {"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "2",
                                 "x-ratelimit-reset-requests": "20s"}

    refused = ratelimit.check(key, org, now_us=T0 + 5 * S)
    assert not refused.allowed
    assert (refused.binding.remaining, refused.binding.reset_us, refused.retry_after_us) == (0, 55 * S, 15 * S)
    headers = refused.headers()
    assert headers["retry-after"] == "15" and headers["retry-after-ms"] == "15000"
    assert headers["x-ratelimit-remaining-requests"] == "0"

    # Refusals consume nothing: asking again at the same moment gives the same wait.
    assert ratelimit.check(key, org, now_us=T0 + 5 * S).retry_after_us == 15 * S
    # One interval after the start, exactly one request is available again.
    again = ratelimit.check(key, org, now_us=T0 + 20 * S)
    assert again.allowed and again.binding.remaining == 0 and again.binding.reset_us == 60 * S
    assert not ratelimit.check(key, org, now_us=T0 + 20 * S).allowed
    # A minute after the last request the bucket is back to its initial state.
    fresh = ratelimit.check(key, org, now_us=T0 + 80 * S)
    assert fresh.allowed and fresh.binding.remaining == 2 and fresh.binding.reset_us == 20 * S


def test_an_odd_limit_allows_exactly_the_limit_at_once(backend):
    org, (key,) = tenant(keys=(7,))  # 60 s / 7 is not a whole number of microseconds
    allowed = [ratelimit.check(key, org, now_us=T0).allowed for _ in range(10)]
    assert allowed == [True] * 7 + [False] * 3


def test_retry_after_is_whole_seconds_and_at_least_one(backend):
    org, (key,) = tenant(keys=(6000,))  # one request every 10 ms
    for _ in range(6000):
        assert ratelimit.check(key, org, now_us=T0).allowed
    refused = ratelimit.check(key, org, now_us=T0 + 4_000)
    assert not refused.allowed and refused.retry_after_us == 6_000
    assert refused.headers()["retry-after"] == "1"
    assert refused.headers()["retry-after-ms"] == "6"
    assert "Please try again in 6ms." in refused.message()


def test_key_without_its_own_limit_gets_the_default_and_org_zero_means_no_org_limit(backend):
    org, (key,) = tenant(org_rpm=0, keys=(0,))
    with override_settings(RATE_LIMIT_DEFAULT_RPM=4):
        decision = ratelimit.check(key, org, now_us=T0)
    assert [b.scope for b in decision.buckets] == ["key"]
    assert decision.binding.limit == 4 and decision.binding.remaining == 3


def test_org_refusal_does_not_consume_the_keys_budget(backend):
    org, (k1, k2) = tenant(org_rpm=2, keys=(3, 3))
    assert ratelimit.check(k2, org, now_us=T0).allowed
    assert ratelimit.check(k2, org, now_us=T0).allowed
    refused = ratelimit.check(k1, org, now_us=T0)
    assert not refused.allowed
    assert refused.binding.scope == "organization" and refused.binding.limit == 2
    assert refused.retry_after_us == 30 * S
    assert bucket(refused, "key").remaining == 3 and bucket(refused, "key").retry_us == 0  # k1 untouched
    assert refused.message().startswith(f"Rate limit reached for requests on organization {org.slug}: limit 2 / min, "
                                        "used 2. Please try again in 30s.")
    for _ in range(5):  # hammering while refused changes nothing
        assert not ratelimit.check(k1, org, now_us=T0 + 10 * S).allowed

    ok = ratelimit.check(k1, org, now_us=T0 + 30 * S)
    assert ok.allowed
    assert bucket(ok, "key").remaining == 2  # only this request counted against k1
    assert bucket(ok, "organization").remaining == 0
    assert ok.binding.scope == "organization"  # the fewest left binds
    assert ok.headers()["x-ratelimit-limit-requests"] == "2"


def test_key_refusal_does_not_consume_the_orgs_budget(backend):
    org, (k1, k2) = tenant(org_rpm=5, keys=(1, 10))
    assert ratelimit.check(k1, org, now_us=T0).allowed
    for _ in range(10):
        refused = ratelimit.check(k1, org, now_us=T0)
        assert not refused.allowed and refused.binding.scope == "key"
    assert refused.message().startswith(f"Rate limit reached for requests on API key {k1.prefix}…: limit 1 / min, "
                                        "used 1. Please try again in 1m0s.")
    assert bucket(refused, "organization").remaining == 4
    other = ratelimit.check(k2, org, now_us=T0)
    assert other.allowed and bucket(other, "organization").remaining == 3  # 2 of 5 used, not 12


def test_when_both_refuse_the_longer_wait_is_reported(backend):
    org, (key,) = tenant(org_rpm=2, keys=(1,))
    assert ratelimit.check(key, org, now_us=T0).allowed
    other = ApiKey(pk=key.pk + 1, organization=org, name="k2", prefix="ig_other000", rate_limit_rpm=10)
    assert ratelimit.check(other, org, now_us=T0).allowed  # the org's 2 are used
    refused = ratelimit.check(key, org, now_us=T0 + S)
    assert {b.scope for b in refused.buckets if b.retry_us} == {"key", "organization"}
    assert refused.retry_after_us == 59 * S and refused.binding.scope == "key"  # key: 59 s; org: 29 s


# --- Atomicity across threads (the same holds across processes: Redis runs the script alone) --------------------------

def _race(calls, threads=40):
    """Run `calls` from `threads` threads released together (redis-py's pool holds 100 connections, so not one
    thread per call); each thread makes its share back to back, so the calls interleave at the server."""
    barrier = threading.Barrier(threads)
    results = [None] * len(calls)

    def run(worker):
        barrier.wait()
        for i in range(worker, len(calls), threads):
            results[i] = calls[i]()

    pool = [threading.Thread(target=run, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    assert all(r is not None for r in results)
    return results


def test_concurrent_requests_get_exactly_the_limit(backend):
    org, (key,) = tenant(keys=(50,))
    # One fixed "now" keeps the test independent of how long the threads take to start (50 rpm refills every 1.2 s).
    results = _race([lambda: ratelimit.check(key, org, now_us=T0) for _ in range(200)])
    assert sum(d.allowed for d in results) == 50
    assert sorted(d.binding.remaining for d in results if d.allowed) == list(range(50))


def test_concurrent_requests_across_keys_respect_the_org_limit_and_count_nothing_refused(backend):
    org, keys = tenant(org_rpm=50, keys=(100, 100, 100, 100))
    results = _race([(lambda k=k: (k, ratelimit.check(k, org, now_us=T0))) for k in keys for _ in range(50)])
    allowed_by_key = {k.pk: sum(1 for kk, d in results if kk is k and d.allowed) for k in keys}
    assert sum(allowed_by_key.values()) == 50
    for k in keys:  # each key's bucket counted exactly its allowed requests
        after = ratelimit.check(k, org, now_us=T0)
        assert not after.allowed and bucket(after, "organization").retry_us > 0
        assert bucket(after, "key").remaining == 100 - allowed_by_key[k.pk]


# --- Redis specifics --------------------------------------------------------------------------------------------------

@pytest.fixture
def redis_only():
    assert settings.REDIS_URL, "the suite runs with Redis (make test sets REDIS_URL)"
    return _redis()


def test_redis_keys_hold_one_timestamp_and_expire_when_full(redis_only):
    client = redis_only
    org, (key,) = tenant(org_rpm=600, keys=(120,))
    decision = ratelimit.check(key, org)  # Redis's own clock
    assert decision.allowed and bucket(decision, "key").remaining == 119
    key_name, org_name = ratelimit.bucket_keys(key, org)
    prefix = settings.CACHES["default"].get("KEY_PREFIX") or "ig"
    assert key_name == f"{prefix}:ratelimit:{{org:{org.pk}}}:key:{key.pk}"
    assert org_name == f"{prefix}:ratelimit:{{org:{org.pk}}}"
    assert client.type(key_name) == b"string" and client.type(org_name) == b"string"
    seconds, micros = client.time()
    tat = int(client.get(key_name))
    assert 0 < tat - (seconds * S + micros) <= 500_000  # now + one interval (0.5 s)
    assert 0 < client.pttl(key_name) <= 500 and 0 < client.pttl(org_name) <= 100


def test_the_script_is_loaded_when_the_server_does_not_know_it(redis_only):
    limiter = ratelimit.RedisLimiter()
    limiter.script = ratelimit._LUA + f"\n-- {uuid.uuid4()}\n"  # a script Redis has never seen
    limiter.sha = hashlib.sha1(limiter.script.encode()).hexdigest()
    assert redis_only.script_exists(limiter.sha) == [False]
    raw = limiter.hit([f"ig:ratelimit:{{org:test}}:{uuid.uuid4().hex}"], [5], now_us=T0)
    assert raw == [1, 5, 4, 12 * S, 0]
    assert redis_only.script_exists(limiter.sha) == [True]


# --- The DRF throttle -------------------------------------------------------------------------------------------------

def _drf_request(key, org):
    from rest_framework.request import Request

    request = Request(APIRequestFactory().post("/v1/images/generations"))
    request.user = KeyPrincipal(api_key=key, organization=org)
    return request


def test_throttle_records_the_decision_and_raises_openais_429(backend):
    org, (key,) = tenant(keys=(2,))
    throttle = ratelimit.RequestRateThrottle()
    for remaining in (1, 0):
        request = _drf_request(key, org)
        assert throttle.allow_request(request, None) is True
        assert request._request.rate_limit.headers()["x-ratelimit-remaining-requests"] == str(remaining)

    request = _drf_request(key, org)
    with pytest.raises(RateLimited) as info:
        throttle.allow_request(request, None)
    exc = info.value
    assert (exc.status, exc.type, exc.code, exc.param) == (429, "requests", "rate_limit_exceeded", None)
    assert exc.message.startswith(f"Rate limit reached for requests on API key {key.prefix}…: limit 2 / min, used 2.")
    assert 1 <= int(exc.headers["retry-after"]) <= 30 and int(exc.headers["retry-after-ms"]) > 0
    assert request._request.rate_limit.allowed is False

    response = api_exception_handler(exc, {})  # the handler keeps the headers
    assert response.status_code == 429
    assert response.data == {"error": {"message": exc.message, "type": "requests", "param": None,
                                       "code": "rate_limit_exceeded"}}
    for name in (*RL_HEADERS, "retry-after", "retry-after-ms"):
        assert response[name] == exc.headers[name]


def test_throttle_ignores_requests_without_a_key():
    from rest_framework.request import Request

    request = Request(APIRequestFactory().get("/v1/models"))
    request.user = None
    assert ratelimit.RequestRateThrottle().allow_request(request, None) is True
    assert not hasattr(request._request, "rate_limit")


def test_throttle_fails_open_when_redis_is_down(monkeypatch):
    from redis.exceptions import ConnectionError

    class Down:
        def hit(self, *args, **kwargs):
            raise ConnectionError("connection refused")

    monkeypatch.setattr(ratelimit, "get_limiter", lambda: Down())
    org, (key,) = tenant(keys=(1,))
    request = _drf_request(key, org)
    assert ratelimit.RequestRateThrottle().allow_request(request, None) is True
    assert not hasattr(request._request, "rate_limit")


def test_throttle_is_configured_for_the_api():
    from generation.api.images import ImageGenerationsView
    from generation.api.model_list import ModelListView

    for view in (ImageGenerationsView, ModelListView):
        assert [type(t) for t in view().get_throttles()] == [ratelimit.RequestRateThrottle]
    assert settings.MIDDLEWARE.index("generation.pipeline.ratelimit.RateLimitHeadersMiddleware") == \
        settings.MIDDLEWARE.index("config.http.middleware.RequestIdMiddleware") + 1


# --- End to end: the official OpenAI SDK against the live server ------------------------------------------------------

def _generate(client, **extra):
    return client.images.with_raw_response.generate(model="local-preview", prompt="a red fox", size="256x256",
                                                    response_format="b64_json", **extra)


def test_sdk_three_successes_then_rate_limit_error(openai_client, api_key):
    key, raw_key = api_key
    ApiKey.all_tenants_unsafe.filter(pk=key.pk).update(rate_limit_rpm=3)
    for remaining in (2, 1, 0):
        raw = _generate(openai_client)
        assert raw.http_response.status_code == 200
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(remaining)
        assert DURATION.match(raw.headers["x-ratelimit-reset-requests"])
        assert raw.headers["x-request-id"].startswith("req_")
        raw.parse()

    with pytest.raises(openai.RateLimitError) as info:
        _generate(openai_client)
    err = info.value
    assert err.status_code == 429
    assert err.code == "rate_limit_exceeded" and err.type == "requests" and err.param is None
    body = err.response.json()["error"]
    assert body["message"].startswith(f"Rate limit reached for requests on API key {key.prefix}…: limit 3 / min, "
                                      "used 3. Please try again in ")
    assert (body["type"], body["param"], body["code"]) == ("requests", None, "rate_limit_exceeded")
    assert raw_key not in err.response.text and raw_key[len(key.prefix):] not in err.response.text
    headers = err.response.headers
    assert 1 <= int(headers["retry-after"]) <= 20 and 0 < int(headers["retry-after-ms"]) <= 20_000
    assert headers["x-ratelimit-limit-requests"] == "3" and headers["x-ratelimit-remaining-requests"] == "0"
    assert DURATION.match(headers["x-ratelimit-reset-requests"])
    assert headers["x-request-id"].startswith("req_")
    assert headers["content-type"] == "application/json"


def test_headers_on_errors_raised_after_authentication(openai_client, api_key):
    with pytest.raises(openai.BadRequestError) as info:  # missing prompt
        openai_client.images.generate(model="local-preview", prompt=None, size="256x256", response_format="b64_json")
    headers = info.value.response.headers
    assert headers["x-ratelimit-limit-requests"] == str(settings.RATE_LIMIT_DEFAULT_RPM)
    assert headers["x-ratelimit-remaining-requests"] == str(settings.RATE_LIMIT_DEFAULT_RPM - 1)
    assert DURATION.match(headers["x-ratelimit-reset-requests"])

    with pytest.raises(openai.NotFoundError) as info:  # unknown model: counted too
        openai_client.images.generate(model="no-such-model", prompt="x")
    assert info.value.response.headers["x-ratelimit-remaining-requests"] == str(settings.RATE_LIMIT_DEFAULT_RPM - 2)


def test_models_list_and_retrieve_carry_the_headers(openai_client):
    listed = openai_client.models.with_raw_response.list()
    assert listed.http_response.status_code == 200
    assert all(name in listed.headers for name in RL_HEADERS)
    one = openai_client.models.with_raw_response.retrieve("local-preview")
    assert int(one.headers["x-ratelimit-remaining-requests"]) == \
        int(listed.headers["x-ratelimit-remaining-requests"]) - 1


def test_org_limit_spans_the_orgs_keys_end_to_end(openai_client, api_key, live_url):
    key, _ = api_key
    Organization.objects.filter(pk=key.organization_id).update(rate_limit_rpm=2)
    _, second_raw = account_services.create_api_key(organization=key.organization, name="second")
    second = openai.OpenAI(base_url=f"{live_url}/v1", api_key=second_raw, max_retries=0, timeout=30)
    assert _generate(openai_client).headers["x-ratelimit-remaining-requests"] == "1"
    last = _generate(second)
    assert last.headers["x-ratelimit-limit-requests"] == "2" and last.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as info:
        _generate(second)
    message = info.value.response.json()["error"]["message"]
    assert message.startswith(f"Rate limit reached for requests on organization {key.organization.slug}: limit 2 / min")
    assert int(info.value.response.headers["retry-after"]) >= 1


def test_embedded_default_limits_in_process_end_to_end(openai_client, api_key):
    """Without REDIS_URL (`make run`) the same limits hold, counted in the server's process."""
    ApiKey.all_tenants_unsafe.filter(pk=api_key[0].pk).update(rate_limit_rpm=2)
    with override_settings(REDIS_URL=""):
        assert [openai_client.models.with_raw_response.list().headers["x-ratelimit-remaining-requests"]
                for _ in range(2)] == ["1", "0"]
        with pytest.raises(openai.RateLimitError) as info:
            openai_client.models.list()
        assert int(info.value.response.headers["retry-after"]) >= 1
    if settings.REDIS_URL:  # nothing went to Redis
        assert not list(_redis().scan_iter(match="*:ratelimit:*"))


def test_no_headers_without_a_key_or_outside_v1(live_url):
    anonymous = httpx.get(f"{live_url}/v1/models")
    assert anonymous.status_code == 401
    assert not any(name in anonymous.headers for name in RL_HEADERS)
    page = httpx.get(f"{live_url}/accounts/login/")
    assert not any(name in page.headers for name in RL_HEADERS)

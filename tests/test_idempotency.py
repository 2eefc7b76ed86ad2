"""generation.pipeline.idempotency against the real cache: Redis when REDIS_URL is set (as in production), and
LocMemCache (the embedded default). No database. Async code runs under asyncio.run in plain test functions."""
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest
from django.core.cache import caches
from django.core.cache.backends.base import CacheKeyWarning
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import QueryDict

from generation.pipeline import idempotency as idem
from generation.pipeline.idempotency import (
    IdempotencyConflict,
    IdempotencyInProgress,
    StoredResponse,
    fingerprint,
    run_once,
    validate_key,
)

PATH = "/v1/images/generations"
BODY = {"model": "local-preview", "prompt": "A lighthouse in a storm", "size": "512x512"}
FP = fingerprint(method="POST", path=PATH, body=BODY)
OTHER_FP = fingerprint(method="POST", path=PATH, body={**BODY, "prompt": "A lighthouse at dawn"})
LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "idempotency-tests"}}


@pytest.fixture(params=["configured", "locmem"])
def backend(request, settings):
    """Each run_once test runs twice: on the configured cache (Redis when REDIS_URL is set) and on LocMemCache."""
    if request.param == "locmem":
        settings.CACHES = LOCMEM
        caches["default"].clear()
        assert type(idem._store()).__name__ == "_CacheStore"
    elif os.environ.get("REDIS_URL"):
        assert type(idem._store()).__name__ == "_RedisStore", "REDIS_URL is set, the Redis store must be used"
    return request.param


@pytest.fixture
def scope():
    """A fresh organization id per test, so tests never see each other's keys."""
    return f"org{uuid.uuid4().hex[:12]}"


class Counter:
    """Counts compute() runs; thread-safe, since several event loops may call it."""

    def __init__(self):
        self.n = 0
        self._lock = threading.Lock()

    def bump(self) -> int:
        with self._lock:
            self.n += 1
            return self.n


def make_compute(counter: Counter, *, status=200, delay=0.0, body=None, headers=None):
    async def compute():
        run = counter.bump()
        if delay:
            await asyncio.sleep(delay)
        return StoredResponse(
            status=status,
            body=body if body is not None else {"created": 1795641696, "data": [{"b64_json": uuid.uuid4().hex}],
                                                "run": run},
            headers=headers if headers is not None else {"x-request-id": f"req_{uuid.uuid4().hex}",
                                                         "x-provider": "local"},
        )

    return compute


def once(scope, key, compute, fp=FP, **kwargs):
    return asyncio.run(run_once(scope=scope, key=key, fingerprint=fp, compute=compute, **kwargs))


# --- replay ---------------------------------------------------------------------------------------------------------

def test_retry_replays_identical_response_and_computes_once(backend, scope):
    counter = Counter()
    compute = make_compute(counter)
    first, replayed_first = once(scope, "key-1", compute)
    second, replayed_second = once(scope, "key-1", compute)
    third, _ = once(scope, "key-1", compute)
    assert counter.n == 1
    assert (replayed_first, replayed_second) == (False, True)
    assert second == first and third == first
    assert second.headers["x-request-id"] == first.headers["x-request-id"]
    assert second.body["data"] == first.body["data"]


def test_same_json_in_other_key_order_or_as_bytes_is_the_same_request(backend, scope):
    counter = Counter()
    compute = make_compute(counter)
    raw = b'{ "size": "512x512", "prompt": "A lighthouse in a storm",\n "model": "local-preview" }'
    once(scope, "k", compute, fp=fingerprint(method="POST", path=PATH, body=BODY))
    response, replayed = once(scope, "k", compute, fp=fingerprint(method="post", path=PATH, body=raw))
    assert replayed and counter.n == 1


def test_large_b64_body_replays_intact(backend, scope):
    counter = Counter()
    big = {"data": [{"b64_json": "iVBORw0KGgo" + "A" * 6_000_000}], "usage": {"prompt": "snow ☃ 雪"}}
    compute = make_compute(counter, body=big)
    once(scope, "big", compute)
    response, replayed = once(scope, "big", compute)
    assert replayed and counter.n == 1
    assert response.body == big


def test_any_printable_key_is_a_safe_cache_key(backend, scope):
    counter = Counter()
    key = "a key: with spaces/colons {and} braces " + "x" * 200 + "~"
    key = key[:255]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheKeyWarning)
        once(scope, validate_key(key), make_compute(counter))
        _, replayed = once(scope, key, make_compute(counter))
    assert replayed and counter.n == 1


# --- conflicts ------------------------------------------------------------------------------------------------------

def test_same_key_different_body_is_a_conflict(backend, scope):
    counter = Counter()
    first, _ = once(scope, "k", make_compute(counter))
    with pytest.raises(IdempotencyConflict) as exc:
        once(scope, "k", make_compute(counter), fp=OTHER_FP)
    assert "can only be used with the same parameters they were first used with" in exc.value.message
    assert "'k'" in exc.value.message
    # the stored response is untouched: the original request still replays
    again, replayed = once(scope, "k", make_compute(counter))
    assert replayed and again == first and counter.n == 1


def test_same_key_on_other_endpoint_is_a_conflict(backend, scope):
    once(scope, "k", make_compute(Counter()))
    with pytest.raises(IdempotencyConflict):
        once(scope, "k", make_compute(Counter()), fp=fingerprint(method="POST", path="/v1/images/edits", body=BODY))


def test_different_body_while_first_is_in_flight_is_a_conflict_at_once(backend, scope):
    counter = Counter()

    async def scenario():
        first = asyncio.create_task(run_once(scope=scope, key="k", fingerprint=FP,
                                             compute=make_compute(counter, delay=0.5)))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(IdempotencyConflict):
            await run_once(scope=scope, key="k", fingerprint=OTHER_FP, compute=make_compute(counter), wait=30)
        assert time.monotonic() - started < 0.3  # refused at once, not after waiting
        return await first

    response, replayed = asyncio.run(scenario())
    assert not replayed and counter.n == 1


def test_scopes_are_independent(backend, scope):
    counter = Counter()
    a, replayed_a = once(scope, "shared", make_compute(counter))
    b, replayed_b = once(scope + "x", "shared", make_compute(counter), fp=OTHER_FP)  # no conflict across orgs
    assert not replayed_a and not replayed_b and counter.n == 2
    assert a.body != b.body
    assert once(scope, "shared", make_compute(counter))[0] == a
    assert once(scope + "x", "shared", make_compute(counter), fp=OTHER_FP)[0] == b


# --- what is stored -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 409, 408])
def test_server_errors_and_transient_4xx_are_not_stored(backend, scope, status):
    counter = Counter()
    error = {"error": {"message": "upstream failed", "type": "server_error", "param": None, "code": None}}
    response, replayed = once(scope, "k", make_compute(counter, status=status, body=error))
    assert response.status == status and not replayed
    retry, replayed = once(scope, "k", make_compute(counter))
    assert retry.status == 200 and not replayed and counter.n == 2
    assert once(scope, "k", make_compute(counter)) == (retry, True)


@pytest.mark.parametrize("status", [400, 404, 201, 200])
def test_successes_and_client_errors_are_stored(backend, scope, status):
    counter = Counter()
    body = {"error": {"message": "Invalid size", "type": "invalid_request_error", "param": "size",
                      "code": "invalid_size"}}
    first, _ = once(scope, "k", make_compute(counter, status=status, body=body))
    again, replayed = once(scope, "k", make_compute(counter, status=200))
    assert replayed and counter.n == 1
    assert again.status == status and again.body == body


def test_compute_raising_releases_the_claim(backend, scope):
    calls = Counter()

    async def boom():
        calls.bump()
        raise RuntimeError("provider exploded")

    with pytest.raises(RuntimeError, match="provider exploded"):
        once(scope, "k", boom)
    _, claim_key = idem._keys(scope, "k")
    assert idem._store().get(claim_key) is None
    response, replayed = once(scope, "k", make_compute(calls))
    assert response.status == 200 and not replayed and calls.n == 2


def test_compute_must_return_a_stored_response(backend, scope):
    async def wrong():
        return {"data": []}

    with pytest.raises(TypeError):
        once(scope, "k", wrong)
    assert idem._store().get(idem._keys(scope, "k")[1]) is None


def test_cancelled_request_releases_the_claim(backend, scope):
    counter = Counter()

    async def scenario():
        task = asyncio.create_task(run_once(scope=scope, key="k", fingerprint=FP,
                                            compute=make_compute(counter, delay=5)))
        await asyncio.sleep(0.2)
        task.cancel()  # e.g. Django cancelling the view when the client disconnects
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)

    asyncio.run(scenario())
    assert idem._store().get(idem._keys(scope, "k")[1]) is None
    response, replayed = once(scope, "k", make_compute(counter))
    assert not replayed and counter.n == 2


# --- concurrency ----------------------------------------------------------------------------------------------------

def test_concurrent_duplicates_in_one_event_loop_run_once(backend, scope):
    counter = Counter()
    compute = make_compute(counter, delay=0.4)

    async def burst():
        return await asyncio.gather(*[run_once(scope=scope, key="k", fingerprint=FP, compute=compute)
                                      for _ in range(20)])

    results = asyncio.run(burst())
    assert counter.n == 1
    assert [r for _, r in results].count(False) == 1
    assert all(response == results[0][0] for response, _ in results)


def test_concurrent_duplicates_in_separate_threads_and_loops_run_once(backend, scope):
    """Two (here four) OS threads, each with its own event loop and cache connection: as two processes would."""
    counter = Counter()
    compute = make_compute(counter, delay=0.5)
    barrier = threading.Barrier(4)
    results, errors = [], []

    def worker():
        async def burst():
            return await asyncio.gather(*[run_once(scope=scope, key="k", fingerprint=FP, compute=compute)
                                          for _ in range(5)])
        try:
            barrier.wait()
            results.extend(asyncio.run(burst()))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len(results) == 20 and counter.n == 1
    assert [r for _, r in results].count(False) == 1
    assert len({json.dumps(response.body, sort_keys=True) for response, _ in results}) == 1


_CHILD = r"""
import asyncio, json, sys, django
django.setup()
from django_redis import get_redis_connection
from generation.pipeline.idempotency import StoredResponse, run_once

scope, key, fp, counter_key = sys.argv[1:5]

async def compute():
    get_redis_connection("default").incr(counter_key)
    await asyncio.sleep(0.5)
    return StoredResponse(status=200, body={"pid": __import__("os").getpid()}, headers={"x-request-id": "req_1"})

response, replayed = asyncio.run(run_once(scope=scope, key=key, fingerprint=fp, compute=compute))
print(json.dumps({"body": response.body, "replayed": replayed}))
"""


def test_concurrent_duplicates_in_separate_processes_run_once(scope):
    from django_redis import get_redis_connection

    counter_key = f"idempotency-test-counter:{scope}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    root = Path(__file__).resolve().parent.parent
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, scope, "k", FP, counter_key], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    client = get_redis_connection("default")
    try:
        assert int(client.get(counter_key)) == 1
    finally:
        client.delete(counter_key)
    assert len({json.dumps(o["body"]) for o in outputs}) == 1
    assert sorted(o["replayed"] for o in outputs) == [False, True, True]


def test_duplicate_gives_up_after_wait_with_in_progress(backend, scope):
    counter = Counter()

    async def scenario():
        first = asyncio.create_task(run_once(scope=scope, key="k", fingerprint=FP,
                                             compute=make_compute(counter, delay=1.0)))
        await asyncio.sleep(0.1)
        with pytest.raises(IdempotencyInProgress) as exc:
            await run_once(scope=scope, key="k", fingerprint=FP, compute=make_compute(counter), wait=0.3)
        assert "still being processed" in exc.value.message
        with pytest.raises(IdempotencyInProgress):  # wait=0: Stripe's immediate refusal
            await run_once(scope=scope, key="k", fingerprint=FP, compute=make_compute(counter), wait=0)
        first_response, _ = await first
        replay, replayed = await run_once(scope=scope, key="k", fingerprint=FP, compute=make_compute(counter))
        assert replayed and replay == first_response

    asyncio.run(scenario())
    assert counter.n == 1


def test_waiting_duplicate_takes_over_when_the_first_fails_with_5xx(backend, scope):
    counter = Counter()
    error = {"error": {"message": "bad gateway", "type": "server_error", "param": None, "code": "upstream_error"}}

    async def scenario():
        first = asyncio.create_task(run_once(scope=scope, key="k", fingerprint=FP,
                                             compute=make_compute(counter, status=502, body=error, delay=0.3)))
        await asyncio.sleep(0.05)
        second = await run_once(scope=scope, key="k", fingerprint=FP, compute=make_compute(counter))
        return await first, second

    (first, first_replayed), (second, second_replayed) = asyncio.run(scenario())
    assert first.status == 502 and second.status == 200
    assert not first_replayed and not second_replayed and counter.n == 2  # one after the other, never together
    assert once(scope, "k", make_compute(counter)) == (second, True)


def test_heartbeat_keeps_a_long_running_claim(backend, scope):
    """compute() outlives claim_ttl several times over; the renewed claim keeps duplicates waiting, not running."""
    counter = Counter()

    async def scenario():
        first = asyncio.create_task(run_once(scope=scope, key="k", fingerprint=FP, claim_ttl=0.5,
                                             compute=make_compute(counter, delay=1.6)))
        await asyncio.sleep(1.0)  # the unrenewed claim would have expired twice by now
        second = await run_once(scope=scope, key="k", fingerprint=FP, compute=make_compute(counter), wait=10)
        return await first, second

    (first, _), (second, replayed) = asyncio.run(scenario())
    assert replayed and second == first and counter.n == 1


def test_crashed_holder_claim_expires_and_is_taken_over(backend, scope):
    """A process died mid-request: its claim is never released nor renewed; it expires and a retry runs."""
    store = idem._store()
    _, claim_key = idem._keys(scope, "k")
    dead = json.dumps({"fp": FP, "token": "dead-process"})
    assert store.add(claim_key, dead, 0.8)
    counter = Counter()
    with pytest.raises(IdempotencyInProgress):
        once(scope, "k", make_compute(counter), wait=0.2)
    started = time.monotonic()
    response, replayed = once(scope, "k", make_compute(counter), wait=10)
    assert not replayed and response.status == 200 and counter.n == 1
    assert time.monotonic() - started < 3
    assert once(scope, "k", make_compute(counter)) == (response, True)


def test_claim_of_crashed_holder_with_other_body_is_a_conflict_until_it_expires(backend, scope):
    store = idem._store()
    _, claim_key = idem._keys(scope, "k")
    assert store.add(claim_key, json.dumps({"fp": OTHER_FP, "token": "dead"}), 0.5)
    with pytest.raises(IdempotencyConflict):
        once(scope, "k", make_compute(Counter()))
    time.sleep(0.6)
    assert once(scope, "k", make_compute(Counter()))[1] is False


# --- where it is stored ---------------------------------------------------------------------------------------------

def test_redis_keys_ttls_and_prefix(scope):
    from django_redis import get_redis_connection

    client = get_redis_connection("default")
    observed = {}

    async def compute():
        prefix = caches["default"].make_key("")
        claim = [k.decode() for k in client.keys(f"{prefix}idempotency:{{org:{scope}}}:*:claim")]
        observed["claim_pttl"] = client.pttl(claim[0]) if claim else None
        return StoredResponse(status=200, body={"ok": True}, headers={})

    once(scope, "k", compute)
    response_key, claim_key = idem._keys(scope, "k")
    full = str(caches["default"].make_key(response_key))
    assert full.startswith("ig:")
    assert 0 < observed["claim_pttl"] <= idem.CLAIM_TTL * 1000
    assert 86_000 < client.ttl(full) <= 86_400
    assert json.loads(client.get(full))["body"] == {"ok": True}  # plain JSON, not a pickle
    assert not client.exists(str(caches["default"].make_key(claim_key)))  # released


def test_locmem_override_is_honoured_no_stale_cache(settings, scope):
    from django_redis import get_redis_connection

    redis_client = get_redis_connection("default")
    once(scope, "before", make_compute(Counter()))  # uses Redis first, so a held reference would be Redis
    settings.CACHES = LOCMEM
    once(scope, "after", make_compute(Counter()))
    response_key = idem._keys(scope, "after")[0]
    assert caches["default"].get(response_key) is not None
    assert not redis_client.keys(f"*{response_key}*")


# --- helpers --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["a", "0" * 255, "3f2b1c4e-8a1d-4d6b-9f0e-2b7c5a9d1e33", "with space ~!@#$%^&*()"])
def test_validate_key_accepts_printable_ascii(key):
    assert validate_key(key) == key


@pytest.mark.parametrize("key, fragment", [
    ("", "must not be empty"),
    (None, "must not be empty"),
    ("x" * 256, "at most 255"),
    ("caf\u00e9", "printable ASCII"),
    ("tab\there", "printable ASCII"),
    ("line\nbreak", "printable ASCII"),
    ("del\x7f", "printable ASCII"),
])
def test_validate_key_rejects(key, fragment):
    with pytest.raises(ValueError, match=fragment):
        validate_key(key)


def test_fingerprint():
    base = fingerprint(method="POST", path=PATH, body=BODY)
    assert base.startswith("sha256:")
    assert fingerprint(method="post", path=PATH, body=json.dumps(BODY, indent=2).encode()) == base
    assert fingerprint(method="POST", path=PATH, body=dict(reversed(list(BODY.items())))) == base
    assert fingerprint(method="POST", path=PATH, body={**BODY, "n": 1}) != base
    assert fingerprint(method="POST", path="/v1/images/edits", body=BODY) != base
    assert fingerprint(method="POST", path=PATH, body=b"not json") != fingerprint(method="POST", path=PATH,
                                                                                   body=b"not json!")
    assert fingerprint(method="POST", path=PATH, body=b"not json") == fingerprint(method="POST", path=PATH,
                                                                                   body=b"not json")


def test_fingerprint_of_multipart_form_hashes_file_contents():
    def form(image: bytes, prompt="add a hat"):
        data = QueryDict(mutable=True)
        data["prompt"] = prompt
        data["model"] = "local-preview"
        data.setlist("image[]", [SimpleUploadedFile("cat.png", image, content_type="image/png")])
        return data

    a = fingerprint(method="POST", path="/v1/images/edits", body=form(b"\x89PNG one"))
    assert a == fingerprint(method="POST", path="/v1/images/edits", body=form(b"\x89PNG one"))
    assert a != fingerprint(method="POST", path="/v1/images/edits", body=form(b"\x89PNG two"))
    assert a != fingerprint(method="POST", path="/v1/images/edits", body=form(b"\x89PNG one", prompt="a scarf"))
    upload = form(b"\x89PNG one")
    fingerprint(method="POST", path="/v1/images/edits", body=upload)
    assert upload["image[]"].read() == b"\x89PNG one"  # the view can still read the file


def test_is_stored():
    assert all(idem.is_stored(s) for s in (200, 201, 400, 401, 403, 404, 413, 422))
    assert not any(idem.is_stored(s) for s in (408, 409, 425, 429, 500, 502, 503, 504))

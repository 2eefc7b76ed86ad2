"""`Idempotency-Key` for POST /v1/images/*: a retry with the same key and body returns the first response, once.

Contract (per organization, like Stripe's keys):
  * the first request with a key runs; its response is stored for 24 hours together with a fingerprint of the
    request (method, path, body);
  * a retry with the same key and the same fingerprint gets the stored response back (same status, body and
    headers, including the first request's `x-request-id`) and nothing runs again: no upstream call, no charge;
  * the same key with a different fingerprint is refused (`IdempotencyConflict` -> 409 `idempotency_key_reused`),
    whether the first request has finished or is still running;
  * duplicates that arrive while the first is still running never run in parallel with it: they wait for it
    (polling with a growing back-off, up to `wait` seconds, 90 by default: upstream generations take up to ~60 s)
    and then get its stored response as a replay. If the wait runs out they get `IdempotencyInProgress`
    (-> 409 `idempotency_request_in_progress`; retrying later replays). `wait=0` gives Stripe's behaviour
    (refuse a concurrent duplicate at once).

What is stored. Successes (2xx) and deterministic client errors (4xx) are stored and replayed. Not stored, so that a
retry runs again: 5xx (our or the upstream's failure; nothing was charged), 429 (rate limited), 409 (itself an
idempotency/conflict answer), 408 and 425 (transient by definition), and any exception raised by `compute()`.
When a run ends without a stored response, the key is released; a duplicate that was waiting for it then claims the
key and runs itself (it is, in effect, the client's retry). So a key never has two runs *at the same time*, and
never another run after a response has been stored.

Claims. A run first claims the key atomically (Redis `SET NX PX`; `cache.add` on other backends). The claim has a
short TTL (`CLAIM_TTL`, 60 s) that a heartbeat renews every third of it while `compute()` runs, so a long
generation keeps its claim, while a process that dies mid-request (no heartbeat, no release) frees its keys within
a minute; waiting duplicates then take over. The claim records the request's fingerprint, so a different body
under an in-flight key is refused at once instead of waiting. The claim is released (compare-and-delete, a Lua
script on Redis) when the run ends, however it ends, including cancellation (client disconnect).

Storage. With django-redis (REDIS_URL set) the module talks to Redis directly, through the cache's own client and
key prefix, with raw UTF-8 JSON values (no pickling), so every process and host shares the keys:
    <cache prefix>:idempotency:{org:<scope>}:<sha256 of the key>:claim     {"fp": ..., "token": ...}, PX 60 s
    <cache prefix>:idempotency:{org:<scope>}:<sha256 of the key>:response  {"fp","status","body","headers"}, EX 24 h
The client's key is hashed, so any printable key is a safe cache key. Without Redis (the embedded default,
LocMemCache) the same protocol runs over Django's cache API (per process, which is what a single process needs).
The cache is looked up on every call, never held, so settings overrides (tests) take effect. Cache calls run in
worker threads (`asyncio.to_thread`): they never block the event loop. Bodies are compact JSON; responses that
inline several MB of base64 images are fine (Redis strings hold up to 512 MB), but count them in Redis memory:
24 h of retained b64 responses is the main cost of this feature.

Failures of the store. If the cache cannot be reached while looking the key up or claiming it,
`IdempotencyUnavailable` is raised (-> 503, retryable): running without the guarantee could charge twice. If it
fails after `compute()` has run (storing the response, releasing the claim), the error is logged and the computed
response is still returned: the client gets its answer; only a later replay is lost (the claim expires by TTL).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import caches

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
META_HEADER = "HTTP_IDEMPOTENCY_KEY"          # request.META name of the header
REPLAYED_HEADER = "idempotent-replayed"       # set to "true" on replays (Stripe: Idempotent-Replayed)

MAX_KEY_LENGTH = 255
RESPONSE_TTL = 24 * 60 * 60    # stored responses live 24 hours
CLAIM_TTL = 60.0               # an unrenewed claim (dead process) expires after this many seconds
WAIT = 90.0                    # how long a concurrent duplicate waits for the first request to finish
POLL_INITIAL = 0.05            # waiting duplicates poll from every 50 ms ...
POLL_MAX = 1.0                 # ... backing off (x1.5, +-20 % jitter) to once a second

NOT_STORED_4XX = frozenset({408, 409, 425, 429})

CONFLICT_MESSAGE = (
    "Keys for idempotent requests can only be used with the same parameters they were first used with. "
    "Try using a key other than '{key}' if you meant to execute a different request."
)
IN_PROGRESS_MESSAGE = (
    "A request with the Idempotency-Key '{key}' is still being processed. Retry this request after it has "
    "finished: the original response will be returned."
)
UNAVAILABLE_MESSAGE = (
    "Idempotent requests are temporarily unavailable. Please retry your request shortly."
)


# --- public interface -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)
    fingerprint: str | None = None  # set on answers recovered from the database (checked against the retry's)


class IdempotencyError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class IdempotencyConflict(IdempotencyError):
    """The key was already used (finished or in flight) with a different request. Map to 409."""

    code = "idempotency_key_reused"
    status = 409


class IdempotencyInProgress(IdempotencyError):
    """A request with this key is still running and the wait ran out. Map to 409; `retry_after` is a hint (s)."""

    code = "idempotency_request_in_progress"
    status = 409
    retry_after = 1


class IdempotencyUnavailable(IdempotencyError):
    """The store (Redis) could not be reached before running; running anyway could charge twice. Map to 503."""

    code = "idempotency_unavailable"
    status = 503
    retry_after = 1


def validate_key(key: Any) -> str:
    """The key itself if it is 1-255 printable ASCII characters (0x20-0x7E), else ValueError with a clear message."""
    if not isinstance(key, str) or key == "":
        raise ValueError("The Idempotency-Key header must not be empty. Send 1 to 255 printable ASCII characters, "
                         "for example a UUID.")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"The Idempotency-Key header is {len(key)} characters long; it must be at most "
                         f"{MAX_KEY_LENGTH}. A UUID (36 characters) is a good key.")
    if not all(" " <= ch <= "~" for ch in key):
        raise ValueError("The Idempotency-Key header may only contain printable ASCII characters (letters, digits, "
                         "punctuation and spaces), 1 to 255 of them. A UUID is a good key.")
    return key


def is_stored(status: int) -> bool:
    """Whether a response with this status is stored and replayed (2xx, and 4xx except 408/409/425/429)."""
    return 200 <= status < 300 or (400 <= status < 500 and status not in NOT_STORED_4XX)


def fingerprint(*, method: str, path: str, body: bytes | str | Mapping) -> str:
    """A stable hash of what makes two requests "the same": method, path and body.

    JSON bodies are compared by value, not by bytes: key order and whitespace do not matter, and the raw bytes of a
    JSON object give the same fingerprint as the parsed dict (`request.data`). Form data (QueryDict, with uploaded
    files) is compared by field values and by the files' names and contents (SHA-256). Other bytes are hashed as is.
    """
    document = [method.upper(), path, _canonical_body(body)]
    payload = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return "sha256:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()


async def run_once(
    *,
    scope: str,
    key: str,
    fingerprint: str,
    compute: Callable[[], Awaitable[StoredResponse]],
    ttl: int = RESPONSE_TTL,
    wait: float = WAIT,
    claim_ttl: float | None = None,
    recover: Callable[[], Awaitable[StoredResponse | None]] | None = None,
) -> tuple[StoredResponse, bool]:
    """Run `compute()` at most once per (scope, key); return (response, replayed).

    `replayed` is True when the response is the stored answer of an earlier (or concurrent) request, False when
    this call ran `compute()`. `recover()`, when given, is asked for the answer of an earlier attempt whose claim
    expired without a stored response (its process died after committing, say): its answer is replayed instead of
    running again. Raises IdempotencyConflict, IdempotencyInProgress, IdempotencyUnavailable, or whatever `compute()`
    raised (the claim is released first, so a retry runs again).
    """
    if claim_ttl is None:
        claim_ttl = getattr(settings, "IDEMPOTENCY_CLAIM_TTL_SECONDS", CLAIM_TTL)
    store = _store()
    response_key, claim_key = _keys(scope, key)
    attempt_key = response_key.rsplit(":", 1)[0] + ":attempted"
    claim = json.dumps({"fp": fingerprint, "token": uuid.uuid4().hex}, separators=(",", ":"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, wait)
    delay = POLL_INITIAL
    while True:
        try:
            stored = await asyncio.to_thread(store.get, response_key)
            if stored is not None:
                return _replay(stored, fingerprint, key), True
            claimed = await asyncio.to_thread(store.add, claim_key, claim, claim_ttl)
            if claimed:
                # A run may have stored its response and released between our two reads: look again.
                try:
                    stored = await asyncio.to_thread(store.get, response_key)
                except BaseException:
                    await _release(store, claim_key, claim)
                    raise
                if stored is not None:
                    await _release(store, claim_key, claim)
                    return _replay(stored, fingerprint, key), True
            else:
                holder = await asyncio.to_thread(store.get, claim_key)
        except IdempotencyError:
            raise
        except Exception as exc:
            log.exception("Idempotency store unavailable (scope %s)", scope)
            raise IdempotencyUnavailable(UNAVAILABLE_MESSAGE) from exc

        if claimed:
            recovered = await _recover(store, attempt_key, response_key, claim_key, claim, fingerprint, key, ttl,
                                       recover)
            if recovered is not None:
                return recovered, True
            return await _execute(store, response_key, claim_key, claim, fingerprint, compute, ttl, claim_ttl), False
        if holder is None:  # released (or expired) between our claim attempt and this read: try again at once
            continue
        if _field(holder, "fp") != fingerprint:
            raise IdempotencyConflict(CONFLICT_MESSAGE.format(key=key))
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise IdempotencyInProgress(IN_PROGRESS_MESSAGE.format(key=key))
        await asyncio.sleep(min(remaining, delay * random.uniform(0.8, 1.2)))
        delay = min(delay * 1.5, POLL_MAX)


# --- running ---------------------------------------------------------------------------------------------------------

async def _recover(store, attempt_key: str, response_key: str, claim_key: str, claim: str, fp: str, key: str,
                   ttl: int, recover) -> StoredResponse | None:
    """Before running under a fresh claim: if an earlier attempt started (its marker is there) but left no response
    here, ask `recover()` for what it committed; replay that (storing it for the next retry) and give the claim
    back. None: nothing was committed, run."""
    if recover is None:
        return None
    try:
        first = await asyncio.to_thread(store.add, attempt_key, "1", ttl)
    except Exception:
        first = False  # cannot tell: look for a committed answer anyway
    if first:
        return None
    try:
        recovered = await recover()
    except BaseException:
        await _release(store, claim_key, claim)
        raise
    if recovered is None:
        return None
    try:
        if recovered.fingerprint is not None and recovered.fingerprint != fp:
            raise IdempotencyConflict(CONFLICT_MESSAGE.format(key=key))
        try:
            await asyncio.to_thread(store.add, response_key, _encode(fp, recovered), ttl)
        except Exception:
            log.exception("Could not store the recovered idempotent response %s", response_key)
        return recovered
    finally:
        await _release(store, claim_key, claim)


async def _execute(store, response_key: str, claim_key: str, claim: str, fp: str,
                   compute: Callable[[], Awaitable[StoredResponse]], ttl: int, claim_ttl: float) -> StoredResponse:
    heartbeat = asyncio.create_task(_heartbeat(store, claim_key, claim, claim_ttl))
    try:
        response = await compute()
        if not isinstance(response, StoredResponse):
            raise TypeError(f"compute() must return a StoredResponse, not {type(response).__name__}")
        if is_stored(response.status):
            try:
                added = await asyncio.to_thread(store.add, response_key, _encode(fp, response), ttl)
                if not added:
                    log.warning("Idempotency response %s was already stored by another run (claim lost?)",
                                response_key)
            except Exception:
                log.exception("Could not store the idempotent response %s; a retry will run again", response_key)
        return response
    finally:
        heartbeat.cancel()
        await _release(store, claim_key, claim)


async def _heartbeat(store, claim_key: str, claim: str, claim_ttl: float) -> None:
    """Keep the claim alive while compute() runs (a dead process stops renewing, and its claim expires)."""
    interval = max(claim_ttl / 3, 0.05)
    while True:
        await asyncio.sleep(interval)
        try:
            if not await asyncio.to_thread(store.extend, claim_key, claim, claim_ttl):
                log.warning("Idempotency claim %s expired while its request was still running", claim_key)
                return
        except Exception:
            log.exception("Could not renew idempotency claim %s", claim_key)


async def _release(store, claim_key: str, claim: str) -> None:
    try:
        await asyncio.shield(asyncio.to_thread(store.delete_if, claim_key, claim))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("Could not release idempotency claim %s; it expires by itself", claim_key)


def _encode(fp: str, response: StoredResponse) -> str:
    record = {"v": 1, "fp": fp, "status": response.status, "body": response.body,
              "headers": {str(k): str(v) for k, v in response.headers.items()}, "stored_at": int(time.time())}
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def _replay(stored: str, fp: str, key: str) -> StoredResponse:
    record = json.loads(stored)
    if record.get("fp") != fp:
        raise IdempotencyConflict(CONFLICT_MESSAGE.format(key=key))
    return StoredResponse(status=record["status"], body=record["body"], headers=dict(record["headers"]))


def _field(value: str, name: str):
    try:
        return json.loads(value).get(name)
    except (ValueError, AttributeError):
        return None


# --- keys and fingerprints -------------------------------------------------------------------------------------------

_SAFE_SCOPE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _keys(scope: Any, key: str) -> tuple[str, str]:
    scope = str(scope)
    if not _SAFE_SCOPE.fullmatch(scope):
        scope = "h" + hashlib.sha256(scope.encode("utf-8")).hexdigest()[:32]
    base = f"idempotency:{{org:{scope}}}:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"
    return f"{base}:response", f"{base}:claim"


def _canonical_body(body: Any) -> Any:
    if isinstance(body, (bytes, bytearray, memoryview)):
        raw = bytes(body)
        try:
            return {"json": _canonical(json.loads(raw))}
        except (ValueError, UnicodeDecodeError):
            return {"raw": hashlib.sha256(raw).hexdigest()}
    if isinstance(body, str):
        return _canonical_body(body.encode("utf-8"))
    return {"json": _canonical(body)}  # any parsed JSON value: an object, a list, a bare number or string


def _canonical(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "lists") and isinstance(value, Mapping):  # QueryDict / MultiValueDict: keep every value
        return {"form": {str(k): [_canonical(v) for v in vs] for k, vs in value.lists()}}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": hashlib.sha256(bytes(value)).hexdigest()}
    if hasattr(value, "chunks") or hasattr(value, "read"):  # an uploaded file: its name and content
        return {"file": getattr(value, "name", None), "sha256": _hash_file(value)}
    return str(value)


def _hash_file(handle) -> str:
    digest = hashlib.sha256()
    if hasattr(handle, "seek"):
        handle.seek(0)
    if hasattr(handle, "chunks"):
        for chunk in handle.chunks():
            digest.update(chunk)
    else:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    if hasattr(handle, "seek"):
        handle.seek(0)  # leave it readable for the view
    return digest.hexdigest()


# --- stores ----------------------------------------------------------------------------------------------------------

_DELETE_IF = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"
_EXTEND_IF = ("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
              "else return 0 end")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class _RedisStore:
    """django-redis: raw commands on the cache's own client, keys with the cache's prefix, atomic compare-and-X."""

    def __init__(self, cache):
        self.cache = cache
        self.client = cache.client.get_client(write=True)

    def _k(self, key: str) -> str:
        return str(self.cache.make_key(key))

    def get(self, key: str) -> str | None:
        value = self.client.get(self._k(key))
        return None if value is None else value.decode("utf-8")

    def add(self, key: str, value: str, ttl: float) -> bool:
        return bool(self.client.set(self._k(key), value.encode("utf-8"), nx=True, px=_ms(ttl)))

    def delete_if(self, key: str, value: str) -> bool:
        return bool(self.client.eval(_DELETE_IF, 1, self._k(key), value))

    def extend(self, key: str, value: str, ttl: float) -> bool:
        return bool(self.client.eval(_EXTEND_IF, 1, self._k(key), value, _ms(ttl)))


class _CacheStore:
    """Any Django cache (LocMemCache in the embedded default). add() is atomic; compare-and-delete is get + delete,
    which is enough within one process."""

    def __init__(self, cache):
        self.cache = cache

    def get(self, key: str) -> str | None:
        return self.cache.get(key)

    def add(self, key: str, value: str, ttl: float) -> bool:
        return self.cache.add(key, value, ttl)

    def delete_if(self, key: str, value: str) -> bool:
        if self.cache.get(key) == value:
            return self.cache.delete(key)
        return False

    def extend(self, key: str, value: str, ttl: float) -> bool:
        if self.cache.get(key) == value:
            return self.cache.touch(key, ttl)
        return False


def _store():
    """The store for the configured cache, resolved on every call (never cached: settings may change)."""
    cache = caches[getattr(settings, "IDEMPOTENCY_CACHE_ALIAS", "default")]
    try:
        from django_redis.cache import RedisCache
        from django_redis.client import DefaultClient
        from django_redis.client.sharded import ShardClient
    except ImportError:  # pragma: no cover - django-redis is a dependency
        return _CacheStore(cache)
    if isinstance(cache, RedisCache) and isinstance(cache.client, DefaultClient) \
            and not isinstance(cache.client, ShardClient):
        return _RedisStore(cache)
    return _CacheStore(cache)


# --- the durable copy, committed with the charge ----------------------------------------------------------------------
# A charged answer is also written to the database in the same transaction as its ledger row (IdempotentResponse,
# unique per organization and key): a process killed after the commit but before the Redis copy above was written
# leaves the answer there, and the retry's `recover` finds it; if even Redis forgot the attempt, the unique row makes
# the retry's own commit fail, and it answers with the first result instead of charging again.

def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def durable_row(*, organization_id: int, key: str, fingerprint: str, response: StoredResponse):
    """The unsaved IdempotentResponse for a charged answer (written with its ledger row by
    generation/pipeline/commit.py)."""
    from generation.models import IdempotentResponse

    return IdempotentResponse(organization_id=organization_id, key_hash=key_hash(key), fingerprint=fingerprint,
                              request_id=response.headers.get("x-request-id", ""), status=response.status,
                              body=json.dumps(response.body, separators=(",", ":"), ensure_ascii=False),
                              headers={str(k): str(v) for k, v in response.headers.items()})


def load_durable(*, organization_id: int, key: str) -> StoredResponse | None:
    """The committed answer for this organization's key, or None (sync: run it on a database thread)."""
    from generation.models import IdempotentResponse

    row = IdempotentResponse.objects.for_organization(organization_id).filter(key_hash=key_hash(key)).first()
    if row is None:
        return None
    return StoredResponse(status=row.status, body=json.loads(row.body), headers=dict(row.headers),
                          fingerprint=row.fingerprint)


def delete_expired_durable(*, older_than_seconds: int = RESPONSE_TTL) -> int:
    """Drop committed answers past the 24 hours a key is honoured (a beat task)."""
    from datetime import timedelta

    from django.utils import timezone

    from generation.models import IdempotentResponse

    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    deleted, _ = IdempotentResponse.all_tenants_unsafe.filter(created_at__lt=cutoff).delete()
    return deleted

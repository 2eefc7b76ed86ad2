"""Monthly spend limits, exact under concurrency, without a database row that every request must lock.

Which limits apply (`limits_for`): the organization's monthly limit and its free allowance (billing/policy.py),
the key's own limit, and the organization's limit per end user (the `user` / `safety_identifier` a request names);
they come from a per-process cache (config/process_cache.py), so checking them costs no query.

Counting. Each limit has a counter per UTC month in Redis (the embedded default keeps the same structure in this
process), all under the organization's hash tag so one Lua script touches them atomically:

    <prefix>:spend:{org:<id>}:<YYYYMM>              hash: spent (settled micro-USD), held (sum of live holds)
    <prefix>:spend:{org:<id>}:<YYYYMM>:holds        sorted set: hold id -> expiry (ms since the epoch)
    <prefix>:spend:{org:<id>}:<YYYYMM>:amounts      hash: hold id -> micro-USD
    (a key's counter: the same with ":key:<id>" after the month; an end user's: ":user:<pseudonym>")

`reserve` runs one script: it drops expired holds, checks spent + held + amount <= limit on every counter, and only
if all pass adds the hold to each. Concurrent requests through any number of processes and hosts therefore cannot
pass a limit together; the only overshoot is a request whose final price exceeded its estimate ("auto" sizes),
at most one request's cost, as before. `settle` (after the ledger row committed) moves the hold into `spent` by the
charged amount; `release` drops it. A hold whose request died with its process or host expires after
SPEND_HOLD_TTL_SECONDS (120 by default); a request that runs longer renews its hold (`renewing`). Such a request
may have committed its charge just before it died, without settling it: so when the script drops an expired hold
(Redis, shared by every process and host) it also drops the counter's `spent`, and the next reservation rebuilds it
from the ledger, as below.

Redis losing its data. A counter without `spent` is rebuilt from the ledger (the month-to-date sum, rollups plus
tail) before the hold is placed. A request whose ledger row committed just before the rebuild read and that settles
just after it is counted twice: the error is conservative (a limit can refuse slightly early, never pass late) and
lasts until the month ends. Charges themselves come from the ledger, never from these counters.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.utils import timezone

from config import process_cache
from config import redis as shared_redis

from . import money, policy

log = logging.getLogger(__name__)

ALERT_THRESHOLD = 0.8  # e-mail the organization when a limit is 80% used
COUNTER_TTL_SECONDS = 40 * 86400  # a month's counter outlives its month

_billing_cache = process_cache.ProcessCache("billing")


class SpendLimitExceeded(Exception):
    """`limit`: what refused: "organization" or "key" (a monthly limit), "billing" (the account's state)."""

    def __init__(self, message: str, limit: str = "billing"):
        super().__init__(message)
        self.message = message
        self.limit = limit


@dataclass(frozen=True)
class Limit:
    """One monthly limit that applies to a request: the organization's (api_key_id None) or a key's. A key's spend
    is counted per lineage (ApiKey.lineage_id: the first key of its rotations), so a rotated key carries the month's
    spend over instead of starting afresh."""

    organization_id: int
    api_key_id: int | None  # the key's lineage id
    limit_micros: int
    label: str  # "your organization", "API key ig_Ab3dE6gH…" or "end user 'alice'"
    end_user: str = ""  # an end user's limit: the end user as requests name it (ledger's LedgerEntry.end_user)

    def counter(self, month: str) -> str:
        return counter_key(self.organization_id, self.api_key_id, month, self.end_user)


@dataclass(frozen=True)
class Hold:
    """Money held for a request in flight, on every limited counter of one month."""

    hold_id: str
    limits: tuple[Limit, ...]
    month: str  # YYYYMM
    amount_micros: int


NO_HOLD = Hold(hold_id="", limits=(), month="", amount_micros=0)


# --- Which limits apply (cached per process) ----------------------------------------------------------------------

def _load_account(key):
    from .models import BillingAccount

    return BillingAccount.objects.for_organization(key[1]).first()


def _load_key_limit(key):
    from .models import KeySpendLimit

    # Looked up by the authenticated key's lineage id alone: the key already names its organization.
    return (KeySpendLimit.all_tenants_unsafe.filter(api_key_id=key[1])
            .values_list("monthly_limit_micros", flat=True).first())


async def limits_for(*, organization, api_key, end_user: str = "") -> list[Limit]:
    """The limits that apply to a request of `organization` through `api_key` (None: the playground) for
    `end_user` ("" when the request names none), or raise SpendLimitExceeded when the organization's billing state
    refuses paid requests altogether."""
    account = await _billing_cache.aget(("account", organization.pk), _load_account)
    key_limit = None
    if api_key is not None:
        key_limit = await _billing_cache.aget(("key_limit", api_key.pk), _load_key_limit)
    return _limits(organization, api_key, account, key_limit, end_user)


def limits_for_sync(*, organization, api_key) -> list[Limit]:
    account = _billing_cache.get(("account", organization.pk), _load_account)
    key_limit = _billing_cache.get(("key_limit", api_key.pk), _load_key_limit) if api_key is not None else None
    return _limits(organization, api_key, account, key_limit)


def _limits(organization, api_key, account, key_limit, end_user: str = "") -> list[Limit]:
    refusal = policy.access_refusal(account)
    if refusal:
        raise SpendLimitExceeded(refusal)
    out = []
    org_limit = account.monthly_spend_limit_micros if account else None
    free_tier = policy.free_tier_limit(account)
    if free_tier is not None:
        org_limit = free_tier if org_limit is None else min(org_limit, free_tier)
    if org_limit is not None:
        out.append(Limit(organization.pk, None, org_limit, "your organization"))
    if api_key is not None and key_limit is not None:
        out.append(Limit(organization.pk, api_key.lineage_id, key_limit, f"API key {api_key.prefix}…"))
    per_user = account.end_user_monthly_limit_micros if account else None
    if end_user and per_user is not None:
        out.append(Limit(organization.pk, None, per_user, f"end user {end_user[:64]!r}", end_user=end_user))
    return out


def invalidate_limits() -> None:
    """Every process re-reads billing accounts and key limits within a second (config/process_cache.py)."""
    process_cache.invalidate("billing")


# --- Counters ---------------------------------------------------------------------------------------------------------

def _month(now: datetime | None = None) -> str:
    return (now or timezone.now()).astimezone(UTC).strftime("%Y%m")


def _month_start(month: str) -> datetime:
    return datetime(int(month[:4]), int(month[4:]), 1, tzinfo=UTC)


def counter_key(organization_id: int, api_key_id: int | None, month: str, end_user: str = "") -> str:
    base = shared_redis.key("spend", f"{{org:{organization_id}}}", month)
    if end_user:
        return f"{base}:user:{end_user_pseudonym(organization_id, end_user)}"
    return base if api_key_id is None else f"{base}:key:{api_key_id}"


def end_user_pseudonym(organization_id: int, end_user: str) -> str:
    """A stable stand-in for an organization's end user: HMAC-SHA256 (keyed with SECRET_KEY) of the organization
    and the end user, 32 hex characters. Upstreams get this instead of the customer's own identifier (which may be
    an e-mail address), and the spend counters are named by it; the same end user of another organization gets
    another one."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"{organization_id}:{end_user}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def ledger_month_to_date(organization_id: int, api_key_id: int | None, month: str, end_user: str = "") -> int:
    """What the ledger says was spent in `month` (YYYYMM): the organization's total (rollups plus tail), one key
    lineage's (`api_key_id` is the lineage id: every rotation of the key), or one end user's."""
    from django.db.models import Sum

    from accounts.models import Organization

    from .models import LedgerEntry
    from .selectors import usage_between

    start = _month_start(month)
    if end_user:
        rows = LedgerEntry.objects.for_organization(organization_id).filter(end_user=end_user, created_at__gte=start)
        return rows.aggregate(total=Sum("cost_micros"))["total"] or 0
    if api_key_id is None:
        end = datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)
        return usage_between(organization=Organization(pk=organization_id), start=start, end=end).cost_micros
    from django.db.models import Q

    rows = LedgerEntry.objects.for_organization(organization_id).filter(
        Q(api_key_id=api_key_id) | Q(api_key__lineage=api_key_id), created_at__gte=start)
    return rows.aggregate(total=Sum("cost_micros"))["total"] or 0


# KEYS: the counters. ARGV: now (ms), hold ttl (ms), hold id, amount, counter ttl (s), then one limit per counter.
# Returns {1} (held), {0, i, spent, held} (counter i refuses), or {-1, i} (counter i must be rebuilt first).
_RESERVE = """
local now = tonumber(ARGV[1]); local ttl = tonumber(ARGV[2]); local id = ARGV[3]; local amount = tonumber(ARGV[4])
local keep = tonumber(ARGV[5])
for i, key in ipairs(KEYS) do
  if redis.call('HEXISTS', key, 'spent') == 0 then return {-1, i} end
end
for i, key in ipairs(KEYS) do
  local expired = redis.call('ZRANGEBYSCORE', key .. ':holds', '-inf', now)
  if #expired > 0 then
    local total = 0
    for _, a in ipairs(redis.call('HMGET', key .. ':amounts', unpack(expired))) do
      total = total + (tonumber(a) or 0)
    end
    redis.call('HDEL', key .. ':amounts', unpack(expired))
    redis.call('ZREMRANGEBYSCORE', key .. ':holds', '-inf', now)
    redis.call('HINCRBY', key, 'held', -total)
    -- a request that died may have committed its charge before it could settle: count from the ledger again
    redis.call('HDEL', key, 'spent')
    return {-1, i}
  end
end
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[5 + i])
  local spent = tonumber(redis.call('HGET', key, 'spent')) or 0
  local held = tonumber(redis.call('HGET', key, 'held')) or 0
  if spent + held + amount > limit then return {0, i, spent, held} end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key .. ':holds', now + ttl, id)
  redis.call('HSET', key .. ':amounts', id, amount)
  redis.call('HINCRBY', key, 'held', amount)
  redis.call('EXPIRE', key, keep); redis.call('EXPIRE', key .. ':holds', keep)
  redis.call('EXPIRE', key .. ':amounts', keep)
end
return {1}
"""

# KEYS: the counters. ARGV: hold id, charged amount. Returns per counter: spent before, spent after (-1: no counter).
_SETTLE = """
local id = ARGV[1]; local actual = tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local amount = tonumber(redis.call('HGET', key .. ':amounts', id))
  if amount then
    redis.call('HDEL', key .. ':amounts', id)
    redis.call('ZREM', key .. ':holds', id)
    redis.call('HINCRBY', key, 'held', -amount)
  end
  local before = tonumber(redis.call('HGET', key, 'spent'))
  if before then
    out[#out + 1] = before
    out[#out + 1] = redis.call('HINCRBY', key, 'spent', actual)
  else
    out[#out + 1] = -1
    out[#out + 1] = -1
  end
end
return out
"""

# KEYS: the counters. ARGV: hold id, new expiry (ms). Keeps a long request's hold alive.
_RENEW = """
for i, key in ipairs(KEYS) do redis.call('ZADD', key .. ':holds', 'XX', ARGV[2], ARGV[1]) end
return 1
"""

# KEYS: one counter. ARGV: spent from the ledger, counter ttl (s). Sets it only if nobody did meanwhile.
_REBUILD = """
if redis.call('HSETNX', KEYS[1], 'spent', ARGV[1]) == 1 then
  redis.call('HSETNX', KEYS[1], 'held', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class _RedisCounters:
    def __init__(self):
        self._scripts: dict = {}

    def _script(self, client, source: str):
        key = (id(client), source)
        script = self._scripts.get(key)
        if script is None:
            script = self._scripts[key] = client.register_script(source)
        return script

    async def run(self, source: str, keys: list[str], args: list) -> list:
        client = shared_redis.async_client()
        return await self._script(client, source)(keys=keys, args=args)


class _LocalCounters:
    """The same scripts' semantics in this process (the embedded default: no Redis, one process)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counters: dict[str, dict] = {}

    def reset(self) -> None:
        with self._lock:
            self._counters.clear()

    async def run(self, source: str, keys: list[str], args: list) -> list:
        with self._lock:
            return self._apply(source, keys, [str(a) for a in args])

    def _apply(self, source, keys, args):
        c = self._counters
        if source is _RESERVE:
            now, ttl, hold_id, amount = int(args[0]), int(args[1]), args[2], int(args[3])
            limits = [int(x) for x in args[5:]]
            for i, key in enumerate(keys):
                if key not in c:
                    return [-1, i + 1]
            for key in keys:
                holds = c[key]["holds"]
                for hid in [h for h, (_, expiry) in holds.items() if expiry <= now]:
                    c[key]["held"] -= holds.pop(hid)[0]
            for i, key in enumerate(keys):
                if c[key]["spent"] + c[key]["held"] + amount > limits[i]:
                    return [0, i + 1, c[key]["spent"], c[key]["held"]]
            for key in keys:
                c[key]["holds"][hold_id] = (amount, now + ttl)
                c[key]["held"] += amount
            return [1]
        if source is _SETTLE:
            hold_id, actual = args[0], int(args[1])
            out = []
            for key in keys:
                counter = c.get(key)
                if counter is None:
                    out += [-1, -1]
                    continue
                held = counter["holds"].pop(hold_id, None)
                if held is not None:
                    counter["held"] -= held[0]
                before = counter["spent"]
                counter["spent"] += actual
                out += [before, counter["spent"]]
            return out
        if source is _RENEW:
            for key in keys:
                holds = c.get(key, {}).get("holds", {})
                if args[0] in holds:
                    holds[args[0]] = (holds[args[0]][0], int(args[1]))
            return [1]
        if source is _REBUILD:
            if keys[0] in c:
                return [0]
            c[keys[0]] = {"spent": int(args[0]), "held": 0, "holds": {}}
            return [1]
        raise ValueError("unknown script")


_redis_counters = _RedisCounters()
_local_counters = _LocalCounters()


def _counters():
    return _redis_counters if shared_redis.enabled() else _local_counters


def _now_ms() -> int:
    return int(time.time() * 1000)


async def reserve(*, limits: list[Limit], amount_micros: int) -> Hold:
    """Hold `amount_micros` on every limit, or raise SpendLimitExceeded naming the limit that refused."""
    if not limits or amount_micros <= 0:
        return NO_HOLD
    month = _month()
    hold = Hold(hold_id=uuid.uuid4().hex, limits=tuple(limits), month=month, amount_micros=amount_micros)
    keys = [lim.counter(month) for lim in limits]
    ttl_ms = int(settings.SPEND_HOLD_TTL_SECONDS * 1000)
    for _ in range(2 + 2 * len(keys)):  # each counter may need one rebuild (no counter yet, or an expired hold)
        out = await _counters().run(_RESERVE, keys, [_now_ms(), ttl_ms, hold.hold_id, amount_micros,
                                                     COUNTER_TTL_SECONDS, *(lim.limit_micros for lim in limits)])
        status = int(out[0])
        if status == 1:
            return hold
        if status == -1:  # no counter yet, Redis lost it, or a dead request's hold expired: from the ledger
            lim = limits[int(out[1]) - 1]
            await rebuild(lim.organization_id, lim.api_key_id, month, lim.end_user)
            continue
        lim = limits[int(out[1]) - 1]
        raise SpendLimitExceeded(
            f"You exceeded the monthly spend limit of {money.usd(lim.limit_micros)} for {lim.label}. Raise the "
            "limit on the billing page, or wait until next month.",
            limit="organization" if lim.api_key_id is None else "key",
        )
    raise RuntimeError("spend counters could not be rebuilt")


async def rebuild(organization_id: int, api_key_id: int | None, month: str, end_user: str = "") -> None:
    from config import db

    spent = await db.run(ledger_month_to_date, organization_id, api_key_id, month, end_user)
    await _counters().run(_REBUILD, [counter_key(organization_id, api_key_id, month, end_user)],
                          [spent, COUNTER_TTL_SECONDS])


async def settle(hold: Hold, charged_micros: int) -> None:
    """Turn the hold into spend of `charged_micros` (0 releases it); e-mail the organization when a limit crosses
    80%. Never raises: the charge is already in the ledger; a counter Redis cannot update is logged."""
    if not hold.limits:
        return
    keys = [lim.counter(hold.month) for lim in hold.limits]
    try:
        out = await _counters().run(_SETTLE, keys, [hold.hold_id, charged_micros])
    except Exception:
        log.exception("Could not settle spend hold %s (it expires in %s s)", hold.hold_id,
                      settings.SPEND_HOLD_TTL_SECONDS)
        return
    for i, lim in enumerate(hold.limits):
        before, after = int(out[2 * i]), int(out[2 * i + 1])
        if lim.end_user:
            continue  # per-end-user limits refuse; they do not e-mail the organization for each end user
        if before >= 0 and before < ALERT_THRESHOLD * lim.limit_micros <= after:
            await _alert(lim, hold.month, after)


async def release(hold: Hold) -> None:
    await settle(hold, 0)


async def _alert(lim: Limit, month: str, spent: int) -> None:
    from config import db

    from .alerts import send_spend_alert

    try:
        await db.run(send_spend_alert.delay, lim.organization_id, lim.api_key_id, month, spent, lim.limit_micros)
    except Exception:
        log.exception("Could not queue the 80%% spend alert of organization %s", lim.organization_id)


@contextlib.asynccontextmanager
async def renewing(hold: Hold):
    """Keep `hold` alive while the block runs (a generation may outlast SPEND_HOLD_TTL_SECONDS)."""
    if not hold.limits:
        yield
        return
    keys = [lim.counter(hold.month) for lim in hold.limits]
    ttl = settings.SPEND_HOLD_TTL_SECONDS

    async def renew():
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                await _counters().run(_RENEW, keys, [hold.hold_id, _now_ms() + int(ttl * 1000)])
            except Exception:
                log.warning("Could not renew spend hold %s", hold.hold_id, exc_info=True)

    task = asyncio.ensure_future(renew())
    try:
        yield
    finally:
        task.cancel()


async def spent_this_month(*, organization_id: int, api_key_id: int | None) -> int | None:
    """The counter's settled spend this month, or None when no counter exists yet (dashboards use the ledger)."""
    key = counter_key(organization_id, api_key_id, _month())
    if shared_redis.enabled():
        value = await shared_redis.async_client().hget(key, "spent")
        return None if value is None else int(value)
    counter = _local_counters._counters.get(key)
    return None if counter is None else counter["spent"]

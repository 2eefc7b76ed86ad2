"""Scale-out, proven (issue 12, item 6): three web hosts behind one "load balancer" keep limits and money exact.

Three `make serve`-equivalent uvicorn processes (the Makefile's own command line, tests/servers.py) listen on
127.0.0.2, 127.0.0.3 and 127.0.0.4, in production mode (DJANGO_DEBUG=off, HTTPS required: the clients add
X-Forwarded-Proto as the TLS proxy would), sharing the suite's one PostgreSQL and one Redis, with one real Celery
worker running beat (it seals the ledger every second). The official openai SDK drives the load, spread across the
hosts; the upstream is the OpenAI emulator answering after 0.3 s, so requests are in flight at any moment.

1. Across the three hosts at once: a key limited to 6 requests a minute gets exactly 6 of 18; an organization with
   room for exactly 10 images gets exactly 10 of 30, charged 10 x the price; one Idempotency-Key sent to all three
   hosts at once runs once, is charged once, and every answer is that one.
2. Under load, one host is killed with SIGKILL while requests run on it. Clients behave as a load balancer's retries
   do with an Idempotency-Key: a connection error, a 5xx or a 409 "in progress" is retried on the next host with the
   same key. Afterwards: every request got its 2xx; succeeded ledger rows = requests that succeeded = distinct
   Idempotency-Keys = stored idempotent responses (nothing lost, nothing charged twice); no hold is left and the
   spend counter equals the ledger; the outbox equals the ledger; the worker sealed every row and the chain verifies.
"""
import itertools
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from io import StringIO

import openai
import pytest
from django.core.management import call_command
from django.db.models import Count, Sum

from accounts import services as account_services
from billing import services as billing_services
from billing import spend
from billing.models import LedgerEntry, LedgerSeal, Price, UsageEvent
from config import redis as shared_redis
from generation.models import IdempotentResponse
from tests.emulators import openai as openai_emu
from tests.servers import celery_worker, web_hosts

ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
PROXIED = {"X-Forwarded-Proto": "https"}
MODEL, SIZE = "dall-e-2", "256x256"
UPSTREAM_DELAY = 0.3
LOAD_SECONDS, KILL_AFTER, CLIENTS, ATTEMPTS = 8.0, 3.0, 12, 8
TTL = 2  # seconds: spend holds and idempotency claims of the killed host lapse this fast here

pytestmark = pytest.mark.timeout(180)


def _org(slug: str, *, rpm: int = 0, limit_micros: int | None = None):
    user, _ = account_services.get_or_create_user(email=f"{slug}@example.com", password="scale horse battery")
    org = account_services.create_organization(name=slug.title(), owner=user, slug=slug)
    key, raw = account_services.create_api_key(organization=org, name=slug, rate_limit_rpm=rpm)
    if limit_micros is not None:
        billing_services.set_spend_limit(organization=org, monthly_limit_micros=limit_micros)
    return org, raw


@pytest.fixture
def cluster(transactional_db, prices, tmp_path):
    """The upstream, the worker (with beat) and three web hosts, and the three organizations the test uses."""
    price = Price.objects.get(model=MODEL, size=SIZE, quality="standard").unit_price_micros
    orgs = {
        "limited": _org("limited", rpm=6),
        "budget": _org("budget", limit_micros=10 * price + price // 2),
        "busy": _org("busy", rpm=1_000_000, limit_micros=1_000_000_000),
    }
    with openai_emu.emulator(retired=()) as upstream:  # OpenAI as it was before the dall-e retirement
        upstream.state["delay"] = UPSTREAM_DELAY
        env = {"DJANGO_DEBUG": "off", "DJANGO_SECRET_KEY": "scale-out-" + "k" * 50,
               "DJANGO_ALLOWED_HOSTS": ",".join(ADDRESSES), "EMAIL_URL": "consolemail://",
               "OPENAI_API_KEY": openai_emu.API_KEY, "OPENAI_BASE_URL": upstream.url + "/v1",
               "SPEND_HOLD_TTL_SECONDS": TTL, "IDEMPOTENCY_CLAIM_TTL_SECONDS": TTL,
               "LEDGER_SEAL_INTERVAL_SECONDS": 1, "DB_POOL_MIN_SIZE": 1, "DB_POOL_MAX_SIZE": 6}
        with celery_worker(tmp_path, **env) as worker, web_hosts(ADDRESSES, **env) as hosts:
            assert {base.split("//")[1].split(":")[0] for base, _ in hosts} == set(ADDRESSES)
            yield {"hosts": hosts, "worker": worker, "orgs": orgs, "price": price, "upstream": upstream}


def _clients(hosts, raw_key: str) -> list[openai.OpenAI]:
    return [openai.OpenAI(base_url=f"{base}/v1", api_key=raw_key, max_retries=0, timeout=30, default_headers=PROXIED)
            for base, _ in hosts]


def _generate(client: openai.OpenAI, prompt: str, idempotency_key: str | None = None):
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    raw = client.images.with_raw_response.generate(model=MODEL, prompt=prompt, size=SIZE, response_format="b64_json",
                                                   extra_headers=headers)
    return raw.headers["x-request-id"], raw.parse()


def _outcome(client, prompt, idempotency_key=None):
    try:
        return ("ok", *_generate(client, prompt, idempotency_key))
    except openai.APIStatusError as exc:
        return (exc.code, exc.status_code, None)


def _rows(org):
    return LedgerEntry.objects.for_organization(org)


def test_three_hosts_keep_limits_idempotency_and_the_books_exact_when_one_is_killed(cluster):
    hosts, orgs, price = cluster["hosts"], cluster["orgs"], cluster["price"]

    # --- 1a. a key's rpm limit, across the hosts at once -----------------------------------------------------------
    limited_org, limited_key = orgs["limited"]
    clients = _clients(hosts, limited_key)
    started = time.monotonic()
    with ThreadPoolExecutor(18) as pool:
        outcomes = list(pool.map(lambda i: _outcome(clients[i % 3], f"rpm {i}"), range(18)))
    elapsed = time.monotonic() - started
    assert elapsed < 10, "the bucket would have refilled one request (one every 10 s at 6 rpm)"
    assert sorted(o[0] for o in outcomes) == ["ok"] * 6 + ["rate_limit_exceeded"] * 12, outcomes
    assert _rows(limited_org).filter(status="succeeded").count() == 6 and _rows(limited_org).count() == 6

    # --- 1b. an organization's spend limit: room for exactly 10 images -------------------------------------------
    budget_org, budget_key = orgs["budget"]
    clients = _clients(hosts, budget_key)
    with ThreadPoolExecutor(30) as pool:
        outcomes = list(pool.map(lambda i: _outcome(clients[i % 3], f"spend {i}"), range(30)))
    assert sorted(o[0] for o in outcomes) == ["insufficient_quota"] * 20 + ["ok"] * 10, outcomes
    charged = _rows(budget_org).aggregate(s=Sum("cost_micros"))["s"]
    assert charged == 10 * price and _rows(budget_org).filter(status="succeeded").count() == 10

    # --- 1c. one Idempotency-Key sent to all three hosts at once ---------------------------------------------------
    busy_org, busy_key = orgs["busy"]
    clients = _clients(hosts, busy_key)
    key = f"same-{uuid.uuid4().hex}"
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: _generate(clients[i % 3], "one fox", key), range(6)))
    assert len({request_id for request_id, _ in answers}) == 1
    assert len({result.data[0].b64_json for _, result in answers}) == 1
    assert _rows(busy_org).filter(request_id=answers[0][0]).count() == 1
    with pytest.raises(openai.ConflictError) as info:  # the same key with another body, on any host
        _generate(clients[2], "another fox", key)
    assert info.value.code == "idempotency_key_reused"

    # --- 2. load across the hosts; one host is killed with SIGKILL mid-load ---------------------------------------
    victim_base, victim = hosts[1]
    results = {"ok": {}, "gave_up": [], "failovers": 0, "failed_on_victim": 0, "cut_off": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + LOAD_SECONDS
    turn = itertools.count()

    def client_loop(worker: int):
        while time.monotonic() < deadline:
            idem = f"load-{uuid.uuid4().hex}"
            first = next(turn)
            for attempt in range(ATTEMPTS):
                index = (first + attempt) % 3  # a retry goes to the next host, as a load balancer's would
                try:
                    request_id, _ = _generate(clients[index], f"load {worker}", idem)
                except (openai.APIConnectionError, openai.InternalServerError, openai.ConflictError) as exc:
                    with lock:
                        results["failovers"] += 1
                        results["failed_on_victim"] += hosts[index][0] == victim_base
                        # Cut off mid-request by the kill, not refused by a host already dead (the SDK's transport
                        # is its own httpx fork, so the cause is matched by name).
                        results["cut_off"] += isinstance(exc, openai.APIConnectionError) and type(
                            exc.__cause__).__name__ != "ConnectError"
                    time.sleep(0.05 * 2 ** min(attempt, 4))
                    continue
                with lock:
                    results["ok"][idem] = request_id
                break
            else:
                with lock:
                    results["gave_up"].append(idem)

    def kill_one_host():
        time.sleep(KILL_AFTER)
        in_flight = sum(1 for r in cluster["upstream"].requests if r.path.endswith("/images/generations"))
        os.killpg(victim.pid, signal.SIGKILL)
        results["killed_after_upstream_calls"] = in_flight

    killer = threading.Thread(target=kill_one_host)
    killer.start()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client_loop, range(CLIENTS)))
    killer.join()
    victim.wait(timeout=10)
    assert victim.returncode == -signal.SIGKILL

    # --- the books ---------------------------------------------------------------------------------------------------
    assert not results["gave_up"], f"requests that never got an answer: {results['gave_up']}"
    assert results["cut_off"] >= 1, "no request was running on the killed host: the kill proved nothing"
    served_ids = set(results["ok"].values())
    assert len(served_ids) == len(results["ok"]), "two Idempotency-Keys were answered with one request id"
    load = _rows(busy_org).exclude(request_id=answers[0][0])
    succeeded = load.filter(status="succeeded")
    assert set(succeeded.values_list("request_id", flat=True)) == served_ids  # nothing lost, nothing extra
    assert succeeded.count() == len(results["ok"])  # one charge per Idempotency-Key
    assert not _rows(busy_org).values("request_id").annotate(c=Count("id")).filter(c__gt=1).exists()
    stored = IdempotentResponse.objects.for_organization(busy_org)
    assert stored.count() == len(results["ok"]) + 1 and stored.values("key_hash").distinct().count() == stored.count()
    ledger_total = _rows(busy_org).aggregate(s=Sum("cost_micros"))["s"]
    assert ledger_total == (len(results["ok"]) + 1) * price
    outbox_total = UsageEvent.objects.for_organization(busy_org).aggregate(s=Sum("value_micros"))["s"]
    assert outbox_total == ledger_total

    # The killed host's spend holds lapse after their TTL (the next hold drops them); the counter is the ledger's.
    time.sleep(TTL + 0.5)
    _generate(_clients(hosts, busy_key)[0], "after the kill")
    counter = shared_redis.sync_client().hgetall(spend.counter_key(busy_org.pk, None, spend._month()))
    assert int(counter.get(b"held", b"0")) == 0
    assert int(counter[b"spent"]) == _rows(busy_org).aggregate(s=Sum("cost_micros"))["s"]

    # The Celery worker (beat every second) seals every row of every host; the chain verifies without sealing here.
    every_row = LedgerEntry.all_tenants_unsafe.count()
    wait_until = time.monotonic() + 15
    while (sealed := LedgerSeal.all_tenants_unsafe.count()) < every_row:
        assert time.monotonic() < wait_until, f"the worker sealed {sealed} of {every_row} rows"
        time.sleep(0.2)
    out = StringIO()
    call_command("verify_ledger", "--no-seal", stdout=out)
    assert out.getvalue().startswith(f"Ledger OK: {every_row} rows in 3 organizations verified."), out.getvalue()
    print(f"\nscale-out: {len(results['ok'])} idempotent requests under load in {LOAD_SECONDS:.0f} s, "
          f"{results['cut_off']} cut off by the kill, {results['failovers']} failovers "
          f"({results['failed_on_victim']} on the killed host), killed after "
          f"{results['killed_after_upstream_calls']} upstream calls; {every_row} ledger rows sealed by the worker")

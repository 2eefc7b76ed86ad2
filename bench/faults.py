"""A fault run under load (issue 10, item 12): while requests flow, kill -9 a web worker, kill -9 the Celery worker,
restart Redis (it keeps nothing on disk: every counter, hold and idempotency claim is lost), restart PostgreSQL; then
count what the books say.

Imagegate runs as deployed (`make serve` with 2 workers, `make worker`, `make beat`, PostgreSQL, Redis) against the
fake upstream (bench/fake_upstream.py, 200 ms per image). Clients behave as the OpenAI SDKs do with an
Idempotency-Key: each request has its own key and is retried with it on connection errors, 5xx and 409 (in
progress), up to RETRIES times. The organization has a spend limit (so every request holds money) and a short
SPEND_HOLD_TTL_SECONDS.

Afterwards it checks, and prints:
  * succeeded ledger rows = requests answered 2xx (distinct request ids; a replay is the same request);
  * nothing charged twice: one succeeded row per Idempotency-Key that succeeded, ledger request ids unique;
  * no spend hold is left once its TTL passed (the organization's counter holds nothing);
  * the rate limits work again (a key limited to 3 requests a minute gets its 4th refused);
  * billing outbox total = ledger total; `verify_ledger` clean.
It restarts the machine's Redis and PostgreSQL: run it alone (`make bench-faults`), not beside the test suite.
Environment: BENCH_FAULT_SECONDS (60, the length of the load), BENCH_FAULT_CONCURRENCY (20).
"""
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

SECONDS = float(os.environ.get("BENCH_FAULT_SECONDS", "60"))
CONCURRENCY = int(os.environ.get("BENCH_FAULT_CONCURRENCY", "20"))
RETRIES = 8
HOLD_TTL = 5
REDIS_URL = "redis://127.0.0.1:6379/6"
BODY = {"model": "dall-e-3", "prompt": "a red fox in the snow", "n": 1, "size": "1024x1024",
        "response_format": "b64_json"}
REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "",
               "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"]


def pg_cluster() -> str:
    return sorted(os.listdir("/etc/postgresql"))[0]


def log(message: str, started: float) -> None:
    print(f"  [{time.monotonic() - started:6.1f} s] {message}", flush=True)


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


def uvicorn_workers(make_pid: int) -> list[int]:
    """The uvicorn worker processes under `make serve` (the supervisor's spawned children)."""
    found = []
    for supervisor in children(make_pid):
        for pid in children(supervisor):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"multiprocessing.spawn" in f.read():
                        found.append(pid)
            except FileNotFoundError:
                continue
    return found


def celery_pids(make_pid: int) -> list[int]:
    out, stack = [], list(children(make_pid))
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children(pid))
    return out


async def client_loop(session, url: str, key: str, deadline: float, results: dict) -> None:
    import aiohttp

    while time.monotonic() < deadline:
        idem = uuid.uuid4().hex
        results["sent"] += 1
        for attempt in range(RETRIES):
            try:
                async with session.post(url, json=BODY, headers={"Authorization": f"Bearer {key}",
                                                                 "Idempotency-Key": idem},
                                        timeout=aiohttp.ClientTimeout(total=30)) as r:
                    await r.read()
                    if r.status == 200:
                        results["ok"][idem] = r.headers.get("x-request-id")
                        break
                    if r.status in (409, 429) or r.status >= 500:
                        results["retried"] += 1
                        await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))
                        continue
                    results["refused"][r.status] = results["refused"].get(r.status, 0) + 1
                    break
            except (TimeoutError, aiohttp.ClientError):
                results["retried"] += 1
                await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))
        else:
            results["gave_up"] += 1


async def load(url: str, key: str, seconds: float, results: dict) -> None:
    import aiohttp

    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client_loop(session, url, key, deadline, results) for _ in range(CONCURRENCY)))


def inject(make_serve: subprocess.Popen, worker: list, env: dict, started: float, injected: list) -> None:
    """The faults, one after another while the load runs."""
    step = SECONDS / 6
    time.sleep(step)
    victims = uvicorn_workers(make_serve.pid)
    os.kill(victims[0], signal.SIGKILL)
    injected.append(f"kill -9 web worker {victims[0]} (of {len(victims)})")
    log(injected[-1], started)

    time.sleep(step)
    for pid in celery_pids(worker[0].pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    worker[0].wait(timeout=10)
    injected.append("kill -9 the Celery worker (and its pool), then start it again")
    log(injected[-1], started)
    worker[0] = subprocess.Popen(["make", "--no-print-directory", "worker"], cwd=h.ROOT, env=env,
                                 stdout=open("/tmp/imagegate-faults-worker.log", "a"), stderr=subprocess.STDOUT,
                                 start_new_session=True)

    time.sleep(step)
    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], capture_output=True)
    time.sleep(1.0)
    subprocess.run(REDIS_START, check=True, capture_output=True)
    injected.append("restart Redis (nothing kept: limits, holds, idempotency claims, caches' versions lost)")
    log(injected[-1], started)

    time.sleep(step)
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", pg_cluster(), "main", "restart"], check=True,
                   capture_output=True)
    injected.append("restart PostgreSQL (every connection dropped)")
    log(injected[-1], started)


def main():
    import threading

    db = h.fresh_database("imagegate_bench_faults")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    env = h.base_env(DATABASE_URL=db, REDIS_URL=REDIS_URL, SPEND_HOLD_TTL_SECONDS=str(HOLD_TTL),
                     IDEMPOTENCY_CLAIM_TTL_SECONDS="5", LOG_LEVEL="ERROR")
    h.manage(env, "migrate", "--noinput")
    h.manage(env, "sync_prices")
    h.manage(env, "create_organization", "faults", "--owner", "faults@example.com")
    key = h.manage(env, "create_api_key", "faults", "--name", "load", "--rpm", "100000000").strip().splitlines()[-1]
    h.manage(env, "shell", "-c", "from accounts.models import Organization; from billing import services; "
                                 "services.set_spend_limit(organization=Organization.objects.get(slug='faults'), "
                                 "monthly_limit_micros=10_000_000_000)")
    procs = []
    try:
        up = subprocess.Popen([h.PYTHON, str(h.ROOT / "bench" / "fake_upstream.py")], cwd=h.ROOT,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(up)
        upstream = up.stdout.readline().strip()
        subprocess.run([h.PYTHON, "-c", f"import httpx; httpx.post('{upstream[:-3]}/_control', "
                                        "json={'delay': 0.2, 'jitter': 0.1})"], check=True)
        port = h.free_port()
        serve_env = {**env, "OPENAI_API_KEY": "sk-faults", "OPENAI_BASE_URL": upstream, "HOST": "127.0.0.1",
                     "PORT": str(port), "WEB_CONCURRENCY": "2"}
        serve = subprocess.Popen(["make", "--no-print-directory", "serve"], cwd=h.ROOT, env=serve_env,
                                 stdout=open("/tmp/imagegate-faults-serve.log", "w"), stderr=subprocess.STDOUT,
                                 start_new_session=True)
        procs.append(serve)
        h.wait_for_port(port, serve, timeout=120)
        worker = [subprocess.Popen(["make", "--no-print-directory", "worker"], cwd=h.ROOT, env=serve_env,
                                   stdout=open("/tmp/imagegate-faults-worker.log", "w"), stderr=subprocess.STDOUT,
                                   start_new_session=True)]
        beat = subprocess.Popen(["make", "--no-print-directory", "beat"], cwd=h.ROOT, env=serve_env,
                                stdout=open("/tmp/imagegate-faults-beat.log", "w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(beat)
        print(f"Fault run: {SECONDS:.0f} s of load, {CONCURRENCY} clients, retries with the same Idempotency-Key")
        results = {"sent": 0, "ok": {}, "retried": 0, "gave_up": 0, "refused": {}}
        injected: list[str] = []
        started = time.monotonic()
        faults = threading.Thread(target=inject, args=(serve, worker, serve_env, started, injected), daemon=True)
        faults.start()
        asyncio.run(load(f"http://127.0.0.1:{port}/v1/images/generations", key, SECONDS, results))
        faults.join(timeout=60)
        log("load stopped", started)
        procs.append(worker[0])
        check(env, port, key, results, injected)
    finally:
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def check(env: dict, port: int, key: str, results: dict, injected: list) -> None:
    import httpx

    time.sleep(HOLD_TTL + 1)  # every hold of a request that died has expired by now
    base = f"http://127.0.0.1:{port}"
    after = httpx.post(f"{base}/v1/images/generations", json=BODY, headers={"Authorization": f"Bearer {key}"},
                       timeout=30)  # placing a hold drops the expired ones
    script = (
        "import json\n"
        "from django.db.models import Count, Sum\n"
        "from accounts.models import ApiKey, Organization\n"
        "from billing.models import LedgerEntry, UsageEvent\n"
        "from billing import spend\n"
        "from generation.models import IdempotentResponse\n"
        "from config import redis as r\n"
        "org = Organization.objects.get(slug='faults')\n"
        "rows = LedgerEntry.objects.for_organization(org)\n"
        "ok = rows.filter(status='succeeded')\n"
        "dup = rows.values('request_id').annotate(c=Count('id')).filter(c__gt=1).count()\n"
        "counter = r.sync_client().hgetall(spend.counter_key(org.pk, None, spend._month()))\n"
        "print(json.dumps({'succeeded': ok.count(), 'ids': list(ok.values_list('request_id', flat=True)),\n"
        "  'duplicate_ids': dup, 'idempotent': IdempotentResponse.objects.for_organization(org).count(),\n"
        "  'ledger': rows.aggregate(s=Sum('cost_micros'))['s'] or 0,\n"
        "  'outbox': UsageEvent.objects.for_organization(org).aggregate(s=Sum('value_micros'))['s'] or 0,\n"
        "  'held': int(counter.get(b'held', b'0'))}))\n"
    )
    books = json.loads(h.manage(env, "shell", "-c", script).strip().splitlines()[-1])
    served = set(results["ok"].values()) | ({after.headers.get("x-request-id")} if after.status_code == 200 else set())
    ledger_ids = set(books["ids"])
    h.manage(env, "shell", "-c", "from accounts.models import ApiKey; from accounts import services; "
                                 "from config import process_cache; "
                                 "ApiKey.all_tenants_unsafe.filter(name='load').update(rate_limit_rpm=3); "
                                 "process_cache.invalidate('api_keys')")
    time.sleep(1.5)
    statuses = [httpx.post(f"{base}/v1/images/generations", json=BODY, headers={"Authorization": f"Bearer {key}"},
                           timeout=30).status_code for _ in range(5)]
    verify = subprocess.run([h.PYTHON, "manage.py", "verify_ledger"], cwd=h.ROOT, env=env, capture_output=True,
                            text=True)
    print()
    print("Injected:")
    for line in injected:
        print(f"  - {line}")
    print("Counted:")
    print(f"  requests sent {results['sent']}, answered 2xx {len(results['ok'])} (distinct request ids "
          f"{len(set(results['ok'].values()))}), retries {results['retried']}, gave up {results['gave_up']}, "
          f"refused {results['refused'] or 'none'}")
    checks = [
        ("succeeded ledger rows = 2xx served (distinct request ids)", books["succeeded"] == len(served) and
         ledger_ids == served, f"{books['succeeded']} rows, {len(served)} served"),
        ("nothing charged twice (one success per Idempotency-Key, request ids unique)",
         books["duplicate_ids"] == 0 and len(results["ok"]) == len(set(results["ok"].values())),
         f"{books['duplicate_ids']} duplicate ids"),
        ("no spend hold left after its TTL", books["held"] == 0, f"held {books['held']} micro-USD"),
        ("rate limits work again (rpm 3: the 4th and 5th refused)", statuses[:3] == [200] * 3 and
         statuses[3:] == [429, 429], f"statuses {statuses}"),
        ("billing outbox total = ledger total", books["ledger"] == books["outbox"],
         f"{books['ledger']} / {books['outbox']} micro-USD"),
        ("verify_ledger clean", verify.returncode == 0, (verify.stdout + verify.stderr).strip()[:120]),
    ]
    for label, ok, value in checks:
        print(f"  [{'ok' if ok else 'FAILED'}] {label}: {value}")


if __name__ == "__main__":
    main()

"""Imagegate against the upstream called directly and against the LiteLLM proxy: one run, targets alternated.

What it measures (issue 9): closed-loop keep-alive POSTs of one dall-e-3 generation (b64_json) through each target
to a fake OpenAI upstream (bench/fake_upstream.py) that answers a 64x64 PNG at once, or after 2 ± 0.5 s:

    target      what serves it
    direct      the fake upstream itself (the limit)
    imagegate   `make serve`: DJANGO_DEBUG=off, PostgreSQL, Redis, 2 workers, the OpenAI adapter
    litellm     the LiteLLM proxy 1.108.7, installed by this script into a throwaway virtualenv, 2 workers, no DB

at c=1, 10, 50 (no upstream delay) and c=200, 1,000 (2 ± 0.5 s). Every scenario runs each target BENCH_ROUNDS
times, the order alternating (direct, imagegate, litellm; then litellm, imagegate, direct; ...), so a noisy
neighbour on this shared machine hits all three alike; figures are the mean of the rounds. For each target it
prints req/s, p50/p99, the serving processes' CPU per request and their peak resident memory, and Imagegate's
ratios to the other two, with the targets of issue 9. Afterwards it checks that nothing was lost: succeeded ledger
rows = 2xx responses Imagegate served, every row sealed within the bound, `verify_ledger` clean, billing outbox
total = ledger total.

    make bench-gateway
Environment: BENCH_ROUNDS (2), BENCH_DURATION (10 s per no-delay measurement), BENCH_DELAY_DURATION (20 s per
delayed one), BENCH_SCENARIOS (e.g. "1,10,50,200,1000"), BENCH_TARGETS (e.g. "direct,imagegate"),
BENCH_LITELLM_VENV (/tmp/imagegate-bench-litellm), BENCH_WORKERS (2).
It is a benchmark, not a test: it asserts nothing, it prints what it measured.
"""
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

LITELLM_VERSION = "1.108.7"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
DURATION = float(os.environ.get("BENCH_DURATION", "10"))
DELAY_DURATION = float(os.environ.get("BENCH_DELAY_DURATION", "20"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
LITELLM_VENV = Path(os.environ.get("BENCH_LITELLM_VENV", "/tmp/imagegate-bench-litellm"))
SCENARIOS = [int(c) for c in os.environ.get("BENCH_SCENARIOS", "1,10,50,200,1000").split(",")]
TARGETS = os.environ.get("BENCH_TARGETS", "direct,imagegate,litellm").split(",")
DELAYED_FROM = 200  # scenarios with this many connections or more use the 2 ± 0.5 s upstream
BODY = {"model": "dall-e-3", "prompt": "a red fox in the snow", "n": 1, "size": "1024x1024",
        "response_format": "b64_json"}
LITELLM_KEY = "sk-bench-litellm-master"
UPSTREAM_KEY = "sk-bench-upstream"


@dataclass
class Target:
    name: str
    url: str  # the generations endpoint
    headers: list[str]
    proc: subprocess.Popen | None = None
    peak_rss: int = 0
    results: dict = field(default_factory=dict)  # concurrency -> list of measurements


def ensure_litellm() -> Path:
    """LiteLLM's proxy in its own virtualenv (its dependencies must not touch ours)."""
    exe = LITELLM_VENV / "bin" / "litellm"
    stamp = LITELLM_VENV / f".litellm-{LITELLM_VERSION}"
    if not stamp.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} ...", flush=True)
        subprocess.run(["python3.11", "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet",
                        f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
        stamp.touch()
    return exe


def control(upstream: str, delay: float, jitter: float) -> None:
    import httpx

    httpx.post(upstream.rsplit("/v1", 1)[0] + "/_control", json={"delay": delay, "jitter": jitter}, timeout=5)


def measure(target: Target, concurrency: int, duration: float, warmup: float) -> dict:
    args = [h.PYTHON, str(h.ROOT / "bench" / "loadgen.py"), "--url", target.url, "--concurrency", str(concurrency),
            "--duration", str(duration), "--warmup", str(warmup), "--body", json.dumps(BODY), "--timeout", "120"]
    for header in target.headers:
        args += ["--header", header]
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], h.tree_rss_bytes(target.proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0 = h.tree_cpu_seconds(target.proc.pid)
    out = subprocess.run(args, capture_output=True, text=True)
    cpu = h.tree_cpu_seconds(target.proc.pid) - cpu0
    stop.set()
    sampler.join()
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr}")
    result = json.loads(out.stdout)
    result["cpu_ms_per_request"] = cpu * 1000 / max(1, result["requests"] + result.get("warmup_requests", 0))
    result["peak_rss"] = peak[0]
    target.peak_rss = max(target.peak_rss, peak[0])
    return result


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def summary(target: Target, concurrency: int) -> dict:
    runs = target.results.get(concurrency, [])
    return {
        "rps": mean([r["ok_rps"] for r in runs]),
        "p50": mean([r["p50_ms"] for r in runs]),
        "p99": mean([r["p99_ms"] for r in runs]),
        "cpu": mean([r["cpu_ms_per_request"] for r in runs]),
        "rss": max([r["peak_rss"] for r in runs] or [0]),
        "errors": sum(r["requests"] - r["ok"] for r in runs) + sum(sum(r["errors"].values()) for r in runs),
        "ok": sum(r["ok"] + r.get("warmup_ok", 0) for r in runs),
    }


def main():

    db = h.fresh_database("imagegate_bench_gateway")
    redis_url = "redis://127.0.0.1:6379/9"
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    env = h.base_env(DATABASE_URL=db, REDIS_URL=redis_url)
    h.manage(env, "migrate", "--noinput")
    h.manage(env, "sync_prices")
    h.manage(env, "create_organization", "bench", "--owner", "bench@example.com")
    key = h.manage(env, "create_api_key", "bench", "--name", "bench", "--rpm", "100000000").strip().splitlines()[-1]

    targets: dict[str, Target] = {}
    procs, background = [], []
    try:
        upstream_port = h.free_port()
        up = subprocess.Popen([h.PYTHON, str(h.ROOT / "bench" / "fake_upstream.py"), "--port", str(upstream_port)],
                              cwd=h.ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(up)
        upstream = up.stdout.readline().strip()
        targets["direct"] = Target("direct", f"{upstream}/images/generations",
                                   [f"Authorization: Bearer {UPSTREAM_KEY}"], proc=up)

        if "imagegate" in TARGETS:
            port = h.free_port()
            ig_env = h.base_env(DATABASE_URL=db, REDIS_URL=redis_url, OPENAI_API_KEY=UPSTREAM_KEY,
                                OPENAI_BASE_URL=upstream, HOST="127.0.0.1", PORT=str(port),
                                WEB_CONCURRENCY=str(WORKERS), LOG_LEVEL="ERROR")
            ig = subprocess.Popen(["make", "--no-print-directory", "serve"], cwd=h.ROOT, env=ig_env,
                                  stdout=open("/tmp/imagegate-bench-serve.log", "w"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
            procs.append(ig)
            h.wait_for_port(port, ig, timeout=120)
            # The rest of a deployment: Celery beat and a worker (the ledger sealer every few seconds, rollups).
            for target in ("worker", "beat"):
                procs.append(subprocess.Popen(["make", "--no-print-directory", target], cwd=h.ROOT, env=ig_env,
                                              stdout=open(f"/tmp/imagegate-bench-{target}.log", "w"),
                                              stderr=subprocess.STDOUT, start_new_session=True))
                background.append(procs[-1])
            targets["imagegate"] = Target("imagegate", f"http://127.0.0.1:{port}/v1/images/generations",
                                          [f"Authorization: Bearer {key}"], proc=ig)

        if "litellm" in TARGETS:
            exe = ensure_litellm()
            port = h.free_port()
            cfg = Path("/tmp/imagegate-bench-litellm.yaml")
            cfg.write_text(
                "model_list:\n"
                "  - model_name: dall-e-3\n"
                "    litellm_params:\n"
                "      model: openai/dall-e-3\n"
                f"      api_base: {upstream}\n"
                f"      api_key: {UPSTREAM_KEY}\n"
                "general_settings:\n"
                f"  master_key: {LITELLM_KEY}\n"
                "litellm_settings:\n"
                "  telemetry: false\n"
            )
            lt_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
                      "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
            lt = subprocess.Popen([str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                                   "--num_workers", str(WORKERS)], env=lt_env,
                                  stdout=open("/tmp/imagegate-bench-litellm.log", "w"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
            procs.append(lt)
            h.wait_for_port(port, lt, timeout=180)
            targets["litellm"] = Target("litellm", f"http://127.0.0.1:{port}/v1/images/generations",
                                        [f"Authorization: Bearer {LITELLM_KEY}"], proc=lt)

        order = [t for t in ("direct", "imagegate", "litellm") if t in targets and t in TARGETS]
        idle = {name: h.tree_rss_bytes(t.proc.pid) for name, t in targets.items()}
        for concurrency in SCENARIOS:
            delayed = concurrency >= DELAYED_FROM
            control(upstream, 2.0 if delayed else 0.0, 0.5 if delayed else 0.0)
            duration = DELAY_DURATION if delayed else DURATION
            for r in range(ROUNDS):
                for name in (order if r % 2 == 0 else list(reversed(order))):
                    target = targets[name]
                    result = measure(target, concurrency, duration, warmup=0.0 if delayed else 1.0)
                    target.results.setdefault(concurrency, []).append(result)
                    print(f"  c={concurrency:<5} round {r + 1} {name:<10} {result['ok_rps']:9.1f} req/s  "
                          f"p50 {result['p50_ms']:8.2f} ms  p99 {result['p99_ms']:8.2f} ms  "
                          f"cpu {result['cpu_ms_per_request']:6.2f} ms/req  rss {result['peak_rss'] / 2**20:6.0f} MiB"
                          f"  non-2xx/errors {result['requests'] - result['ok']}/{sum(result['errors'].values())}",
                          flush=True)
        report(targets, order, idle)
        if "imagegate" in targets:
            cpu = sum(h.tree_cpu_seconds(p.pid) for p in background)
            served = sum(summary(targets["imagegate"], c)["ok"] for c in SCENARIOS)
            print(f"Imagegate's Celery worker and beat (sealer, rollups): {cpu:.1f} s of CPU in all, "
                  f"{cpu * 1000 / max(1, served):.3f} ms per request served")
            check_books(env, targets["imagegate"])
    finally:
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, 15)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


def report(targets: dict[str, Target], order: list[str], idle: dict[str, int]) -> None:
    print()
    print(f"Gateway benchmark: {ROUNDS} round(s) per scenario, targets alternated; dall-e-3 b64_json, 64x64 PNG "
          f"upstream; no delay at c<{DELAYED_FROM}, 2 ± 0.5 s from c={DELAYED_FROM}")
    print(f"{'scenario':<9} {'target':<10} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'cpu ms/req':>11} "
          f"{'peak RSS MiB':>13} {'non-2xx':>8}")
    for concurrency in SCENARIOS:
        for name in order:
            s = summary(targets[name], concurrency)
            print(f"c={concurrency:<7} {name:<10} {s['rps']:9.1f} {s['p50']:9.2f} {s['p99']:9.2f} {s['cpu']:11.2f} "
                  f"{s['rss'] / 2**20:13.0f} {s['errors']:8d}")
    print("idle RSS MiB: " + ", ".join(f"{n} {v / 2**20:.0f}" for n, v in idle.items()))
    if "imagegate" not in targets:
        return
    ig = {c: summary(targets["imagegate"], c) for c in SCENARIOS}
    print()
    print("Imagegate's ratios:")
    checks = []
    for c in SCENARIOS:
        parts = []
        for other in ("litellm", "direct"):
            if other in targets:
                o = summary(targets[other], c)
                parts.append(f"{ig[c]['rps'] / o['rps']:.2f}x {other}'s req/s")
        print(f"  c={c:<5} " + ", ".join(parts))
    if "litellm" in targets:
        for c in (10, 50):
            if c in ig:
                ratio = ig[c]["rps"] / summary(targets["litellm"], c)["rps"]
                checks.append((f"c={c}: Imagegate >= 2.5 x LiteLLM's req/s", ratio >= 2.5, f"{ratio:.2f}x"))
    if 10 in ig and 50 in ig:
        ratio = ig[50]["rps"] / ig[10]["rps"]
        checks.append(("Imagegate's c=50 req/s >= 0.9 x its c=10 req/s", ratio >= 0.9, f"{ratio:.2f}"))
    if 1000 in ig:
        checks.append(("1,000 in flight: 0 errors", ig[1000]["errors"] == 0, f"{ig[1000]['errors']} errors"))
        if "direct" in targets:
            ratio = ig[1000]["rps"] / summary(targets["direct"], 1000)["rps"]
            checks.append(("1,000 in flight: >= 85 % of the direct upstream's req/s", ratio >= 0.85,
                           f"{ratio * 100:.0f} %"))
        checks.append(("1,000 in flight: peak RSS <= 512 MiB", ig[1000]["rss"] <= 512 * 2**20,
                       f"{ig[1000]['rss'] / 2**20:.0f} MiB"))
    if 1 in ig and "direct" in targets:
        added = ig[1]["p50"] - summary(targets["direct"], 1)["p50"]
        checks.append(("added p50 at c=1 <= 4 ms", added <= 4.0, f"{added:.2f} ms"))
    if 10 in ig:
        checks.append(("server CPU per request at c=10 <= 4 ms", ig[10]["cpu"] <= 4.0, f"{ig[10]['cpu']:.2f} ms"))
    print()
    print("Targets (issue 9):")
    for label, ok, value in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {label}: {value}")


def check_books(env: dict, target: Target) -> None:
    """Nothing lost: succeeded ledger rows = 2xx served; every row sealed in time; chain clean; outbox = ledger."""
    served = sum(summary(target, c)["ok"] for c in SCENARIOS)
    time.sleep(1)
    script = (
        "import json\n"
        "from django.db.models import Sum\n"
        "from billing.models import LedgerEntry, UsageEvent\n"
        "from billing import sealing\n"
        "rows = LedgerEntry.all_tenants_unsafe.filter(status='succeeded').count()\n"
        "ledger = LedgerEntry.all_tenants_unsafe.aggregate(s=Sum('cost_micros'))['s'] or 0\n"
        "outbox = UsageEvent.all_tenants_unsafe.aggregate(s=Sum('value_micros'))['s'] or 0\n"
        "lag = sealing.seal_lag()\n"
        "print(json.dumps({'rows': rows, 'ledger': ledger, 'outbox': outbox, 'unsealed': lag.unsealed, "
        "'oldest_unsealed_s': lag.oldest_age_seconds, 'max_seal_lag_s': lag.max_observed_lag_seconds}))\n"
    )
    books = json.loads(h.manage(env, "shell", "-c", script).strip().splitlines()[-1])
    verify = subprocess.run([h.PYTHON, "manage.py", "verify_ledger"], cwd=h.ROOT, env=env, capture_output=True,
                            text=True)
    print()
    print("Books after the run (issue 9, item 7):")
    print(f"  2xx responses served by Imagegate: {served}; succeeded ledger rows: {books['rows']} "
          f"[{'equal' if served == books['rows'] else 'DIFFERENT'}]")
    print(f"  ledger total {books['ledger']} micro-USD; billing outbox total {books['outbox']} micro-USD "
          f"[{'equal' if books['ledger'] == books['outbox'] else 'DIFFERENT'}]")
    print(f"  rows waiting for the sealer now: {books['unsealed']} (oldest {books['oldest_unsealed_s']:.1f} s); "
          f"longest wait observed: {books['max_seal_lag_s']:.1f} s")
    print(f"  verify_ledger: exit {verify.returncode}: {(verify.stdout + verify.stderr).strip()[:300]}")


if __name__ == "__main__":
    main()

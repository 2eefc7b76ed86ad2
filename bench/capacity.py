"""Capacity: 1,000 concurrent in-flight generations against an upstream that answers after 5 s.

Three processes: an upstream emulator (Stability's wire format, 5 s per answer), the gateway exactly as deployed
(uvicorn serving config.asgi, PostgreSQL, Redis, DJANGO_DEBUG off) and this client, which sends BENCH_CONCURRENCY
requests at once through one HTTP/1.1 connection each and waits for all of them.

Prints: how many succeeded, wall time, client latency p50/p99, the gateway's added latency p50/p99 (client latency
minus the upstream's 5 s), and the gateway's peak resident memory (all its processes).

    make bench                        # all benchmarks
    .venv/bin/python bench/capacity.py
Environment: BENCH_CONCURRENCY (1000), BENCH_UPSTREAM_DELAY (5), BENCH_WORKERS (uvicorn workers, 1).
"""
import asyncio
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _harness as h  # noqa: E402

N = int(os.environ.get("BENCH_CONCURRENCY", "1000"))
DELAY = float(os.environ.get("BENCH_UPSTREAM_DELAY", "5"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))


async def fire(url: str, key: str, n: int) -> list[tuple[int, float]]:
    import aiohttp

    # aiohttp keeps idle connections in a per-host deque: one connector of n connections places each request in O(1)
    # (one httpx/httpcore pool of 1,000 connections would measure httpcore's rescans instead of the gateway).
    connector = aiohttp.TCPConnector(limit=n + 10, limit_per_host=n + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=180.0)) as client:
        body = {"model": "sdxl-1.0", "prompt": "a lighthouse in a storm", "response_format": "b64_json",
                "size": "1024x1024"}
        headers = {"Authorization": f"Bearer {key}"}

        async def one(i):
            t0 = time.perf_counter()
            try:
                async with client.post(f"{url}/v1/images/generations", json=body, headers=headers) as r:
                    status = r.status
                    served_ms = (await r.json()).get("usage", {}).get("latency_ms", 0) if status == 200 else 0
            except Exception:
                status, served_ms = 0, 0
            return status, time.perf_counter() - t0, served_ms

        # Warm up the gateway (first request loads code, opens DB and upstream connections).
        await asyncio.gather(*[one(-1) for _ in range(5)])
        return await asyncio.gather(*[one(i) for i in range(n)])


def main():
    from tests.emulators.stability import API_KEY

    db = h.fresh_database("imagegate_bench")
    redis_url = "redis://127.0.0.1:6379/9"
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    env = h.base_env(DATABASE_URL=db, REDIS_URL=redis_url, DB_CONN_MAX_AGE="60")
    h.manage(env, "migrate", "--noinput")
    h.manage(env, "create_organization", "bench", "--owner", "bench@example.com")
    key = h.manage(env, "create_api_key", "bench", "--name", "bench", "--rpm", "1000000").strip().splitlines()[-1]

    emu_port_env = dict(env)
    with h.process([h.PYTHON, "bench/serve_emulator.py", "stability", "--delay", str(DELAY)], emu_port_env) as emu:
        upstream = emu.stdout.readline().strip()
        gw_env = h.base_env(DATABASE_URL=db, REDIS_URL=redis_url, DB_CONN_MAX_AGE="60",
                            STABILITY_API_KEY=API_KEY, STABILITY_BASE_URL=upstream)
        port = h.free_port()
        args = [h.PYTHON, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                "--no-access-log", "--lifespan", "off", "--backlog", "4096", "--timeout-keep-alive", "30",
                "--workers", str(WORKERS), "--log-level", "warning"]
        gw_env["LOG_LEVEL"] = "ERROR"
        with h.process(args, gw_env, port=port, log="/tmp/imagegate-bench-gateway.log") as gateway:
            peak = [0]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], h.tree_rss_bytes(gateway.pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            idle = h.tree_rss_bytes(gateway.pid)
            cpu0 = h.tree_cpu_seconds(gateway.pid)
            t0 = time.perf_counter()
            results = asyncio.run(fire(f"http://127.0.0.1:{port}", key, N))
            wall = time.perf_counter() - t0
            cpu = h.tree_cpu_seconds(gateway.pid) - cpu0
            stop.set()
            sampler.join()

    ok = [lat for status, lat, _ in results if status == 200]
    served = [ms / 1000 for status, _, ms in results if status == 200]
    statuses = {}
    for status, _, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    added = [lat - DELAY for lat in ok]
    print(f"capacity: {len(ok)}/{N} succeeded (statuses {statuses}) against a {DELAY:.0f} s upstream, "
          f"{WORKERS} uvicorn worker(s)")
    print(f"  wall time for the whole burst: {wall:.2f} s")
    print(f"  client latency p50 {h.percentile(ok, 0.5):.3f} s, p99 {h.percentile(ok, 0.99):.3f} s; "
          f"time inside the generation service p50 {h.percentile(served, 0.5):.3f} s, "
          f"p99 {h.percentile(served, 0.99):.3f} s")
    print(f"  gateway added latency p50 {h.percentile(added, 0.5) * 1000:.0f} ms, "
          f"p99 {h.percentile(added, 0.99) * 1000:.0f} ms")
    print(f"  gateway CPU: {cpu:.1f} s for {N + 5} requests = {cpu / (N + 5) * 1000:.1f} ms per request")
    print(f"  gateway memory: idle {idle / 2**20:.0f} MiB, peak {peak[0] / 2**20:.0f} MiB")
    if len(ok) != N:
        sys.exit(1)


if __name__ == "__main__":
    main()

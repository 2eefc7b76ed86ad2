"""A closed-loop HTTP/1.1 load generator: C keep-alive connections, each sending the next request when the last
answer arrived, for D seconds; then it stops sending and waits for every request in flight (so the responses it
counts are every response the server sent).

It is a raw asyncio protocol over httptools on uvloop, so the client costs little CPU beside the servers it
measures. Prints one JSON object: requests, statuses, latencies (p50/p99 in ms), req/s.

    python bench/loadgen.py --url http://127.0.0.1:8000/v1/images/generations --concurrency 10 --duration 10 \
        --header "Authorization: Bearer ..." --body '{"model": ...}'
"""
import argparse
import asyncio
import json
import socket
import sys
import time
from urllib.parse import urlsplit

import httptools

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


class Connection(asyncio.Protocol):
    def __init__(self):
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.status = 0
        self.keep_alive = True

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._done(exc)

    def on_message_complete(self):
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self._done(None)

    def connection_lost(self, exc):
        self.transport = None
        self._done(exc or ConnectionError("closed"))

    def _done(self, exc):
        if self.waiter is not None and not self.waiter.done():
            if exc is None:
                self.waiter.set_result(self.status)
            else:
                self.waiter.set_exception(exc)

    async def request(self, payload: bytes, timeout: float) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await asyncio.wait_for(self.waiter, timeout)


async def run(url: str, concurrency: int, duration: float, headers: list[str], body: bytes, timeout: float,
              warmup: float) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: keep-alive", *headers]
    payload = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    warm = {"requests": 0, "ok": 0}

    async def connect():
        _, proto = await loop.create_connection(Connection, host, port)
        return proto

    async def worker(i: int, deadline: float, record: bool):
        conn = None
        while loop.time() < deadline:
            try:
                if conn is None or conn.transport is None or not conn.keep_alive:
                    if conn is not None and conn.transport is not None:
                        conn.transport.close()
                    conn = await connect()
                t0 = time.perf_counter()
                status = await conn.request(payload, timeout)
                if record:
                    latencies.append(time.perf_counter() - t0)
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
                else:
                    warm["requests"] += 1
                    warm["ok"] += 200 <= status < 300
            except Exception as exc:  # connection refused, reset, timeout: counted, then a new connection
                if record:
                    name = type(exc).__name__
                    errors[name] = errors.get(name, 0) + 1
                if conn is not None and conn.transport is not None:
                    conn.transport.close()
                conn = None
                await asyncio.sleep(0.05)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    if warmup > 0:  # unrecorded: connections opened, code paths and caches warm
        await asyncio.gather(*[worker(i, loop.time() + warmup, False) for i in range(concurrency)])
    started = time.perf_counter()
    deadline = loop.time() + duration
    # Stagger the start over 100 ms so 1,000 connections do not all open in the same instant.
    tasks = []
    for i in range(concurrency):
        tasks.append(asyncio.create_task(worker(i, deadline, True)))
        if concurrency > 50 and i % 50 == 49:
            await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - started
    latencies.sort()

    def pct(q):
        if not latencies:
            return None
        k = (len(latencies) - 1) * q
        lo, hi = int(k), min(int(k) + 1, len(latencies) - 1)
        return (latencies[lo] + (latencies[hi] - latencies[lo]) * (k - lo)) * 1000

    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    return {"requests": len(latencies), "ok": ok, "statuses": statuses, "errors": errors, "wall_s": wall,
            "rps": len(latencies) / wall if wall else 0.0, "ok_rps": ok / wall if wall else 0.0,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "warmup_requests": warm["requests"], "warmup_ok": warm["ok"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--body", default="{}")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of unrecorded load before measuring")
    args = parser.parse_args()
    if uvloop is not None:
        uvloop.install()
    result = asyncio.run(run(args.url, args.concurrency, args.duration, args.header, args.body.encode(),
                             args.timeout, args.warmup))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

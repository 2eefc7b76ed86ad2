"""Where one request's CPU goes: py-spy samples one Imagegate worker (`make serve`, WEB_CONCURRENCY=1) while the
load generator sends the gateway benchmark's request at c=10 through the fake upstream.

Only the thread holding the GIL is sampled (py-spy --gil), so the shares are CPU, not waiting. Prints the share of
samples by inclusive function (a frame anywhere on the stack) and by self function (the frame
on top), and writes the collapsed stacks to /tmp/imagegate-profile.txt (flamegraph.pl or speedscope read them).

    .venv/bin/python bench/profile_gateway.py          # needs py-spy (pip install py-spy) and root or ptrace rights
Environment: PROFILE_SECONDS (15), PROFILE_CONCURRENCY (10).
"""
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402
from gateway import BODY, UPSTREAM_KEY  # noqa: E402

SECONDS = float(os.environ.get("PROFILE_SECONDS", "15"))
CONCURRENCY = int(os.environ.get("PROFILE_CONCURRENCY", "10"))
OUT = Path("/tmp/imagegate-profile.txt")


def main():
    py_spy = Path(h.PYTHON).parent / "py-spy"
    if not py_spy.exists():
        sys.exit("py-spy is not installed: .venv/bin/pip install py-spy")
    db = h.fresh_database("imagegate_bench_profile")
    redis_url = "redis://127.0.0.1:6379/8"
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    env = h.base_env(DATABASE_URL=db, REDIS_URL=redis_url)
    h.manage(env, "migrate", "--noinput")
    h.manage(env, "sync_prices")
    h.manage(env, "create_organization", "bench", "--owner", "bench@example.com")
    key = h.manage(env, "create_api_key", "bench", "--name", "bench", "--rpm", "100000000").strip().splitlines()[-1]
    up = subprocess.Popen([h.PYTHON, str(h.ROOT / "bench" / "fake_upstream.py")], cwd=h.ROOT, stdout=subprocess.PIPE,
                          text=True, start_new_session=True)
    upstream = up.stdout.readline().strip()
    port = h.free_port()
    ig_env = h.base_env(DATABASE_URL=db, REDIS_URL=redis_url, OPENAI_API_KEY=UPSTREAM_KEY, OPENAI_BASE_URL=upstream,
                        HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="1", LOG_LEVEL="ERROR")
    ig = subprocess.Popen(["make", "--no-print-directory", "serve"], cwd=h.ROOT, env=ig_env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        h.wait_for_port(port, ig, timeout=120)
        worker = _uvicorn_pid(ig.pid)
        load = subprocess.Popen(
            [h.PYTHON, str(h.ROOT / "bench" / "loadgen.py"), "--url", f"http://127.0.0.1:{port}/v1/images/generations",
             "--concurrency", str(CONCURRENCY), "--duration", str(SECONDS + 4), "--warmup", "2", "--body",
             json.dumps(BODY), "--header", f"Authorization: Bearer {key}"], stdout=subprocess.PIPE, text=True)
        time.sleep(3)
        cpu0 = h.tree_cpu_seconds(worker)
        subprocess.run([str(py_spy), "record", "--pid", str(worker), "--duration", str(int(SECONDS)), "--rate", "250",
                        "--format", "raw", "--output", str(OUT), "--nonblocking", "--gil"], check=True,
                       capture_output=True)
        cpu = h.tree_cpu_seconds(worker) - cpu0
        result = json.loads(load.communicate()[0])
    finally:
        for proc in (ig, up):
            os.killpg(proc.pid, 15)
            proc.wait(timeout=20)
    print(f"profiled {SECONDS:.0f} s at c={CONCURRENCY}: {result['ok_rps']:.1f} req/s, "
          f"worker CPU {cpu * 1000 / max(1, result['ok_rps'] * SECONDS):.2f} ms per request")
    summarize(OUT)


def _uvicorn_pid(make_pid: int) -> int:
    """The uvicorn process under `make serve` (with one worker it serves in its own process)."""
    with open(f"/proc/{make_pid}/task/{make_pid}/children") as f:
        children = [int(c) for c in f.read().split()]
    return children[0] if children else make_pid


def _short(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


OURS = ("generation/", "billing/", "accounts/", "config/")


def _package(path: str) -> str:
    if path.startswith(OURS):
        return path.split("/", 1)[0] + " (ours)"
    return path.split("/", 1)[0].removesuffix(".py")


def summarize(path: Path, top: int = 25) -> None:
    """Our functions by inclusive share (time under them, callees included), and where the CPU finally lands, by
    package (the frame on top of the stack)."""
    inclusive, by_package = collections.Counter(), collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        total += n
        for frame in {f for f in frames if f.split(" (", 1)[1].startswith(OURS)}:
            inclusive[frame] += n
        if frames:
            top_path = frames[-1].split(" (", 1)[1].rstrip(")")
            by_package[_package(top_path)] += n
    print(f"\n{total} samples (GIL held). Our functions, inclusive:")
    for frame, n in inclusive.most_common(top):
        print(f"  {n * 100 / total:5.1f} %  {frame}")
    print("\nWhere the CPU lands (top frame), by package:")
    for package, n in by_package.most_common(top):
        print(f"  {n * 100 / total:5.1f} %  {package}")


if __name__ == "__main__":
    main()

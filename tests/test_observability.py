"""Issue 12's operator surface, against real server processes: /healthz and /readyz (a dead Redis named, nothing
leaked), /metrics summed over every uvicorn worker process (prometheus-client's multiprocess mode) behind
METRICS_TOKEN, and LOG_FORMAT=json access and error lines parsed from a real server's output."""
import json
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from billing.models import Price
from tests.servers import ROOT, free_port, server_env, stop, wait_until_serving

pytestmark = pytest.mark.timeout(240)

TOKEN = "metrics-test-token-5f1c"


def start_server(*, workers: int = 1, log_path: Path | None = None, **env) -> tuple[str, subprocess.Popen]:
    """uvicorn serving config.asgi as `make serve` runs it (--workers), its output to `log_path`."""
    port = free_port()
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers), "--no-access-log", "--lifespan", "off"],
            cwd=ROOT, env=server_env(**env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if log_path:
            out.close()  # the server writes through its own copy
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(base, proc)
    return base, proc


def samples(text: str) -> dict[tuple, float]:
    """{(name, sorted label items): value} of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)


def scrape(base: str, token: str = TOKEN) -> dict:
    response = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return samples(response.text)


def generations_counted(per_file: list) -> dict[str, float]:
    """Successful generations counted in each worker's counter file (file name → count)."""
    counts = {}
    for path in per_file:
        total = 0.0
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for s in metric.samples:
                if s.name == "imagegate_api_requests_total" and s.labels.get("endpoint") == "images-generations":
                    total += s.value
        counts[path.name] = total
    return counts


# --- /metrics: every worker's counts, behind the token ------------------------------------------------------------

def test_metrics_sum_every_worker_process_and_require_the_token(transactional_db, prices, api_key, tmp_path):
    key, raw = api_key
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    base, proc = start_server(workers=2, PROMETHEUS_MULTIPROC_DIR=metrics_dir, METRICS_TOKEN=TOKEN)
    try:
        # The token: none, a wrong one and another scheme are refused without a byte of metrics.
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            refused = httpx.get(f"{base}/metrics", headers=headers, timeout=10)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "imagegate_" not in refused.text

        def generate(_):
            # A client of its own per call: a new connection each time, so both workers' accept() take some.
            client = openai.OpenAI(base_url=f"{base}/v1", api_key=raw, max_retries=0, timeout=30)
            return client.images.generate(model="local-preview", prompt="a lighthouse", size="256x256",
                                          response_format="b64_json")

        sent = 0
        with ThreadPoolExecutor(8) as pool:
            for _ in range(10):  # until both worker processes have served some (usually the first round)
                list(pool.map(generate, range(16)))
                sent += 16
                files = sorted(metrics_dir.glob("counter_*.db"))
                per_worker = generations_counted(files)
                if sum(1 for count in per_worker.values() if count > 0) >= 2:
                    break
        assert sum(1 for count in per_worker.values() if count > 0) >= 2, per_worker
        assert sum(per_worker.values()) == sent

        # Whichever worker answers the scrape, it reports every worker's requests.
        for _ in range(6):
            found = scrape(base)
            assert value(found, "imagegate_api_requests_total", endpoint="images-generations",
                         model="local-preview", provider="local", status=200) == sent
            assert value(found, "imagegate_api_request_duration_seconds_count", endpoint="images-generations") == sent
            assert value(found, "imagegate_upstream_attempts_total", provider="local", model="local-preview",
                         outcome="succeeded") == sent
            assert value(found, "imagegate_upstream_request_duration_seconds_count", provider="local") == sent

        # A request without a key is counted under its endpoint, with no model or provider.
        before = value(found, "imagegate_api_requests_total", endpoint="models-list", model="", provider="",
                       status=401)  # the start-up probe's (tests/servers.py)
        assert httpx.get(f"{base}/v1/models", timeout=10).status_code == 401
        found = scrape(base)
        assert value(found, "imagegate_api_requests_total", endpoint="models-list", model="", provider="",
                     status=401) == before + 1

        # Scrape-time series: the circuit of the built-in provider, the ledger's and Stripe's backlogs, Celery's
        # queue, each collector up.
        assert value(found, "imagegate_upstream_circuit_state", provider="local", state="closed") == 1
        assert value(found, "imagegate_upstream_circuit_state", provider="local", state="open") == 0
        assert ("imagegate_ledger_unsealed_rows", ()) in found
        assert ("imagegate_ledger_oldest_unsealed_age_seconds", ()) in found
        # Stripe is off here: every charged row waits for its meter report.
        assert value(found, "imagegate_stripe_usage_unassigned_events") == sent
        assert value(found, "imagegate_stripe_meter_backlog_micros") == sent * 1_000
        assert value(found, "imagegate_stripe_oldest_unreported_usage_age_seconds") > 0
        assert ("imagegate_celery_queue_length", (("queue", "celery"),)) in found
        for collector in ("celery", "ledger", "stripe", "circuits"):
            assert value(found, "imagegate_scrape_collector_up", collector=collector) == 1, collector
    finally:
        stop(proc)


def test_rate_and_spend_limit_refusals_are_counted(transactional_db, prices, api_key):
    from billing import services as billing_services

    key, raw = api_key
    key.rate_limit_rpm = 2
    key.save(update_fields=["rate_limit_rpm"])
    billing_services.set_spend_limit(organization=key.organization, monthly_limit_micros=1_000)  # one image
    base, proc = start_server()  # one process: its own registry (no PROMETHEUS_MULTIPROC_DIR), no token asked
    try:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=raw, max_retries=0, timeout=30)
        client.images.generate(model="local-preview", prompt="a kite", size="256x256", response_format="b64_json")
        with pytest.raises(openai.RateLimitError) as spend:
            client.images.generate(model="local-preview", prompt="a kite", size="256x256")
        assert spend.value.code == "insufficient_quota"
        with pytest.raises(openai.RateLimitError) as rate:
            client.images.generate(model="local-preview", prompt="a kite", size="256x256")
        assert rate.value.code == "rate_limit_exceeded"
        found = samples(httpx.get(f"{base}/metrics", timeout=10).text)
        assert value(found, "imagegate_spend_limit_refusals_total", limit="organization") == 1
        assert value(found, "imagegate_rate_limit_refusals_total", limit="key") == 1
        # The spend limit refuses once the model is known; the rate limit before the body is read.
        assert value(found, "imagegate_api_requests_total", endpoint="images-generations", model="local-preview",
                     provider="", status=429) == 1
        assert value(found, "imagegate_api_requests_total", endpoint="images-generations", model="", provider="",
                     status=429) == 1
    finally:
        stop(proc)


# --- /healthz and /readyz ------------------------------------------------------------------------------------------

def _assert_leaks_nothing(text: str, *secrets: str) -> None:
    for secret in ("127.0.0.1", "postgres", "redis://", "Error", "Traceback", *secrets):
        assert secret not in text, f"{secret!r} in {text}"


def test_healthz_and_readyz_answer_without_a_key_and_name_what_is_down(transactional_db, prices):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nothing listens once closed
    healthy, healthy_proc = start_server(DJANGO_DEBUG="off", DJANGO_SECRET_KEY="x" * 50,
                                         DJANGO_ALLOWED_HOSTS="api.example.com")
    broken, broken_proc = start_server(REDIS_URL=f"redis://127.0.0.1:{dead_port}/0")
    try:
        # Production settings: no HTTPS redirect and no ALLOWED_HOSTS check for a probe that addresses the host by IP
        # over plain HTTP.
        live = httpx.get(f"{healthy}/healthz", timeout=10)
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
        ready = httpx.get(f"{healthy}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "checks": {"database": "ok", "storage": "ok", "redis": "ok"}}
        assert ready.headers["cache-control"] == "no-store"

        assert httpx.get(f"{broken}/healthz", timeout=10).status_code == 200  # the process itself is fine
        down = httpx.get(f"{broken}/readyz", timeout=10)
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/json"
        assert down.json() == {"status": "unavailable", "down": ["redis"],
                               "checks": {"database": "ok", "storage": "ok", "redis": "down"}}
        _assert_leaks_nothing(down.text, str(dead_port))
        assert httpx.post(f"{broken}/readyz", timeout=10).status_code == 405
    finally:
        stop(healthy_proc)
        stop(broken_proc)


def test_readyz_gives_up_on_a_redis_that_never_answers(transactional_db, prices):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) but never reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        base, proc = start_server(REDIS_URL=f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        try:
            for _ in range(3):  # later probes wait for the hanging check's run rather than start more of them
                down = httpx.get(f"{base}/readyz", timeout=20)
                assert down.status_code == 503
                assert down.json() == {"status": "unavailable", "down": ["redis"],
                                       "checks": {"database": "ok", "storage": "ok", "redis": "down"}}
        finally:
            stop(proc)


def test_readyz_names_the_image_storage_when_s3_does_not_answer(transactional_db, prices):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    base, proc = start_server(AWS_STORAGE_BUCKET_NAME="imagegate-private-bucket", BEDROCK_ENABLED="off",
                              AWS_S3_ENDPOINT_URL=f"http://127.0.0.1:{dead_port}", AWS_REGION="us-east-1",
                              AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="secret-example")
    try:
        down = httpx.get(f"{base}/readyz", timeout=20)
        assert down.status_code == 503
        assert down.json() == {"status": "unavailable", "down": ["storage"],
                               "checks": {"database": "ok", "storage": "down", "redis": "ok"}}
        _assert_leaks_nothing(down.text, "imagegate-private-bucket", "AKIDEXAMPLE", str(dead_port))
    finally:
        stop(proc)


# --- Logs ----------------------------------------------------------------------------------------------------------

def _json_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_json_logs_one_line_per_api_request_and_errors_with_their_request_id(transactional_db, prices, api_key,
                                                                               tmp_path):
    key, raw = api_key
    # No price for one size: the request is a 503 and the server logs an error naming it.
    Price.objects.filter(model="local-preview", size="512x512").delete()
    log_path = tmp_path / "server.log"
    base, proc = start_server(log_path=log_path, LOG_FORMAT="json", LOG_LEVEL="INFO")
    try:
        ok = httpx.post(f"{base}/v1/images/generations", headers={"Authorization": f"Bearer {raw}"}, timeout=30,
                        json={"model": "local-preview", "prompt": "a boat", "size": "256x256", "n": 2,
                              "response_format": "b64_json"})
        assert ok.status_code == 200, ok.text
        unpriced = httpx.post(f"{base}/v1/images/generations", headers={"Authorization": f"Bearer {raw}"},
                              timeout=30, json={"model": "local-preview", "prompt": "a boat", "size": "512x512"})
        assert unpriced.status_code == 503, unpriced.text
        anonymous = httpx.get(f"{base}/v1/models", timeout=10)
        assert anonymous.status_code == 401
        with httpx.stream("POST", f"{base}/v1/images/generations", headers={"Authorization": f"Bearer {raw}"},
                          timeout=30, json={"model": "local-preview", "prompt": "a boat", "size": "256x256",
                                            "stream": True}) as streamed:
            events = streamed.read().decode()
        assert streamed.status_code == 200 and "image_generation.completed" in events
    finally:
        stop(proc)

    lines = _json_lines(log_path)
    access = {line["request_id"]: line for line in lines if line.get("logger") == "imagegate.access"}
    ours = [r.headers["x-request-id"] for r in (ok, unpriced, anonymous, streamed)]
    assert set(ours) <= set(access), lines
    assert len(access) == 5  # and the start-up probe's (tests/servers.py)
    assert not [line for line in lines if line.get("logger") == "uvicorn.access"]  # --no-access-log still holds

    first = access[ok.headers["x-request-id"]]
    assert first["level"] == "INFO" and first["time"]
    assert (first["method"], first["path"], first["endpoint"], first["status"]) == (
        "POST", "/v1/images/generations", "images-generations", 200)
    assert (first["organization_id"], first["key_prefix"]) == (key.organization_id, key.prefix)
    assert (first["model"], first["provider"], first["cost_micros"]) == ("local-preview", "local", 2_000)
    assert first["latency_ms"] > 0

    second = access[unpriced.headers["x-request-id"]]
    assert (second["status"], second["model"], second["provider"], second["cost_micros"]) == (
        503, "local-preview", "", 0)
    errors = [line for line in lines if line.get("level") == "ERROR"]
    assert errors and all(line.get("request_id") == unpriced.headers["x-request-id"] for line in errors), errors
    assert "No price for local-preview 512x512" in errors[0]["message"]

    third = access[anonymous.headers["x-request-id"]]
    assert (third["endpoint"], third["status"], third["organization_id"], third["key_prefix"]) == (
        "models-list", 401, None, "")
    fourth = access[streamed.headers["x-request-id"]]  # logged when its stream ended: provider and cost known
    assert (fourth["status"], fourth["model"], fourth["provider"], fourth["cost_micros"]) == (
        200, "local-preview", "local", 1_000)
    assert raw not in log_path.read_text()  # the secret key is never logged, only its prefix


def test_the_default_log_format_stays_human_readable(transactional_db, prices, api_key, tmp_path):
    _, raw = api_key
    log_path = tmp_path / "server.log"
    base, proc = start_server(log_path=log_path, LOG_LEVEL="INFO")
    try:
        ok = httpx.post(f"{base}/v1/images/generations", headers={"Authorization": f"Bearer {raw}"}, timeout=30,
                        json={"model": "local-preview", "prompt": "a boat", "size": "256x256"})
        assert ok.status_code == 200
    finally:
        stop(proc)
    text = log_path.read_text()
    assert not _json_lines(log_path), text
    line = next(line for line in text.splitlines() if ok.headers["x-request-id"] in line)
    assert re.search(r" INFO imagegate\.access POST /v1/images/generations 200 \d+ms org=\d+ key=\S+ "
                     r"model=local-preview provider=local cost_micros=1000 \[" + ok.headers["x-request-id"] + r"\]$",
                     line), line

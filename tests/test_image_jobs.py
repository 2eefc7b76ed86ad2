"""Async image jobs (`Prefer: respond-async`, issue 14) with the official openai SDK against the live server, run by a
real Celery worker process on the real Redis broker: 202 and the job object, polling, the list's cursor pages,
cancel, Idempotency-Key, the synchronous path's limits (scopes, allowed models, validation, spend limits), results
kept for the image URL lifetime. Killed workers are in tests/test_image_jobs_worker.py."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import openai
import pytest
from django.db import connection
from django.utils import timezone
from PIL import Image

from accounts import services as account_services
from billing import spend
from billing.models import BillingAccount, LedgerEntry
from generation import providers
from generation.models import ImageJob, ImageJobInput
from generation.pipeline import jobs
from tests.emulators import openai as openai_emu
from tests.images_util import png

ROOT = Path(__file__).resolve().parent.parent
ASYNC = {"Prefer": "respond-async"}


class Job(openai.BaseModel):
    """The SDK's view of a job in list pages (extra fields are kept)."""

    id: str
    status: str


def worker_env(**extra) -> dict:
    db = connection.settings_dict
    env = {
        "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": os.environ["REDIS_URL"], "LOG_LEVEL": "WARNING",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_worker(name: str, **env) -> subprocess.Popen:
    """A real `celery worker` process (solo pool: one job at a time) on the suite's database and Redis."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "--concurrency=1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"{name}@%h", "--loglevel=WARNING"],
        cwd=ROOT, env=worker_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


def stop_worker(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def upstream():
    with openai_emu.emulator(retired=()) as emu:  # OpenAI as it was before the dall-e retirement
        yield emu


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker, upstream):
    """One worker for the module, on the broker (tasks leave this process for Redis)."""
    from config.celery import app

    with django_db_blocker.unblock():
        proc = start_worker("jobs", OPENAI_API_KEY=openai_emu.API_KEY, OPENAI_BASE_URL=upstream.url + "/v1",
                            WEBHOOKS_ALLOW_PRIVATE_ADDRESSES="on")
    app.conf.task_always_eager = False
    yield proc
    app.conf.task_always_eager = True
    stop_worker(proc)


@pytest.fixture
def client(worker, upstream, openai_client, settings):
    upstream.reset()
    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = openai_emu.API_KEY, upstream.url + "/v1"
    providers.reset_registry()
    yield openai_client
    providers.reset_registry()


def get_job(client, job_id: str) -> dict:
    return client.get(f"/images/jobs/{job_id}", cast_to=object)


def wait_for(client, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 60,
             every: float = 0.1) -> dict:
    """Poll the job (every `every` seconds: each poll counts against the key's rate limit) until it is in one of
    `statuses`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get_job(client, job_id)
        if job["status"] in statuses:
            return job
        time.sleep(every)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def create(client, **kwargs):
    """(HTTP response, job object) of an async generation made with the SDK."""
    kwargs.setdefault("model", "local-preview")
    kwargs.setdefault("size", "256x256")
    headers = {**ASYNC, **kwargs.pop("extra_headers", {})}
    raw = client.images.with_raw_response.generate(extra_headers=headers, **kwargs)
    return raw.http_response, raw.http_response.json()


def test_generation_job_runs_on_the_worker_and_answers_as_the_synchronous_path(client, api_key, live_url):
    response, job = create(client, prompt="a lighthouse at dusk", n=2, response_format="url")
    assert response.status_code == 202
    assert response.headers["location"] == f"/v1/images/jobs/{job['id']}"
    assert response.headers["preference-applied"] == "respond-async"
    assert response.headers["x-request-id"] == job["request_id"]
    assert job["object"] == "image.job" and job["id"].startswith("imgjob_")
    assert job["status"] in ("queued", "running") and job["model"] == "local-preview"
    assert job["parameters"] == {"model": "local-preview", "size": "256x256", "n": 2, "response_format": "url"}
    assert "a lighthouse" not in response.text  # the prompt is never echoed

    done = wait_for(client, job["id"])
    assert done["status"] == "succeeded", done
    assert len(done["data"]) == 2 and done["usage"]["cost"] == 0.002 and done["usage"]["model_used"] == "local-preview"
    assert done["data"][0]["revised_prompt"] == "a lighthouse at dusk"
    image = httpx.get(done["data"][0]["url"], timeout=10)
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size == (256, 256)
    row = LedgerEntry.objects.for_organization(api_key[0].organization).get()
    assert (row.request_id, row.status, row.n, row.cost_micros) == (done["request_id"], "succeeded", 2, 2000)
    stored = ImageJob.objects.for_organization(api_key[0].organization).get()
    assert stored.request == {}  # the prompt is dropped once the job ended
    # Results live as long as their image URLs.
    assert done["expires_at"] - done["finished_at"] == 3600
    assert done["created"] == job["created"] and done["started_at"] >= done["created"]


def test_edit_job_keeps_its_uploads_until_the_worker_ran_it(client, api_key):
    raw = client.images.with_raw_response.edit(
        model="local-preview", image=[("a.png", png(), "image/png"), ("b.png", png(), "image/png")],
        prompt="add a sun", size="256x256", response_format="b64_json", extra_headers=ASYNC)
    assert raw.http_response.status_code == 202
    job = raw.http_response.json()
    assert job["parameters"] == {"model": "local-preview", "size": "256x256", "response_format": "b64_json"}
    done = wait_for(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["data"][0]["b64_json"] and done["endpoint"] == "edits"
    row = LedgerEntry.objects.for_organization(api_key[0].organization).get()
    assert (row.endpoint, row.request_id, row.cost_micros) == ("edits", job["request_id"], 1000)
    assert not ImageJobInput.objects.for_organization(api_key[0].organization).exists()


def test_the_list_pages_with_a_cursor_newest_first(client, api_key, other_tenant):
    ids = [create(client, prompt=f"tile {i}", response_format="b64_json")[1]["id"] for i in range(3)]
    for job_id in ids:
        wait_for(client, job_id)
    first = client.get("/images/jobs", cast_to=object, options={"params": {"limit": 2}})
    assert [j["id"] for j in first["data"]] == ids[::-1][:2]
    assert (first["object"], first["has_more"], first["first_id"], first["last_id"]) == \
        ("list", True, ids[2], ids[1])
    second = client.get("/images/jobs", cast_to=object, options={"params": {"limit": 2, "after": first["last_id"]}})
    assert [j["id"] for j in second["data"]] == [ids[0]] and second["has_more"] is False

    # The SDK's own cursor pagination walks every page.
    from openai.pagination import SyncCursorPage

    pages = client.get_api_list("/images/jobs", model=Job, page=SyncCursorPage[Job], options={"params": {"limit": 1}})
    assert [job.id for job in pages] == ids[::-1]

    # Another organization sees none of them, and reading one is a 404 as for an unknown id.
    from openai import OpenAI

    rival = OpenAI(base_url=str(client.base_url), api_key=other_tenant[2], max_retries=0)
    assert rival.get("/images/jobs", cast_to=object)["data"] == []
    with pytest.raises(openai.NotFoundError) as exc:
        rival.get(f"/images/jobs/{ids[0]}", cast_to=object)
    assert exc.value.code == "not_found"
    with pytest.raises(openai.BadRequestError) as exc:
        rival.get("/images/jobs", cast_to=object, options={"params": {"after": ids[0]}})
    assert exc.value.param == "after"
    with pytest.raises(openai.BadRequestError) as exc:
        client.get("/images/jobs", cast_to=object, options={"params": {"limit": 0}})
    assert exc.value.param == "limit"


def test_cancel_a_queued_job_it_never_runs_and_costs_nothing(client, api_key, upstream):
    upstream.state["delay"] = 3.0  # the worker (one at a time) is busy with the first job
    _, busy = create(client, model="dall-e-2", size="256x256", prompt="slow one", response_format="b64_json")
    wait_for(client, busy["id"], statuses=("running",))
    _, queued = create(client, prompt="never drawn")
    cancelled = client.post(f"/images/jobs/{queued['id']}/cancel", cast_to=object)
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    with pytest.raises(openai.ConflictError) as exc:
        client.post(f"/images/jobs/{queued['id']}/cancel", cast_to=object)
    assert exc.value.code == "job_not_cancellable"
    with pytest.raises(openai.ConflictError) as exc:  # running: its upstream call may already be paid for
        client.post(f"/images/jobs/{busy['id']}/cancel", cast_to=object)
    assert exc.value.code == "job_not_cancellable"
    assert wait_for(client, busy["id"])["status"] == "succeeded"
    time.sleep(1.0)  # the cancelled job's message reached the worker meanwhile: it must not run
    assert get_job(client, queued["id"])["status"] == "cancelled"
    assert LedgerEntry.objects.for_organization(api_key[0].organization).filter(
        request_id=queued["request_id"]).count() == 0
    with pytest.raises(openai.NotFoundError):
        client.post("/images/jobs/imgjob_unknown/cancel", cast_to=object)


def test_idempotency_key_names_one_job(client, api_key):
    headers = {"Idempotency-Key": "job-key-1"}
    first_response, first = create(client, prompt="one job only", extra_headers=headers)
    again_response, again = create(client, prompt="one job only", extra_headers=headers)
    assert again["id"] == first["id"] and again_response.status_code == 202
    assert again_response.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first_response.headers
    with pytest.raises(openai.ConflictError) as exc:
        create(client, prompt="another body", extra_headers=headers)
    assert exc.value.code == "idempotency_key_reused"
    wait_for(client, first["id"])
    assert ImageJob.objects.for_organization(api_key[0].organization).count() == 1
    assert LedgerEntry.objects.for_organization(api_key[0].organization).count() == 1


def test_refused_before_any_job_as_the_synchronous_path_refuses(client, api_key, live_url):
    org = api_key[0].organization
    with pytest.raises(openai.BadRequestError) as exc:
        create(client, prompt="x", size="999x999")
    assert exc.value.code == "invalid_size"
    assert not ImageJob.objects.for_organization(org).exists()
    assert LedgerEntry.objects.for_organization(org).get().status == "invalid"  # recorded as a sync request is

    narrow, raw = account_services.create_api_key(organization=org, name="narrow", allowed_models=["dall-e-2"])
    restricted = openai.OpenAI(base_url=f"{live_url}/v1", api_key=raw, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as exc:
        create(restricted, prompt="x")
    assert exc.value.code == "model_not_allowed"

    usage_only, raw = account_services.create_api_key(organization=org, name="usage", scopes=["usage.read"])
    reader = openai.OpenAI(base_url=f"{live_url}/v1", api_key=raw, max_retries=0)
    for call in (lambda: create(reader, prompt="x"), lambda: reader.get("/images/jobs", cast_to=object)):
        with pytest.raises(openai.AuthenticationError) as exc:
            call()
        assert exc.value.code == "missing_scope"
    assert not ImageJob.objects.for_organization(org).exists()


def test_the_spend_limit_holds_when_the_job_runs(client, api_key):
    org = api_key[0].organization
    BillingAccount.all_tenants_unsafe.update_or_create(organization=org, defaults={"monthly_spend_limit_micros": 1500})
    spend.invalidate_limits()
    _, job = create(client, prompt="two are too many", n=2)
    done = wait_for(client, job["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "insufficient_quota", done
    assert "data" not in done
    row = LedgerEntry.objects.for_organization(org).get()
    assert (row.request_id, row.cost_micros) == (job["request_id"], 0)


def test_a_revoked_key_stops_its_queued_jobs(client, api_key, upstream):
    org = api_key[0].organization
    upstream.state["delay"] = 2.0
    _, busy = create(client, model="dall-e-2", size="256x256", prompt="slow one", response_format="b64_json")
    wait_for(client, busy["id"], statuses=("running",))
    _, queued = create(client, prompt="after the revocation")
    account_services.revoke_api_key(api_key=api_key[0])
    done = wait_for(client.with_options(api_key=account_services.create_api_key(organization=org, name="b")[1]),
                    queued["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "invalid_api_key"
    assert not LedgerEntry.objects.for_organization(org).filter(request_id=queued["request_id"]).exists()


def test_expired_jobs_are_gone(client, api_key):
    _, job = create(client, prompt="short lived", response_format="b64_json")
    wait_for(client, job["id"])
    org = api_key[0].organization
    ImageJob.objects.for_organization(org).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(openai.NotFoundError):
        get_job(client, job["id"])
    assert client.get("/images/jobs", cast_to=object)["data"] == []
    assert jobs.delete_expired() == 1
    assert not ImageJob.objects.for_organization(org).exists()


def test_prefer_header_parsing_follows_rfc_7240():
    assert jobs.prefers_async(["respond-async"])
    assert jobs.prefers_async(["return=minimal, Respond-Async; foo=bar"])
    assert jobs.prefers_async(["wait=10,respond-async"])
    assert not jobs.prefers_async(["return=representation"])
    assert not jobs.prefers_async(["respond-asyncx", ""])


def test_the_worker_delivers_signed_events_for_ended_and_cancelled_jobs(client, api_key, upstream, settings):
    from tests.test_webhooks import Receiver, doc_verify

    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    receiver = Receiver()
    try:
        endpoint = client.post("/webhook_endpoints", cast_to=object, body={"url": receiver.url + "/hook"})
        upstream.state["delay"] = 2.0
        _, busy = create(client, model="dall-e-2", prompt="slow one", response_format="b64_json")
        wait_for(client, busy["id"], statuses=("running",))
        _, queued = create(client, prompt="cancelled before it ran")
        client.post(f"/images/jobs/{queued['id']}/cancel", cast_to=object)
        wait_for(client, busy["id"])
        deadline = time.monotonic() + 30
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        receiver.close()
    events = {json.loads(r["body"])["data"]["object"]["id"]: r for r in receiver.received}
    assert set(events) == {busy["id"], queued["id"]}
    assert json.loads(events[busy["id"]]["body"])["type"] == "image.job.succeeded"
    assert json.loads(events[queued["id"]]["body"])["type"] == "image.job.cancelled"
    verify = doc_verify()
    for got in receiver.received:
        assert verify(got["body"], got["headers"]["Imagegate-Signature"], [endpoint["secret"]])


def test_the_rate_limit_counts_job_creation(client, api_key, live_url):
    org = api_key[0].organization
    _, raw = account_services.create_api_key(organization=org, name="one a minute", rate_limit_rpm=1)
    slow = openai.OpenAI(base_url=f"{live_url}/v1", api_key=raw, max_retries=0)
    response, job = create(slow, prompt="the only one this minute", response_format="b64_json")
    assert response.status_code == 202
    with pytest.raises(openai.RateLimitError) as exc:
        create(slow, prompt="one too many")
    assert exc.value.code == "rate_limit_exceeded" and exc.value.response.headers["retry-after"]
    assert ImageJob.objects.for_organization(org).count() == 1
    assert wait_for(client, job["id"])["status"] == "succeeded"

"""Async image jobs survive their worker being killed (issue 14): real `celery worker` processes on the real Redis
broker, the OpenAI emulator as the upstream.

- A pool process killed with SIGKILL mid-upstream-call: the task was not acknowledged (acks_late) and is requeued
  at once (reject_on_worker_lost); the next run waits out the dead run's lease and runs the request again: one
  ledger row, one charge.
- A whole worker dying right after the commit (the fault point after_commit), before it marked the job: the broker
  hands the unacknowledged task to a second worker (visibility timeout), which finds the committed answer under the
  job's request id and finishes the job with it: the upstream is called once and the job charged once."""
import os
import signal
import time
from pathlib import Path

import pytest

from billing.models import LedgerEntry
from generation import providers
from generation.models import ImageJob
from tests.emulators import openai as openai_emu
from tests.test_image_jobs import create, start_worker, stop_worker, wait_for

FAST = {"IMAGE_JOB_LEASE_SECONDS": 3, "CELERY_VISIBILITY_TIMEOUT_SECONDS": 3}


@pytest.fixture
def upstream():
    with openai_emu.emulator(retired=()) as emu:  # OpenAI as it was before the dall-e retirement
        yield emu


@pytest.fixture
def client(upstream, openai_client, settings):
    from config.celery import app

    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = openai_emu.API_KEY, upstream.url + "/v1"
    providers.reset_registry()
    app.conf.task_always_eager = False
    yield openai_client
    app.conf.task_always_eager = True
    providers.reset_registry()


def upstream_env(upstream) -> dict:
    return {"OPENAI_API_KEY": openai_emu.API_KEY, "OPENAI_BASE_URL": upstream.url + "/v1", **FAST}


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def generation_calls(upstream) -> int:
    return sum(1 for r in upstream.requests if r.path.endswith("/images/generations"))


def test_pool_process_killed_mid_call_is_requeued_and_charged_once(client, upstream, api_key):
    import subprocess
    import sys

    from tests.test_image_jobs import ROOT, worker_env

    upstream.state["delay"] = 2.0
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=prefork", "--concurrency=1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", "prefork@%h", "--loglevel=WARNING"],
        cwd=ROOT, env=worker_env(**upstream_env(upstream)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        _, job = create(client, model="dall-e-2", prompt="a paper boat", response_format="b64_json")
        wait_until(lambda: generation_calls(upstream) == 1, 60, "the upstream call")
        pool = children(proc.pid)
        assert len(pool) == 1
        os.kill(pool[0], signal.SIGKILL)  # the pool process dies while the upstream call is in flight
        upstream.state["delay"] = 0.0
        done = wait_for(client, job["id"], timeout=90, every=0.5)
    finally:
        stop_worker(proc)
    assert done["status"] == "succeeded", done
    assert len(done["data"]) == 1 and done["usage"]["cost"] == 0.0176
    assert generation_calls(upstream) == 2  # the killed call is made again: the upstream may bill it, we do not
    rows = LedgerEntry.objects.for_organization(api_key[0].organization)
    assert [(r.request_id, r.status, r.cost_micros) for r in rows] == [(job["request_id"], "succeeded", 17_600)]
    assert ImageJob.objects.for_organization(api_key[0].organization).get().attempts == 2


def test_worker_dying_after_the_commit_is_finished_by_another_without_a_second_call(client, upstream, api_key):
    first = start_worker("doomed", IMAGEGATE_FAULTS="after_commit", **upstream_env(upstream))
    try:
        _, job = create(client, model="dall-e-2", prompt="a glass harbour", response_format="b64_json")
        wait_until(lambda: first.poll() is not None, 60, "the worker to die after its commit")
    finally:
        stop_worker(first, signal.SIGKILL)
    org = api_key[0].organization
    assert LedgerEntry.objects.for_organization(org).get().request_id == job["request_id"]  # charged, not marked
    stuck = ImageJob.objects.for_organization(org).get()
    assert stuck.status == "running"

    second = start_worker("heir", **upstream_env(upstream))
    try:
        done = wait_for(client, job["id"], timeout=90, every=0.5)
    finally:
        stop_worker(second)
    assert done["status"] == "succeeded", done
    assert len(done["data"]) == 1 and done["data"][0]["b64_json"]
    assert generation_calls(upstream) == 1  # the first run's answer, not a second generation
    rows = LedgerEntry.objects.for_organization(org)
    assert [(r.request_id, r.status, r.cost_micros) for r in rows] == [(job["request_id"], "succeeded", 17_600)]
    assert ImageJob.objects.for_organization(org).get().attempts == 2

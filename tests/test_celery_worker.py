"""A real Celery worker process against Redis (not eager mode): it reports usage to the Stripe emulator, is killed
with SIGKILL while its call is in flight (Stripe committed the event, the worker never marked it), and a fresh
worker finishes the job without billing twice."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from billing import services as billing_services
from billing.models import BillingAccount, LedgerEntry, MeterReport
from billing.selectors import current_price
from billing.stripe import gateway as stripe_gateway
from billing.stripe import reporting
from tests.emulators import stripe as stripe_emu
from tests.emulators.base import Fault

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def stripe_env(settings, transactional_db, prices):
    with stripe_emu.emulator() as emu:
        emu.state["rate_limit"] = None
        settings.STRIPE_API_KEY = stripe_emu.API_KEY
        settings.STRIPE_API_BASE = emu.url
        settings.STRIPE_MAX_NETWORK_RETRIES = 0
        yield emu


@pytest.fixture
def real_celery():
    from config.celery import app

    app.conf.task_always_eager = False
    yield app
    app.conf.task_always_eager = True


def _worker(emu, name: str) -> subprocess.Popen:
    db = connection.settings_dict
    env = {
        "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": os.environ["REDIS_URL"],
        "STRIPE_API_KEY": stripe_emu.API_KEY, "STRIPE_API_BASE": emu.url, "STRIPE_MAX_NETWORK_RETRIES": "0",
        "STRIPE_TIMEOUT_SECONDS": "3",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "--concurrency=1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"{name}@%h", "--loglevel=WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_worker_killed_between_sending_and_marking(stripe_env, real_celery, api_key):
    from billing.tasks import report_usage

    org, key = api_key[0].organization, api_key[0]
    price = current_price(model="local-preview", size="256x256", quality="standard")
    for i in range(6):
        billing_services.record_usage(organization=org, api_key=key, request_id=f"req_w{i}", status="succeeded",
                                      model="local-preview", provider="local", size="256x256", quality="standard",
                                      n=2, price=price, latency_ms=1)
    stripe_gateway.setup()
    reporting.ensure_customers()
    customer = BillingAccount.all_tenants_unsafe.get(organization=org).stripe_customer_id
    store = stripe_emu.store(stripe_env)
    stripe_env.faults.set("meter_events", Fault(kind="process_then_drop", times=1))

    first = _worker(stripe_env, "first")
    try:
        report_usage.delay()
        _wait(lambda: store.total(customer=customer) > 0, 60, "the worker's call to reach Stripe")
        time.sleep(0.5)
        os.killpg(first.pid, signal.SIGKILL)  # killed while waiting for Stripe's answer
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    report = MeterReport.all_tenants_unsafe.get()
    assert report.status == "pending" and report.attempts == 1  # sent, never marked

    second = _worker(stripe_env, "second")
    try:
        def delivered() -> bool:  # the dead worker's customer lock expires within seconds; keep asking
            MeterReport.all_tenants_unsafe.update(next_attempt_at=None)
            if MeterReport.all_tenants_unsafe.get().status == "delivered":
                return True
            report_usage.delay()
            time.sleep(2)
            return False

        _wait(delivered, 90, "the second worker to deliver")
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=20)
    ledger_total = sum(LedgerEntry.objects.for_organization(org).values_list("cost_micros", flat=True))
    assert store.total(customer=customer) == ledger_total == 12_000
    assert len(store.events(customer=customer)) == 1

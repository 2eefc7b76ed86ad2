"""Shared fixtures: tenants and keys, and a live ASGI server (uvicorn, as in production) for the SDK tests."""
import socket
import threading
import time

import pytest
import uvicorn

from accounts import services as account_services
from billing import price_list
from billing.models import Price


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prices(db):
    """Reference data as migrations seed it: the price table and the default moderation policy (transactional tests
    flush every table, so put them back)."""
    from billing.selectors import clear_price_cache
    from generation.pipeline import moderation

    price_list.sync(Price)
    clear_price_cache()
    moderation.sync_default_policy()
    moderation.invalidate_policy()


@pytest.fixture
def user(db):
    user, _ = account_services.get_or_create_user(email="owner@example.com", password="correct horse battery")
    return user


@pytest.fixture
def organization(user):
    return account_services.create_organization(name="Acme", owner=user, slug="acme")


@pytest.fixture
def api_key(organization, prices):
    """(ApiKey row, raw key) for `organization`."""
    return account_services.create_api_key(organization=organization, name="test key")


@pytest.fixture
def other_tenant(db, prices):
    """A second organization with its own owner and key, for isolation tests."""
    other_user, _ = account_services.get_or_create_user(email="rival@example.com", password="another horse battery")
    org = account_services.create_organization(name="Rival", owner=other_user, slug="rival")
    key, raw = account_services.create_api_key(organization=org, name="rival key")
    return org, key, raw


class _ServerThread(threading.Thread):
    def __init__(self, port: int):
        super().__init__(daemon=True)
        config = uvicorn.Config("config.asgi:application", host="127.0.0.1", port=port, lifespan="off",
                                log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)

    def run(self):
        self.server.run()


@pytest.fixture(scope="session")
def _asgi_server(django_db_setup, django_db_blocker):
    port = free_port()
    thread = _ServerThread(port)
    thread.start()
    deadline = time.monotonic() + 20
    while not thread.server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    thread.server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def live_url(_asgi_server, transactional_db, prices):
    """Base URL of a live uvicorn serving the project, with committed data visible to it."""
    return _asgi_server


@pytest.fixture
def openai_client(live_url, api_key):
    from openai import OpenAI

    _, raw = api_key
    return OpenAI(base_url=f"{live_url}/v1", api_key=raw, max_retries=0, timeout=30)


@pytest.fixture(autouse=True, scope="session")
def _strict_error_codes():
    """An error code missing from the registry (generation/errors.py) fails the test that raised it."""
    from generation import errors

    errors.STRICT = True
    yield
    errors.STRICT = False


@pytest.fixture(autouse=True, scope="session")
def _fresh_cache():
    """The suite's Redis database starts empty (rate-limit counters from an earlier run must not leak in)."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Keys, limits, prices and the moderation policy are cached per process (config/process_cache.py); the live
    server shares this process, so each test starts from the database, and in-process spend counters start empty."""
    from billing import spend
    from config import process_cache

    process_cache.clear_local()
    spend._local_counters.reset()
    yield


@pytest.fixture(autouse=True)
def _fresh_provider_health():
    """Provider health (circuit breakers, EWMAs) starts clean for every test."""
    import asyncio

    from generation.pipeline import service as services

    asyncio.run(services.health_book().reset())
    yield


@pytest.fixture(autouse=True, scope="session")
def _celery_in_process():
    """Tasks run in-process in the suite (the worker test starts a real worker and switches this off)."""
    from config.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield


@pytest.fixture(autouse=True, scope="session")
def _close_connection_pool(django_db_setup, django_db_blocker):
    """Give the psycopg pool's connections back before pytest-django drops the test database."""
    yield
    from django.db import connections

    with django_db_blocker.unblock():
        main = connections["default"]
        if main.vendor == "postgresql" and main.settings_dict["NAME"].startswith("test_"):
            # the live server's async pool, server processes killed mid-request, ...
            with main.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                               "current_database() AND pid <> pg_backend_pid()")
        for conn in connections.all():
            close_pool = getattr(conn, "close_pool", None)
            if close_pool is not None:
                close_pool()

"""Database work from async code, on a small fixed set of threads.

Django's own `sync_to_async` runs ORM calls on a thread per request (thread-sensitive mode), and each thread keeps
its own database connection for the whole request, including the seconds spent waiting on an upstream: a thousand
requests in flight would hold a thousand PostgreSQL connections. Instead every burst of ORM work in the request
path runs here, on DB_THREADS threads, and gives its connection back to the pool (settings: psycopg pool) when the
burst ends. Measured in bench/capacity.py (docs/decisions.md).
"""
import functools
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

_executor = ThreadPoolExecutor(max_workers=getattr(settings, "DB_THREADS", 16), thread_name_prefix="db")


def _in_burst(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    finally:
        connections.close_all()  # with the pool: back to the pool, not a real disconnect


async def run(fn, *args, **kwargs):
    """Await `fn(*args, **kwargs)` run on a database thread; the connection is released when it returns."""
    return await sync_to_async(functools.partial(_in_burst, fn, *args, **kwargs), thread_sensitive=False,
                               executor=_executor)()


def insert(objs: list, *, using: str = "default") -> None:
    """INSERT unsaved model instances of one model in one statement and set their primary keys: what
    `bulk_create` does, without its query compiler, for the request path's hot writes (one ledger row, its outbox
    row, its attempts per request: Django's compiler cost ~300 µs per row of CPU there, this ~40 µs; measured in
    docs/decisions.md). Fields are converted as the ORM converts them (`pre_save`, `get_db_prep_save`); no signals,
    like bulk_create. PostgreSQL and SQLite (3.35+) both return the new ids."""
    if not objs:
        return
    from django.db.models import AutoField

    model = type(objs[0])
    connection = connections[using]
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not isinstance(f, AutoField)]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = []
    for obj in objs:
        for f in fields:
            params.append(f.get_db_prep_save(f.pre_save(obj, True), connection))
    pk = meta.pk
    sql = (f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({columns}) VALUES "
           + ", ".join([row] * len(objs)) + f" RETURNING {connection.ops.quote_name(pk.column)}")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [r[0] for r in cursor.fetchall()]
    for obj, new_id in zip(objs, ids):
        setattr(obj, pk.attname, new_id)
        obj._state.adding, obj._state.db = False, using


# --- The request path's one write, on the event loop -----------------------------------------------------------------
# The request path's write after the upstream call is one statement (billing/recording.py). On PostgreSQL it goes
# through an async psycopg pool on the event loop itself: no thread hop, one round trip, autocommit (one statement is
# its own transaction). Measured: the thread-and-ORM write cost ~3 ms of latency and ~1.6 ms of CPU per request at
# one request at a time (docs/decisions.md). Elsewhere (SQLite, the embedded default) callers use `run`.

_async_pools: dict = {}
ASYNC_POOL_MAX = 8  # per process and event loop


def async_postgres_available(using: str = "default") -> bool:
    return connections[using].vendor == "postgresql"


def async_conninfo(using: str = "default") -> dict:
    """psycopg connection keywords for `using` (the test database's name in tests: read when first needed)."""
    params = dict(connections[using].get_connection_params())
    for django_only in ("pool", "server_side_binding", "cursor_factory", "context", "prepare_threshold"):
        params.pop(django_only, None)
    return params


async def async_pool(using: str = "default"):
    """This event loop's psycopg AsyncConnectionPool (autocommit connections), opened on first use."""
    import asyncio

    from psycopg_pool import AsyncConnectionPool

    loop = asyncio.get_running_loop()
    key = (loop, using)
    entry = _async_pools.get(key)
    if entry is None:
        for old in [k for k in _async_pools if k[0].is_closed()]:
            _async_pools.pop(old, None)  # its loop is gone; PostgreSQL drops the connections with the sockets
        params = async_conninfo(using)

        async def configure(conn):
            await conn.set_autocommit(True)

        pool = AsyncConnectionPool(kwargs=params, min_size=1, max_size=ASYNC_POOL_MAX, open=False,
                                   configure=configure, timeout=settings.DATABASES[using].get("OPTIONS", {})
                                   .get("pool", {}).get("timeout", 30.0), name=f"imagegate-async-{using}")
        entry = _async_pools[key] = (pool, asyncio.ensure_future(pool.open()))  # concurrent callers await it too
    pool, opened = entry
    if not opened.done():
        await asyncio.shield(opened)
    return pool


def has_async_pool(using: str = "default") -> bool:
    """Whether the running event loop already has its async pool (async_pool opens one on first use)."""
    import asyncio

    return (asyncio.get_running_loop(), using) in _async_pools


async def close_async_pools() -> None:
    """Close this event loop's async pools (server shutdown, tests)."""
    import asyncio

    loop = asyncio.get_running_loop()
    for key in [k for k in _async_pools if k[0] is loop]:
        await _async_pools.pop(key)[0].close()

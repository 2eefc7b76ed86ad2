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

"""Per-process caches of rows that change rarely, invalidated in every process within a second.

Every /v1 request needs its API key and organization, the billing limits, a price and the moderation policy.
Reading them from PostgreSQL each time would be a database round trip before the upstream call; each process keeps
them in memory instead (`ProcessCache`), and the request path touches the database only after the upstream answered.

Invalidation. Each cache belongs to a namespace ("api_keys", "billing", "prices", "moderation"). A change calls
`invalidate(namespace)` (or happens to a model registered with `invalidate_on_change`): this process drops the
namespace at once, and a new version number for it is written to the shared cache (Redis in production), now and
again when the surrounding transaction commits, so no process can reload a row from before the commit and keep it.
A watcher thread in every process reads all namespace versions (one MGET) every POLL_SECONDS and drops each
namespace whose version moved. So a revoked key, a changed limit, price or policy takes effect in every process
within POLL_SECONDS plus one round trip (tests/test_process_cache.py shows it with two server processes).

If the versions cannot be read (Redis down), entries older than FRESH_WITHIN are treated as missing and reloaded
from the database, so the bound holds without Redis too, at the cost of more queries. Without Redis at all (the
embedded default: one process, local-memory cache) invalidation is in-process and the watcher reads local memory.

A loader's result (None included: "no such key" is cached too) is stored only if no invalidation happened while it
ran, so a slow load cannot put back a value that a concurrent change made stale.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
FRESH_WITHIN = 0.75  # seconds since the last successful version read for cached entries to be trusted as they are
VERSION_KEY = "process-cache:version:{}"
MISSING: Any = object()

_namespaces: dict[str, list[ProcessCache]] = defaultdict(list)
_registry_lock = threading.Lock()


class ProcessCache:
    """A dict of loaded values for one namespace, trusted while the namespace's version has not moved.

    `get(key, loader)` (sync: the loader may query the database) and `aget(key, loader)` (async: a hit costs no
    I/O; a miss runs the loader on a database thread). `ttl` (seconds) is a safety net, not the invalidation path."""

    def __init__(self, namespace: str, *, ttl: float = 600.0, max_entries: int = 50_000):
        self.namespace = namespace
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[Any, float]] = {}
        self._generation = 0
        self._lock = threading.Lock()
        with _registry_lock:
            _namespaces[namespace].append(self)

    def peek(self, key: Hashable) -> Any:
        """The cached value, or MISSING (never loads)."""
        _watcher.ensure_running()
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        value, loaded_at = entry
        now = time.monotonic()
        if now - loaded_at > self.ttl or (now - loaded_at > FRESH_WITHIN and not _watcher.fresh(now)):
            return MISSING
        return value

    def get(self, key: Hashable, loader: Callable[[Hashable], Any]) -> Any:
        value = self.peek(key)
        if value is not MISSING:
            return value
        generation = self._generation
        loaded_at = time.monotonic()
        value = loader(key)
        with self._lock:
            if self._generation == generation:
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[key] = (value, loaded_at)
        return value

    async def aget(self, key: Hashable, loader: Callable[[Hashable], Any]) -> Any:
        value = self.peek(key)
        if value is not MISSING:
            return value
        from config import db

        return await db.run(self.get, key, loader)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()


def clear_local(*namespaces: str) -> None:
    """Drop this process's entries of `namespaces` (all namespaces when none are named)."""
    with _registry_lock:
        caches = [c for n in (namespaces or list(_namespaces)) for c in _namespaces.get(n, [])]
    for cache in caches:
        cache.clear()


def _bump(namespaces: tuple[str, ...]) -> None:
    from django.core.cache import cache

    clear_local(*namespaces)
    try:
        cache.set_many({VERSION_KEY.format(n): uuid.uuid4().hex for n in namespaces}, timeout=None)
    except Exception:  # other processes stop trusting their entries after FRESH_WITHIN when they cannot read either
        log.warning("Could not publish the invalidation of %s", ", ".join(namespaces), exc_info=True)


def invalidate(*namespaces: str) -> None:
    """Every process drops `namespaces` within POLL_SECONDS: now, and again when the current transaction commits."""
    from django.db import connection, transaction

    _bump(namespaces)
    if connection.in_atomic_block:
        transaction.on_commit(lambda: _bump(namespaces))


def invalidate_on_change(model, *namespaces: str) -> None:
    """Invalidate `namespaces` whenever a row of `model` is saved or deleted through the ORM (QuerySet.update()
    sends no signal: services that use it call `invalidate` themselves)."""
    from django.db.models.signals import post_delete, post_save

    def receiver(sender, **kwargs):
        invalidate(*namespaces)

    uid = f"process-cache:{model._meta.label}:{','.join(namespaces)}"
    post_save.connect(receiver, sender=model, weak=False, dispatch_uid=uid + ":save")
    post_delete.connect(receiver, sender=model, weak=False, dispatch_uid=uid + ":delete")


class _Watcher:
    """One daemon thread per process: reads every namespace's version and drops the ones that moved."""

    def __init__(self):
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._versions: dict[str, Any] = {}
        self._ok_at = float("-inf")
        self._warned_at = float("-inf")

    def ensure_running(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._versions, self._ok_at = {}, float("-inf")
            threading.Thread(target=self._run, name="process-cache-watcher", daemon=True).start()
            self._pid = os.getpid()

    def fresh(self, now: float) -> bool:
        return now - self._ok_at <= FRESH_WITHIN

    def _run(self) -> None:
        while True:
            self.poll()
            time.sleep(POLL_SECONDS)

    def poll(self) -> None:
        from django.core.cache import cache

        with _registry_lock:
            names = list(_namespaces)
        started = time.monotonic()
        try:
            values = cache.get_many([VERSION_KEY.format(n) for n in names])
        except Exception:
            if started - self._warned_at > 60:
                self._warned_at = started
                log.warning("Cannot read the process-cache versions; cached rows are reloaded every %.2f s",
                            FRESH_WITHIN, exc_info=True)
            return
        moved = []
        for name in names:
            version = values.get(VERSION_KEY.format(name))
            if name not in self._versions or self._versions[name] != version:  # first sight: nothing is known yet
                moved.append(name)
            self._versions[name] = version
        if moved:
            clear_local(*moved)
        self._ok_at = started  # what was cached before `started` has now been checked


_watcher = _Watcher()

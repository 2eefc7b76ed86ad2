"""The request path's one transaction after the upstream call, committed together with its neighbours'.

What a request leaves behind is written in one transaction: its ledger row and billing outbox row (billing writes
those: billing/recording.py), its upstream attempts and stored images' rows; the key's last use is recorded at most
once a minute per key and process. Concurrent
requests of one process share that transaction (group commit): a request hands its write to this process's
committer and awaits it; while one batch is being written, the writes that arrive meanwhile wait and go together
in the next. One request alone is written at once (nothing waits for a timer), and under load one statement serves
many requests, which cuts the database work per request (docs/decisions.md, bench/gateway.py).

A batch that fails is retried one write at a time, so one bad write fails only its own request. Every request
still learns whether its own rows committed before it answers: nothing is served that the ledger does not know.
"""
from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass, field

from django.db import models
from django.utils import timezone

from accounts import services as account_services
from billing import recording
from billing.models import LedgerEntry
from config import db

log = logging.getLogger(__name__)

MAX_BATCH = 200


@dataclass
class Write:
    """One request's rows: `usage` are record_usage's keyword arguments; `rows` are unsaved rows of other tables
    (upstream attempts, stored images); `touch_key` is the API key whose last use to record (or None)."""

    usage: dict
    rows: list[models.Model] = field(default_factory=list)
    touch_key: object | None = None


async def write_batch(writes: list[Write]) -> list[LedgerEntry | Exception]:
    """Write `writes` in one transaction (billing/recording.py: one statement on PostgreSQL); if that fails, each
    alone, so one bad write fails only its own request. One result per write."""
    try:
        results: list = await recording.record_batch([w.usage for w in writes], [r for w in writes for r in w.rows])
    except Exception as exc:
        if len(writes) == 1:
            results = [exc]
        else:
            results = [(await write_batch([w]))[0] for w in writes]
    now = timezone.now()
    due = [w.touch_key for w in writes if w.touch_key is not None and account_services.touch_due(w.touch_key, now)]
    if due:  # at most once a minute per key and process: not a second write in steady state
        try:
            await db.run(lambda: [account_services.touch_api_key(api_key=key, now=now) for key in due])
        except Exception:
            log.warning("Could not record the last use of %d key(s)", len(due), exc_info=True)
    return results


class _Committer:
    def __init__(self):
        self.pending: list[tuple[Write, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                try:
                    results = await write_batch([w for w, _ in batch])
                except BaseException as exc:  # every write of the batch learns it
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.task = None


_committers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Committer] = weakref.WeakKeyDictionary()


async def commit(write: Write) -> LedgerEntry:
    """Write one request's rows (with whatever else is waiting) and return its ledger row once committed."""
    loop = asyncio.get_running_loop()
    committer = _committers.get(loop)
    if committer is None:
        committer = _committers[loop] = _Committer()
    future = loop.create_future()
    committer.pending.append((write, future))
    if committer.task is None:
        committer.task = loop.create_task(committer.flush())
    return await future

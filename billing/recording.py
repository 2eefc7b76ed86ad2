"""Recording usage from the request path: a batch of requests' ledger rows, their billing outbox rows and the rows
the caller writes with them (upstream attempts, stored images), in one SQL statement.

On PostgreSQL the statement is one INSERT per table chained in a WITH (the outbox rows are selected from the ledger
rows just inserted), sent on the event loop through an async psycopg connection in autocommit: one round trip, one
transaction, no thread hop. Django's query compiler is not in the way either: columns and values come from the
models' own fields (`_meta`, `get_db_prep_save`), so the statement follows the models. Measured on the gateway
benchmark: the write went from ~3 ms of latency and ~1.6 ms of CPU per request (the ORM on a database thread, five
round trips) to a fraction of a millisecond (docs/decisions.md). Elsewhere (SQLite, the embedded default) the same
rows are written through the ORM on a database thread, in one transaction.

Only billing writes ledger rows: this module and services.py.
"""
from __future__ import annotations

from django.conf import settings
from django.db import connections, transaction
from django.db.models import AutoField, Model
from django.utils import timezone

from config import db

from . import sealing
from .models import LedgerEntry, Price, UsageEvent


class UnpricedModel(Exception):
    """A successful image with no price: refuse rather than record $0 by accident."""


def entries_for(usages: list[dict]) -> list[LedgerEntry]:
    """Unsaved ledger rows for record_usage's keyword arguments: a success costs n × the price's unit price
    (micro-USD), anything else 0."""
    now = timezone.now()
    entries = []
    for u in usages:
        status = u["status"]
        succeeded = status == LedgerEntry.Status.SUCCEEDED
        price: Price | None = u.get("price")
        if succeeded and price is None:
            raise UnpricedModel(f"No price for {u.get('model')} {u.get('size')} {u.get('quality')}")
        unit = price.unit_price_micros if succeeded else 0
        n = u.get("n", 0)
        upstream = u.get("upstream_cost_micros")
        entries.append(LedgerEntry(
            organization=u["organization"], api_key=u.get("api_key"), request_id=u["request_id"],
            endpoint=u.get("endpoint", "generations"), model=u.get("model", "")[:100],
            served_model=(u.get("served_model") or "")[:100], end_user=(u.get("end_user") or "")[:256],
            requested_model=(u.get("requested_model") or u.get("model", ""))[:100],
            provider=u.get("provider", "")[:50], size=u.get("size", "")[:20], quality=u.get("quality", "")[:20],
            n=n, price=price if succeeded else None, unit_price_micros=unit, cost_micros=unit * n if succeeded else 0,
            upstream_cost_micros=upstream if succeeded else None, latency_ms=max(0, int(u.get("latency_ms", 0))),
            status=status, error_code=u.get("error_code", "")[:64], created_at=now,
        ))
    return entries


def outbox_rows(entries: list[LedgerEntry]) -> list[UsageEvent]:
    return [UsageEvent(ledger_entry=e, organization=e.organization, value_micros=e.cost_micros,
                       occurred_at=e.created_at) for e in entries if e.cost_micros > 0]


def write_sync(entries: list[LedgerEntry], rows: list[Model]) -> None:
    """The same rows through the ORM's connection, in one transaction (SQLite; tests that hold a transaction)."""
    with transaction.atomic(savepoint=False):
        db.insert(entries)
        db.insert(outbox_rows(entries))
        for group in _by_model(rows).values():
            db.insert(group)
        transaction.on_commit(sealing.after_ledger_write)


async def record_batch(usages: list[dict], rows: list[Model]) -> list[LedgerEntry]:
    """Write the ledger rows of `usages` (record_usage's keyword arguments each), their outbox rows and `rows` in
    one transaction; return the ledger rows with their ids. Raises UnpricedModel, or the database's error (then
    nothing of the batch was written)."""
    entries = entries_for(usages)
    if not db.async_postgres_available():
        await db.run(write_sync, entries, rows)
        return entries
    sql, params = _statement(entries, rows)
    pool = await db.async_pool()
    async with pool.connection() as conn:
        cursor = await conn.execute(sql, params)
        returned = await cursor.fetchall()
    ids = dict((request_id, pk) for pk, request_id in returned)
    for entry in entries:
        entry.pk = ids[entry.request_id]
        entry._state.adding, entry._state.db = False, "default"
    if settings.LEDGER_SEAL_INLINE:
        await db.run(sealing.after_ledger_write)
    return entries


def _by_model(rows: list[Model]) -> dict[type, list[Model]]:
    groups: dict[type, list[Model]] = {}
    for row in rows:
        groups.setdefault(type(row), []).append(row)
    return groups


def _values(model, objs, connection) -> tuple[str, str, list]:
    """(quoted table, column list, VALUES tuples and their parameters) for inserting `objs`."""
    q = connection.ops.quote_name
    fields = [f for f in model._meta.concrete_fields if not isinstance(f, AutoField)]
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [f.get_db_prep_save(f.pre_save(obj, True), connection) for obj in objs for f in fields]
    return q(model._meta.db_table), ", ".join(q(f.column) for f in fields), ", ".join([row] * len(objs)), params


def _statement(entries: list[LedgerEntry], rows: list[Model]) -> tuple[str, list]:
    connection = connections["default"]
    q = connection.ops.quote_name
    table, columns, values, params = _values(LedgerEntry, entries, connection)
    field = UsageEvent._meta.get_field
    parts = [
        f"ledger AS (INSERT INTO {table} ({columns}) VALUES {values} RETURNING {q('id')}, {q('request_id')}, "
        f"{q('organization_id')}, {q('cost_micros')}, {q('created_at')})",
        f"outbox AS (INSERT INTO {q(UsageEvent._meta.db_table)} ({q(field('ledger_entry').column)}, "
        f"{q(field('organization').column)}, {q(field('value_micros').column)}, {q(field('occurred_at').column)}) "
        f"SELECT {q('id')}, {q('organization_id')}, {q('cost_micros')}, {q('created_at')} FROM ledger "
        f"WHERE {q('cost_micros')} > 0)",
    ]
    for i, (model, objs) in enumerate(_by_model(rows).items()):
        t, c, v, p = _values(model, objs, connection)
        parts.append(f"also{i} AS (INSERT INTO {t} ({c}) VALUES {v})")
        params += p
    return "WITH " + ", ".join(parts) + f" SELECT {q('id')}, {q('request_id')} FROM ledger", params

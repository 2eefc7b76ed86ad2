"""The ledger's hash chain: how a row's hash is computed, appended and verified.

Each organization's rows form a chain: sequence 1, 2, 3, ...; a row's `entry_hash` is SHA-256 over its content and
the previous row's hash (`prev_hash`; 64 zeros for the first). Editing a row changes its hash; deleting one leaves
a gap in the sequence and a `prev_hash` that points at nothing; deleting the newest rows leaves the head (LedgerHead)
ahead of the last row. The database itself refuses UPDATE and DELETE on the ledger (a trigger, see migrations);
the chain proves that nobody went around it.
"""
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone

GENESIS = "0" * 64

# The fields a row's hash covers, in order. Adding one is a new chain version: never change this silently.
HASHED_FIELDS = (
    "organization_id", "sequence", "request_id", "endpoint", "api_key_id", "model", "provider", "size", "quality",
    "n", "price_id", "unit_price_micros", "cost_micros", "upstream_cost_micros", "latency_ms", "status",
    "error_code", "created_at",
)


def _canonical(value):
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def digest(values: dict, prev_hash: str) -> str:
    payload = json.dumps([[name, _canonical(values[name])] for name in HASHED_FIELDS] + [["prev", prev_hash]],
                         separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def row_values(entry) -> dict:
    return {name: getattr(entry, name) for name in HASHED_FIELDS}


@dataclass(frozen=True)
class Break:
    organization_id: int
    sequence: int | None
    request_id: str
    problem: str

    def __str__(self):
        where = f"sequence {self.sequence}" if self.sequence is not None else "head"
        return f"organization {self.organization_id}, {where} ({self.request_id or '-'}): {self.problem}"


def verify_chain(organization_id: int, rows, head_sequence: int | None, head_hash: str | None) -> list[Break]:
    """Check one organization's rows (an iterable in sequence order) against the chain rules."""
    breaks: list[Break] = []
    expected_seq, prev = 1, GENESIS
    for row in rows:
        if row.sequence != expected_seq:
            breaks.append(Break(organization_id, row.sequence, row.request_id,
                                f"rows {expected_seq}..{row.sequence - 1} are missing (deleted)"))
        if row.prev_hash != prev:
            breaks.append(Break(organization_id, row.sequence, row.request_id,
                                "prev_hash does not match the previous row's hash (a row before it was changed or "
                                "removed)"))
        if digest(row_values(row), row.prev_hash) != row.entry_hash:
            breaks.append(Break(organization_id, row.sequence, row.request_id,
                                "content does not match its hash (the row was edited)"))
        expected_seq, prev = row.sequence + 1, row.entry_hash
    if head_sequence is not None and head_sequence != expected_seq - 1:
        breaks.append(Break(organization_id, None, "", f"the head is at sequence {head_sequence} but the last row is "
                                                       f"{expected_seq - 1} (newest rows were deleted)"))
    if head_hash is not None and head_sequence and head_hash != prev:
        breaks.append(Break(organization_id, None, "", "the head's hash does not match the last row"))
    return breaks

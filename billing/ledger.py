"""The ledger's hash chain: how a row's hash is computed and how a chain is verified.

Each organization's rows form a chain in the order the sealer (billing/sealing.py) took them: sequence 1, 2, 3, ...;
a row's hash (its LedgerSeal's `entry_hash`) is SHA-256 over its content, its sequence and the previous row's hash
(`prev_hash`; 64 zeros for the first). Editing a row changes its hash; deleting one leaves its seal pointing at
nothing (or, with the seal deleted too, a gap in the sequence and a `prev_hash` that points at nothing); deleting the
newest rows leaves the head (LedgerHead) ahead of the last row. The database itself refuses UPDATE and DELETE on
the ledger and the seals (triggers, see migrations); the chain proves that nobody went around them.
"""
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

GENESIS = "0" * 64

# The fields a row's hash covers, in order. Adding one is a new chain version: never change this silently.
HASHED_FIELDS = (
    "organization_id", "sequence", "request_id", "endpoint", "api_key_id", "model", "provider", "size", "quality",
    "n", "price_id", "unit_price_micros", "cost_micros", "upstream_cost_micros", "latency_ms", "status",
    "error_code", "created_at",
)
# Fields added later: hashed only when set, so every row sealed before they existed keeps its hash.
HASHED_WHEN_SET = ("served_model", "end_user", "requested_model")


def _canonical(value):
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def digest(values: dict, prev_hash: str) -> str:
    pairs = [[name, _canonical(values[name])] for name in HASHED_FIELDS]
    pairs += [[name, values[name]] for name in HASHED_WHEN_SET if values.get(name)]
    payload = json.dumps(pairs + [["prev", prev_hash]], separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def row_values(entry, *, sequence: int) -> dict:
    """The hashed values of a ledger row at chain position `sequence`."""
    values = {name: sequence if name == "sequence" else getattr(entry, name) for name in HASHED_FIELDS}
    values.update({name: getattr(entry, name, "") for name in HASHED_WHEN_SET})
    return values


@dataclass(frozen=True)
class Break:
    organization_id: int
    sequence: int | None
    request_id: str
    problem: str

    def __str__(self):
        where = f"sequence {self.sequence}" if self.sequence is not None else "head"
        return f"organization {self.organization_id}, {where} ({self.request_id or '-'}): {self.problem}"


def verify_chain(organization_id: int, pairs, head_sequence: int | None, head_hash: str | None) -> list[Break]:
    """Check one organization's chain: `pairs` is an iterable of (seal, ledger row or None if the row is gone) in
    sequence order."""
    breaks: list[Break] = []
    expected_seq, prev = 1, GENESIS
    missing_from = None  # first sequence of a run of seals whose rows are gone
    last_present = 0

    def close_missing_run(upto: int):
        nonlocal missing_from
        if missing_from is not None and upto >= missing_from:
            breaks.append(Break(organization_id, missing_from, "",
                                f"rows {missing_from}..{upto} are missing (deleted)"))
        missing_from = None

    for seal, row in pairs:
        if seal.sequence != expected_seq:
            close_missing_run(expected_seq - 1)
            breaks.append(Break(organization_id, seal.sequence, row.request_id if row else "",
                                f"rows {expected_seq}..{seal.sequence - 1} are missing (deleted)"))
        if seal.prev_hash != prev:
            breaks.append(Break(organization_id, seal.sequence, row.request_id if row else "",
                                "prev_hash does not match the previous row's hash (a row before it was changed or "
                                "removed)"))
        if row is None:
            if missing_from is None:
                missing_from = seal.sequence
        else:
            close_missing_run(seal.sequence - 1)
            last_present = seal.sequence
            if digest(row_values(row, sequence=seal.sequence), seal.prev_hash) != seal.entry_hash:
                breaks.append(Break(organization_id, seal.sequence, row.request_id,
                                    "content does not match its hash (the row was edited)"))
        expected_seq, prev = seal.sequence + 1, seal.entry_hash
    last_seal = expected_seq - 1
    if missing_from is not None:  # the newest rows are gone but their seals remain
        missing_from = None
        breaks.append(Break(organization_id, None, "", f"the head is at sequence {head_sequence or last_seal} but the "
                                                       f"last row is {last_present} (newest rows were deleted)"))
    elif head_sequence is not None and head_sequence != last_seal:
        breaks.append(Break(organization_id, None, "", f"the head is at sequence {head_sequence} but the last row is "
                                                       f"{last_seal} (newest rows were deleted)"))
    if head_hash is not None and head_sequence and head_sequence == last_seal and head_hash != prev:
        breaks.append(Break(organization_id, None, "", "the head's hash does not match the last row"))
    return breaks

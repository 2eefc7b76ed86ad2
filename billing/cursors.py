"""Every pagination cursor Imagegate hands out: opaque to clients (URL-safe base64 without padding), versioned, and
checked on the way back in (a cursor this server did not make is BadCursor, never a 500).

  * positions ("r1:<created_at in unix microseconds>:<ledger row id>"): the last row of a page of ledger rows newest
    first by (created_at, id) -- the audit API's usage records and the dashboard's request log walk the ledger's
    (organization, -created_at) index from there, so page 1,000 costs what page 1 costs;
  * bucket pages ("b1:<bucket width>:<unix start of the next bucket>"): the audit API's usage and costs buckets.
"""
import base64
import binascii
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MICROS = 32503680000 * 1_000_000  # year 3000
_MAX_ID = 2**63 - 1


class BadCursor(ValueError):
    """A cursor that this server did not produce (or not for this query); the message says which, for the client."""


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(token: str) -> list[str]:
    if not token or len(token) > 200 or not all(c.isalnum() or c in "-_" for c in token):
        raise BadCursor("malformed")
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii").split(":")
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise BadCursor("malformed") from exc


def encode_position(created_at: datetime, row_id: int) -> str:
    """The cursor after the ledger row (created_at, row_id)."""
    micros = (created_at - EPOCH) // timedelta(microseconds=1)
    return _encode(f"r1:{micros}:{row_id}")


def decode_position(token: str) -> tuple[datetime, int]:
    """(created_at as an aware UTC datetime, ledger row id); BadCursor if malformed."""
    parts = _decode(token)
    if (len(parts) != 3 or parts[0] != "r1" or not parts[1].isdigit() or not parts[2].isdigit()
            or len(parts[1]) > 18 or len(parts[2]) > 18):
        raise BadCursor("malformed")
    micros, row_id = int(parts[1]), int(parts[2])
    if micros > _MAX_MICROS or row_id > _MAX_ID:
        raise BadCursor("malformed")
    return EPOCH + timedelta(microseconds=micros), row_id


def encode_page(bucket_width: str, next_start: int) -> str:
    """The cursor of the bucket page starting at unix second `next_start`."""
    return _encode(f"b1:{bucket_width}:{next_start}")


def decode_page(token: str, bucket_width: str) -> int:
    """The unix second the page starts at; BadCursor if malformed or made for another bucket width."""
    parts = _decode(token)
    if len(parts) != 3 or parts[0] != "b1" or not parts[2].isdigit() or len(parts[2]) > 15:
        raise BadCursor("malformed")
    if parts[1] != bucket_width:
        raise BadCursor("This page cursor was made for another bucket_width.")
    return int(parts[2])

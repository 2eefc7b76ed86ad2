"""Our list prices, as data: (model, size, quality, micro-USD per image, effective from, UTC).

Append-only: to change a price add a row with a later effective date; never edit one that has been in force, since
ledger rows point at it. `manage.py sync_prices` (and the migrations) insert rows that are missing.
"""
from datetime import datetime, timezone

_2025 = datetime(2025, 1, 1, tzinfo=timezone.utc)

PRICE_LIST: list[tuple[str, str, str, int, datetime]] = [
    # The built-in offline model: $0.001 per image at every size, so money flows end to end from day one.
    ("local-preview", "256x256", "standard", 1_000, _2025),
    ("local-preview", "512x512", "standard", 1_000, _2025),
    ("local-preview", "1024x1024", "standard", 1_000, _2025),
    ("local-preview", "1024x1792", "standard", 1_000, _2025),
    ("local-preview", "1792x1024", "standard", 1_000, _2025),
]


def sync(price_model) -> int:
    """Insert the rows of PRICE_LIST that `price_model` lacks; returns how many were added."""
    added = 0
    for model, size, quality, micros, effective_from in PRICE_LIST:
        _, created = price_model.objects.get_or_create(
            model=model, size=size, quality=quality, effective_from=effective_from,
            defaults={"unit_price_micros": micros},
        )
        added += created
    return added

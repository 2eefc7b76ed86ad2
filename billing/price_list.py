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
    # OpenAI: upstream list price + 10% (REFERENCE.md §1 lists the upstream prices).
    ("dall-e-2", "256x256", "standard", 17_600, _2025),
    ("dall-e-2", "512x512", "standard", 19_800, _2025),
    ("dall-e-2", "1024x1024", "standard", 22_000, _2025),
    ("dall-e-3", "1024x1024", "standard", 44_000, _2025),
    ("dall-e-3", "1024x1792", "standard", 88_000, _2025),
    ("dall-e-3", "1792x1024", "standard", 88_000, _2025),
    ("dall-e-3", "1024x1024", "hd", 88_000, _2025),
    ("dall-e-3", "1024x1792", "hd", 132_000, _2025),
    ("dall-e-3", "1792x1024", "hd", 132_000, _2025),
    ("gpt-image-1", "1024x1024", "low", 12_100, _2025),
    ("gpt-image-1", "1024x1024", "medium", 46_200, _2025),
    ("gpt-image-1", "1024x1024", "high", 183_700, _2025),
    ("gpt-image-1", "1024x1536", "low", 17_600, _2025),
    ("gpt-image-1", "1024x1536", "medium", 69_300, _2025),
    ("gpt-image-1", "1024x1536", "high", 275_000, _2025),
    ("gpt-image-1", "1536x1024", "low", 17_600, _2025),
    ("gpt-image-1", "1536x1024", "medium", 69_300, _2025),
    ("gpt-image-1", "1536x1024", "high", 275_000, _2025),
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

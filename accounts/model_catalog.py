"""The model ids an API key may be restricted to, for the keys page and key validation.

accounts cannot import generation (apps import one way: generation > billing > accounts), so the generation app
registers its catalog here when Django starts (generation/apps.py). Until something registers, no id is known and
`unknown` refuses nothing (accounts on its own still checks the id's shape)."""
import difflib
from collections.abc import Callable

_source: Callable[[], list[tuple[str, str]]] | None = None


def register(source: Callable[[], list[tuple[str, str]]]) -> None:
    """Install the catalog: `source()` returns [(model_id, one-line description)], in display order."""
    global _source
    _source = source


def choices() -> list[tuple[str, str]]:
    """[(model_id, description)] of the catalog; [] when none is registered."""
    return list(_source()) if _source is not None else []


def problem(model_id: str) -> str | None:
    """Why `model_id` cannot be allowed on a key (not in the catalog, with the nearest id as a suggestion), or None."""
    ids = [model for model, _ in choices()]
    if not ids or model_id in ids:
        return None
    near = difflib.get_close_matches(model_id, ids, n=1, cutoff=0.6)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    return f"'{model_id[:40]}' is not a model in the catalog.{hint}"

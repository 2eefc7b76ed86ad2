"""Provider registry: which adapters are switched on, built from configuration passed in once."""
from .base import Provider
from .local import LocalProvider


def build_providers() -> dict[str, Provider]:
    """Every enabled provider by name. `local` is always on; upstreams join as their keys are configured."""
    return {"local": LocalProvider()}


_registry: dict[str, Provider] | None = None


def registry() -> dict[str, Provider]:
    global _registry
    if _registry is None:
        _registry = build_providers()
    return _registry


def reset_registry() -> None:
    """Forget the built providers (tests that change configuration call this)."""
    global _registry
    _registry = None

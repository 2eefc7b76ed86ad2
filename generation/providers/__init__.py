"""Provider registry: which adapters are switched on, built once from configuration.

A provider is on when its key is set (settings.py reads the environment); `local` is always on. Adapters receive
their configuration here, in their constructors, and never read settings themselves.
"""
from django.conf import settings

from .base import Provider
from .local import LocalProvider


def build_providers() -> dict[str, Provider]:
    providers: dict[str, Provider] = {"local": LocalProvider()}
    timeout = settings.PROVIDER_TIMEOUT_SECONDS
    if settings.OPENAI_API_KEY:
        from .openai import OpenAIProvider

        providers["openai"] = OpenAIProvider(api_key=settings.OPENAI_API_KEY, base_url=settings.OPENAI_BASE_URL,
                                             timeout=timeout)
    if settings.STABILITY_API_KEY:
        from .stability import StabilityProvider

        providers["stability"] = StabilityProvider(api_key=settings.STABILITY_API_KEY,
                                                   base_url=settings.STABILITY_BASE_URL, timeout=timeout)
    if settings.BFL_API_KEY:
        from .bfl import BFLProvider

        providers["bfl"] = BFLProvider(api_key=settings.BFL_API_KEY, base_url=settings.BFL_BASE_URL,
                                       deadline=timeout)
    if settings.REPLICATE_API_TOKEN:
        from .replicate import ReplicateProvider

        providers["replicate"] = ReplicateProvider(api_token=settings.REPLICATE_API_TOKEN,
                                                   base_url=settings.REPLICATE_BASE_URL, deadline=timeout)
    if settings.GEMINI_API_KEY:
        from .gemini import GeminiProvider

        providers["gemini"] = GeminiProvider(api_key=settings.GEMINI_API_KEY, base_url=settings.GEMINI_BASE_URL,
                                             timeout=timeout)
    if settings.RECRAFT_API_KEY:
        from .recraft import RecraftProvider

        providers["recraft"] = RecraftProvider(api_key=settings.RECRAFT_API_KEY, base_url=settings.RECRAFT_BASE_URL,
                                               timeout=timeout)
    if settings.IDEOGRAM_API_KEY:
        from .ideogram import IdeogramProvider

        providers["ideogram"] = IdeogramProvider(api_key=settings.IDEOGRAM_API_KEY,
                                                 base_url=settings.IDEOGRAM_BASE_URL, timeout=timeout)
    if settings.BEDROCK_ENABLED:
        from .bedrock import BedrockProvider

        providers["bedrock"] = BedrockProvider(
            region=settings.AWS_REGION, endpoint_url=settings.BEDROCK_ENDPOINT_URL or None,
            aws_access_key_id=settings.AWS_ACCESS_KEY_ID or None,
            aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY or None,
            aws_session_token=settings.AWS_SESSION_TOKEN or None, timeout=timeout,
        )
    if settings.OPENAI_COMPATIBLE_BASE_URL and settings.OPENAI_COMPATIBLE_MODELS:
        from .. import catalog
        from .openai import OpenAIProvider

        models = set(settings.OPENAI_COMPATIBLE_MODELS)
        for model_id in settings.OPENAI_COMPATIBLE_MODELS:
            catalog.register_self_hosted(model_id)
        providers["openai_compatible"] = OpenAIProvider(
            api_key=settings.OPENAI_COMPATIBLE_API_KEY, base_url=settings.OPENAI_COMPATIBLE_BASE_URL,
            timeout=timeout, name="openai_compatible", models=models,
            cost_micros={m: settings.OPENAI_COMPATIBLE_UPSTREAM_COST_MICROS for m in models},
        )
    return providers


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

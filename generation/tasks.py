from celery import shared_task

from generation.pipeline import storage


@shared_task
def expire_images() -> int:
    return storage.delete_expired()


@shared_task
def purge_prompts() -> int:
    """Blank the prompts past their organization's retention (generation/prompts.py)."""
    from generation import prompts

    return prompts.purge_expired()


@shared_task
def expire_idempotent_responses() -> int:
    from generation.pipeline import idempotency

    return idempotency.delete_expired_durable()

from celery import shared_task

from . import storage


@shared_task
def expire_images() -> int:
    return storage.delete_expired()

from celery import shared_task
from celery.signals import worker_process_shutdown, worker_shutdown

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


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_image_job(self, job_id: str) -> str | None:
    """Run one async image job (generation/pipeline/jobs.py). Acknowledged only when it ends, and requeued when its
    worker process is lost, so a killed worker's job runs again (charged once: see jobs.run). When another worker
    holds the job's lease, retried once that lease would have run out."""
    from generation.pipeline import jobs

    try:
        status = jobs.run(job_id)
    except jobs.LeaseHeld as exc:
        raise self.retry(countdown=max(1.0, exc.seconds), max_retries=None) from exc
    send_webhooks(job_id)
    return status


def send_webhooks(job_id: str) -> None:
    """Hand a job's pending webhook deliveries to the workers (retry_webhooks finds any this misses)."""
    from generation.pipeline import webhooks

    for delivery_id in webhooks.pending_for_job(job_id):
        deliver_webhook.delay(delivery_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def deliver_webhook(delivery_id: int) -> str | None:
    """One attempt of one webhook delivery (generation/pipeline/webhooks.py)."""
    from generation.pipeline import webhooks

    return webhooks.deliver(delivery_id)


@shared_task
def retry_webhooks() -> int:
    """Hand every due webhook delivery (a retry whose backoff has passed, a resend, one never handed out) to the
    workers."""
    from generation.pipeline import webhooks

    due = webhooks.due()
    for delivery_id in due:
        deliver_webhook.delay(delivery_id)
    return len(due)


@shared_task
def expire_image_jobs() -> int:
    from generation.pipeline import jobs

    return jobs.delete_expired()


@worker_process_shutdown.connect  # a pool process
@worker_shutdown.connect  # the worker itself (the solo pool runs tasks there)
def _close_job_loop(**kwargs) -> None:
    from generation.pipeline import jobs

    jobs.close_loop()

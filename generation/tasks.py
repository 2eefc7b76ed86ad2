from celery import shared_task

from generation.pipeline import storage


@shared_task
def expire_images() -> int:
    return storage.delete_expired()


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
        return jobs.run(job_id)
    except jobs.LeaseHeld as exc:
        raise self.retry(countdown=max(1.0, exc.seconds), max_retries=None) from exc


@shared_task
def expire_image_jobs() -> int:
    from generation.pipeline import jobs

    return jobs.delete_expired()

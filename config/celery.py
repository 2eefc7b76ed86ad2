"""The Celery application.

With REDIS_URL set, tasks go to Redis and run in `make worker`; without it (the embedded default) they run
in-process (task_always_eager), so a single `make run` needs no broker.
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("imagegate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

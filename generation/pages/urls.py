"""Dashboard pages over the request log, included under /dashboard/ (config/urls.py)."""
from django.urls import path

from generation.pages import playground
from generation.pages import requests as dashboard_views
from generation.pages import webhooks as webhook_pages

urlpatterns = [
    path("playground/", playground.playground, name="playground"),
    path("requests/", dashboard_views.request_log, name="request-log"),
    path("requests/export.csv", dashboard_views.request_export, name="request-export"),
    path("requests/prompt-retention/", dashboard_views.prompt_retention, name="prompt-retention"),
    path("requests/<str:request_id>/", dashboard_views.request_detail, name="request-detail"),
    path("requests/<str:request_id>/prompt/delete/", dashboard_views.delete_prompt, name="request-prompt-delete"),
    path("webhooks/", webhook_pages.webhooks_page, name="webhooks"),
]

from django.urls import path, re_path

from . import views

urlpatterns = [
    path("images/generations", views.ImageGenerationsView.as_view(), name="images-generations"),
    path("models", views.ModelListView.as_view(), name="models-list"),
    path("models/<path:model_id>", views.ModelDetailView.as_view(), name="models-detail"),
]

# Anything else under /v1 is an unknown URL, answered in the error envelope (also with DEBUG on).
urlpatterns.append(re_path(r"^.*$", views.unknown_url, name="unknown-url"))

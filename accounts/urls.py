from django.urls import path

from . import views

urlpatterns = [
    path("keys/", views.api_keys, name="api-keys"),
    path("keys/<int:key_id>/revoke/", views.revoke_api_key, name="api-key-revoke"),
]

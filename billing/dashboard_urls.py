from django.urls import path

from . import views

urlpatterns = [
    path("", views.overview, name="dashboard"),
    path("billing/", views.billing_page, name="billing"),
]

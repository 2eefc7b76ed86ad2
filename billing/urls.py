"""Billing's routes: Stripe's (under /billing/: the webhook, Checkout, the customer portal) and its two customer pages
(under /dashboard/: the usage overview and the billing page). config/urls.py mounts both."""
from django.urls import path

from . import views

urlpatterns = [
    path("stripe/webhook/", views.stripe_webhook, name="stripe-webhook"),
    path("checkout/", views.checkout, name="billing-checkout"),
    path("portal/", views.portal, name="billing-portal"),
]

dashboard_urlpatterns = [
    path("", views.overview, name="dashboard"),
    path("billing/", views.billing_page, name="billing"),
]

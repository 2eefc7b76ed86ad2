from django.urls import path

from . import views

urlpatterns = [
    path("keys/", views.api_keys, name="api-keys"),
    path("keys/<int:key_id>/revoke/", views.revoke_api_key, name="api-key-revoke"),
    path("keys/<int:key_id>/rotate/", views.rotate_api_key, name="api-key-rotate"),
    path("team/", views.team, name="team"),
    path("settings/", views.organization_settings, name="organization-settings"),
    path("team/members/<int:membership_id>/role/", views.change_member_role, name="team-role"),
    path("team/members/<int:membership_id>/remove/", views.remove_member, name="team-remove"),
    path("team/invitations/<int:invitation_id>/revoke/", views.revoke_invitation, name="team-invitation-revoke"),
    path("invite/<str:token>/", views.accept_invite, name="invite-accept"),
]

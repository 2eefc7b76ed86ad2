"""What each role of an organization may do: the one table the pages check and the team page shows.

Owners do everything; admins everything but what concerns owners (accounts/services.py enforces that part of the
team rules); members see usage and nothing else: they cannot spend (the playground generates images at the
organization's cost), create keys, or change the team or billing.
"""

VIEW_USAGE = "view_usage"
GENERATE_IMAGES = "generate_images"
MANAGE_KEYS = "manage_keys"
MANAGE_TEAM = "manage_team"
MANAGE_BILLING = "manage_billing"
MANAGE_DATA = "manage_data"

PERMISSIONS = {  # permission → what the team page says it lets a person do
    VIEW_USAGE: "See usage, costs and the request log",
    GENERATE_IMAGES: "Generate images in the playground (charged to the organization)",
    MANAGE_KEYS: "Create, rotate and revoke API keys",
    MANAGE_TEAM: "Invite people and change roles",
    MANAGE_BILLING: "Change spend limits, subscribe, pay invoices",
    MANAGE_DATA: "Choose how long prompts are kept, and delete them",
}

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "owner": frozenset(PERMISSIONS),
    "admin": frozenset(PERMISSIONS),
    "member": frozenset({VIEW_USAGE}),
}


def table() -> list[dict]:
    """Rows for the team page: [{"permission", "label", "owner": bool, "admin": bool, "member": bool}]."""
    return [{"permission": p, "label": label, **{role: p in perms for role, perms in ROLE_PERMISSIONS.items()}}
            for p, label in PERMISSIONS.items()]


def refusal(role: str, permission: str) -> str:
    """Why a member with `role` may not do what `permission` allows, for the 403 page."""
    allowed = [r for r, perms in ROLE_PERMISSIONS.items() if permission in perms]
    what = PERMISSIONS.get(permission, permission)
    return (f"Your role ({role}) does not allow this: {what[0].lower() + what[1:]}. "
            f"Ask an {' or '.join(allowed)} of your organization.")

"""The staff audit log: Django's admin LogEntry, read-only. The admin writes a row for every add, change and delete
made through it; our custom actions (revoke, resolve, CSV export) write theirs with `log_staff_action`."""
from django.contrib import admin
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType

ACTION_FLAG_NAMES = {ADDITION: "Addition", CHANGE: "Change", DELETION: "Deletion"}


def log_staff_action(request, *, obj=None, model=None, message: str, object_repr: str | None = None) -> LogEntry:
    """One audit row for a staff action on `obj` (or on `model` as a whole, e.g. an export of a filtered set)."""
    model = model or type(obj)
    return LogEntry.objects.create(
        user_id=request.user.pk,
        content_type=ContentType.objects.get_for_model(model, for_concrete_model=False),
        object_id=str(obj.pk) if obj is not None else None,
        object_repr=(object_repr or (str(obj) if obj is not None else model._meta.verbose_name_plural))[:200],
        action_flag=CHANGE,
        change_message=message,
    )


@admin.register(LogEntry)
class StaffAuditLogAdmin(admin.ModelAdmin):
    list_display = ["action_time", "user", "content_type", "object_link", "action", "message"]
    list_filter = [("user", admin.RelatedOnlyFieldListFilter), "content_type", "action_flag"]
    search_fields = ["object_repr", "change_message"]
    date_hierarchy = "action_time"
    list_select_related = ["user", "content_type"]
    show_full_result_count = False
    readonly_fields = ["action_time", "user", "content_type", "object_id", "object_repr", "action_flag",
                       "change_message"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="object", ordering="object_repr")
    def object_link(self, obj):
        return obj.object_repr

    @admin.display(description="action", ordering="action_flag")
    def action(self, obj):
        return ACTION_FLAG_NAMES.get(obj.action_flag, obj.action_flag)

    @admin.display(description="message")
    def message(self, obj):
        return obj.get_change_message()

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from .models import AuditEvent, Classroom, Job, User
from .services import audit, classrooms


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "role", "first_name", "last_name", "is_active", "last_login")
    list_filter = ("role", "is_active")
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        (
            "Lattice",
            {
                "fields": ("role", "saved_images_max_count", "saved_images_max_bytes"),
                "description": "Saved-image quota: leave empty for the site default.",
            },
        ),
    )
    add_fieldsets = (*DjangoUserAdmin.add_fieldsets, ("Lattice", {"fields": ("role",)}))


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "owner", "state", "progress", "created", "finished")
    list_filter = ("kind", "state")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit log, read-only: nobody adds, changes or deletes an event here (the model refuses too)."""

    list_display = ("created", "actor_name", "action", "subject_name", "mode", "workspace_id", "classroom_id")
    list_filter = ("action", "mode")
    search_fields = ("actor_name", "subject_name", "action")
    date_hierarchy = "created"

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Classroom)
class ClassroomAdmin(admin.ModelAdmin):
    """Classes; an admin places students directly here (members at once), as with the API."""

    list_display = ("name", "join_code", "created")
    search_fields = ("name",)
    filter_horizontal = ("teachers", "students", "invited")

    def save_related(self, request, form, formsets, change) -> None:
        before = set(form.instance.students.values_list("pk", flat=True)) if change else set()
        super().save_related(request, form, formsets, change)
        classroom = form.instance
        placed = classroom.students.exclude(pk__in=before)
        classroom.invited.remove(*placed)
        for student in placed:
            audit.record(
                audit.PLACE, actor=request.user, subject=student, classroom=classroom, via="django-admin"
            )
        # Taken out of the class: its teachers' views and control end, as when a student leaves.
        for student in User.objects.filter(pk__in=before).exclude(classrooms=classroom):
            audit.record(
                audit.REMOVE, actor=request.user, subject=student, classroom=classroom, via="django-admin"
            )
            classrooms.end_access(classroom, student, "an admin took the student out of the class")
            classrooms.end_seats(classroom, student, "Taken out of the class")

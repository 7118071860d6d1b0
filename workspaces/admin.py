from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from .models import Job, User


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

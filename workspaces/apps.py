from django.apps import AppConfig


class WorkspacesConfig(AppConfig):
    name = "workspaces"
    verbose_name = "Lattice"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

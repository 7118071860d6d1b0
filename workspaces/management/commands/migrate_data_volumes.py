"""Move data volumes named by username (before volumes were keyed by user id) to their id's name.

Run at every worker start (Procfile): quick when there is nothing to move.
Each old volume is copied, checked file by file, and kept for an
administrator to remove (`docker volume rm`); nothing is deleted here.
"""

from django.core.management.base import BaseCommand

from workspaces.services.backups import migrate_all


class Command(BaseCommand):
    help = "Copy username-keyed data volumes into user-id-keyed ones (never deleting the old ones)."

    def handle(self, *args, **options) -> None:
        for line in migrate_all():
            self.stdout.write(line)

from django.core.management.base import BaseCommand

from workspaces.services.catalog import sync_from_engine


class Command(BaseCommand):
    help = "Add the engine's Lattice images (by their labels) to the catalog."

    def handle(self, *args, **options) -> None:
        refused: list[str] = []
        images = sync_from_engine(refused)
        for why in refused:
            self.stderr.write(f"Not added: {why}")
        self.stdout.write(
            f"Catalog: {', '.join(sorted(i.slug for i in images)) or 'no Lattice images found'}"
        )

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("workspaces", "0005_data_snapshots"),
    ]

    operations = [
        migrations.AddField(
            model_name="image",
            name="disk_limit",
            field=models.CharField(default="4g", max_length=16),
        ),
        migrations.AddField(
            model_name="image",
            name="internet",
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name="classroom",
            name="internet",
            field=models.BooleanField(default=True),
        ),
    ]

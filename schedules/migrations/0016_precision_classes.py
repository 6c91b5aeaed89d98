"""Precision classes: ``precise`` becomes ``seconds``, and ``minute`` is added.

Rows are renamed in batches of primary keys, each its own transaction (the migration
is not atomic), so a big step table is never locked whole.
"""

from django.db import migrations, models

BATCH = 10_000
MODELS = ("Job", "Classroom", "Step", "Workflow")
CHOICES = [
    ("seconds", "Seconds (released within a second)"),
    ("minute", "Minute (released within about a minute)"),
    ("relaxed", "Relaxed (minutes to hours)"),
]


def rename(apps, schema_editor, old, new):
    from django.db import transaction

    for name in MODELS:
        model = apps.get_model("schedules", name)
        last = 0
        while True:
            ids = list(
                model.objects.filter(pk__gt=last)
                .order_by("pk")
                .values_list("pk", flat=True)[:BATCH]
            )
            if not ids:
                break
            with transaction.atomic():
                model.objects.filter(pk__in=ids, precision=old).update(precision=new)
            last = ids[-1]


def forwards(apps, schema_editor):
    rename(apps, schema_editor, "precise", "seconds")


def backwards(apps, schema_editor):
    # "minute" had no earlier equivalent: its rows go back to the finer class.
    rename(apps, schema_editor, "minute", "precise")
    rename(apps, schema_editor, "seconds", "precise")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("schedules", "0015_ttl_stream_poison_tries")]

    operations = [
        migrations.AlterField(
            model_name="job",
            name="precision",
            field=models.CharField(choices=CHOICES, default="seconds", max_length=16),
        ),
        migrations.AlterField(
            model_name="classroom",
            name="precision",
            field=models.CharField(choices=CHOICES, default="seconds", max_length=16),
        ),
        migrations.AlterField(
            model_name="step",
            name="precision",
            field=models.CharField(choices=CHOICES, default="seconds", max_length=16),
        ),
        migrations.AlterField(
            model_name="workflow",
            name="precision",
            field=models.CharField(
                choices=CHOICES,
                default="seconds",
                help_text="The precision of its steps (Tasks and Waits): it chooses their engine.",
                max_length=16,
            ),
        ),
        migrations.RunPython(forwards, backwards),
    ]

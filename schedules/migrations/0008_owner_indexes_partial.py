"""Owner links indexed only where they hold a value, and the step's job link by the
unique (job, sequence, poll_number) index alone.

A step row changes state three to four times a run, its job twice and its run once,
and every change adds an entry to each index of the row (the indexed state changes, so
PostgreSQL cannot update in place). Most steps and runs belong to a job, and a job
scheduled by a program has no owner: these indexes held a NULL entry for each such row.

The foreign keys stay as they are; only their plain indexes are dropped (by the name
Django gave them, the same on PostgreSQL and SQLite), so the tables are not rebuilt
and the constraints are not validated again.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

PLAIN_INDEXES = {
    # index name: (table, column)
    "schedules_job_owner_id_f1957931": ("schedules_job", "owner_id"),
    "schedules_run_classroom_id_8b2adc48": ("schedules_run", "classroom_id"),
    "schedules_step_classroom_id_0baf9e9c": ("schedules_step", "classroom_id"),
    "schedules_step_job_id_1dbc49ba": ("schedules_step", "job_id"),
}


class Migration(migrations.Migration):
    dependencies = [
        ("schedules", "0007_dispatcher_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX "{name}" ON "{table}" ("{column}")',
                )
                for name, (table, column) in PLAIN_INDEXES.items()
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="job",
                    name="owner",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="scheduled_jobs",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="run",
                    name="classroom",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="runs",
                        to="schedules.classroom",
                    ),
                ),
                migrations.AlterField(
                    model_name="step",
                    name="classroom",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="steps",
                        to="schedules.classroom",
                    ),
                ),
                migrations.AlterField(
                    model_name="step",
                    name="job",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="steps",
                        to="schedules.job",
                    ),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("owner__isnull", False)), fields=["owner"], name="job_owner"
            ),
        ),
        migrations.AddIndex(
            model_name="run",
            index=models.Index(
                condition=models.Q(("classroom__isnull", False)),
                fields=["classroom"],
                name="run_classroom",
            ),
        ),
        migrations.AddIndex(
            model_name="step",
            index=models.Index(
                condition=models.Q(("classroom__isnull", False)),
                fields=["classroom"],
                name="step_classroom",
            ),
        ),
    ]

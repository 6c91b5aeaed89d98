# The admin's changelist filters on the two big tables seek an index in the list's own
# order (due or start time, then id), for any value: docs/benchmarks.md, "The admin at
# scale". step_state_due becomes step_state_due_id (the id added), created before the
# old one is dropped.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('schedules', '0013_run_uncertain_started'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='step',
            index=models.Index(fields=['state', 'due_at', 'id'], name='step_state_due_id'),
        ),
        migrations.RemoveIndex(
            model_name='step',
            name='step_state_due',
        ),
        migrations.AddIndex(
            model_name='step',
            index=models.Index(fields=['action', 'due_at', 'id'], name='step_action_due_id'),
        ),
        migrations.AddIndex(
            model_name='step',
            index=models.Index(fields=['arm_state', 'due_at', 'id'], name='step_arm_due_id'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['action', 'started_at', 'id'], name='run_action_started_id'),
        ),
    ]

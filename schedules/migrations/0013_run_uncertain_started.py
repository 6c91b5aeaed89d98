# The admin overview's newest uncertain runs (and the runs list's "uncertain" filter)
# seek this partial index instead of reading every run.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('schedules', '0012_notifications'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='run',
            index=models.Index(condition=models.Q(('uncertain', True)), fields=['started_at'], name='run_uncertain_started'),
        ),
    ]

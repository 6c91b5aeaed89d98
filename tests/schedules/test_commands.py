"""The job commands: happy paths, JSON, refusals that store nothing, exit codes, and on moto
reconcile and redrive_dlq."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from schedules import services
from schedules.aws import aws_client
from schedules.engines import Timer, get_engine
from schedules.models import ArmState, Job, PlanStatus, Run, Step, StepState
from tests.fixtures_aws import Provisioned
from workers.actions import PermanentError, register
from workers.actions.base import REGISTRY
from workers.actions.noop import NoopPayload

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [
    "schedule_job",
    "schedule_email",
    "cancel_job",
    "reschedule_job",
    "list_jobs",
    "show_job",
    "reconcile",
    "redrive_dlq",
]


def run(name: str, *args: str) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def run_json(name: str, *args: str) -> Any:
    return json.loads(run(name, *args, "--json"))


def due(**delta: float) -> str:
    return (timezone.now() + dt.timedelta(**delta)).isoformat()


def noop(when: dt.datetime | None = None, **kw: Any) -> Job:
    return services.job_schedule(
        action="noop", due_at=when or timezone.now() + dt.timedelta(hours=1), **kw
    )


# -- schedule_job -------------------------------------------------------------------------


def test_schedule_job_prints_the_id_of_an_armed_job():
    out = run(
        "schedule_job", "--action", "noop", "--due", due(hours=2), "--payload", '{"note": "x"}'
    )
    job = Job.objects.get(pk=int(out))
    assert job.action == "noop" and job.payload == {"note": "x"}
    step = job.steps.get()
    assert step.state == StepState.SCHEDULED and step.arm_state == ArmState.ARMED


def test_schedule_job_json_has_the_job_and_its_steps():
    User.objects.create_user("ada")
    data = run_json(
        "schedule_job",
        "--action", "noop",
        "--due", "2030-01-01T09:00:00+01:00",
        "--precision", "relaxed",
        "--max-attempts", "5",
        "--name", "nightly",
        "--time-zone", "Europe/Paris",
        "--owner", "ada",
    )  # fmt: skip
    assert data["due_at"] == "2030-01-01T08:00:00+00:00"  # stored and shown in UTC
    assert data["action"] == "noop" and data["status"] == "scheduled"
    assert data["precision"] == "relaxed" and data["max_attempts"] == 5
    assert data["name"] == "nightly" and data["owner"] == "ada"
    assert data["time_zone"] == "Europe/Paris"
    (step,) = data["steps"]
    assert step["engine"] == "local" and step["version"] == 1 and step["state"] == "scheduled"
    assert Job.objects.get(pk=data["id"]).owner.username == "ada"


def test_schedule_job_reads_the_payload_from_a_file(tmp_path):
    path = tmp_path / "payload.json"
    path.write_text('{"note": "from a file"}')
    out = run(
        "schedule_job", "--action", "noop", "--due", due(hours=1), "--payload-file", str(path)
    )
    assert Job.objects.get(pk=int(out)).payload == {"note": "from a file"}


def test_a_naive_due_time_is_refused_and_nothing_is_stored():
    with pytest.raises(CommandError) as info:
        run("schedule_job", "--action", "noop", "--due", "2030-01-01T09:00:00")
    message = str(info.value)
    assert message.startswith("due_at: a time zone is required")
    assert "2030-01-01T09:00:00+01:00" in message  # says how to fix it
    assert not Job.objects.exists() and not Step.objects.exists()


def test_validation_errors_name_each_field_and_rule_and_store_nothing(settings):
    with pytest.raises(CommandError) as info:
        run(
            "schedule_job",
            "--action", "noop",
            "--due", due(days=-1),
            "--payload", '{"bogus": 1}',
            "--max-attempts", "99",
        )  # fmt: skip
    message = str(info.value)
    assert "nothing was stored" in message
    assert "due_at: is in the past by more than the 60 s grace (SCHEDULES_PAST_GRACE)" in message
    assert "payload: bogus: Extra inputs are not permitted" in message
    assert "max_attempts: must be a whole number from 1 to 25" in message
    assert not Job.objects.exists() and not Step.objects.exists()


def test_validation_errors_are_json_for_scripts_too():
    out = StringIO()
    with pytest.raises(CommandError):
        call_command(
            "schedule_job", "--action", "nope", "--due", due(hours=1), "--json", stdout=out
        )
    errors = json.loads(out.getvalue())["errors"]
    assert list(errors) == ["action"] and "nope" in errors["action"][0]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--payload", "{not json"], "payload: not valid JSON"),
        (["--payload-file", "/nonexistent/p.json"], "payload: cannot read '/nonexistent/p.json'"),
        (["--owner", "nobody"], "owner: no user named 'nobody'"),
        (["--due", "tomorrow"], "due_at: 'tomorrow' is not an ISO 8601 date and time"),
    ],
)
def test_bad_input_is_refused_with_what_to_do(args, expected):
    base = {"--due": due(hours=1)}
    if "--due" in args:
        base = {}
    flat = [item for pair in base.items() for item in pair]
    with pytest.raises(CommandError, match=expected.replace("(", r"\(")):
        run("schedule_job", "--action", "noop", *flat, *args)
    assert not Job.objects.exists()


# -- schedule_email -----------------------------------------------------------------------


def test_schedule_email_with_a_body():
    out = run(
        "schedule_email",
        "--to", "ada@example.com",
        "--to", "bob@example.com",
        "--cc", "cy@example.com",
        "--subject", "Hello",
        "--body", "Hi there",
        "--due", due(hours=1),
    )  # fmt: skip
    job = Job.objects.get(pk=int(out))
    assert job.action == "send_email"
    assert job.payload["to"] == ["ada@example.com", "bob@example.com"]
    assert job.payload["cc"] == ["cy@example.com"] and job.payload["body"] == "Hi there"


def test_schedule_email_with_a_template_as_json():
    data = run_json(
        "schedule_email",
        "--to", "ada@example.com",
        "--subject", "Reminder",
        "--template", "reminder",
        "--context", '{"name": "Ada", "what": "the class"}',
        "--due", due(hours=1),
        "--precision", "relaxed",
    )  # fmt: skip
    job = Job.objects.get(pk=data["id"])
    assert job.payload["template"] == "reminder" and job.payload["context"]["name"] == "Ada"
    assert data["precision"] == "relaxed" and data["steps"][0]["state"] == "scheduled"


def test_schedule_email_refuses_a_bad_address_and_stores_nothing():
    with pytest.raises(CommandError) as info:
        run(
            "schedule_email", "--to", "not-an-address", "--subject", "Hi", "--body", "x",
            "--due", due(hours=1),
        )  # fmt: skip
    assert "payload: to.0: 'not-an-address' is not a valid email address" in str(info.value)
    assert not Job.objects.exists()


def test_schedule_email_needs_a_body_or_a_template():
    with pytest.raises(CommandError, match="one of the arguments --body --template is required"):
        run("schedule_email", "--to", "ada@example.com", "--subject", "Hi", "--due", due(hours=1))


# -- cancel_job and reschedule_job --------------------------------------------------------


def test_cancel_jobs_by_id():
    first, second = noop(), noop()
    out = run("cancel_job", str(first.pk), str(second.pk))
    assert f"cancelled job {first.pk}" in out and f"cancelled job {second.pk}" in out
    for job in (first, second):
        job.refresh_from_db()
        step = job.steps.get()
        assert job.status == PlanStatus.CANCELLED
        assert step.state == StepState.CANCELLED and step.version == 2


def test_cancel_reports_unknown_and_finished_ids_and_still_cancels_the_rest():
    job, done = noop(), noop()
    services.job_cancel(job=done)
    out = StringIO()
    with pytest.raises(CommandError) as info:
        call_command("cancel_job", "999999", str(done.pk), str(job.pk), "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["cancelled"] == [job.pk]
    assert [e["id"] for e in data["errors"]] == [999999, done.pk]
    message = str(info.value)
    assert message.startswith("2 of 3 job(s) not cancelled")
    assert "No job with id 999999" in message and "list_jobs" in message
    assert f"job {done.pk}: status: the job is already cancelled" in message
    job.refresh_from_db()
    assert job.status == PlanStatus.CANCELLED


def test_reschedule_moves_the_job_under_a_new_version():
    job = noop()
    out = run("reschedule_job", str(job.pk), "--due", "2030-06-01T12:00:00Z")
    assert out.strip() == f"rescheduled job {job.pk} to 2030-06-01T12:00:00+00:00 (step version 2)"
    data = run_json("reschedule_job", str(job.pk), "--due", "2030-06-02T12:00:00+02:00")
    assert data["due_at"] == "2030-06-02T10:00:00+00:00"
    # Beyond SCHEDULES_ARM_HORIZON: the old timer is gone, the sweep arms it when in range.
    assert data["steps"][0]["version"] == 3 and data["steps"][0]["arm_state"] == "disarmed"


def test_reschedule_into_the_past_is_refused_and_changes_nothing():
    job = noop()
    with pytest.raises(CommandError) as info:
        run("reschedule_job", str(job.pk), "--due", due(days=-2))
    assert "due_at: is in the past by more than" in str(info.value)
    step = job.steps.get()
    assert step.version == 1 and Job.objects.get(pk=job.pk).due_at == job.due_at
    with pytest.raises(CommandError, match="due_at: a time zone is required"):
        run("reschedule_job", str(job.pk), "--due", "2030-01-01T09:00:00")


def test_reschedule_and_show_an_unknown_job():
    with pytest.raises(CommandError, match="No job with id 424242"):
        run("reschedule_job", "424242", "--due", due(hours=1))
    with pytest.raises(CommandError, match="No job with id 424242"):
        run("show_job", "424242")


# -- list_jobs ----------------------------------------------------------------------------


@pytest.fixture
def some_jobs() -> dict[str, Job]:
    ada = User.objects.create_user("ada")
    base = timezone.now() + dt.timedelta(days=1)
    jobs = {
        "early": noop(base, name="early"),
        "middle": noop(base + dt.timedelta(hours=1), name="middle", owner=ada),
        "late": noop(base + dt.timedelta(hours=2), name="late " + "x" * 60),
        "mail": services.email_schedule(
            to=["ada@example.com"], subject="Hi", body="x", due_at=base + dt.timedelta(hours=3)
        ),
    }
    services.job_cancel(job=jobs["early"])
    return jobs


def test_list_jobs_is_a_table_newest_due_first(some_jobs):
    lines = run("list_jobs").splitlines()
    assert lines[0].split() == [
        "ID",
        "STATUS",
        "ACTION",
        "DUE_AT",
        "(UTC)",
        "SCHEDULE",
        "PRECISION",
        "NAME",
    ]
    ids = [int(line.split()[0]) for line in lines[1:-1]]
    order = ["mail", "late", "middle", "early"]
    assert ids == [some_jobs[name].pk for name in order]
    assert lines[-1] == "4 job(s)"
    # Fixed width: the action column starts at the same place on every row.
    starts = {line.index("noop") for line in lines if "noop" in line}
    assert len(starts) == 1
    assert "…" in lines[2] and len(lines[2]) < 150  # long names are clipped


def test_list_jobs_filters(some_jobs):
    def ids(*args: str) -> list[int]:
        return [job["id"] for job in run_json("list_jobs", *args)["jobs"]]

    assert ids("--status", "cancelled") == [some_jobs["early"].pk]
    assert ids("--action", "send_email") == [some_jobs["mail"].pk]
    assert ids("--owner", "ada") == [some_jobs["middle"].pk]
    middle = some_jobs["middle"].due_at
    assert ids("--due-after", middle.isoformat()) == [
        some_jobs[name].pk for name in ("mail", "late", "middle")
    ]
    assert ids("--due-before", middle.isoformat()) == [some_jobs["early"].pk]
    with pytest.raises(CommandError, match="due_after: a time zone is required"):
        run("list_jobs", "--due-after", "2030-01-01T00:00:00")
    with pytest.raises(CommandError, match="invalid choice"):
        run("list_jobs", "--status", "bogus")


def test_list_jobs_limit_bounds_the_query(some_jobs):
    with CaptureQueriesContext(connection) as queries:
        data = run_json("list_jobs", "--limit", "2")
    assert [job["id"] for job in data["jobs"]] == [some_jobs["mail"].pk, some_jobs["late"].pk]
    assert data["more"] is True and data["limit"] == 2
    (select,) = [q["sql"] for q in queries.captured_queries if "schedules_job" in q["sql"]]
    assert "LIMIT 3" in select and "payload" not in select  # never all rows, no payloads
    assert run("list_jobs", "--limit", "2").splitlines()[-1].startswith("2 job(s); more match")
    assert run_json("list_jobs", "--limit", "4")["more"] is False
    with pytest.raises(CommandError, match="limit: must be from 1 to 10000"):
        run("list_jobs", "--limit", "0")


# -- show_job -----------------------------------------------------------------------------


@pytest.fixture
def failing_action():
    @register("cmd_test_fails", payload=NoopPayload, description="test", has_side_effects=False)
    def fails(ctx: Any, payload: Any) -> dict[str, Any]:
        raise PermanentError("the service said no\nsecond line of the trace")

    yield
    REGISTRY.pop("cmd_test_fails")


def test_show_job_with_its_steps_and_runs(failing_action):
    job = services.job_schedule(
        action="cmd_test_fails", due_at=timezone.now(), time_zone="Europe/Paris", name="doomed"
    )
    step = job.steps.get()
    services.step_execute(step_id=step.pk, version=step.version)
    text = run("show_job", str(job.pk))
    assert f"job {job.pk}  cmd_test_fails  doomed" in text
    assert "status          failed" in text and "Europe/Paris" in text
    assert "schedule        once" in text
    step_line = next(line for line in text.splitlines() if line.strip().startswith(str(step.pk)))
    assert step_line.split()[1:5] == ["0.0", *f"{step.due_at:%Y-%m-%d %H:%M:%S}".split(), "local"]
    assert step_line.split()[5:7] == ["1", "failed"]
    run_line = next(line for line in text.splitlines() if "the service said no" in line)
    assert run_line.split()[:3] == ["1", "1", "failed"] and "second line" not in text
    assert " s " in run_line  # the lateness

    data = run_json("show_job", str(job.pk))
    assert data["payload"] == {} and data["status"] == "failed"
    assert data["steps"][0]["arm_state"] in {"armed", "disarmed"}
    (run_data,) = data["runs"]
    assert run_data["attempt"] == 1 and run_data["status"] == "failed"
    assert isinstance(run_data["lateness_seconds"], float)
    assert (
        run_data["error"].startswith("the service said no") or "PermanentError" in run_data["error"]
    )
    assert data["runs_total"] == 1 == Run.objects.filter(job=job).count()


def test_show_a_job_that_has_not_run():
    job = noop()
    text = run("show_job", str(job.pk))
    assert "none yet" in text
    assert run_json("show_job", str(job.pk))["runs"] == []


# -- --help and exit codes ----------------------------------------------------------------


@pytest.mark.parametrize("name", COMMANDS)
def test_help_explains_every_option_and_the_exit_status(name):
    command = load_command_class("schedules", name)
    parser = command.create_parser("manage.py", name)
    text = " ".join(parser.format_help().split())
    assert "Exit status: 0 on success; 1 on an error" in text
    for action in parser._actions:
        assert action.help, f"{name}: {action.dest} has no help"
        for option in action.option_strings:
            assert option in text, f"{name}: {option} missing from --help"


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a command run as a script would: on this test database."""
    from tests.e2e.conftest import database_url

    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "SCHEDULES_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
    }


def test_exit_codes_seen_by_a_script(tmp_path):
    env = subprocess_env(tmp_path)

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    ok = manage("schedule_job", "--action", "noop", "--due", due(hours=1))
    assert ok.returncode == 0, ok.stderr
    assert Job.objects.filter(pk=int(ok.stdout)).exists()

    naive = manage("schedule_job", "--action", "noop", "--due", "2030-01-01T09:00:00")
    assert naive.returncode == 1
    assert "due_at: a time zone is required" in naive.stderr
    assert Job.objects.count() == 1  # nothing more stored

    unknown = manage("show_job", "999999")
    assert unknown.returncode == 1 and "No job with id 999999" in unknown.stderr

    usage = manage("schedule_job", "--due", due(hours=1))  # --action is missing
    assert usage.returncode == 2 and "--action" in usage.stderr

    listing = manage("list_jobs", "--json")
    assert listing.returncode == 0 and json.loads(listing.stdout)["jobs"][0]["id"] == int(ok.stdout)


# -- reconcile ----------------------------------------------------------------------------


def test_reconcile_arms_local_steps_the_sync_missed_and_shows_progress(monkeypatch, settings):
    from schedules.management.commands import reconcile

    monkeypatch.setattr(reconcile, "PROGRESS_EVERY", 2)
    jobs = [noop() for _ in range(3)]
    far = noop(timezone.now() + dt.timedelta(days=30))  # beyond the horizon: left alone
    Step.objects.filter(job=jobs[1]).update(arm_state=ArmState.UNARMED)  # a bulk path
    out = run("reconcile", "--batch-size", "1")
    assert "... checked 2 step(s) on local" in out
    assert f"missing  step {jobs[1].steps.get().pk} v1 on local: arm_state is unarmed" in out
    assert "local: checked 3 step(s) and 0 timer(s); 1 missing re-armed, 0 orphan(s)" in out
    assert Step.objects.get(job=jobs[1]).arm_state == ArmState.ARMED
    assert Step.objects.get(job=far).arm_state == ArmState.UNARMED


def test_reconcile_refuses_an_unknown_engine():
    with pytest.raises(CommandError, match="engine: Unknown schedules engine 'bogus'"):
        run("reconcile", "--engine", "bogus")


def running(arn: str) -> str:
    return str(aws_client("stepfunctions").describe_execution(executionArn=arn)["status"])


def test_reconcile_on_step_functions(aws: Provisioned, settings):
    settings.SCHEDULES_ENGINES = {"seconds": "stepfunctions", "relaxed": "local"}
    get_engine.cache_clear()
    engine = get_engine("stepfunctions")
    job = noop()
    step = job.steps.get()
    assert step.arm_state == ArmState.ARMED
    v1 = step.external_ref
    # Behind the product's back: the execution is stopped, and two strays are started.
    aws_client("stepfunctions").stop_execution(executionArn=v1)
    later = timezone.now() + dt.timedelta(hours=1)
    stray = engine.arm(Timer(step_id=step.pk + 10_000, version=1, due_at=later, engine="x"))
    stale = engine.arm(Timer(step_id=step.pk, version=7, due_at=later, engine="x"))

    plan = run_json("reconcile", "--dry-run")
    assert plan["dry_run"] is True
    assert plan["missing_count"] == 1 and plan["orphan_count"] == 2 and plan["failures"] == 0
    (missing,) = plan["missing"]
    assert missing["step_id"] == step.pk and missing["fix"] == "new_version"
    assert "stopped (ABORTED)" in missing["reason"] and missing["result"].startswith("planned")
    reasons = {o["external_ref"]: o["reason"] for o in plan["orphans"]}
    assert reasons == {stray: "no such step", stale: "the step is at v1"}
    # The dry run changed nothing.
    assert running(stray) == running(stale) == "RUNNING"
    step.refresh_from_db()
    assert step.version == 1 and step.external_ref == v1

    report = run_json("reconcile", "--engine", "stepfunctions")
    assert report["missing_count"] == 1 and report["orphan_count"] == 2
    assert report["failures"] == 0
    step.refresh_from_db()
    # A stopped execution's name cannot be reused: re-armed under a new version.
    assert step.version == 2 and step.arm_state == ArmState.ARMED
    assert step.external_ref.endswith(f":step-{step.pk}-v2") and running(step.external_ref) == (
        "RUNNING"
    )
    assert running(stray) == running(stale) == "ABORTED"
    assert report["missing"][0]["result"] == "re-armed as v2"
    assert {o["result"] for o in report["orphans"]} == {"disarmed"}

    again = run_json("reconcile")
    assert again["missing_count"] == again["orphan_count"] == again["failures"] == 0
    assert again["checked_timers"] == 1  # the re-armed execution, wanted


def test_reconcile_on_dynamodb_ttl(aws: Provisioned, settings):
    settings.SCHEDULES_ENGINES = {"seconds": "local", "relaxed": "dynamodb_ttl"}
    get_engine.cache_clear()
    engine = get_engine("dynamodb_ttl")
    dynamodb = aws_client("dynamodb")
    table = settings.SCHEDULES_TTL_TABLE_NAME
    job = noop(precision="relaxed")
    step = job.steps.get()
    key = f"step#{step.pk}#v1"
    assert step.external_ref == key
    cancelled = noop(precision="relaxed")
    services.job_cancel(job=cancelled)
    gone = cancelled.steps.get()
    # Behind the product's back: the item is deleted, and two strays are written.
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": key}})
    later = timezone.now() + dt.timedelta(hours=1)
    engine.arm(Timer(step_id=step.pk + 10_000, version=3, due_at=later, engine="x"))
    engine.arm(Timer(step_id=gone.pk, version=gone.version, due_at=later, engine="x"))

    def keys() -> set[str]:
        return {item["pk"]["S"] for item in dynamodb.scan(TableName=table)["Items"]}

    before = keys()
    dry = run("reconcile", "--dry-run")
    assert "1 missing to re-arm, 2 orphan(s) to disarm, 0 failure(s)" in dry
    assert "(dry run: nothing changed)" in dry and keys() == before

    out = run("reconcile", "--engine", "dynamodb_ttl")
    assert f"missing  step {step.pk} v1 on dynamodb_ttl: the engine has no timer" in out
    assert f"orphan   step {gone.pk} v{gone.version} on dynamodb_ttl: the step is cancelled" in out
    assert f"orphan   step {step.pk + 10_000} v3 on dynamodb_ttl: no such step" in out
    assert "1 missing re-armed, 2 orphan(s) disarmed, 0 failure(s)" in out
    assert keys() == {key}  # re-armed under the same version; the strays are gone
    step.refresh_from_db()
    assert step.version == 1 and step.arm_state == ArmState.ARMED


def test_reconcile_exits_1_when_the_engine_cannot_be_listed(aws: Provisioned, settings):
    settings.SCHEDULES_ENGINES = {"seconds": "stepfunctions", "relaxed": "local"}
    settings.SCHEDULES_SFN_STATE_MACHINE_ARN = aws.state_machine_arn + "-missing"
    get_engine.cache_clear()
    out = StringIO()
    with pytest.raises(CommandError, match="1 step\\(s\\) or timer\\(s\\) could not be checked"):
        call_command("reconcile", "--engine", "stepfunctions", "--json", stdout=out)
    (error,) = json.loads(out.getvalue())["errors"]
    assert "listing timers failed" in error and "StateMachineDoesNotExist" in error


# -- redrive_dlq --------------------------------------------------------------------------


def queue_depth(url: str) -> int:
    attributes = aws_client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def drain(url: str) -> list[str]:
    sqs = aws_client("sqs")
    bodies: list[str] = []
    while found := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
        "Messages"
    ):
        bodies += [m["Body"] for m in found]
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(found)
            ],
        )
    return bodies


def test_redrive_dlq_moves_every_message_back(aws: Provisioned):
    sqs = aws_client("sqs")
    bodies = {json.dumps({"n": n}) for n in range(23)}
    for body in bodies:
        sqs.send_message(QueueUrl=aws.dlq_url, MessageBody=body)
    data = run_json("redrive_dlq")
    assert data == {"moved": 23, "failed": 0, "dlq_url": aws.dlq_url, "queue_url": aws.queue_url}
    assert queue_depth(aws.dlq_url) == 0
    assert sorted(drain(aws.queue_url)) == sorted(bodies)  # same bodies, each once


def test_redrive_dlq_max_moves_only_that_many(aws: Provisioned):
    sqs = aws_client("sqs")
    for n in range(5):
        sqs.send_message(QueueUrl=aws.dlq_url, MessageBody=f"m{n}")
    out = run("redrive_dlq", "--max", "3")
    assert out.strip() == f"moved 3 message(s) from {aws.dlq_url}"
    assert len(drain(aws.queue_url)) == 3
    assert queue_depth(aws.dlq_url) == 2


def test_redrive_dlq_needs_the_queue_url(settings):
    settings.SCHEDULES_SQS_QUEUE_URL = ""
    with pytest.raises(CommandError, match="SCHEDULES_SQS_QUEUE_URL is not set"):
        run("redrive_dlq")

"""The admin in a real browser: log in, add a job through the form and watch it run, the
overview's charts and a classroom's timeline. The job form's script has its own file,
test_job_form_browser.py."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from django.utils import timezone
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from schedules import services
from schedules.admin.base import format_lateness
from schedules.models import Job, PlanStatus, Run, RunStatus
from tests.e2e.conftest import RecordingService, Stack, start_stack

from .base import BrowserTestCase

pytestmark = pytest.mark.browser

#: A run's lateness as the admin shows it: signed, in milliseconds or seconds.
LATENESS = re.compile(r"^[+-]\d+(\.\d+)? (ms|s)$")


def drawn(canvas: WebElement) -> Callable[[WebDriver], bool]:
    """Whether the page's script has drawn ``canvas`` (it then sets data-drawn)."""
    return lambda driver: canvas.get_attribute("data-drawn") == "true"


class AdminBrowserTests(BrowserTestCase):
    @pytest.fixture(autouse=True)
    def _tmp_path(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def start_stack(self) -> Stack:
        """The real dispatcher and a Celery worker, as processes, on the live server's database."""
        stack = start_stack(
            self.tmp_path,
            RecordingService,  # not called: the job here sends mail
            broker="filesystem://",
            queue=f"browser-{uuid.uuid4().hex[:8]}",
        )
        self.addCleanup(stack.stop)  # cleanups run before the tables are flushed
        # Up before the job is due, so its lateness is the engine's and the worker's alone.
        stack.wait_for_log("dispatcher-0.log", "dispatcher running")
        return stack

    def test_login_through_the_form_shows_the_admin_index(self) -> None:
        # setUp logged in through the login form and waited for the index.
        self.assertEqual(self.find("#content h1").text, "Site administration")
        self.assertEqual(self.find("#user-tools strong").text.upper(), self.username.upper())
        self.assertTrue(self.find_all("#content-main a[href='/admin/schedules/job/']"))

    def test_an_email_job_added_in_the_form_runs_and_shows_its_lateness(self) -> None:
        stack = self.start_stack()
        name = f"Browser mail {uuid.uuid4().hex[:6]}"
        self.open("/admin/schedules/job/add/")
        self.fill("#id_name", name)
        self.select_option("#id_action", "send_email")
        self.fill(
            "#id_payload",
            json.dumps({"to": ["ada@example.com"], "subject": "From the browser", "body": "Hi"}),
        )
        self.fill("#id_time_zone", "UTC")  # the zone the due date and time are read in
        due = timezone.now().astimezone(dt.UTC) + dt.timedelta(seconds=4)
        self.fill("#id_due_at_0", due.strftime("%Y-%m-%d"))
        self.fill("#id_due_at_1", due.strftime("%H:%M:%S"))
        self.submit("input[name=_continue]")  # "Save and continue editing"

        self.wait_for_text(".messagelist .success", "was added successfully")
        match = re.search(r"/admin/schedules/job/(\d+)/change/", self.selenium.current_url)
        self.assertIsNotNone(match, self.selenium.current_url)
        assert match is not None
        job = Job.objects.get(pk=int(match.group(1)))
        self.assertEqual((job.name, job.action), (name, "send_email"))

        def run_succeeded(driver: WebDriver) -> bool:
            driver.refresh()
            # The newest run's status (as a plain field or a badge), in its row's cell.
            cells = self.find_all("#runs-group tr.has_original td[class*='field-status']")
            return bool(cells) and cells[0].text.strip().lower() == RunStatus.SUCCEEDED

        try:
            self.wait_until(run_succeeded, timeout=30)
        except TimeoutException:
            self.fail(f"the job's run did not succeed in 30 s\n{stack.logs()}")

        lateness = self.find("#runs-group tr.has_original td[class*='field-lateness']").text
        self.assertRegex(lateness, LATENESS)
        status = self.find("div[class*='field-status'] .readonly").text.strip().lower()
        self.assertEqual(status, PlanStatus.SUCCEEDED)

        # The page shows what the worker recorded, and the mail went out once.
        run = Run.objects.get(job=job)
        self.assertEqual(run.status, RunStatus.SUCCEEDED)
        self.assertIsNotNone(run.lateness)
        self.assertEqual(lateness, format_lateness(run.lateness))
        job.refresh_from_db()
        self.assertEqual(job.status, PlanStatus.SUCCEEDED)
        [mail] = stack.mail()
        self.assertIn("Subject: From the browser", mail.read_text())

    def test_the_overview_draws_every_chart_with_data(self) -> None:
        now = timezone.now()
        # Work due in the next 24 hours, and runs of the last hour, one of them failed.
        job = services.job_schedule(action="noop", due_at=now + dt.timedelta(hours=1))
        step = job.steps.get()
        for minutes_ago, status in (
            (3, RunStatus.SUCCEEDED),
            (2, RunStatus.SUCCEEDED),
            (1, RunStatus.FAILED),
        ):
            started = now - dt.timedelta(minutes=minutes_ago)
            Run.objects.create(
                step=step,
                job=job,
                action=job.action,
                engine="local",
                version=step.version,
                status=status,
                due_at=started,
                started_at=started,
                finished_at=started,
                lateness=dt.timedelta(milliseconds=12),
                engine_lateness=dt.timedelta(milliseconds=12),
            )

        self.open("/admin/overview/")
        canvases = self.find_all("canvas[data-chart]")
        charts = {canvas.get_attribute("data-chart") for canvas in canvases}
        self.assertLessEqual({"lateness", "upcoming", "runs"}, charts)
        for canvas in canvases:
            name = canvas.get_attribute("data-chart")
            self.wait_until(drawn(canvas), message=f"the {name} chart was not drawn")
            self.assertIsNone(canvas.get_attribute("data-error"), name)
            self.assertIsNone(canvas.get_attribute("data-empty"), f"the {name} chart has no data")
            self.assertGreater(int(canvas.get_attribute("data-points") or 0), 0, name)
            self.assertTrue(canvas.is_displayed(), name)
            self.assertGreater(self.painted_pixels(canvas), 0, f"the {name} canvas is blank")

    def test_a_classroom_timeline_draws_its_steps(self) -> None:
        start = timezone.now() + dt.timedelta(hours=1)
        classroom = services.classroom_create(
            title="Maths",
            start=start,
            end=start + dt.timedelta(minutes=3),
            recording_service_ref="room-7",
            live_ping_interval=60,
        )
        # The recording's start, a ping at 1 and 2 minutes, the stop.
        self.assertEqual(classroom.steps.count(), 4)

        self.open(f"/admin/schedules/classroom/{classroom.pk}/change/")
        canvas = self.wait_for("canvas[data-timeline-url][data-drawn='true']")
        self.assertEqual(canvas.get_attribute("data-points"), "4")
        self.assertTrue(canvas.is_displayed())
        self.assertGreater(self.painted_pixels(canvas), 0)

    def test_pausing_a_job_asks_for_a_reason_and_resuming_arms_it_again(self) -> None:
        job = services.job_schedule(
            action="noop",
            name="Nightly export",
            due_at=timezone.now() + dt.timedelta(hours=2),
        )
        self.open(f"/admin/schedules/job/{job.pk}/change/")
        self.find(".object-tools a.pauselink").click()
        self.wait_for_text("#content h1", f"Pause {job}")
        self.fill("#id_reason", "vendor API down")
        self.submit()
        self.wait_for_text(".messagelist .success", f"{job}: paused.")
        job.refresh_from_db()
        self.assertEqual(job.status, PlanStatus.PAUSED)
        self.assertEqual(
            job.pause_reason, f"paused in the admin by {self.username}: vendor API down"
        )
        self.assertIn("vendor API down", self.find("#content-main").text)

        self.find(".object-tools button.pauselink").click()  # now "Resume", a POST
        self.wait_for_text(".messagelist .success", f"{job}: resumed.")
        job.refresh_from_db()
        self.assertEqual(job.status, PlanStatus.SCHEDULED)

"""The job form's script in a real browser (schedules/static/schedules/job_form.js): the
sections of the chosen schedule type and action, the payload checked against the chosen
action's schema with that action's help alone, and "Clone"."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from schedules import services
from schedules.models import Job, ScheduleType

from .base import BrowserTestCase

pytestmark = pytest.mark.browser

ADD = "/admin/schedules/job/add/"


class JobFormBrowserTests(BrowserTestCase):
    def shown(self, css: str) -> bool:
        return self.find(css).is_displayed()

    def problems(self) -> list[str]:
        return [item.text for item in self.find_all("#id_payload_problems li")]

    def test_the_sections_follow_the_schedule_type_and_the_action(self) -> None:
        self.open(ADD)
        self.assertTrue(self.shown("#id_due_at_0"))
        for css in ("#id_rate_every", "#id_cron", "#id_starts_at_0", "#id_missed_policy"):
            self.assertFalse(self.shown(css), css)
        self.assertFalse(self.shown("#id_poll_interval"))  # no action chosen yet

        self.select_option("#id_schedule_type", "rate")
        for css in ("#id_rate_every", "#id_rate_unit", "#id_starts_at_0", "#id_missed_policy"):
            self.assertTrue(self.shown(css), css)
        self.assertFalse(self.shown("#id_due_at_0"))
        self.assertFalse(self.shown("#id_cron"))

        self.select_option("#id_schedule_type", "cron")
        self.assertTrue(self.shown("#id_cron"))
        self.assertFalse(self.shown("#id_rate_every"))

        self.select_option("#id_action", "http_check")
        self.assertTrue(self.shown("#id_poll_interval"))
        self.select_option("#id_action", "noop")
        self.assertFalse(self.shown("#id_poll_interval"))

    def test_the_payload_is_checked_against_the_chosen_action_with_its_help_alone(self) -> None:
        self.open(ADD)
        help_text = "#id_payload_helptext [data-payload-action-help]"
        self.assertIn("Choose an action", self.find(help_text).text)
        self.select_option("#id_action", "send_email")
        self.assertIn("send_email: Send an email", self.find(help_text).text)
        self.assertIn("subject (string, required)", self.find(help_text).text)
        self.assertNotIn("note", self.find(help_text).text)

        self.fill("#id_payload", '{"to": "ada@example.com", "subject": "", "colour": 1}')
        self.wait_for_text("#id_payload_problems", "colour: unknown key")
        self.assertEqual(
            self.problems(),
            [
                "to: must be a list of string",
                "subject: must not be empty",
                "colour: unknown key (keys: to, cc, bcc, reply_to, from_email, subject, body, "
                "html_body, template, context)",
            ],
        )
        self.assertEqual(self.find("#id_payload").get_attribute("aria-invalid"), "true")

        self.fill("#id_payload", "{")
        self.wait_for_text("#id_payload_problems", "not valid JSON")

        self.fill("#id_payload", "{}")
        self.find("button.payload-fill").click()
        payload = json.loads(self.find("#id_payload").get_attribute("value") or "")
        self.assertEqual(payload, {"to": [], "subject": ""})

        self.select_option("#id_action", "noop")
        self.assertIn("note (string)", self.find(help_text).text)
        self.wait_for_text("#id_payload_problems", "to: unknown key")
        self.fill("#id_payload", '{"note": "fine"}')
        self.wait_until_invisible("#id_payload_problems")
        self.assertEqual(self.problems(), [])

    def test_fields_of_a_hidden_section_are_not_sent(self) -> None:
        self.open(ADD)
        self.fill("#id_name", "Once after all")
        self.select_option("#id_action", "noop")
        self.select_option("#id_schedule_type", "rate")
        self.fill("#id_rate_every", "5")
        self.select_option("#id_rate_unit", "minutes")
        self.select_option("#id_schedule_type", "once")  # the rate stays in its hidden section
        self.fill("#id_time_zone", "UTC")
        due = timezone.now().astimezone(dt.UTC) + dt.timedelta(hours=1)
        self.fill("#id_due_at_0", due.strftime("%Y-%m-%d"))
        self.fill("#id_due_at_1", due.strftime("%H:%M:%S"))
        self.submit("input[name=_save]")
        self.wait_for_text(".messagelist .success", "was added successfully")
        job = Job.objects.get(name="Once after all")
        self.assertEqual((job.schedule_type, job.rate_every, job.rate_unit), ("once", None, ""))

    def test_clone_opens_the_add_form_with_a_copy(self) -> None:
        job = services.job_schedule(
            action="noop",
            name="Nightly",
            payload={"note": "ünïcode"},
            schedule_type=ScheduleType.CRON,
            cron="0 2 * * *",
            time_zone="Europe/Paris",
        )
        self.open(f"/admin/schedules/job/{job.pk}/change/")
        with self.wait_page_loaded():
            self.find("ul.object-tools a.clonelink").click()
        self.assertEqual(self.find("#id_name").get_attribute("value"), "Nightly (copy)")
        self.assertEqual(self.find("#id_cron").get_attribute("value"), "0 2 * * *")
        self.assertTrue(self.shown("#id_cron"))
        self.assertFalse(self.shown("#id_due_at_0"))
        payload = json.loads(self.find("#id_payload").get_attribute("value") or "")
        self.assertEqual(payload, {"note": "ünïcode"})
        self.assertEqual(self.problems(), [])
        self.assertEqual(Job.objects.count(), 1)

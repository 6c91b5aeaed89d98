"""Precision classes and their engines: ``auto`` picks the cheapest configured engine that
meets the class; each engine states its list price per timer."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from schedules.engines import (
    auto_engine_name,
    configured_engine_names,
    engine_class,
    engine_name_for_precision,
    get_engine,
    meets,
    price_per_timer,
)

SFN = {"SCHEDULES_SFN_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:1:stateMachine:t"}
EVENTBRIDGE = {
    "SCHEDULES_EVENTBRIDGE_ROLE_ARN": "arn:aws:iam::1:role/s",
    "SCHEDULES_SQS_QUEUE_ARN": "arn:aws:sqs:us-east-1:1:schedules",
}
TTL = {"SCHEDULES_SQS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/schedules"}
NONE = {
    "SCHEDULES_SFN_STATE_MACHINE_ARN": "",
    "SCHEDULES_EVENTBRIDGE_ROLE_ARN": "",
    "SCHEDULES_SQS_QUEUE_ARN": "",
    "SCHEDULES_SQS_QUEUE_URL": "",
}
AUTO = {"seconds": "auto", "minute": "auto", "relaxed": "auto"}


@pytest.fixture
def configure(settings):
    def apply(*groups: dict[str, str]) -> None:
        for name, value in NONE.items():
            setattr(settings, name, value)
        for group in groups:
            for name, value in group.items():
                setattr(settings, name, value)
        settings.SCHEDULES_ENGINES = dict(AUTO)
        settings.SCHEDULES_ENGINE_PRICES = {}

    return apply


def routes() -> dict[str, str]:
    return {precision: engine_name_for_precision(precision) for precision in AUTO}


def test_auto_is_local_when_no_aws_engine_is_configured(configure):
    configure()
    assert routes() == {"seconds": "local", "minute": "local", "relaxed": "local"}
    assert configured_engine_names() == ["local"]


def test_auto_picks_the_cheapest_configured_engine_that_meets_each_class(configure):
    configure(SFN, EVENTBRIDGE, TTL)
    assert routes() == {
        "seconds": "stepfunctions",
        "minute": "eventbridge",
        "relaxed": "dynamodb_ttl",
    }
    assert configured_engine_names() == ["dynamodb_ttl", "eventbridge", "stepfunctions"]


def test_auto_falls_back_to_a_finer_engine_when_the_cheaper_one_is_not_configured(configure):
    configure(SFN)
    assert routes() == {
        "seconds": "stepfunctions",
        "minute": "stepfunctions",
        "relaxed": "stepfunctions",
    }
    configure(EVENTBRIDGE)
    # Nothing configured meets seconds: the local engine does (its dispatcher must run).
    assert routes() == {"seconds": "local", "minute": "eventbridge", "relaxed": "eventbridge"}


def test_auto_follows_the_prices_set_in_settings(configure, settings):
    configure(SFN, EVENTBRIDGE, TTL)
    settings.SCHEDULES_ENGINE_PRICES = {"eventbridge": 0.0000001}
    assert routes()["relaxed"] == "eventbridge"
    assert price_per_timer("eventbridge") == Decimal("1E-7")


def test_a_named_engine_is_used_as_named(configure, settings):
    configure(SFN, EVENTBRIDGE, TTL)
    settings.SCHEDULES_ENGINES = {"seconds": "local", "minute": "stepfunctions", "relaxed": "auto"}
    assert routes() == {"seconds": "local", "minute": "stepfunctions", "relaxed": "dynamodb_ttl"}


def test_the_earlier_class_name_reads_as_seconds(configure):
    configure(SFN)
    assert engine_name_for_precision("precise") == "stepfunctions"


def test_each_engine_states_its_class_and_list_price():
    assert {name: engine_class(name).precision for name in ("local", "stepfunctions")} == {
        "local": "seconds",
        "stepfunctions": "seconds",
    }
    assert engine_class("eventbridge").precision == "minute"
    assert engine_class("dynamodb_ttl").precision == "relaxed"
    # 2 state transitions x $0.025/1,000 + one SQS send at $0.40/million.
    assert engine_class("stepfunctions").list_price == Decimal("0.0000504")
    # $1.00/million invocations + the SQS send.
    assert engine_class("eventbridge").list_price == Decimal("0.0000014")
    # One on-demand write at $0.625/million + the SQS send.
    assert engine_class("dynamodb_ttl").list_price == Decimal("0.000001025")
    assert engine_class("local").list_price == 0


def test_meets_orders_the_classes():
    sfn, eventbridge, ttl = (
        engine_class(n) for n in ("stepfunctions", "eventbridge", "dynamodb_ttl")
    )
    assert [meets(sfn, c) for c in AUTO] == [True, True, True]
    assert [meets(eventbridge, c) for c in AUTO] == [False, True, True]
    assert [meets(ttl, c) for c in AUTO] == [False, False, True]


def test_check_warns_of_an_engine_too_coarse_for_its_class(configure, settings):
    from schedules.checks import check_engines

    configure(SFN, EVENTBRIDGE, TTL)
    get_engine.cache_clear()
    settings.SCHEDULES_ENGINES = {"seconds": "eventbridge", "minute": "auto", "relaxed": "auto"}
    (message,) = check_engines()
    assert message.level == checks.WARNING and message.id == "schedules.W005"
    assert "SCHEDULES_ENGINES['seconds'] is 'eventbridge'" in message.msg
    get_engine.cache_clear()


def test_check_warns_when_auto_falls_back_to_local_beside_aws_engines(configure):
    from schedules.checks import check_engines

    configure(EVENTBRIDGE)
    get_engine.cache_clear()
    (message,) = check_engines()
    assert message.id == "schedules.W006" and "SCHEDULES_ENGINES['seconds'] is auto" in message.msg
    configure()  # no AWS engine at all: local is the plain embedded default, no warning
    assert check_engines() == []


def test_check_requires_every_class_and_knows_no_other(settings):
    from schedules.checks import check_engines

    settings.SCHEDULES_ENGINES = {"seconds": "local", "exact": "local"}
    messages = {m.msg for m in check_engines()}
    assert "SCHEDULES_ENGINES has no engine for precision 'minute'." in messages
    assert "SCHEDULES_ENGINES has no engine for precision 'relaxed'." in messages
    assert any("unknown precision class 'exact'" in m for m in messages)


def test_an_unknown_class_raises_naming_the_setting(settings):
    settings.SCHEDULES_ENGINES = {"seconds": "local"}
    with pytest.raises(ImproperlyConfigured, match="no engine for precision 'minute'"):
        engine_name_for_precision("minute")


@pytest.mark.django_db
def test_a_minute_job_is_armed_on_the_minute_class_engine(settings, recording_engine):
    from schedules import services

    settings.SCHEDULES_ENGINES = {"seconds": "local", "minute": "recording", "relaxed": "local"}
    job = services.job_schedule(
        action="noop", due_at=timezone.now() + dt.timedelta(hours=1), precision="minute"
    )
    step = job.steps.get()
    assert (step.precision, step.engine) == ("minute", "recording")


def test_auto_with_nothing_configured_needs_no_aws(configure):
    configure()
    assert auto_engine_name("relaxed") == "local"

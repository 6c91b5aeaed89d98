"""The workflow language: what a definition may say, the words of each refusal, paths,
payloads rendered from the data and Choice rules."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from pydantic import BaseModel

from schedules.validation import Errors
from schedules.workflow_language import (
    MAX_DEFINITION_BYTES,
    MAX_STATES,
    PathMissing,
    definition_check,
    path_get,
    payload_render,
    rule_matches,
)
from workers.actions.base import REGISTRY, register


class StepPayload(BaseModel):
    url: str
    attempts: int = 1


@pytest.fixture(autouse=True)
def actions() -> Iterator[None]:
    @register("wf_call", payload=StepPayload, description="test")
    def call(ctx: Any, payload: Any) -> dict[str, Any]:
        return {}

    try:
        yield
    finally:
        REGISTRY.pop("wf_call")


def migration() -> dict[str, Any]:
    """Seed 002's shape: a check, a Choice, tasks, a Wait loop polling a status."""
    return {
        "Comment": "Database migration",
        "StartAt": "CheckVersions",
        "States": {
            "CheckVersions": {
                "Type": "Task",
                "Action": "wf_call",
                "Payload": {"url": "http://svc/versions"},
                "Retry": [{"IntervalSeconds": 2, "BackoffRate": 2.0, "MaxAttempts": 3}],
                "Next": "InSync?",
            },
            "InSync?": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.CheckVersions.in_sync", "BooleanEquals": True, "Next": "Start"}
                ],
                "Default": "NotInSync",
            },
            "NotInSync": {"Type": "Fail", "Error": "NotInSync", "Cause": "versions differ"},
            "Start": {
                "Type": "Task",
                "Action": "wf_call",
                "Payload": {"url.$": "$.CheckVersions.start_url"},
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "NotInSync"}],
                "Next": "WaitForMigration",
            },
            "WaitForMigration": {"Type": "Wait", "Seconds": 1, "Next": "MigrationStatus"},
            "MigrationStatus": {
                "Type": "Task",
                "Action": "wf_call",
                "Payload": {"url": "http://svc/status"},
                "Next": "Stopped?",
            },
            "Stopped?": {
                "Type": "Choice",
                "Choices": [
                    {
                        "And": [
                            {"Variable": "$.MigrationStatus.status", "IsPresent": True},
                            {"Variable": "$.MigrationStatus.status", "Equals": "Stopped"},
                        ],
                        "Next": "Done",
                    }
                ],
                "Default": "WaitForMigration",
            },
            "Done": {"Type": "Succeed"},
        },
    }


def problems(definition: Any) -> list[str]:
    errors = Errors()
    definition_check(errors, definition)
    return errors.by_field.get("definition", [])


def test_seed_002_shape_is_accepted():
    assert problems(migration()) == []


def test_the_errors_raise_as_one_validation_error_on_the_field():
    definition = migration()
    del definition["States"]["InSync?"]["Default"]
    errors = Errors()
    definition_check(errors, definition)
    with pytest.raises(ValidationError) as caught:
        errors.raise_if_any()
    assert "States.InSync?.Default: required" in str(caught.value.message_dict["definition"])


def broken(change: Any) -> list[str]:
    definition = migration()
    change(definition["States"])
    return problems(definition)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda s: s["InSync?"].pop("Default"),
            "States.InSync?.Default: required: the state to go to when no rule matches",
        ),
        (
            lambda s: s["CheckVersions"].update(Next="InSinc?"),
            "States.CheckVersions.Next: names no state: 'InSinc?' (did you mean 'InSync?'?)",
        ),
        (
            lambda s: s["Start"].update(Action="wf_cal"),
            "States.Start.Action: Unknown action 'wf_cal'",
        ),
        (
            lambda s: s["CheckVersions"].update(Payload={"url": 5}),
            "States.CheckVersions.Payload: url: Input should be a valid string",
        ),
        (
            lambda s: s["CheckVersions"].update(Payload={}),
            "States.CheckVersions.Payload: url: Field required",
        ),
        (
            lambda s: s["Start"].update(Payload={"link.$": "$.CheckVersions.start_url"}),
            "States.Start.Payload.link.$: 'wf_call' takes no field 'link'",
        ),
        (
            lambda s: s["Start"].update(Payload={"url.$": "CheckVersions.start_url"}),
            "States.Start.Payload.url.$: must be a path",
        ),
        (
            lambda s: s["Stopped?"].update(Default="MigrationStatus"),
            "States.MigrationStatus: loops back to itself "
            "(MigrationStatus → Stopped? → MigrationStatus) without a Wait",
        ),
        (
            lambda s: s.update(Orphan={"Type": "Succeed"}),
            "States.Orphan: unreachable: no path from StartAt leads to it",
        ),
        (
            lambda s: s["Done"].update(Type="Stop"),
            "States.Done.Type: must be one of Task, Choice, Wait, Succeed, Fail, not 'Stop'",
        ),
        (
            lambda s: s["WaitForMigration"].update(Seconds=-1),
            "States.WaitForMigration.Seconds: must be between 0 and 31536000, not -1",
        ),
        (
            lambda s: s["WaitForMigration"].update(TimestampPath="$.at"),
            "States.WaitForMigration: needs exactly one of Seconds or TimestampPath",
        ),
        (
            lambda s: s["MigrationStatus"].pop("Next"),
            "States.MigrationStatus: needs Next (the state after it) or End: true",
        ),
        (
            lambda s: s["MigrationStatus"].update(End=True),
            "States.MigrationStatus: has both Next and End",
        ),
        (
            lambda s: s["CheckVersions"].update(Retry=[{"MaxAttempts": 11}]),
            "States.CheckVersions.Retry[0].MaxAttempts: must be between 0 and 10, not 11",
        ),
        (
            lambda s: s["CheckVersions"].update(Retry=[{"BackoffRate": 0.5}]),
            "States.CheckVersions.Retry[0].BackoffRate: must be between 1 and 10, not 0.5",
        ),
        (
            lambda s: s["Start"].update(Catch=[{"ErrorEquals": [], "Next": "Done"}]),
            "States.Start.Catch[0].ErrorEquals: must be a list of error names",
        ),
        (
            lambda s: s["InSync?"]["Choices"][0].update(NumericGreaterThan="3"),
            "States.InSync?.Choices[0]: needs exactly one comparison",
        ),
        (
            lambda s: s["InSync?"]["Choices"][0].update(
                BooleanEquals="yes",
            ),
            "States.InSync?.Choices[0].BooleanEquals: must be true or false",
        ),
        (
            lambda s: s["Stopped?"]["Choices"][0]["And"][0].update(Next="Done"),
            "States.Stopped?.Choices[0].And[0].Next: only a top-level rule",
        ),
        (
            lambda s: s["InSync?"]["Choices"][0].update(Variable="in_sync"),
            "States.InSync?.Choices[0].Variable: required: a path",
        ),
        (
            lambda s: s["Done"].update(Next="Start"),
            "States.Done.Next: unknown field for a Succeed state (allowed: Comment, Type)",
        ),
        (
            lambda s: s["NotInSync"].update(Cause="x" * 1001),
            "States.NotInSync.Cause: must be text of at most 1000 characters",
        ),
    ],
)
def test_each_rule_names_the_state_and_the_field(change, expected):
    found = broken(change)
    assert any(expected in message for message in found), found


def test_top_level_rules():
    assert problems([]) == ["must be a JSON object with StartAt and States"]
    assert problems({"StartAt": "A", "States": {}}) == [
        "States: required: an object of at least one state by name"
    ]
    definition = migration()
    definition["StartAt"] = "Nowhere"
    definition["Version"] = 2
    found = problems(definition)
    assert "Version: unknown field (allowed: Comment, StartAt, States)" in found
    assert any(m.startswith("StartAt: names no state: 'Nowhere'") for m in found)


def test_size_limits():
    many = {"StartAt": "S0", "States": {}}
    for n in range(MAX_STATES + 1):
        many["States"][f"S{n}"] = {"Type": "Wait", "Seconds": 1, "Next": f"S{n + 1}"}
    many["States"][f"S{MAX_STATES}"] = {"Type": "Succeed"}
    assert problems(many) == [f"States: has {MAX_STATES + 1} states; the limit is {MAX_STATES}"]
    big = migration()
    big["Comment"] = "x" * MAX_DEFINITION_BYTES
    (message,) = problems(big)
    assert message.startswith("is ") and f"the limit is {MAX_DEFINITION_BYTES} bytes" in message
    assert problems({"StartAt": "A", "States": {"A": {"Type": "Wait", "Seconds": float("nan")}}})


def test_every_error_is_reported_at_once():
    definition = migration()
    states = definition["States"]
    states["InSync?"].pop("Default")
    states["Start"]["Action"] = "missing"
    states["WaitForMigration"]["Seconds"] = "soon"
    assert len(problems(definition)) >= 3


def test_a_loop_through_a_wait_is_allowed_and_a_self_loop_is_not():
    definition = migration()
    assert problems(definition) == []  # WaitForMigration → MigrationStatus → Stopped? → Wait...
    definition["States"]["Stopped?"]["Default"] = "Stopped?"
    assert any("(Stopped? → Stopped?)" in m for m in problems(definition))


def test_checking_does_not_change_the_definition():
    definition = migration()
    before = copy.deepcopy(definition)
    problems(definition)
    assert definition == before


# --------------------------------------------------------------------------- data


DATA = {
    "CheckVersions": {"in_sync": True, "count": 3, "ratio": 0.5, "items": [{"id": 7}]},
    "MigrationStatus": {"status": "Running", "flag": False, "none": None},
}


def test_paths_read_keys_and_list_items():
    assert path_get(DATA, "$") == DATA
    assert path_get(DATA, "$.CheckVersions.in_sync") is True
    assert path_get(DATA, "$.CheckVersions.items[0].id") == 7
    assert path_get(DATA, "$.MigrationStatus.none") is None
    with pytest.raises(
        PathMissing, match=r"\$\.CheckVersions\.nope: nothing at \$\.CheckVersions\.nope"
    ):
        path_get(DATA, "$.CheckVersions.nope")
    with pytest.raises(PathMissing, match=r"nothing at \$\.CheckVersions\.items\[3\]"):
        path_get(DATA, "$.CheckVersions.items[3].id")
    with pytest.raises(PathMissing):
        path_get(DATA, "$.CheckVersions.in_sync.deeper")
    with pytest.raises(ValueError, match="is not a path"):
        path_get(DATA, "CheckVersions")


def test_payloads_take_values_from_the_data():
    payload = {
        "url": "http://svc",
        "count.$": "$.CheckVersions.count",
        "nested": {"id.$": "$.CheckVersions.items[0].id"},
    }
    assert payload_render(payload, DATA) == {"url": "http://svc", "count": 3, "nested": {"id": 7}}
    with pytest.raises(PathMissing) as caught:
        payload_render({"x.$": "$.Missing.value"}, DATA)
    assert caught.value.path == "$.Missing.value"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"Variable": "$.CheckVersions.in_sync", "BooleanEquals": True}, True),
        ({"Variable": "$.CheckVersions.in_sync", "Equals": 1}, False),  # true is not 1
        ({"Variable": "$.CheckVersions.count", "NumericEquals": 3.0}, True),
        ({"Variable": "$.MigrationStatus.status", "StringEquals": "Stopped"}, False),
        ({"Variable": "$.MigrationStatus.status", "NotEquals": "Stopped"}, True),
        ({"Variable": "$.CheckVersions.count", "NumericGreaterThan": 2}, True),
        ({"Variable": "$.CheckVersions.count", "NumericGreaterThanEquals": 3}, True),
        ({"Variable": "$.CheckVersions.ratio", "NumericLessThan": 0.5}, False),
        ({"Variable": "$.CheckVersions.ratio", "NumericLessThanEquals": 0.5}, True),
        ({"Variable": "$.MigrationStatus.status", "NumericLessThan": 5}, False),  # not a number
        ({"Variable": "$.MigrationStatus.nope", "IsPresent": False}, True),
        ({"Variable": "$.MigrationStatus.none", "IsPresent": True}, True),
        (
            {
                "Or": [
                    {"Variable": "$.MigrationStatus.flag", "BooleanEquals": True},
                    {"Not": {"Variable": "$.CheckVersions.count", "NumericLessThan": 3}},
                ]
            },
            True,
        ),
        (
            {
                "And": [
                    {"Variable": "$.CheckVersions.in_sync", "Equals": True},
                    {"Variable": "$.MigrationStatus.flag", "Equals": True},
                ]
            },
            False,
        ),
    ],
)
def test_choice_rules(rule, expected):
    assert (
        problems(
            {
                "StartAt": "C",
                "States": {
                    "C": {"Type": "Choice", "Choices": [{**rule, "Next": "D"}], "Default": "D"},
                    "D": {"Type": "Succeed"},
                },
            }
        )
        == []
    )
    assert rule_matches(rule, DATA) is expected


def test_a_rule_on_a_missing_path_names_it():
    with pytest.raises(PathMissing, match=r"\$\.Nope\.x"):
        rule_matches({"Variable": "$.Nope.x", "Equals": 1}, DATA)


def test_definitions_are_plain_json():
    assert problems(json.loads(json.dumps(migration()))) == []
    assert problems({"StartAt": "A", "States": {"A": {"Type": "Succeed", "Comment": {1, 2}}}})


@pytest.mark.parametrize(
    "odd",
    [
        {"StartAt": "A", "States": {"A": {"Type": "Choice", "Choices": 5, "Default": "A"}}},
        {"StartAt": "A", "States": {"A": {"Type": "Task", "Action": "noop", "Catch": 5}}},
        {"StartAt": "A", "States": {"A": {"Type": "Task", "Action": "noop", "Retry": [5]}}},
        {"StartAt": "A", "States": {"A": 5}},
        {"StartAt": 5, "States": {"A": {"Type": "Succeed"}}},
        {"StartAt": "A", "States": {"A": {"Type": "Wait", "Seconds": True, "End": True}}},
        {"StartAt": "A", "States": {"A": {"Type": "Task", "Action": "noop", "Payload": []}}},
        {"StartAt": "A", "States": {"A": {"Type": "Choice", "Choices": [{"Not": 5, "Next": "A"}]}}},
        {"StartAt": "A", "States": {"A": {"Type": "Fail", "Error": 5}}},
        {"StartAt": "A", "States": {"": {"Type": "Succeed"}, "A": {"Type": "Succeed"}}},
    ],
)
def test_odd_shapes_are_refused_with_a_message_never_an_exception(odd):
    assert problems(odd)


def test_the_shipped_seed_002_definition_is_accepted(settings):
    """examples/workflows/database_migration.json, as docs/workflows.md shows it."""
    from pathlib import Path

    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["migrations.internal"]
    path = Path(__file__).resolve().parents[2] / "examples/workflows/database_migration.json"
    shipped = json.loads(path.read_text())
    assert problems(shipped) == []
    states = shipped["States"]
    assert [name for name, s in states.items() if s["Type"] == "Task"] == [
        "CheckVersions",
        "DropConstraints",
        "StartMigration",
        "MigrationStatus",
        "ApplyConstraints",
    ]
    # Its Choices read what http_request returns.
    assert rule_matches(
        states["InSync?"]["Choices"][0], {"CheckVersions": {"json": {"in_sync": True}}}
    )
    assert not rule_matches(
        states["Stopped?"]["Choices"][0], {"MigrationStatus": {"json": {"status": "Running"}}}
    )
    # Off the allow-list, every request of it is refused, each naming its state.
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = []
    refused = problems(shipped)
    assert len(refused) == 5 and all("SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS" in m for m in refused)

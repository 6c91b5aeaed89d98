"""The state machine definition in the repository: its structure, and the template that ships it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from schedules.aws_provision import TRUST_POLICY
from schedules.engines.stepfunctions import load_definition

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "cloudformation.yaml"


def successors(state: dict[str, Any]) -> list[str]:
    nexts = [state["Next"]] if "Next" in state else []
    nexts += [c["Next"] for c in state.get("Catch", [])]
    nexts += [c["Next"] for c in state.get("Choices", [])]
    if "Default" in state:
        nexts.append(state["Default"])
    return nexts


def is_terminal(state: dict[str, Any]) -> bool:
    return state.get("End") is True or state["Type"] in {"Succeed", "Fail"}


def test_every_transition_leads_to_a_state_and_every_state_can_end():
    definition = load_definition()
    states = definition["States"]
    assert definition["StartAt"] in states
    for name, state in states.items():
        for target in successors(state):
            assert target in states, f"{name} → {target} does not exist"
        assert is_terminal(state) or "Next" in state, f"{name} neither ends nor continues"
    # Every state is reachable from StartAt ...
    seen, todo = set(), [definition["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += successors(states[name])
    assert seen == set(states)

    # ... and can reach a terminal state.
    def ends(name: str, path: frozenset[str] = frozenset()) -> bool:
        state = states[name]
        return is_terminal(state) or any(
            ends(n, path | {name}) for n in successors(state) if n not in path
        )

    assert all(ends(name) for name in states)


def test_waits_until_the_due_timestamp_then_sends_to_sqs_with_retry_and_catch():
    states = load_definition()["States"]
    (wait,) = [s for s in states.values() if s["Type"] == "Wait"]
    assert wait["TimestampPath"] == "$.due_at"
    (send,) = [s for s in states.values() if s["Type"] == "Task"]
    assert send["Resource"] == "arn:aws:states:::sqs:sendMessage"
    (retry,) = send["Retry"]
    assert retry["ErrorEquals"] == ["States.ALL"]
    assert retry["BackoffRate"] > 1 and retry["MaxAttempts"] >= 3
    assert retry["JitterStrategy"] == "FULL"
    (catch,) = send["Catch"]
    assert states[catch["Next"]]["Type"] == "Fail"


def test_the_message_carries_ids_only():
    states = load_definition()["States"]
    build = states["BuildMessage"]["Parameters"]
    assert build["args.$"] == "States.Array($.step_id, $.version)" and build["kwargs"] == {}
    body = states["SendToQueue"]["Parameters"]["MessageBody"]
    assert body["headers"]["task"] == "schedules.run_step"


def load_template() -> dict[str, Any]:
    return yaml.safe_load(TEMPLATE.read_text())


def test_template_ships_the_same_definition_and_least_privilege_role():
    resources = load_template()["Resources"]
    assert resources["StepTimer"]["Properties"]["Definition"] == load_definition()
    role = resources["StepTimerRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"] == TRUST_POLICY
    (policy,) = role["Policies"]
    assert policy["PolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": {"Fn::GetAtt": ["JobsQueue", "Arn"]},
        }
    ]
    redrive = resources["JobsQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    cfn_lint_script = Path(sys.executable).with_name("cfn-lint")
    return subprocess.run(
        [str(cfn_lint_script), str(path)], capture_output=True, text=True, timeout=300
    )


def test_cfn_lint_passes_on_the_template():
    result = cfn_lint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("change", "rule"), [("TimestampPath:", "E3601")])
def test_cfn_lint_checks_the_definition(tmp_path, change, rule):
    """The validator is live: a misspelt field in the definition fails it."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace(change, "TimestampPathh:", 1))
    result = cfn_lint(broken)
    assert result.returncode != 0 and rule in result.stdout


def test_template_ships_the_timer_table_and_the_ttl_only_forwarder_mapping():
    import json

    from schedules.aws_provision import TTL_REMOVAL_FILTER
    from schedules.engines.dynamodb_ttl import TTL_ATTRIBUTE

    template = load_template()
    table = template["Resources"]["TimerTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert table["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    mapping = template["Resources"]["TimerStreamToForwarder"]
    assert mapping["Condition"] == "HasForwarder"
    (pattern,) = mapping["Properties"]["FilterCriteria"]["Filters"]
    assert json.loads(pattern["Pattern"]) == TTL_REMOVAL_FILTER
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]

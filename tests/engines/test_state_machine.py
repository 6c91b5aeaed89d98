"""The state machine definition in the repository: its structure, and the template that ships it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from schedules.aws_provision import trust_policy
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
    body = states["SendToQueue"]["Parameters"]["MessageBody"]
    # [args, kwargs, embed] of run_step(step_id, version), written by the engine.
    assert body["body.$"] == "$.body"
    assert body["headers"]["task"] == "schedules.run_step"


def test_two_states_run_per_step_so_two_state_transitions_are_billed():
    """Standard workflows bill per state transition: wait, then send. No Pass state."""
    definition = load_definition()
    states = definition["States"]
    path, name = [], definition["StartAt"]
    while name:
        path.append(states[name]["Type"])
        name = states[name].get("Next")
    assert path == ["Wait", "Task"]
    assert not [s for s in states.values() if s["Type"] == "Pass"]


def load_template() -> dict[str, Any]:
    return yaml.safe_load(TEMPLATE.read_text())


def test_template_ships_the_same_definition_and_least_privilege_role():
    resources = load_template()["Resources"]
    assert resources["StepTimer"]["Properties"]["Definition"] == load_definition()
    role = resources["StepTimerRole"]["Properties"]
    # Trusted by Step Functions for this account's state machine only (confused deputy).
    assert role["AssumeRolePolicyDocument"] == trust_policy(
        account={"Ref": "AWS::AccountId"},
        state_machine_arn={
            "Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}"
            ":stateMachine:${StateMachineName}"
        },
    )
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


def test_template_bounds_the_forwarders_retries_like_aws_provision():
    """A failing batch is bisected and retried a bounded number of times, then goes to the
    failures queue: the same settings as aws_provision's mapping."""
    from schedules import aws_provision

    resources = load_template()["Resources"]
    mapping = resources["TimerStreamToForwarder"]["Properties"]
    assert mapping["BatchSize"] == aws_provision.FORWARDER_BATCH_SIZE
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["MaximumRetryAttempts"] == aws_provision.FORWARDER_MAX_RETRY_ATTEMPTS
    assert mapping["MaximumRecordAgeInSeconds"] == aws_provision.FORWARDER_MAX_RECORD_AGE_SECONDS
    assert mapping["DestinationConfig"] == {
        "OnFailure": {"Destination": {"Fn::GetAtt": ["TimerStreamFailuresQueue", "Arn"]}}
    }
    failures = resources["TimerStreamFailuresQueue"]["Properties"]
    assert failures["QueueName"] == {"Fn::Sub": "${QueueName}" + aws_provision.TTL_FAILURES_SUFFIX}
    assert failures["MessageRetentionPeriod"] == aws_provision.DLQ_RETENTION_SECONDS

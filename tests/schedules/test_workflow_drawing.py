"""The admin's drawing of a workflow's states."""

from __future__ import annotations

import json
import re
from pathlib import Path

from schedules.workflow_drawing import definition_svg

SEED = Path(__file__).resolve().parents[2] / "examples/workflows/database_migration.json"


def test_seed_002_draws_every_state_and_every_arrow():
    svg = str(definition_svg(json.loads(SEED.read_text())))
    assert svg.startswith('<svg class="workflow-drawing"')
    assert len(re.findall(r'<g class="state"', svg)) == 10
    # Ten transitions: one Next each for six states, a rule and a Default for each Choice.
    assert svg.count('class="edge"') == 10
    assert '<text x="' in svg and ">Default</text>" in svg and ">1</text>" in svg
    # The loop back to the wait goes round the side (a curve), the rest straight down.
    assert svg.count(" C") == 1
    assert 'data-type="Choice"' in svg and "Task: http_request" in svg and "Wait 60 s" in svg


def test_names_are_escaped_and_odd_input_draws_nothing():
    svg = str(
        definition_svg(
            {
                "StartAt": "<script>",
                "States": {
                    "<script>": {"Type": "Wait", "Seconds": 1, "Next": "End&"},
                    "End&": {"Type": "Succeed"},
                },
            }
        )
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "End&amp;" in svg
    assert str(definition_svg([])) == ""
    assert str(definition_svg({"States": 5})) == ""


def test_an_execution_s_path_is_drawn_taken_and_its_current_state_outlined():
    from schedules.workflow_drawing import execution_svg

    definition = {
        "StartAt": "Check",
        "States": {
            "Check": {"Type": "Task", "Action": "noop", "Next": "Ok?"},
            "Ok?": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.Check.note", "Equals": "", "Next": "Pause"}],
                "Default": "Failed",
            },
            "Failed": {"Type": "Fail"},
            "Pause": {"Type": "Wait", "Seconds": 5, "Next": "Pause2"},
            "Pause2": {"Type": "Wait", "Seconds": 5, "Next": "Pause"},
        },
    }
    history = [
        {"state": "Check", "from": "", "via": "start"},
        {"state": "Ok?", "from": "Check", "via": "Next"},
        {"state": "Pause", "from": "Ok?", "via": "Choices[0]"},
    ]
    svg = str(execution_svg(definition, history, current="Pause"))
    assert svg.count('class="edge taken"') == 2  # Check -> Ok?, Ok? -> Pause
    assert svg.count('class="edge"') == 3  # Default, Pause -> Pause2, Pause2 -> Pause
    assert svg.count('class="state visited"') == 2 and svg.count('class="state current"') == 1
    assert '<g class="state" data-type="Fail"><title>Failed</title>' in svg
    plain = str(definition_svg(definition))
    assert "taken" not in plain.replace('id="taken"', "") and "visited" not in plain

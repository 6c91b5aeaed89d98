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

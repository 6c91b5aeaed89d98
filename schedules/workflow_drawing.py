"""A drawing of a workflow's states, as SVG, for the admin.

States are laid out in rows by their distance from StartAt (breadth first), each row
in the order the states are first reached. An arrow that goes down the page is drawn
straight; one that goes back up or across (a loop, through its Wait) goes round the
right-hand side. Arrows out of a Choice are labelled with the rule's number or
"Default", a catcher's with "catch". Every name is escaped.

Drawn for an execution, the states it entered and the arrows it took are drawn thick
and green, and the state a running execution is in has an orange outline.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .workflow_language import transitions

BOX_W, BOX_H = 190, 46
GAP_X, GAP_Y = 36, 54
MARGIN = 20
LANE = 26  # room on the right per arrow that goes back up
EDGE, TAKEN, CURRENT = "#555555", "#1a7f37", "#d97706"
COLOURS = {
    "Task": ("#e8f1fa", "#417690"),
    "Choice": ("#fdf3dc", "#b7791f"),
    "Wait": ("#f0f0f0", "#666666"),
    "Succeed": ("#e6f4ea", "#2e7d32"),
    "Fail": ("#fdecea", "#ba2121"),
}


def _subtitle(state: Any) -> str:
    if not isinstance(state, Mapping):
        return ""
    kind = state.get("Type", "")
    if kind == "Task":
        return f"Task: {state.get('Action', '')}"
    if kind == "Wait":
        if "Seconds" in state:
            return f"Wait {state['Seconds']} s"
        return f"Wait until {state.get('TimestampPath', '')}"
    if kind == "Fail" and state.get("Error"):
        return f"Fail: {state['Error']}"
    return str(kind)


def _short(text: str, limit: int = 26) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def definition_svg(
    definition: Any,
    *,
    visited: Collection[str] = (),
    taken: Collection[tuple[str, str]] = (),
    current: str = "",
) -> SafeString:
    """The drawing of a (checked) definition; an empty string for anything else.
    For an execution: the states it entered (``visited``), the (from, to) arrows it took
    (``taken``), and the state it is in while it runs (``current``)."""
    if not isinstance(definition, Mapping) or not isinstance(definition.get("States"), Mapping):
        return SafeString("")
    states: Mapping[str, Any] = definition["States"]
    start = definition.get("StartAt")
    order: list[str] = []
    level: dict[str, int] = {}
    todo: list[str] = []
    if isinstance(start, str) and start in states:
        todo.append(start)
        level[start] = 0
    while todo:
        name = todo.pop(0)
        order.append(name)
        for target, _ in transitions(states[name], states):
            if target not in level:
                level[target] = level[name] + 1
                todo.append(target)
    for name in states:  # (a checked definition has every state reachable)
        if name not in level:
            level[name] = max(level.values(), default=-1) + 1
            order.append(name)
    rows: dict[int, list[str]] = {}
    for name in order:
        rows.setdefault(level[name], []).append(name)
    width = max(len(row) for row in rows.values()) * (BOX_W + GAP_X) - GAP_X
    place: dict[str, tuple[int, int]] = {}
    for depth, row in rows.items():
        row_width = len(row) * (BOX_W + GAP_X) - GAP_X
        for i, name in enumerate(row):
            x = MARGIN + (width - row_width) // 2 + i * (BOX_W + GAP_X)
            place[name] = (x, MARGIN + depth * (BOX_H + GAP_Y))
    arrows: list[SafeString] = []
    lane = 0
    for name in order:
        x, y = place[name]
        for target, label in transitions(states[name], states):
            tx, ty = place[target]
            if ty > y:  # down the page
                x1, y1, x2, y2 = x + BOX_W // 2, y + BOX_H, tx + BOX_W // 2, ty
                path = f"M{x1},{y1} L{x2},{y2}"
                lx, ly = (x1 + x2) // 2 + 4, (y1 + y2) // 2
            else:  # back up (a loop) or across: round the right-hand side
                lane += 1
                side = MARGIN + width + lane * LANE
                y1, y2 = y + BOX_H // 2, ty + BOX_H // 2
                path = f"M{x + BOX_W},{y1} C{side},{y1} {side},{y2} {tx + BOX_W},{y2}"
                lx, ly = side - 4, (y1 + y2) // 2
            was_taken = (name, target) in taken
            arrows.append(
                format_html(
                    '<path class="{}" d="{}" fill="none" stroke="{}" '
                    'stroke-width="{}" marker-end="url(#{})"/>{}',
                    "edge taken" if was_taken else "edge",
                    path,
                    TAKEN if was_taken else EDGE,
                    3 if was_taken else 1.5,
                    "taken" if was_taken else "arrow",
                    format_html(
                        '<text x="{}" y="{}" font-size="11" fill="#333">{}</text>', lx, ly, label
                    )
                    if label
                    else "",
                )
            )
    boxes = format_html_join(
        "",
        '<g class="{}" data-type="{}"><title>{}</title>'
        '<rect x="{}" y="{}" width="{}" height="{}" rx="6" fill="{}" stroke="{}" '
        'stroke-width="{}"/>'
        '<text x="{}" y="{}" font-size="13" font-weight="bold" fill="#222">{}</text>'
        '<text x="{}" y="{}" font-size="11" fill="#555">{}</text></g>',
        (
            (
                "state current"
                if name == current
                else "state visited"
                if name in visited
                else "state",
                kind,
                name,
                x,
                y,
                BOX_W,
                BOX_H,
                fill,
                CURRENT if name == current else TAKEN if name in visited else stroke,
                3 if name in (start, current) or name in visited else 1,
                x + 10,
                y + 19,
                _short(name),
                x + 10,
                y + 36,
                _short(_subtitle(states[name]), 30),
            )
            for name in order
            for x, y in [place[name]]
            for kind in [states[name].get("Type", "") if isinstance(states[name], Mapping) else ""]
            for fill, stroke in [COLOURS.get(kind, ("#ffffff", "#999999"))]
        ),
    )
    total_w = MARGIN * 2 + width + (lane + 1) * LANE
    total_h = MARGIN * 2 + (max(rows) + 1) * (BOX_H + GAP_Y) - GAP_Y
    return format_html(
        '<svg class="workflow-drawing" xmlns="http://www.w3.org/2000/svg" width="{}" '
        'height="{}" viewBox="0 0 {} {}" role="img" aria-label="The states of the workflow">'
        "<defs>{}{}</defs>{}{}</svg>",
        total_w,
        total_h,
        total_w,
        total_h,
        _marker("arrow", EDGE, 7),
        _marker("taken", TAKEN, 4),
        format_html_join("", "{}", ((arrow,) for arrow in arrows)),
        boxes,
    )


def _marker(name: str, colour: str, size: float) -> SafeString:
    """An arrowhead; its size is in stroke widths (a thick arrow gets a smaller number)."""
    return format_html(
        '<marker id="{}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="{}" '
        'markerHeight="{}" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="{}"/></marker>',
        name,
        size,
        size,
        colour,
    )


def execution_svg(
    definition: Any, history: list[Mapping[str, Any]], current: str = ""
) -> SafeString:
    """The definition drawn with the path an execution took (from its history)."""
    return definition_svg(
        definition,
        visited={str(e["state"]) for e in history},
        taken={(str(e["from"]), str(e["state"])) for e in history if e.get("from")},
        current=current,
    )

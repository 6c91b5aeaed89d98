"""The workflow language: a small subset of Amazon States Language, checked when saved.

A definition is a JSON object::

    {"StartAt": "CheckVersions", "States": {"CheckVersions": {...}, ...}}

with five kinds of state (``Type``):

* ``Task``: runs a registered ``Action`` with its ``Payload``; then ``Next`` or ``End``.
  Optional ``Retry`` (``IntervalSeconds``, ``BackoffRate``, ``MaxAttempts``,
  ``ErrorEquals``) and ``Catch`` (``ErrorEquals``, ``Next``).
* ``Choice``: ``Choices`` (rules on the data, each with its ``Next``) and a ``Default``.
* ``Wait``: ``Seconds``, or ``TimestampPath`` (a path to an ISO 8601 time in the data);
  then ``Next`` or ``End``.
* ``Succeed``; ``Fail`` (optional ``Error`` and ``Cause``).

The data of an execution is one JSON object; a Task's result is stored under the
state's name, and payloads and rules read it by path: ``$`` is the data, ``.name`` a
key, ``[n]`` an item of a list (``$.CheckVersions.in_sync``, ``$.Items[0].id``). A
payload key ending in ``.$`` takes its value from a path (``"url.$": "$.Start.url"``).

``definition_check`` collects every rule a definition breaks, each message naming the
state and the field (``States.InSync?.Default: ...``), so that the admin, the API and
the commands all refuse the same definitions with the same words.
"""

from __future__ import annotations

import json
import math
import operator as operator_module
import re
from collections.abc import Iterator, Mapping
from typing import Any

from workers.actions import UnknownAction, get_action

from .validation import Errors, check_action_payload, check_job_action

#: Limits of a definition.
MAX_DEFINITION_BYTES = 64 * 1024
MAX_STATES = 100
MAX_STATE_NAME = 80
MAX_WAIT_SECONDS = 365 * 24 * 3600
MAX_RETRY_ATTEMPTS = 10
MAX_RETRY_INTERVAL = 24 * 3600
MAX_RULE_DEPTH = 8

STATE_TYPES = ("Task", "Choice", "Wait", "Succeed", "Fail")
FIELDS: dict[str, set[str]] = {
    "Task": {"Type", "Comment", "Action", "Payload", "Next", "End", "Retry", "Catch"},
    "Choice": {"Type", "Comment", "Choices", "Default"},
    "Wait": {"Type", "Comment", "Seconds", "TimestampPath", "Next", "End"},
    "Succeed": {"Type", "Comment"},
    "Fail": {"Type", "Comment", "Error", "Cause"},
}
TOP_FIELDS = {"Comment", "StartAt", "States"}
#: Comparisons of a Choice rule: the operator, and the kind of value it compares.
COMPARISONS = {
    "Equals": "any",
    "NotEquals": "any",
    # Amazon States Language's names for Equals, accepted as they are.
    "StringEquals": "string",
    "NumericEquals": "number",
    "BooleanEquals": "boolean",
    "NumericLessThan": "number",
    "NumericLessThanEquals": "number",
    "NumericGreaterThan": "number",
    "NumericGreaterThanEquals": "number",
    "IsPresent": "boolean",
}
RETRY_FIELDS = {"ErrorEquals", "IntervalSeconds", "BackoffRate", "MaxAttempts"}
CATCH_FIELDS = {"ErrorEquals", "Next"}
#: Matches every error in ErrorEquals.
ALL_ERRORS = "States.ALL"

#: How a path is written, for the messages that refuse one.
PATH_RULE = "a path ($, then .key or [index] parts)"
PATH = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_\-?]*|\[\d+\])*")
PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_\-?]*)|\[(\d+)\]")


class PathMissing(LookupError):
    """A path names nothing in the data."""

    def __init__(self, path: str, at: str) -> None:
        super().__init__(f"{path}: nothing at {at}")
        self.path = path


def is_path(value: Any) -> bool:
    return isinstance(value, str) and PATH.fullmatch(value) is not None


def path_get(data: Any, path: str) -> Any:
    """The value at ``path`` in ``data``; ``PathMissing`` if there is none."""
    if not is_path(path):
        raise ValueError(f"{path!r} is not {PATH_RULE}")
    value = data
    walked = "$"
    for match in PATH_PART.finditer(path, 1):
        key, index = match.groups()
        walked += match.group(0)
        if key is not None:
            if not isinstance(value, Mapping) or key not in value:
                raise PathMissing(path, walked)
            value = value[key]
        else:
            if not isinstance(value, list) or int(index) >= len(value):
                raise PathMissing(path, walked)
            value = value[int(index)]
    return value


def payload_render(payload: Mapping[str, Any], data: Any) -> dict[str, Any]:
    """The payload with every ``"key.$": "$.path"`` replaced by ``"key": <value>``
    (nested objects too); ``PathMissing`` names the first path that finds nothing."""
    rendered: dict[str, Any] = {}
    for key, value in payload.items():
        if key.endswith(".$"):
            rendered[key[:-2]] = path_get(data, value)
        elif isinstance(value, Mapping):
            rendered[key] = payload_render(value, data)
        else:
            rendered[key] = value
    return rendered


def rule_matches(rule: Mapping[str, Any], data: Any) -> bool:
    """Whether a (checked) Choice rule holds for ``data``. A comparison on a path that
    finds nothing raises ``PathMissing``, except ``IsPresent``, which is about exactly
    that; a comparison of values of different kinds is false."""
    if "And" in rule:
        return all(rule_matches(r, data) for r in rule["And"])
    if "Or" in rule:
        return any(rule_matches(r, data) for r in rule["Or"])
    if "Not" in rule:
        return not rule_matches(rule["Not"], data)
    operator = next(op for op in COMPARISONS if op in rule)
    expected = rule[operator]
    if operator == "IsPresent":
        try:
            path_get(data, rule["Variable"])
        except PathMissing:
            return expected is False
        return expected is True
    value = path_get(data, rule["Variable"])
    if operator in ("Equals", "StringEquals", "NumericEquals", "BooleanEquals"):
        return _same(value, expected)
    if operator == "NotEquals":
        return not _same(value, expected)
    if not _is_number(value):
        return False
    compare = {
        "NumericLessThan": operator_module.lt,
        "NumericLessThanEquals": operator_module.le,
        "NumericGreaterThan": operator_module.gt,
        "NumericGreaterThanEquals": operator_module.ge,
    }[operator]
    return bool(compare(value, expected))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: float) -> str:
    """A limit as people write it: 31536000, 1, 2.5."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _same(value: Any, expected: Any) -> bool:
    """JSON equality: true is not 1, and 1 is 1.0."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    return bool(value == expected)


# ------------------------------------------------------------------------ the checks


def definition_check(errors: Errors, definition: Any, *, field: str = "definition") -> None:
    """Add to ``errors`` (under ``field``) every rule ``definition`` breaks."""
    if not isinstance(definition, Mapping):
        errors.add(field, "must be a JSON object with StartAt and States")
        return
    try:
        size = len(json.dumps(definition, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        errors.add(field, f"must be plain JSON ({exc})")
        return
    if size > MAX_DEFINITION_BYTES:
        errors.add(field, f"is {size} bytes as JSON; the limit is {MAX_DEFINITION_BYTES} bytes")
        return
    checker = _Checker(errors, field)
    checker.check(definition)


class _Checker:
    def __init__(self, errors: Errors, field: str) -> None:
        self.errors = errors
        self.field = field

    def add(self, where: str, message: str) -> None:
        self.errors.add(self.field, f"{where}: {message}")

    def check(self, definition: Mapping[str, Any]) -> None:
        for key in sorted(set(definition) - TOP_FIELDS):
            self.add(key, f"unknown field (allowed: {', '.join(sorted(TOP_FIELDS))})")
        states = definition.get("States")
        if not isinstance(states, Mapping) or not states:
            self.add("States", "required: an object of at least one state by name")
            return
        if len(states) > MAX_STATES:
            self.add("States", f"has {len(states)} states; the limit is {MAX_STATES}")
            return
        start = definition.get("StartAt")
        if not isinstance(start, str) or not start:
            self.add("StartAt", "required: the name of the first state")
        elif start not in states:
            self.add("StartAt", f"names no state: {start!r}{self._nearest(start, states)}")
        for name, state in states.items():
            self._check_state(name, state, states)
        if isinstance(start, str) and start in states:
            self._check_graph(start, states)

    @staticmethod
    def _nearest(name: str, states: Mapping[str, Any]) -> str:
        import difflib

        close = difflib.get_close_matches(name, list(states), n=1)
        return f" (did you mean {close[0]!r}?)" if close else ""

    def _check_state(self, name: str, state: Any, states: Mapping[str, Any]) -> None:
        where = f"States.{name}"
        if not name or len(name) > MAX_STATE_NAME:
            self.add(where, f"a state's name has 1 to {MAX_STATE_NAME} characters")
        if not isinstance(state, Mapping):
            self.add(where, "must be an object with a Type")
            return
        kind = state.get("Type")
        if kind not in STATE_TYPES:
            self.add(f"{where}.Type", f"must be one of {', '.join(STATE_TYPES)}, not {kind!r}")
            return
        for key in sorted(set(state) - FIELDS[kind]):
            allowed = ", ".join(sorted(FIELDS[kind]))
            self.add(f"{where}.{key}", f"unknown field for a {kind} state (allowed: {allowed})")
        if kind in ("Task", "Wait"):
            self._check_next_or_end(where, state, states)
        getattr(self, f"_check_{kind.lower()}")(where, state, states)

    def _check_target(self, where: str, target: Any, states: Mapping[str, Any]) -> None:
        if not isinstance(target, str) or not target:
            self.add(where, "must name a state")
        elif target not in states:
            self.add(where, f"names no state: {target!r}{self._nearest(target, states)}")

    def _check_next_or_end(self, where: str, state: Mapping[str, Any], states: Any) -> None:
        has_next, end = "Next" in state, state.get("End")
        if has_next and end is not None:
            self.add(where, "has both Next and End; a state either goes on or ends")
        elif has_next:
            self._check_target(f"{where}.Next", state["Next"], states)
        elif end is not True:
            self.add(where, "needs Next (the state after it) or End: true")

    def _check_task(self, where: str, state: Mapping[str, Any], states: Any) -> None:
        action = state.get("Action")
        if not isinstance(action, str) or not action:
            self.add(f"{where}.Action", "required: the name of a registered action")
            return
        payload = state.get("Payload", {})
        if not isinstance(payload, Mapping):
            self.add(f"{where}.Payload", "must be a JSON object")
            return
        self._check_payload(where, action, payload)
        for key, what, check in (
            ("Retry", "retriers", self._check_retrier),
            ("Catch", "catchers", self._check_catcher),
        ):
            items = state.get(key, [])
            if not isinstance(items, list):
                self.add(f"{where}.{key}", f"must be a list of {what}")
                continue
            for n, item in enumerate(items):
                check(f"{where}.{key}[{n}]", item, states)

    def _check_payload(self, where: str, action: str, payload: Mapping[str, Any]) -> None:
        """A payload without paths is checked by the action's schema as it is; one with
        paths has its paths checked here and its keys against the schema's fields (the
        values are only known when the state runs, and are checked then). A Task runs
        what a job may run: not a classroom's recording actions, nor a Wait's own."""
        scope = Errors()
        check_job_action(scope, f"{where}.Action", action, who="a Task")
        for key, messages in scope.by_field.items():
            for message in messages:
                self.add(key, message)
        if scope.by_field:
            return
        references = list(_references(payload))
        for key, path in references:
            if not is_path(path):
                self.add(
                    f"{where}.Payload.{key}",
                    f"must be {PATH_RULE}, not {path!r}",
                )
        if not references:
            errors = Errors()
            check_action_payload(
                errors, action, dict(payload), action_field="Action", payload_field="Payload"
            )
            for key, messages in errors.by_field.items():
                for message in messages:
                    self.add(f"{where}.{key}", message)
            return
        try:
            spec = get_action(action)
        except UnknownAction as exc:
            self.add(f"{where}.Action", str(exc))
            return
        known = set(spec.payload_model.model_fields)
        for key in payload:
            name = key.removesuffix(".$")
            if name not in known:
                self.add(
                    f"{where}.Payload.{key}",
                    f"{action!r} takes no field {name!r} (its fields: "
                    f"{', '.join(sorted(known)) or 'none'})",
                )

    def _check_errors_list(self, where: str, value: Any) -> None:
        if not isinstance(value, list) or not value or not all(isinstance(e, str) for e in value):
            self.add(
                f"{where}.ErrorEquals",
                f"must be a list of error names ({ALL_ERRORS} matches every error)",
            )

    def _check_retrier(self, where: str, retrier: Any, states: Any) -> None:
        if not isinstance(retrier, Mapping):
            self.add(where, "must be an object")
            return
        for key in sorted(set(retrier) - RETRY_FIELDS):
            self.add(
                f"{where}.{key}", f"unknown field (allowed: {', '.join(sorted(RETRY_FIELDS))})"
            )
        if "ErrorEquals" in retrier:
            self._check_errors_list(where, retrier["ErrorEquals"])
        self._check_number(
            f"{where}.IntervalSeconds", retrier.get("IntervalSeconds", 1), 1, MAX_RETRY_INTERVAL
        )
        self._check_number(f"{where}.BackoffRate", retrier.get("BackoffRate", 2.0), 1.0, 10.0)
        self._check_number(
            f"{where}.MaxAttempts", retrier.get("MaxAttempts", 3), 0, MAX_RETRY_ATTEMPTS, whole=True
        )

    def _check_catcher(self, where: str, catcher: Any, states: Any) -> None:
        if not isinstance(catcher, Mapping):
            self.add(where, "must be an object")
            return
        for key in sorted(set(catcher) - CATCH_FIELDS):
            self.add(
                f"{where}.{key}", f"unknown field (allowed: {', '.join(sorted(CATCH_FIELDS))})"
            )
        self._check_errors_list(where, catcher.get("ErrorEquals", [ALL_ERRORS]))
        self._check_target(f"{where}.Next", catcher.get("Next"), states)

    def _check_number(
        self, where: str, value: Any, low: float, high: float, *, whole: bool = False
    ) -> None:
        if not _is_number(value) or (whole and not isinstance(value, int)):
            self.add(where, f"must be a {'whole ' if whole else ''}number")
        elif not (low <= value <= high) or (isinstance(value, float) and not math.isfinite(value)):
            self.add(where, f"must be between {_number(low)} and {_number(high)}, not {value}")

    def _check_choice(self, where: str, state: Mapping[str, Any], states: Any) -> None:
        choices = state.get("Choices")
        if not isinstance(choices, list) or not choices:
            self.add(f"{where}.Choices", "required: a list of at least one rule with its Next")
        else:
            for n, rule in enumerate(choices):
                self._check_rule(f"{where}.Choices[{n}]", rule, states, top=True, depth=0)
        if "Default" not in state:
            self.add(
                f"{where}.Default",
                "required: the state to go to when no rule matches (a Choice without a "
                "Default would leave the execution nowhere to go)",
            )
        else:
            self._check_target(f"{where}.Default", state["Default"], states)

    def _check_rule(self, where: str, rule: Any, states: Any, *, top: bool, depth: int) -> None:
        if not isinstance(rule, Mapping):
            self.add(where, "must be an object")
            return
        if depth > MAX_RULE_DEPTH:
            self.add(where, f"rules nest at most {MAX_RULE_DEPTH} deep")
            return
        if top:
            self._check_target(f"{where}.Next", rule.get("Next"), states)
        elif "Next" in rule:
            self.add(f"{where}.Next", "only a top-level rule of Choices has a Next")
        body = {k: v for k, v in rule.items() if k not in ("Next", "Comment")}
        compound = [k for k in ("And", "Or", "Not") if k in body]
        if compound:
            if len(body) != 1:
                self.add(where, f"{compound[0]} stands alone in its rule")
                return
            kind = compound[0]
            if kind == "Not":
                self._check_rule(f"{where}.Not", body["Not"], states, top=False, depth=depth + 1)
                return
            if not isinstance(body[kind], list) or not body[kind]:
                self.add(f"{where}.{kind}", "must be a list of at least one rule")
                return
            for n, inner in enumerate(body[kind]):
                self._check_rule(f"{where}.{kind}[{n}]", inner, states, top=False, depth=depth + 1)
            return
        operators = [k for k in body if k in COMPARISONS]
        unknown = sorted(set(body) - set(COMPARISONS) - {"Variable"})
        for key in unknown:
            allowed = ", ".join(["Variable", "And", "Or", "Not", *COMPARISONS])
            self.add(f"{where}.{key}", f"unknown field (allowed: {allowed})")
        if not is_path(body.get("Variable")):
            self.add(f"{where}.Variable", f"required: {PATH_RULE}")
        if len(operators) != 1:
            self.add(
                where,
                f"needs exactly one comparison ({', '.join(COMPARISONS)}), or And, Or, Not",
            )
            return
        operator = operators[0]
        value = body[operator]
        kind = COMPARISONS[operator]
        if kind == "number" and not _is_number(value):
            self.add(f"{where}.{operator}", "must be a number")
        elif kind == "boolean" and not isinstance(value, bool):
            self.add(f"{where}.{operator}", "must be true or false")
        elif kind == "string" and not isinstance(value, str):
            self.add(f"{where}.{operator}", "must be a string")

    def _check_wait(self, where: str, state: Mapping[str, Any], states: Any) -> None:
        has_seconds, has_path = "Seconds" in state, "TimestampPath" in state
        if has_seconds == has_path:
            self.add(where, "needs exactly one of Seconds or TimestampPath")
        elif has_seconds:
            self._check_number(f"{where}.Seconds", state["Seconds"], 0, MAX_WAIT_SECONDS)
        elif not is_path(state["TimestampPath"]):
            self.add(f"{where}.TimestampPath", f"must be {PATH_RULE}")

    def _check_succeed(self, where: str, state: Mapping[str, Any], states: Any) -> None:
        pass  # nothing beyond its fields

    def _check_fail(self, where: str, state: Mapping[str, Any], states: Any) -> None:
        for key, limit in (("Error", 256), ("Cause", 1000)):
            value = state.get(key, "")
            if not isinstance(value, str) or len(value) > limit:
                self.add(f"{where}.{key}", f"must be text of at most {limit} characters")

    def _check_graph(self, start: str, states: Mapping[str, Any]) -> None:
        """Every state reachable from StartAt; no loop without a Wait in it."""
        edges = {
            name: [target for target, _ in transitions(state, states)]
            for name, state in states.items()
        }
        seen = {start}
        todo = [start]
        while todo:
            for target in edges[todo.pop()]:
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        for name in states:
            if name not in seen:
                self.add(f"States.{name}", "unreachable: no path from StartAt leads to it")
        loop = _loop_without_wait(edges, states)
        if loop:
            self.add(
                f"States.{loop[0]}",
                f"loops back to itself ({' → '.join(loop)}) without a Wait: every loop "
                "needs a Wait state, or it would run as fast as the worker can",
            )


def _references(payload: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in payload.items():
        if key.endswith(".$"):
            yield f"{prefix}{key}", value
        elif isinstance(value, Mapping):
            yield from _references(value, f"{prefix}{key}.")


def transitions(state: Any, states: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(target, label)`` of every way out of a state, in the order it reads them: its
    ``Next`` (label ""), each rule of ``Choices`` (its number), ``Default`` and each
    catcher (``catch``). Only names that exist are kept."""
    if not isinstance(state, Mapping):
        return []
    found: list[tuple[Any, str]] = []
    if "Next" in state:
        found.append((state["Next"], ""))
    choices = state.get("Choices")
    for n, rule in enumerate(choices if isinstance(choices, list) else [], start=1):
        if isinstance(rule, Mapping):
            found.append((rule.get("Next"), str(n)))
    if "Default" in state:
        found.append((state["Default"], "Default"))
    catch = state.get("Catch")
    for catcher in catch if isinstance(catch, list) else []:
        if isinstance(catcher, Mapping):
            found.append((catcher.get("Next"), "catch"))
    return [(t, label) for t, label in found if isinstance(t, str) and t in states]


def _loop_without_wait(edges: dict[str, list[str]], states: Mapping[str, Any]) -> list[str]:
    """A cycle among states that are not Waits, as the names along it, or []."""

    def is_wait(name: str) -> bool:
        state = states[name]
        return isinstance(state, Mapping) and state.get("Type") == "Wait"

    colour: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str]:
        colour[name] = 1
        path.append(name)
        for target in edges[name]:
            if is_wait(target):
                continue
            if colour.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in colour:
                found = visit(target)
                if found:
                    return found
        path.pop()
        colour[name] = 2
        return []

    for name in edges:
        if name not in colour and not is_wait(name):
            found = visit(name)
            if found:
                return found
    return []

/* The job add and change forms (schedules/forms.py, schedules/admin/jobs.py).
 *
 * - Only the fieldsets of the chosen schedule type show: a fieldset with a class
 *   `schedule-<type>` shows for that type; one with `action-polls` only for an action
 *   that polls. A hidden fieldset is also disabled, so its fields are not sent (a rate
 *   filled in before switching to "once" does not come back as an error).
 * - The payload box is checked as you type against the chosen action's JSON schema, each
 *   problem listed above the box ("key: rule"), and only that action's help shows. The
 *   schemas and helps come from the page (`<script type="application/json">`, written by
 *   PayloadEditor); "Add the required keys" writes the missing ones into the box.
 *
 * Without this script every fieldset shows, and the server checks everything on save,
 * as it always does: this only helps before the save.
 */
"use strict";
{
    const SCHEDULE_CLASS = "schedule-";
    const POLLS_CLASS = "action-polls";
    const CHECK_DELAY_MS = 250;

    // --- Sections -------------------------------------------------------------------

    function setShown(element, visible) {
        element.hidden = !visible;
        element.classList.toggle("hidden", !visible); // the admin's own class
    }

    function showSection(fieldset, visible) {
        setShown(fieldset, visible);
        fieldset.disabled = !visible; // its fields are not sent
    }

    function scheduleTypeOf(fieldset) {
        return [...fieldset.classList]
            .filter((name) => name.startsWith(SCHEDULE_CLASS))
            .map((name) => name.slice(SCHEDULE_CLASS.length));
    }

    function initScheduleSections(form) {
        const select = form.elements.namedItem("schedule_type");
        if (!(select instanceof HTMLSelectElement)) {
            return; // fixed on this page: the server shows the right fieldsets
        }
        const sections = [...form.querySelectorAll("fieldset")].filter(
            (fieldset) => scheduleTypeOf(fieldset).length > 0
        );
        const update = () => {
            for (const fieldset of sections) {
                showSection(fieldset, scheduleTypeOf(fieldset).includes(select.value));
            }
        };
        select.addEventListener("change", update);
        update();
    }

    // --- A JSON schema check (the subset pydantic writes) -----------------------------

    function resolve(schema, root) {
        let node = schema;
        for (let depth = 0; node && typeof node.$ref === "string" && depth < 32; depth++) {
            if (!node.$ref.startsWith("#/")) {
                return {};
            }
            node = node.$ref
                .slice(2)
                .split("/")
                .reduce((parent, key) => (parent ? parent[key] : undefined), root);
        }
        return node && typeof node === "object" ? node : {};
    }

    function kindOf(value) {
        if (value === null) {
            return "null";
        }
        if (Array.isArray(value)) {
            return "array";
        }
        if (typeof value === "number") {
            return Number.isInteger(value) ? "integer" : "number";
        }
        return typeof value; // string, boolean, object
    }

    const BOOLEAN_WORDS = ["0", "1", "true", "false", "yes", "no", "on", "off", "t", "f", "y", "n"];

    // As pydantic reads JSON (lax mode): "5" and 5.0 are integers, 0 and "yes" booleans.
    function fitsType(value, type) {
        const kind = kindOf(value);
        switch (type) {
            case "integer":
                return (
                    kind === "integer" ||
                    (kind === "string" && /^\s*[-+]?\d+\s*$/.test(value))
                );
            case "number":
                return (
                    kind === "integer" ||
                    kind === "number" ||
                    (kind === "string" && value.trim() !== "" && Number.isFinite(Number(value)))
                );
            case "boolean":
                return (
                    kind === "boolean" ||
                    (kind === "integer" && (value === 0 || value === 1)) ||
                    (kind === "string" && BOOLEAN_WORDS.includes(value.trim().toLowerCase()))
                );
            default:
                return kind === type;
        }
    }

    const TYPE_WORDS = {
        string: "a string",
        integer: "a whole number",
        number: "a number",
        boolean: "true or false",
        null: "null",
        object: "an object",
        array: "a list",
    };

    function describe(schema, root) {
        const node = resolve(schema, root);
        if (Array.isArray(node.anyOf)) {
            return node.anyOf.map((option) => describe(option, root)).join(" or ");
        }
        if (Array.isArray(node.enum)) {
            return `one of ${node.enum.map((value) => JSON.stringify(value)).join(", ")}`;
        }
        if (node.type === "array" && node.items) {
            return `a list of ${describe(node.items, root).replace(/^an? /, "")}`;
        }
        const types = [].concat(node.type ?? []);
        return types.map((type) => TYPE_WORDS[type] ?? type).join(" or ") || "any JSON value";
    }

    function plural(count, word) {
        return `${count} ${word}${count === 1 ? "" : "s"}`;
    }

    function sameJSON(a, b) {
        return JSON.stringify(a) === JSON.stringify(b);
    }

    /* Each problem of `value` against `schema` as [path, rule]; path "" is the payload. */
    function check(value, schema, root, path, found) {
        const node = resolve(schema, root);
        const add = (rule, where = path) => found.push([where, rule]);
        const at = (key) => (path ? `${path}.${key}` : String(key));
        if (Array.isArray(node.anyOf)) {
            const options = node.anyOf.map((option) => resolve(option, root));
            const fits = options.some((option) => {
                const sub = [];
                check(value, option, root, path, sub);
                return sub.length === 0;
            });
            if (!fits) {
                // An option of the value's own type says why (e.g. too long); else the types.
                const same = options.filter((option) => option.type && fitsType(value, option.type));
                if (same.length === 1) {
                    check(value, same[0], root, path, found);
                } else {
                    add(`must be ${describe(node, root)}`);
                }
            }
            return;
        }
        if (Array.isArray(node.allOf)) {
            for (const part of node.allOf) {
                check(value, part, root, path, found);
            }
        }
        if ("const" in node && !sameJSON(node.const, value)) {
            add(`must be ${JSON.stringify(node.const)}`);
            return;
        }
        if (Array.isArray(node.enum) && !node.enum.some((option) => sameJSON(option, value))) {
            add(`must be ${describe(node, root)}`);
            return;
        }
        const types = [].concat(node.type ?? []);
        if (types.length && !types.some((type) => fitsType(value, type))) {
            add(`must be ${describe(node, root)}`);
            return;
        }
        switch (kindOf(value)) {
            case "string": {
                const length = [...value].length; // characters, as Python counts them
                if (node.minLength !== undefined && length < node.minLength) {
                    add(node.minLength === 1 ? "must not be empty" : `at least ${plural(node.minLength, "character")}`);
                }
                if (node.maxLength !== undefined && length > node.maxLength) {
                    add(`at most ${plural(node.maxLength, "character")} (not ${length})`);
                }
                break;
            }
            case "integer":
            case "number":
                if (node.minimum !== undefined && value < node.minimum) {
                    add(`at least ${node.minimum}`);
                }
                if (node.maximum !== undefined && value > node.maximum) {
                    add(`at most ${node.maximum}`);
                }
                if (node.exclusiveMinimum !== undefined && value <= node.exclusiveMinimum) {
                    add(`more than ${node.exclusiveMinimum}`);
                }
                if (node.exclusiveMaximum !== undefined && value >= node.exclusiveMaximum) {
                    add(`less than ${node.exclusiveMaximum}`);
                }
                break;
            case "array":
                if (node.minItems !== undefined && value.length < node.minItems) {
                    add(`at least ${plural(node.minItems, "item")}`);
                }
                if (node.maxItems !== undefined && value.length > node.maxItems) {
                    add(`at most ${plural(node.maxItems, "item")} (not ${value.length})`);
                }
                if (node.items) {
                    value.forEach((item, index) => check(item, node.items, root, at(index), found));
                }
                break;
            case "object": {
                const properties = node.properties ?? {};
                const keys = Object.keys(value);
                for (const key of node.required ?? []) {
                    if (!Object.hasOwn(value, key)) {
                        add("required", at(key));
                    }
                }
                if (node.maxProperties !== undefined && keys.length > node.maxProperties) {
                    add(`at most ${plural(node.maxProperties, "key")} (not ${keys.length})`);
                }
                for (const key of keys) {
                    if (Object.hasOwn(properties, key)) {
                        check(value[key], properties[key], root, at(key), found);
                    } else if (node.additionalProperties === false) {
                        const known = Object.keys(properties);
                        add(`unknown key (keys: ${known.join(", ") || "none"})`, at(key));
                    } else if (node.additionalProperties && typeof node.additionalProperties === "object") {
                        check(value[key], node.additionalProperties, root, at(key), found);
                    }
                }
                break;
            }
        }
    }

    /* A value to start a required key with: its default, else an empty one of its type. */
    function placeholder(schema, root) {
        const node = resolve(schema, root);
        if ("default" in node) {
            return node.default;
        }
        if (Array.isArray(node.enum) && node.enum.length) {
            return node.enum[0];
        }
        if (Array.isArray(node.anyOf)) {
            const option = node.anyOf.map((o) => resolve(o, root)).find((o) => o.type !== "null");
            return option ? placeholder(option, root) : null;
        }
        const type = [].concat(node.type ?? [])[0];
        return { string: "", integer: 0, number: 0, boolean: false, array: [], object: {} }[type] ?? null;
    }

    // --- The payload box ---------------------------------------------------------------

    function initPayloadEditor(form) {
        const box = form.querySelector("textarea[data-payload-actions]");
        const source = box && document.getElementById(box.dataset.payloadActions);
        if (!box || !source) {
            return;
        }
        const actions = JSON.parse(source.textContent);
        const select = box.dataset.action ? null : form.elements.namedItem("action");
        const chosen = () => box.dataset.action || (select ? select.value : "");
        const helpBox = document.getElementById(`${box.id}_helptext`);
        const help = helpBox && helpBox.querySelector("[data-payload-action-help]");
        const noActionHelp = help ? help.innerHTML : "";
        const pollSections = [...form.querySelectorAll(`fieldset.${POLLS_CLASS}`)];

        // The problems, where Django puts a field's errors: above the label and the box.
        const problems = document.createElement("ul");
        problems.className = "errorlist payload-problems";
        problems.id = `${box.id}_problems`;
        setShown(problems, false);
        problems.setAttribute("aria-live", "polite");
        const row = box.closest(".flex-container") ?? box;
        row.before(problems);
        box.setAttribute(
            "aria-describedby",
            [box.getAttribute("aria-describedby"), problems.id].filter(Boolean).join(" ")
        );

        const fill = document.createElement("button");
        fill.type = "button";
        fill.className = "button payload-fill";
        fill.textContent = "Add the required keys";
        fill.title = "Writes each required key the payload lacks, with an empty value to fill in.";
        const fillRow = document.createElement("div");
        fillRow.className = "help payload-fill-row";
        fillRow.append(fill);
        row.after(fillRow);

        const parse = () => {
            const text = box.value.trim();
            if (!text) {
                return { value: {} }; // an empty box is an empty payload
            }
            try {
                return { value: JSON.parse(text) };
            } catch (error) {
                return { error: `not valid JSON: ${error.message}` };
            }
        };

        const show = (found) => {
            problems.replaceChildren(
                ...found.map(([where, rule]) => {
                    const item = document.createElement("li");
                    item.textContent = where ? `${where}: ${rule}` : rule;
                    return item;
                })
            );
            setShown(problems, found.length > 0);
            if (found.length) {
                box.setAttribute("aria-invalid", "true");
            } else {
                box.removeAttribute("aria-invalid");
            }
        };

        const checkNow = () => {
            const spec = actions[chosen()];
            if (!spec) {
                show([]);
                return;
            }
            const parsed = parse();
            if (parsed.error) {
                show([["", parsed.error]]);
                return;
            }
            const found = [];
            if (kindOf(parsed.value) !== "object") {
                found.push(["", "must be a JSON object"]);
            } else {
                check(parsed.value, spec.schema, spec.schema, "", found);
            }
            show(found);
        };

        const actionChanged = () => {
            const spec = actions[chosen()];
            if (help) {
                help.innerHTML = spec ? spec.help : noActionHelp; // the server's own HTML
            }
            for (const fieldset of pollSections) {
                showSection(fieldset, Boolean(spec && spec.polls));
            }
            setShown(fillRow, Boolean(spec && (spec.schema.required ?? []).length));
            checkNow();
        };

        let timer;
        box.addEventListener("input", () => {
            clearTimeout(timer);
            timer = setTimeout(checkNow, CHECK_DELAY_MS);
        });
        fill.addEventListener("click", () => {
            const spec = actions[chosen()];
            const parsed = parse();
            if (!spec || parsed.error || kindOf(parsed.value) !== "object") {
                checkNow();
                box.focus();
                return;
            }
            const payload = parsed.value;
            const properties = spec.schema.properties ?? {};
            for (const key of spec.schema.required ?? []) {
                if (!Object.hasOwn(payload, key)) {
                    payload[key] = placeholder(properties[key] ?? {}, spec.schema);
                }
            }
            box.value = JSON.stringify(payload, null, 2);
            checkNow();
            box.focus();
        });
        if (select) {
            select.addEventListener("change", actionChanged);
        }
        actionChanged();
    }

    function init() {
        const box = document.querySelector("textarea[data-payload-actions]");
        const form = box ? box.form : null;
        if (!form) {
            return;
        }
        initScheduleSections(form);
        initPayloadEditor(form);
    }

    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", init);
    } else {
        init();
    }
}

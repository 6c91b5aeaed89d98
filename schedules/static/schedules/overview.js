/*
 * The admin overview's charts (templates/admin/schedules/overview.html).
 *
 * Every <canvas data-chart="NAME" data-url="..." data-window="..."> is fed by its JSON
 * endpoint (schedules/admin/overview.py) and drawn with the vendored Chart.js
 * (vendor/chart.umd.min.js, no date adapter: x axes are linear in epoch milliseconds
 * and ticks are formatted here). Once drawn, a canvas carries data-drawn="true" and
 * data-points="N" (the data points drawn; 0 with data-empty="true" when the window
 * holds no data, and a "no data in this window" note replaces the chart).
 * Colours: text and grid from the admin's CSS variables (light and dark themes,
 * redrawn when the theme changes); series in mid-tones readable on both.
 * No inline script: the page's Content-Security-Policy may forbid it.
 */
"use strict";

(function () {
    const root = document.querySelector(".overview[data-time-zone]");
    if (!root) {
        return;
    }
    const canvases = Array.from(root.querySelectorAll("canvas[data-chart]"));
    const charts = new Map();
    const loads = new Map();

    // Mid-tone colours (contrast >= 3:1 on the admin's light and dark backgrounds).
    const PALETTE = ["#1c7ed6", "#e8590c", "#2f9e44", "#7048e8", "#d6336c", "#0c8599", "#868e96"];
    const STATUS_COLOURS = {
        succeeded: "#2f9e44",
        running: "#1c7ed6",
        retrying: "#e8590c",
        failed: "#e03131",
        not_done: "#7048e8",
        skipped: "#868e96",
        abandoned: "#d6336c",
    };

    function cssVar(name, fallback) {
        const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
        return value || fallback;
    }

    function themeColours() {
        return {
            text: cssVar("--body-fg", "#333"),
            quiet: cssVar("--body-quiet-color", "#666"),
            grid: cssVar("--hairline-color", "#e8e8e8"),
            border: cssVar("--border-color", "#ccc"),
            background: cssVar("--body-bg", "#fff"),
        };
    }

    function timeFormat(options) {
        const timeZone = root.dataset.timeZone || "UTC";
        try {
            return new Intl.DateTimeFormat(undefined, { ...options, timeZone: timeZone });
        } catch (error) {
            return new Intl.DateTimeFormat(undefined, { ...options, timeZone: "UTC" });
        }
    }

    const HOUR_MINUTE = timeFormat({ hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    const DAY_HOUR = timeFormat({
        weekday: "short",
        day: "numeric",
        hour: "2-digit",
        minute: "2-digit",
        hourCycle: "h23",
    });
    const FULL = timeFormat({
        year: "numeric",
        month: "short",
        day: "numeric",
        hour: "2-digit",
        minute: "2-digit",
        hourCycle: "h23",
        timeZoneName: "short",
    });

    function formatSeconds(seconds) {
        if (seconds === null || seconds === undefined || Number.isNaN(seconds)) {
            return "-";
        }
        if (seconds === 0) {
            return "0";
        }
        const size = Math.abs(seconds);
        if (size < 1) {
            return (seconds * 1000).toFixed(size < 0.01 ? 2 : 0) + " ms";
        }
        if (size < 120) {
            return seconds.toFixed(size < 10 ? 2 : 1) + " s";
        }
        if (size < 7200) {
            return (seconds / 60).toFixed(1) + " min";
        }
        return (seconds / 3600).toFixed(1) + " h";
    }

    function timeAxis(colours, spanMs, stepMs, bounds) {
        const format = spanMs > 36 * 3600 * 1000 ? DAY_HOUR : HOUR_MINUTE;
        const axis = {
            type: "linear",
            grid: { color: colours.grid },
            border: { color: colours.border },
            ticks: {
                color: colours.text,
                maxRotation: 0,
                autoSkip: true,
                stepSize: stepMs,
                callback: (value) => format.format(new Date(value)),
            },
        };
        if (bounds) {
            axis.min = bounds.min;
            axis.max = bounds.max;
        }
        return axis;
    }

    function valueAxis(colours, title, format) {
        const ticks = { color: colours.text };
        if (format) {
            ticks.callback = format;
        } else {
            ticks.precision = 0; // counts: whole numbers only
        }
        return {
            beginAtZero: true,
            grid: { color: colours.grid },
            border: { color: colours.border },
            title: { display: true, text: title, color: colours.quiet },
            ticks,
        };
    }

    function baseOptions(colours) {
        return {
            animation: false,
            responsive: true,
            maintainAspectRatio: false,
            normalized: true,
            interaction: { mode: "nearest", axis: "x", intersect: false },
            plugins: {
                legend: { labels: { color: colours.text, boxWidth: 14 } },
                tooltip: {
                    callbacks: {
                        title: (items) =>
                            items.length ? FULL.format(new Date(items[0].parsed.x)) : "",
                    },
                },
            },
        };
    }

    function tickStep(spanMs) {
        const hour = 3600 * 1000;
        if (spanMs <= 2 * hour) {
            return 10 * 60 * 1000;
        }
        if (spanMs <= 30 * hour) {
            return 3 * hour;
        }
        return 24 * hour;
    }

    // A line's points, with a break (a null) where minutes without runs separate two points,
    // so the line does not join an hour ago to now across the minutes in between.
    function withGaps(points, key, bucketMs) {
        const data = [];
        points.forEach((point, index) => {
            if (index && point.t - points[index - 1].t > bucketMs) {
                data.push({ x: points[index - 1].t + bucketMs, y: null });
            }
            data.push({ x: point.t, y: point[key] });
        });
        return data;
    }

    // Each builder turns an endpoint's JSON into {config, points, empty}.
    const BUILDERS = {
        lateness(data, colours) {
            const datasets = [];
            data.engines.forEach((engine, index) => {
                const colour = PALETTE[index % PALETTE.length];
                const radius = data.bucket_seconds * 1000 * 90 > data.until - data.since ? 2 : 0;
                for (const [key, dash] of [["p50", []], ["p99", [6, 4]]]) {
                    datasets.push({
                        label: engine.engine + " " + key,
                        data: withGaps(engine.points, key, data.bucket_seconds * 1000),
                        borderColor: colour,
                        backgroundColor: colour,
                        borderDash: dash,
                        borderWidth: 2,
                        pointRadius: radius,
                        tension: 0,
                    });
                }
            });
            const points = datasets.reduce((sum, set) => sum + set.data.filter((point) => point.y !== null).length, 0);
            const span = data.until - data.since;
            const step = tickStep(span);
            // The window, widened to whole ticks (ticks then fall on round times).
            const bounds = {
                min: Math.floor(data.since / step) * step,
                max: Math.ceil(data.until / step) * step,
            };
            const options = baseOptions(colours);
            options.scales = {
                x: timeAxis(colours, span, step, bounds),
                y: valueAxis(colours, "lateness", (value) => formatSeconds(value)),
            };
            options.plugins.tooltip.callbacks.label = (item) =>
                item.dataset.label + ": " + formatSeconds(item.parsed.y);
            return { config: { type: "line", data: { datasets }, options }, points, empty: !points };
        },

        upcoming(data, colours) {
            const colour = PALETTE[0];
            const datasets = [
                {
                    label: "steps due",
                    data: data.buckets.map((bucket) => ({ x: bucket.t, y: bucket.steps })),
                    backgroundColor: colour,
                    borderColor: colour,
                    barPercentage: 1.0,
                    categoryPercentage: 0.9,
                },
            ];
            const span = data.until - data.since;
            const options = baseOptions(colours);
            options.plugins.legend.display = false;
            options.scales = {
                x: timeAxis(colours, span, tickStep(span)),
                y: valueAxis(colours, "steps per " + bucketName(data.bucket_seconds), null),
            };
            return {
                config: { type: "bar", data: { datasets }, options },
                points: datasets[0].data.length,
                empty: data.total === 0,
            };
        },

        runs(data, colours) {
            const datasets = data.statuses
                .filter((status) => status.total > 0)
                .map((status, index) => {
                    const colour = STATUS_COLOURS[status.status] || PALETTE[index % PALETTE.length];
                    return {
                        label: status.label,
                        data: data.buckets.map((t, i) => ({ x: t, y: status.counts[i] })),
                        backgroundColor: colour,
                        borderColor: colour,
                        barPercentage: 1.0,
                        categoryPercentage: 0.9,
                    };
                });
            const span = data.until - data.since;
            const options = baseOptions(colours);
            options.interaction = { mode: "index", intersect: false };
            options.scales = {
                x: { ...timeAxis(colours, span, tickStep(span)), stacked: true },
                y: { ...valueAxis(colours, "runs per hour", null), stacked: true },
            };
            showTotals(data);
            return {
                config: { type: "bar", data: { datasets }, options },
                points: datasets.reduce((sum, set) => sum + set.data.length, 0),
                empty: data.total === 0,
            };
        },
    };

    function bucketName(seconds) {
        if (seconds % 3600 === 0) {
            return seconds === 3600 ? "hour" : seconds / 3600 + " hours";
        }
        return seconds / 60 + " minutes";
    }

    function showTotals(data) {
        const line = root.querySelector('[data-totals-for="runs"]');
        if (!line) {
            return;
        }
        line.replaceChildren();
        for (const status of data.statuses) {
            if (!status.total) {
                continue;
            }
            const item = document.createElement("span");
            const link = document.createElement("a");
            link.href = status.url;
            link.textContent = status.label;
            item.append(link, ": " + status.total.toLocaleString());
            line.append(item);
        }
    }

    function emptyNote(canvas) {
        return root.querySelector('[data-empty-for="' + canvas.dataset.chart + '"]');
    }

    function showEmpty(canvas, message) {
        const chart = charts.get(canvas);
        if (chart) {
            chart.destroy();
            charts.delete(canvas);
        }
        canvas.parentElement.hidden = true;
        const note = emptyNote(canvas);
        if (note) {
            note.textContent = message;
            note.hidden = false;
        }
    }

    function draw(canvas, data) {
        const build = BUILDERS[canvas.dataset.chart];
        if (!build) {
            return;
        }
        canvas.lastData = data;
        const built = build(data, themeColours());
        if (built.empty) {
            showEmpty(canvas, "No data in this window.");
            canvas.dataset.empty = "true";
            canvas.dataset.points = "0";
            canvas.dataset.drawn = "true";
            return;
        }
        canvas.parentElement.hidden = false;
        const note = emptyNote(canvas);
        if (note) {
            note.hidden = true;
        }
        const previous = charts.get(canvas);
        if (previous) {
            previous.destroy();
        }
        charts.set(canvas, new Chart(canvas, built.config));
        delete canvas.dataset.empty;
        canvas.dataset.points = String(built.points);
        canvas.dataset.drawn = "true";
    }

    function load(canvas) {
        const url = new URL(canvas.dataset.url, window.location.href);
        url.searchParams.set("window", canvas.dataset.window);
        const turn = (loads.get(canvas) || 0) + 1;
        loads.set(canvas, turn);
        canvas.setAttribute("aria-busy", "true");
        return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
            .then((response) => {
                if (!response.ok) {
                    throw new Error("HTTP " + response.status);
                }
                return response.json();
            })
            .then((data) => {
                if (loads.get(canvas) === turn) {
                    draw(canvas, data);
                }
            })
            .catch((error) => {
                if (loads.get(canvas) === turn) {
                    showEmpty(canvas, "The chart could not be loaded (" + error.message + ").");
                    canvas.dataset.error = error.message;
                }
            })
            .finally(() => canvas.removeAttribute("aria-busy"));
    }

    function redrawAll() {
        for (const canvas of canvases) {
            if (canvas.lastData) {
                draw(canvas, canvas.lastData);
            }
        }
    }

    if (typeof Chart === "undefined") {
        for (const canvas of canvases) {
            showEmpty(canvas, "The charts could not be drawn: Chart.js did not load.");
        }
        return;
    }

    for (const button of root.querySelectorAll("button[data-chart-target]")) {
        button.addEventListener("click", () => {
            const name = button.dataset.chartTarget;
            const canvas = root.querySelector('canvas[data-chart="' + name + '"]');
            if (!canvas) {
                return;
            }
            for (const other of root.querySelectorAll(
                'button[data-chart-target="' + name + '"]'
            )) {
                other.setAttribute("aria-pressed", other === button ? "true" : "false");
            }
            canvas.dataset.window = button.dataset.window;
            load(canvas);
        });
    }

    // The admin's theme toggle sets data-theme on <html>; "auto" follows the system.
    new MutationObserver(redrawAll).observe(document.documentElement, {
        attributes: true,
        attributeFilter: ["data-theme"],
    });
    if (window.matchMedia) {
        window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", redrawAll);
    }

    canvases.forEach(load);
    // Fresh figures every minute while the page is visible.
    window.setInterval(() => {
        if (!document.hidden) {
            canvases.forEach(load);
        }
    }, 60 * 1000);
})();

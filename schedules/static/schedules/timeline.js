// Timelines on the change pages of classrooms, jobs and executions: each step at its due
// time, one row per kind, coloured by state, with the lateness of its latest run. The data
// comes from the page's own JSON endpoint (the canvas's data-timeline-url); Chart.js is
// served by the app (schedules/vendor). Once drawn, the canvas carries data-drawn="true"
// and data-points, the number of points drawn.
"use strict";
(() => {
  const STATE_COLOURS = {
    succeeded: "#2e9e49",
    failed: "#d6452f",
    cancelled: "#8a8a8a",
    scheduled: "#3b82c4",
    queued: "#7b61c9",
    running: "#e0a100",
    paused: "#c97a1e",
    upcoming: "#9aa9b8",
  };

  const cssColour = (name, fallback) =>
    getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;

  const timeFormatter = (zone) => {
    const format = new Intl.DateTimeFormat("en-CA", {
      timeZone: zone,
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hourCycle: "h23",
    });
    return (ms) => format.format(new Date(ms)).replace(",", "");
  };

  // As the admin's lists show it: +3.2 ms, +12 ms, -1.500 s, +2 min 05 s.
  const formatLateness = (ms) => {
    const sign = ms < 0 ? "-" : "+";
    const abs = Math.abs(ms);
    if (abs < 10) {
      return `${sign}${abs.toFixed(1)} ms`;
    }
    if (abs < 1000) {
      return `${sign}${abs.toFixed(0)} ms`;
    }
    if (abs < 60000) {
      return `${sign}${(abs / 1000).toFixed(3)} s`;
    }
    const seconds = Math.floor(abs / 1000);
    const minutes = Math.floor(seconds / 60);
    if (minutes >= 60) {
      return `${sign}${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
    }
    return `${sign}${minutes} min ${String(seconds % 60).padStart(2, "0")} s`;
  };

  const draw = async (canvas, note) => {
    const response = await fetch(canvas.dataset.timelineUrl, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) {
      throw new Error(`${response.status} ${response.statusText}`);
    }
    const data = await response.json();
    const time = timeFormatter(data.zone);
    const foreground = cssColour("--body-fg", "#333");
    const grid = cssColour("--hairline-color", "#e8e8e8");
    if (data.truncated) {
      note.textContent = `The latest ${data.limit} steps; the changelists hold the rest.`;
    }
    if (!data.points.length) {
      note.textContent = "Nothing to draw yet.";
      canvas.dataset.drawn = "true";
      canvas.dataset.points = "0";
      return;
    }
    const rowIndex = new Map(data.rows.map((row, index) => [row, index]));
    const states = [...new Set(data.points.map((point) => point.state))];
    const datasets = states.map((state) => ({
      label: state,
      data: data.points
        .filter((point) => point.state === state)
        .map((point) => ({ x: point.x, y: rowIndex.get(point.row), point })),
      backgroundColor: STATE_COLOURS[state] || "#888888",
      borderColor: STATE_COLOURS[state] || "#888888",
      pointRadius: 5,
      pointHoverRadius: 8,
    }));
    datasets.push({
      type: "line",
      label: "now",
      data: [
        { x: data.now, y: -0.5 },
        { x: data.now, y: data.rows.length - 0.5 },
      ],
      borderColor: foreground,
      borderDash: [4, 4],
      borderWidth: 1,
      pointRadius: 0,
    });
    const chart = new window.Chart(canvas, {
      type: "scatter",
      data: { datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: {
          x: {
            type: "linear",
            title: { display: true, text: `due time (${data.zone})`, color: foreground },
            ticks: { color: foreground, maxRotation: 0, callback: (value) => time(value) },
            grid: { color: grid },
          },
          y: {
            min: -0.5,
            max: data.rows.length - 0.5,
            reverse: true,
            // One tick per row, at the row's index (the axis runs from -0.5 to rows - 0.5).
            afterBuildTicks: (axis) => {
              axis.ticks = data.rows.map((_, index) => ({ value: index }));
            },
            ticks: {
              color: foreground,
              callback: (value) => data.rows[value] ?? "",
            },
            grid: { color: grid },
          },
        },
        plugins: {
          legend: { labels: { color: foreground } },
          tooltip: {
            callbacks: {
              label: (context) => {
                const point = context.raw.point;
                if (!point) {
                  return `now: ${time(context.raw.x)}`;
                }
                let text = `${point.label}: ${point.state}, due ${time(point.x)}`;
                if (point.run_status) {
                  text += `; run ${point.run_status}`;
                }
                if (point.lateness_ms !== null) {
                  text += `, lateness ${formatLateness(point.lateness_ms)}`;
                }
                return text;
              },
            },
          },
        },
        onClick: (event, elements) => {
          const point = elements.length ? datasets[elements[0].datasetIndex].data[elements[0].index].point : null;
          if (point && point.url) {
            window.location.assign(point.url);
          }
        },
      },
    });
    canvas.dataset.drawn = "true";
    canvas.dataset.points = String(data.points.length);
    return chart;
  };

  document.addEventListener("DOMContentLoaded", () => {
    for (const canvas of document.querySelectorAll("canvas[data-timeline-url]")) {
      const note = canvas.closest(".timeline-box").querySelector(".timeline-note");
      draw(canvas, note).catch((error) => {
        note.textContent = `The timeline could not be drawn: ${error.message}`;
      });
    }
  });
})();

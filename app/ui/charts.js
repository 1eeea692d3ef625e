// Live metric charts: one Chart.js line chart per metric name (loss, accuracy, …), one series
// per split (train, validation, test), x = training step; and what every chart of the
// dashboard shares (the sweep page's too: colours, figure, options). Chart.js is the vendored
// UMD build (vendor/chart.umd.min.js), loaded before the modules; it defines the global `Chart`.

import { h, number } from "./dom.js";

/** Colours distinguishable for colour-blind readers (Okabe–Ito), readable on white. */
export const PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000"];
// Each split also has its own dash: colour is never the only cue.
const SPLITS = {
  train: { color: PALETTE[0], dash: [] },
  validation: { color: PALETTE[1], dash: [6, 3] },
  test: { color: PALETTE[2], dash: [2, 2] },
};
const OTHER = { color: "#6b4c9a", dash: [8, 2, 2, 2] };

/**
 * A <figure> for one chart: its caption, the canvas in a sized box, and a line of text under
 * it saying what the chart shows (also the canvas's label, for those who cannot see it).
 */
export function chartFigure(caption, label, dataset = {}) {
  const canvas = h("canvas", { role: "img", "aria-label": label });
  const summary = h("p", { class: "chart-summary" });
  const figure = h(
    "figure",
    { class: "chart", dataset },
    h("figcaption", {}, caption),
    h("div", { class: "chart-box" }, canvas),
    summary,
  );
  return { figure, canvas, summary };
}

/**
 * Options every chart here shares, with `options` over them: drawn at once (the data is live,
 * an animation would trail it), sized by its box, points given as sorted {x, y} (no parsing).
 */
export function chartOptions(options) {
  return {
    animation: false,
    maintainAspectRatio: false,
    parsing: false,
    normalized: true,
    interaction: { mode: "nearest", intersect: false },
    ...options,
  };
}

export class MetricCharts {
  /** Charts are added to `container` as metrics with new names arrive. */
  constructor(container) {
    this.container = container;
    this.charts = new Map(); // name -> {chart, figure, points: Map(series -> Map(step -> point))}
    this.totalSteps = null;
  }

  /** Fixes the x axis at 0 … the job's total steps (when known), so it does not jump as it grows. */
  setTotalSteps(total) {
    if (!total || total === this.totalSteps) return;
    this.totalSteps = total;
    for (const { chart } of this.charts.values()) {
      chart.options.scales.x.max = total;
      chart.update("none");
    }
  }

  /** Adds a metric point ({name, split, step, epoch, value, …}); a repeated step replaces. */
  add(point) {
    const entry = this.charts.get(point.name) ?? this.create(point.name);
    let series = entry.points.get(point.split);
    if (!series) {
      series = new Map();
      entry.points.set(point.split, series);
      const style = SPLITS[point.split] ?? OTHER;
      entry.chart.data.datasets.push({
        label: point.split,
        data: [],
        borderColor: style.color,
        backgroundColor: style.color,
        borderDash: style.dash,
        pointRadius: point.split === "test" ? 5 : 2,
        showLine: point.split !== "test",
        tension: 0,
      });
    }
    series.set(point.step, { x: point.step, y: point.value, epoch: point.epoch });
    const dataset = entry.chart.data.datasets.find((d) => d.label === point.split);
    dataset.data = [...series.values()].sort((a, b) => a.x - b.x);
    this.changed(entry, point);
  }

  changed(entry, point) {
    const count = entry.chart.data.datasets.reduce((sum, d) => sum + d.data.length, 0);
    entry.figure.dataset.points = String(count);
    const latest = entry.chart.data.datasets
      .map((d) => `${d.label} ${number(d.data.at(-1)?.y)}`)
      .join(", ");
    entry.canvas.setAttribute("aria-label", `${point.name} by step: latest ${latest}`);
    entry.summary.textContent = `Latest: ${latest} (epoch ${point.epoch}, step ${point.step}).`;
    entry.chart.update("none");
  }

  create(name) {
    const { figure, canvas, summary } = chartFigure(name, `${name} by step`, {
      metric: name,
      points: "0",
    });
    this.container.append(figure);
    const chart = new globalThis.Chart(canvas, {
      type: "line",
      data: { datasets: [] },
      options: chartOptions({
        scales: {
          x: {
            type: "linear",
            min: 0,
            max: this.totalSteps ?? undefined,
            title: { display: true, text: "step" },
            ticks: { precision: 0 },
          },
          y: { title: { display: true, text: name } },
        },
        plugins: {
          legend: { position: "bottom", labels: { usePointStyle: true } },
          tooltip: {
            callbacks: {
              title: (items) => `step ${items[0].raw.x} (epoch ${items[0].raw.epoch})`,
            },
          },
        },
      }),
    });
    const entry = { chart, canvas, figure, summary, points: new Map() };
    this.charts.set(name, entry);
    return entry;
  }

  destroy() {
    for (const { chart } of this.charts.values()) chart.destroy();
    this.charts.clear();
  }
}

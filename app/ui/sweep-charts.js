// The sweep page's Chart.js charts: every trial's objective by epoch (its intermediate values,
// pruned trials dashed, grey and cut short), the objective by trial number with the best so
// far, and the parameters' importances.

import { PALETTE, chartFigure, chartOptions } from "./charts.js";
import { h, number } from "./dom.js";

// Pruned and failed trials are grey and dashed (pruned) or dotted (failed), and say so in their
// label: the legend and the tooltip name them, colour is not the only cue.
const STOPPED = {
  pruned: { color: "#6b7280", dash: [6, 4] },
  failed: { color: "#6b7280", dash: [2, 3] },
};
// Completed trials before the API computes importances (app/services/sweeps.py).
const IMPORTANCE_AFTER = 3;

function epochPoints(trial) {
  return Object.entries(trial.intermediate_values)
    .map(([epoch, value]) => ({ x: Number(epoch), y: value }))
    .sort((a, b) => a.x - b.x);
}

function trialLabel(trial) {
  const name = `trial ${trial.number}`;
  return trial.state === "completed" ? name : `${name} (${trial.state})`;
}

function lineChart(canvas, x, y, plugins = {}) {
  return new globalThis.Chart(canvas, {
    type: "line",
    data: { datasets: [] },
    options: chartOptions({
      scales: {
        x: { type: "linear", ticks: { precision: 0 }, ...x },
        y: { title: { display: true, text: y } },
      },
      plugins: { legend: { position: "bottom" }, ...plugins },
    }),
  });
}

/** Each trial's objective after every epoch, a line per trial, on one chart. */
export class TrialCurves {
  /** `epochs`: the job's; the x axis runs that far at least, so a pruned line stops short. */
  constructor(objective, epochs) {
    const caption = `${objective.label} by epoch, every trial`;
    Object.assign(this, chartFigure(caption, caption, { chart: "curves" }));
    this.chart = lineChart(
      this.canvas,
      { min: 1, suggestedMax: epochs, title: { display: true, text: "epoch" } },
      objective.label,
      {
        tooltip: {
          callbacks: {
            title: (items) => `epoch ${items[0].raw.x}`,
            label: (item) => `${item.dataset.label}: ${number(item.raw.y)}`,
          },
        },
      },
    );
    this.datasets = new Map(); // trial number -> its dataset, updated in place
  }

  update(trials) {
    for (const trial of trials) {
      let dataset = this.datasets.get(trial.number);
      if (!dataset) {
        dataset = { tension: 0, clip: 8 }; // a cut mark on the axis (epoch 1) drawn whole
        this.datasets.set(trial.number, dataset);
        this.chart.data.datasets.push(dataset);
      }
      const style = STOPPED[trial.state] ?? {
        color: PALETTE[trial.number % PALETTE.length],
        dash: [],
      };
      const data = epochPoints(trial);
      // A pruned trial's last epoch, where it was stopped, is a cross.
      const cut = (i) => trial.state === "pruned" && i === data.length - 1;
      Object.assign(dataset, {
        label: trialLabel(trial),
        data,
        borderColor: style.color,
        backgroundColor: style.color,
        borderDash: style.dash,
        borderWidth: STOPPED[trial.state] ? 1.5 : 2,
        pointStyle: data.map((_, i) => (cut(i) ? "crossRot" : "circle")),
        pointRadius: data.map((_, i) => (cut(i) ? 7 : 2)),
        pointBorderWidth: data.map((_, i) => (cut(i) ? 2 : 1)),
      });
    }
    const stops = trials
      .filter((t) => t.state === "pruned")
      .map((t) => `trial ${t.number} after epoch ${epochPoints(t).at(-1)?.x ?? 0}`);
    const pruning = stops.length ? ` Pruned: ${stops.join(", ")}.` : "";
    const count = trials.length === 1 ? "1 trial" : `${trials.length} trials`;
    this.summary.textContent = `${count}.${pruning}`;
    this.chart.update("none");
  }

  destroy() {
    this.chart.destroy();
  }
}

/**
 * The objective of each trial by its number: the completed as points, the pruned apart (their
 * value is the last epoch's, not a final one), and the best so far among the completed as a
 * step line, best meaning higher or lower as the objective's direction says.
 */
export class ObjectiveByTrial {
  /** `trials`: how many the sweep may run, where the x axis ends. */
  constructor(objective, trials) {
    this.objective = objective;
    const caption = `${objective.label} by trial (${objective.direction})`;
    Object.assign(this, chartFigure(caption, caption, { chart: "objective" }));
    const x = { min: 0, suggestedMax: trials - 1, title: { display: true, text: "trial" } };
    this.chart = lineChart(this.canvas, x, objective.label, {
      tooltip: {
        callbacks: {
          title: (items) => `trial ${items[0].raw.x}`,
          label: (item) => `${item.dataset.label}: ${number(item.raw.y)}`,
        },
      },
    });
    const points = (label, color, fill) => ({
      label,
      data: [],
      showLine: false,
      pointRadius: 4,
      borderColor: color,
      backgroundColor: fill,
    });
    this.completed = points("completed", PALETTE[0], PALETTE[0]);
    this.pruned = points("pruned (its last epoch's value)", STOPPED.pruned.color, "#ffffff");
    this.best = {
      label: "best so far",
      data: [],
      stepped: true,
      pointRadius: 0,
      borderColor: PALETTE[1],
      backgroundColor: PALETTE[1],
      borderWidth: 2,
    };
    this.chart.data.datasets.push(this.completed, this.pruned, this.best);
  }

  update(trials) {
    const valued = trials.filter((t) => t.value !== null).sort((a, b) => a.number - b.number);
    const point = (t) => ({ x: t.number, y: t.value });
    this.completed.data = valued.filter((t) => t.state === "completed").map(point);
    this.pruned.data = valued.filter((t) => t.state === "pruned").map(point);
    let best = null;
    this.best.data = this.completed.data.map(({ x, y }) => {
      if (best === null || this.objective.better(y, best)) best = y;
      return { x, y: best };
    });
    this.summary.textContent =
      best === null
        ? "No trial has completed yet."
        : `Best so far: ${number(best)} (${this.objective.direction}).`;
    this.chart.update("none");
  }

  destroy() {
    this.chart.destroy();
  }
}

/** The parameters' importances (fANOVA), a horizontal bar each, the most important first. */
export class ImportanceBars {
  constructor() {
    const caption = "How much of the objective's variance each parameter explains (fANOVA)";
    Object.assign(this, chartFigure(caption, "Parameter importances", { chart: "importances" }));
    this.chart = new globalThis.Chart(this.canvas, {
      type: "bar",
      data: { labels: [], datasets: [{ label: "importance", data: [], backgroundColor: PALETTE[0] }] },
      options: chartOptions({
        parsing: true, // plain numbers against the labels
        normalized: false,
        indexAxis: "y",
        interaction: { mode: "nearest", axis: "y", intersect: false },
        scales: { x: { min: 0, title: { display: true, text: "importance (fANOVA)" } } },
        plugins: { legend: { display: false } },
      }),
    });
    this.figure.hidden = true;
    this.waiting = h("p", { class: "muted" });
  }

  /**
   * `importances` as GET /v1/sweeps/{id} gives them ({path: importance}), or null: before
   * `IMPORTANCE_AFTER` trials completed, or when fANOVA could not rank the parameters (one
   * that never varied, say); `completed`: how many trials completed.
   */
  update(importances, completed) {
    const ranked = Object.entries(importances ?? {}).sort((a, b) => b[1] - a[1]);
    this.figure.hidden = ranked.length === 0;
    this.waiting.hidden = ranked.length > 0;
    this.waiting.textContent =
      completed < IMPORTANCE_AFTER
        ? `Computed once ${IMPORTANCE_AFTER} trials have completed (${completed} so far).`
        : "Not available: fANOVA could not rank these trials' parameters.";
    this.chart.data.labels = ranked.map(([path]) => path);
    this.chart.data.datasets[0].data = ranked.map(([, value]) => value);
    this.summary.textContent = ranked.map(([path, value]) => `${path} ${number(value)}`).join(", ");
    this.chart.update("none");
  }

  destroy() {
    this.chart.destroy();
  }
}

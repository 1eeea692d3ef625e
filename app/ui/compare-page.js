// #/compare?jobs=ID,ID,…: two to ten jobs side by side, as `tunery jobs compare` shows them in a
// terminal: their final metrics (the best in each row marked), the spec fields they set
// differently, and their curves, a line per job on one chart per metric and split.
// metricRows, flatten, differences and bestValue mirror tunery/_compare.py and _render.py, and
// lowerIsBetter trainer/spec.py's lower_is_better: change them together.

import { AuthRequired, apiJson, withQuery } from "./api.js";
import { PALETTE, chartFigure, chartOptions } from "./charts.js";
import { card, errorBox, h, heading, jobLink, number, replace } from "./dom.js";

export const MIN_JOBS = 2;
export const MAX_JOBS = 10;
const LOWER_IS_BETTER = ["loss", "mae", "rmse", "mase", "perplexity"];
// A job's own dash as well as its colour: colour is never the only cue.
const DASHES = [[], [6, 3], [2, 2], [8, 2, 2, 2], [12, 4]];
const SPLIT_ORDER = ["train", "validation", "test"];

/** Whether a smaller value of `metric` is the better one (a loss, an error, a perplexity). */
export function lowerIsBetter(metric) {
  return LOWER_IS_BETTER.some((word) => metric.includes(word));
}

/** `test_*` first, then `validation_*`, then the rest, each by name. */
function metricOrder(a, b) {
  const split = (name) => (name.startsWith("test_") ? 0 : name.startsWith("validation_") ? 1 : 2);
  return split(a) - split(b) || (a < b ? -1 : a > b ? 1 : 0);
}

/** Each metric any of the jobs reported, with its value per job (null where one lacks it). */
export function metricRows(jobs) {
  const names = [...new Set(jobs.flatMap((job) => Object.keys(job.metrics ?? {})))].sort(metricOrder);
  return new Map(names.map((name) => [name, jobs.map((job) => job.metrics?.[name] ?? null)]));
}

/** The best of a row's values; null where there is nothing to choose between. */
export function bestValue(name, values) {
  const present = values.filter((value) => typeof value === "number");
  if (new Set(present).size < 2) return null;
  return lowerIsBetter(name) ? Math.min(...present) : Math.max(...present);
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** A spec's leaves by dotted path; a list is one leaf, as JSON text, so that lists compare whole. */
export function flatten(spec, prefix = "") {
  const leaves = {};
  for (const [key, value] of Object.entries(spec ?? {})) {
    const path = `${prefix}${key}`;
    if (isObject(value)) Object.assign(leaves, flatten(value, `${path}.`));
    else leaves[path] = Array.isArray(value) ? JSON.stringify(value) : value;
  }
  return leaves;
}

/** The dotted paths whose values are not the same in every spec, with each spec's value. */
export function differences(specs) {
  const flat = specs.map((spec) => flatten(spec));
  const paths = [...new Set(flat.flatMap((leaves) => Object.keys(leaves)))].sort();
  const rows = new Map();
  for (const path of paths) {
    const values = flat.map((leaves) => leaves[path] ?? null); // a missing path is an unset one
    if (values.some((value) => value !== values[0])) rows.set(path, values);
  }
  return rows;
}

/** The ids in `?jobs=`, or an Error saying what is wrong with them. */
function jobIds(query) {
  const ids = [...new Set((query.get("jobs") ?? "").split(",").map((id) => id.trim()).filter(Boolean))];
  if (ids.length < MIN_JOBS || ids.length > MAX_JOBS) {
    return new Error(`Give ${MIN_JOBS} to ${MAX_JOBS} different job ids: #/compare?jobs=ID,ID`);
  }
  return ids;
}

/** Every metric point of a job, following next_cursor. */
async function allPoints(jobId, signal) {
  const points = [];
  let cursor = null;
  do {
    const path = withQuery(`/v1/jobs/${encodeURIComponent(jobId)}/metrics`, { limit: 1000, cursor });
    const page = await apiJson(path, { signal });
    points.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor);
  return points;
}

/**
 * A job's per-epoch series: "name\u0000split" -> [{x: epoch, y}], by epoch. A series with two
 * points for one epoch in one attempt is a per-step one (step_loss, learning_rate) and is left
 * out; a retried job's later attempt replaces an epoch's value.
 */
function epochSeries(points) {
  const series = new Map();
  const perStep = new Set();
  for (const point of points) {
    const key = `${point.name}\u0000${point.split}`;
    const byEpoch = series.get(key) ?? new Map();
    series.set(key, byEpoch);
    const seen = byEpoch.get(point.epoch);
    if (seen && seen.attempt === point.attempt) perStep.add(key);
    if (!seen || point.attempt >= seen.attempt) byEpoch.set(point.epoch, point);
  }
  const curves = new Map();
  for (const [key, byEpoch] of series) {
    if (perStep.has(key)) continue;
    const line = [...byEpoch.values()].map((p) => ({ x: p.epoch, y: p.value }));
    curves.set(key, line.sort((a, b) => a.x - b.x));
  }
  return curves;
}

function seriesOrder(a, b) {
  const [nameA, splitA] = a.split("\u0000");
  const [nameB, splitB] = b.split("\u0000");
  const rank = (split) => (SPLIT_ORDER.includes(split) ? SPLIT_ORDER.indexOf(split) : SPLIT_ORDER.length);
  return (nameA < nameB ? -1 : nameA > nameB ? 1 : 0) || rank(splitA) - rank(splitB);
}

function jobHeader(job) {
  return h(
    "th",
    { scope: "col", dataset: { jobId: job.id } },
    jobLink(job.id, job.name || job.id),
    job.name ? h("div", { class: "muted small mono" }, job.id) : null,
  );
}

function table(className, caption, corner, jobs, body) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: className },
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, corner), jobs.map(jobHeader))),
      h("tbody", {}, body),
    ),
  );
}

function metricCell(value, best) {
  if (value === null) return h("td", { class: "num muted" }, "—");
  if (value !== best) return h("td", { class: "num" }, number(value));
  // "best" in words as well as in bold: the mark is not only a style.
  return h("td", { class: "num best" }, number(value), h("span", { class: "visually-hidden" }, " (best)"));
}

function metricsTable(jobs) {
  const rows = metricRows(jobs);
  if (rows.size === 0) return h("p", { class: "muted" }, "None of these jobs has final metrics.");
  const body = [...rows].map(([name, values]) => {
    const best = bestValue(name, values);
    return h(
      "tr",
      { dataset: { metric: name } },
      h("th", { scope: "row" }, name),
      values.map((value) => metricCell(value, best)),
    );
  });
  return table("metrics compare", "Final metrics, a column per job", "Metric", jobs, body);
}

function specValue(value) {
  if (value === null) return h("span", { class: "muted" }, "—");
  return typeof value === "number" ? number(value) : String(value);
}

function differencesTable(jobs) {
  const rows = differences(jobs.map((job) => job.spec));
  if (rows.size === 0) return h("p", { class: "muted" }, "The specs are identical.");
  const body = [...rows].map(([path, values]) =>
    h(
      "tr",
      { dataset: { path } },
      h("th", { scope: "row", class: "mono" }, path),
      values.map((value) => h("td", {}, specValue(value))),
    ),
  );
  return table("differences", "Spec fields set differently, a column per job", "Spec", jobs, body);
}

/** One chart of a metric and split, a line per job that reports it, added to `container`. */
function curveChart(container, key, jobs, curvesPerJob) {
  const [name, split] = key.split("\u0000");
  const caption = `${name} · ${split}`;
  const { figure, canvas, summary } = chartFigure(caption, `${caption} by epoch, a line per job`, {
    metric: name,
    split,
  });
  const datasets = jobs.flatMap((job, index) => {
    const data = curvesPerJob[index].get(key);
    if (!data) return [];
    const color = PALETTE[index % PALETTE.length];
    const dash = DASHES[index % DASHES.length];
    const label = job.name ? `${job.name} (${job.id})` : job.id;
    return [{ label, data, borderColor: color, backgroundColor: color, borderDash: dash, pointRadius: 3 }];
  });
  summary.textContent = datasets.map((d) => `${d.label}: last ${number(d.data.at(-1)?.y)}`).join("; ");
  container.append(figure); // before the chart is made, so that it takes its box's size
  return new globalThis.Chart(canvas, {
    type: "line",
    data: { datasets },
    options: chartOptions({
      scales: {
        x: { type: "linear", ticks: { precision: 0 }, title: { display: true, text: "epoch" } },
        y: { title: { display: true, text: name } },
      },
      plugins: {
        legend: { position: "bottom" },
        tooltip: { callbacks: { title: (items) => `epoch ${items[0].raw.x}` } },
      },
    }),
  });
}

export function render(view, _params, query) {
  const controller = new AbortController();
  const charts = [];
  const message = h("div", { class: "message" });
  const loading = h("p", { class: "muted" }, "Loading…");
  const metrics = h("div", { id: "compare-metrics" }, loading);
  const specs = h("div", { id: "compare-differences" });
  const curves = h("div", { class: "charts", id: "compare-charts" });
  const noCurves = h("p", { class: "muted", hidden: true }, "No per-epoch metric points.");
  document.title = "Compare jobs · tunery";

  replace(
    view,
    h("p", { class: "breadcrumb" }, h("a", { href: "#/jobs" }, "← Jobs")),
    heading("Compare jobs"),
    message,
    card("h-compare-metrics", "Final metrics", { wide: true }, metrics),
    card("h-compare-spec", "Spec differences", { wide: true }, specs),
    card("h-compare-curves", "Curves", { wide: true }, noCurves, curves),
  );

  async function load(ids) {
    try {
      const jobs = await Promise.all(
        ids.map((id) => apiJson(`/v1/jobs/${encodeURIComponent(id)}`, { signal: controller.signal })),
      );
      replace(metrics, metricsTable(jobs));
      replace(specs, differencesTable(jobs));
      const curvesPerJob = await Promise.all(
        jobs.map(async (job) => epochSeries(await allPoints(job.id, controller.signal))),
      );
      const keys = [...new Set(curvesPerJob.flatMap((c) => [...c.keys()]))].sort(seriesOrder);
      for (const key of keys) charts.push(curveChart(curves, key, jobs, curvesPerJob));
      noCurves.hidden = keys.length > 0;
      view.dataset.loaded = "true";
    } catch (error) {
      if (error.name === "AbortError" || error instanceof AuthRequired) return;
      loading.remove(); // the tables, if drawn, stay
      replace(message, errorBox(error));
    }
  }

  const ids = jobIds(query);
  if (ids instanceof Error) {
    loading.remove();
    replace(message, errorBox(ids));
  } else load(ids);

  return () => {
    controller.abort();
    for (const chart of charts) chart.destroy();
  };
}

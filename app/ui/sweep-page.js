// #/sweeps/{id}: one sweep. Its status, objective, sampler, pruner and counts; the best trial;
// the trials, sortable; every trial's objective by epoch, the objective by trial with the best
// so far, the parameters against the objective, their importances; Cancel while it is active;
// a link comparing the best completed trials' jobs (#/compare); Clone (its spec in the new
// sweep form).
// Live from GET /v1/sweeps/{id}/stream until its `end`: a `status` event redraws the sweep, a
// `trial` event (a trial started, reported an epoch or ended) reloads the trials.

import { apiJson } from "./api.js";
import { MAX_JOBS, MIN_JOBS } from "./compare-page.js";
import {
  card,
  facts,
  h,
  heading,
  jobLink,
  metricsTable,
  modelLink,
  number,
  replace,
  time,
} from "./dom.js";
import { parallelCoordinates } from "./parallel-coordinates.js";
import { StatusLine } from "./status-line.js";
import { ImportanceBars, ObjectiveByTrial, TrialCurves } from "./sweep-charts.js";
import {
  ACTIVE,
  countsText,
  objectiveOf,
  paramText,
  prunerText,
  samplerText,
} from "./sweep-spec.js";
import { TrialsTable } from "./trials-table.js";

/**
 * `load()` now, or, when a call is in flight, once more as soon as it ends: however many events
 * ask meanwhile, one call at a time and none missed. Returns the promise of the call(s).
 */
function coalesced(load) {
  let running = null;
  let again = false;
  return () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await load();
        } while (again);
      } finally {
        running = null;
      }
    })();
    return running;
  };
}

function paramsList(params) {
  return h(
    "ul",
    { class: "plain" },
    Object.entries(params).map(([path, value]) =>
      h("li", {}, h("span", { class: "mono" }, path), ` = ${paramText(value)}`),
    ),
  );
}

function bestTrial(sweep, objective) {
  const best = sweep.best_trial;
  if (!best) return h("p", { class: "muted" }, "No trial has completed yet.");
  return [
    facts([
      ["Trial", jobLink(best.job_id, `trial ${best.number}`) ?? `trial ${best.number}`],
      [objective.label, number(best.value)],
      ["Params", paramsList(best.params)],
      ["Model", modelLink(best.model_id) ?? "—"],
    ]),
    h("h3", {}, "On the test split"),
    metricsTable(best.test_metrics, "The best trial's test metrics", "No test metrics."),
  ];
}

/** #/compare of the completed trials' jobs, best first, ten at most; null for fewer than two. */
function compareHref(trials, objective) {
  const ids = trials
    .filter((t) => t.state === "completed" && t.job_id && typeof t.value === "number")
    .sort((a, b) => (objective.maximize ? b.value - a.value : a.value - b.value))
    .slice(0, MAX_JOBS)
    .map((t) => encodeURIComponent(t.job_id));
  return ids.length < MIN_JOBS ? null : `#/compare?jobs=${ids.join(",")}`;
}

export function render(view, { id }) {
  const sweepPath = `/v1/sweeps/${encodeURIComponent(id)}`;
  let disposed = false;
  let parts = null; // the table and charts, made once the spec is known
  let completedAtImportances = null; // the completed count the importances shown were read at
  let bestKey = null;

  const title = heading(id);
  const line = new StatusLine("sweep", `${sweepPath}/cancel`, (sweep) => show(sweep));
  const summary = h("div", { class: "summary" });
  const counts = h("span", { id: "sweep-counts" });
  const finished = h("span");
  const best = h("div", { id: "best-trial" });
  const trialsArea = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const compareTrials = h("p", { id: "compare-trials" });
  const curvesArea = h("div");
  const objectiveArea = h("div");
  const parallel = h("div");
  const importancesArea = h("div");
  const specText = h("pre", { class: "spec" });

  function setUp(sweep) {
    const { spec } = sweep;
    const objective = objectiveOf(sweep);
    parts = {
      spec,
      objective,
      table: new TrialsTable(Object.keys(spec.parameters), objective),
      curves: new TrialCurves(objective, spec.job.hyperparameters.epochs),
      byTrial: new ObjectiveByTrial(objective, spec.max_trials),
      importances: new ImportanceBars(),
    };
    replace(trialsArea, parts.table.element);
    replace(curvesArea, parts.curves.figure);
    replace(objectiveArea, parts.byTrial.figure);
    replace(importancesArea, parts.importances.waiting, parts.importances.figure);
    replace(
      summary,
      facts([
        ["Id", h("span", { class: "mono" }, sweep.id)],
        ["Objective", `${objective.label}, ${objective.direction}`],
        ["Sampler", samplerText(spec.sampler)],
        ["Pruner", prunerText(spec.pruner)],
        ["Trials", counts],
        ["At most", `${spec.max_trials} trials, ${spec.max_parallel_trials} at a time`],
        ["Created", time(sweep.created_at)],
        ["Finished", finished],
      ]),
    );
    specText.textContent = JSON.stringify(spec, null, 2);
  }

  /** The sweep as a `status` event, the cancel or GET /v1/sweeps/{id} gives it. */
  function show(sweep) {
    title.textContent = sweep.name || sweep.id;
    document.title = `${sweep.name || sweep.id} · sweeps · tunery`;
    line.setStatus(sweep.status, ACTIVE.has(sweep.status));
    view.dataset.status = sweep.status;
    counts.textContent = countsText(sweep.trials);
    replace(finished, time(sweep.finished_at));
    // Redrawn only when it changes: its links may have the keyboard focus.
    const key = JSON.stringify(sweep.best_trial);
    if (key !== bestKey) {
      bestKey = key;
      replace(best, bestTrial(sweep, parts.objective));
    }
  }

  function showTrials(trials) {
    parts.table.update(trials);
    parts.curves.update(trials);
    parts.byTrial.update(trials);
    replace(parallel, parallelCoordinates(parts.spec, parts.objective, trials));
    const href = compareHref(trials, parts.objective);
    // Redrawn only when it changes: the link may have the keyboard focus.
    if (compareTrials.firstElementChild?.getAttribute("href") !== href) {
      const count = href ? href.split(",").length : 0;
      replace(compareTrials, href && h("a", { href }, `Compare the ${count} best completed trials`));
    }
  }

  // Only GET /v1/sweeps/{id} has the importances (the stream leaves them out: they take a
  // fANOVA fit), and they change only when a trial completes.
  function showWithImportances(sweep) {
    show(sweep);
    completedAtImportances = sweep.trials.completed;
    parts.importances.update(sweep.importances, sweep.trials.completed);
  }

  const reloadSweep = coalesced(async () => {
    const sweep = await apiJson(sweepPath);
    if (!disposed) showWithImportances(sweep);
  });
  const reloadTrials = coalesced(async () => {
    const answer = await apiJson(`${sweepPath}/trials`);
    if (!disposed) showTrials(answer.data);
  });

  function failed(error) {
    line.showError(error); // nothing once the page is gone
  }

  function onData(type, data) {
    if (type === "trial") {
      reloadTrials().catch(failed);
    } else if (type === "status" || type === "end") {
      show(data);
      const final = type === "end";
      if (final || data.trials.completed !== completedAtImportances) reloadSweep().catch(failed);
      if (final) reloadTrials().catch(failed);
    }
  }

  replace(
    view,
    h("p", { class: "breadcrumb" }, h("a", { href: "#/sweeps" }, "← Sweeps")),
    title,
    line.element,
    h(
      "p",
      { class: "actions" },
      h("a", { class: "button", id: "clone-sweep", href: `#/sweeps/new?sweep=${encodeURIComponent(id)}` }, "Clone"),
    ),
    line.message,
    card("h-summary", "Summary", {}, summary),
    card("h-best", "Best trial", {}, best),
    card("h-trials", "Trials", { wide: true }, trialsArea, compareTrials),
    card("h-curves", "Objective by epoch", {}, curvesArea),
    card("h-objective", "Objective by trial", {}, objectiveArea),
    card(
      "h-parallel",
      "Parameters against the objective",
      { wide: true },
      h(
        "p",
        { class: "chart-summary" },
        "Parallel coordinates: an axis per parameter and one for the objective, a line per " +
          "completed trial through its values; the darker the line, the better its objective, " +
          "and the thickest is the best. Hover a line for its values.",
      ),
      parallel,
    ),
    card("h-importances", "Parameter importances", {}, importancesArea),
    card(
      "h-spec",
      "Spec",
      {},
      h("details", {}, h("summary", {}, "The spec, defaults filled in"), specText),
    ),
  );

  (async () => {
    try {
      const sweep = await apiJson(sweepPath);
      if (disposed) return;
      setUp(sweep);
      showWithImportances(sweep);
      await reloadTrials();
    } catch (error) {
      failed(error);
      return;
    }
    line.follow(`${sweepPath}/stream`, onData);
  })();

  return () => {
    disposed = true;
    line.close();
    if (parts) {
      parts.curves.destroy();
      parts.byTrial.destroy();
      parts.importances.destroy();
    }
  };
}

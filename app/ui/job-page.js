// #/jobs/{id}: one job. Its status, progress, spec and metrics; live training curves, events
// and a log tail, all fed by GET /v1/jobs/{id}/stream; Cancel while it is queued, running or
// paused; Pause and Resume; the checkpoints it keeps, each a new job's start; links to the
// model it started from, the model it made, and the sweep it is a trial of; Clone (its spec in
// the new job form) and a sweep over it (its spec as a new sweep's job).

import { apiJson } from "./api.js";
import { CheckpointsTable } from "./checkpoints.js";
import { MetricCharts } from "./charts.js";
import {
  card,
  facts,
  h,
  heading,
  jobLink,
  metricsTable,
  modelLink,
  progress,
  replace,
  statusBadge,
  sweepLink,
  time,
} from "./dom.js";
import { StatusLine } from "./status-line.js";

const LOG_LINES = 200;
const ACTIVE = new Set(["queued", "running"]);
const CANCELLABLE = new Set([...ACTIVE, "paused"]);

function resultModel(job) {
  return job.result_model_id && h("span", { id: "result-model" }, modelLink(job.result_model_id));
}

function trialOf(job) {
  const link = sweepLink(job.sweep_id, `trial ${job.trial_number} of ${job.sweep_id}`);
  return link && h("span", { id: "job-sweep" }, link);
}

export function render(view, { id }) {
  const jobId = id;
  const seenEvents = new Set();
  let summaryKey = null;

  const title = heading(jobId);
  const jobPath = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const line = new StatusLine("job", `${jobPath}/cancel`, (job) => show(job));
  const summary = h("div", { class: "summary" });
  const progressCell = h("span", { id: "job-progress" });
  const metrics = h("div", { id: "job-metrics" });
  const chartArea = h("div", { class: "charts", id: "charts" });
  const noPoints = h("p", { class: "muted" }, "No metric points yet.");
  const events = h("ol", { class: "events", id: "events" });
  const log = h("ol", { class: "log", id: "log", tabindex: "0", "aria-label": "Log tail" });
  const spec = h("pre", { class: "spec" });
  const charts = new MetricCharts(chartArea);
  const checkpoints = new CheckpointsTable(jobId);
  const pause = h("button", { type: "button", id: "pause-job", class: "secondary", hidden: true }, "Pause");
  const resume = h("button", { type: "button", id: "resume-job", hidden: true }, "Resume");
  pause.onclick = () => post(pause, "pause");
  resume.onclick = () => post(resume, "resume");

  async function post(button, action) {
    button.disabled = true;
    try {
      show(await apiJson(`${jobPath}/${action}`, { method: "POST" }));
      line.message.replaceChildren();
    } catch (error) {
      line.showError(error);
    } finally {
      button.disabled = false;
    }
  }

  function show(job) {
    title.textContent = job.name || job.id;
    document.title = `${job.name || job.id} · jobs · tunery`;
    line.setStatus(job.status, CANCELLABLE.has(job.status));
    // Pause a queued job, or a running one not yet asked; resume a paused one, or take back a
    // pause not yet made.
    pause.hidden = !(job.status === "queued" || (job.status === "running" && !job.pause_requested));
    resume.hidden = !(job.status === "paused" || job.pause_requested);
    view.dataset.status = job.status;
    charts.setTotalSteps(job.progress.total_steps);
    // Progress changes with every status event; the rest is redrawn only when it changes, so
    // that a link with the keyboard focus is not replaced under it.
    replace(progressCell, progress(job));
    const { status, started_at, finished_at, attempt, result_model_id, error, metrics: m } = job;
    const key = JSON.stringify([status, started_at, finished_at, attempt, result_model_id, error, m]);
    checkpoints.refresh(job.progress.epoch, status); // a new epoch may have a new checkpoint
    if (key !== summaryKey) {
      summaryKey = key;
      const method = job.spec?.method?.name;
      replace(
        summary,
        facts([
          ["Id", h("span", { class: "mono" }, job.id)],
          ["Kind", method ? `${job.kind} · ${method}` : job.kind],
          ["Sweep", trialOf(job)],
          ["Progress", progressCell],
          ["Created", time(job.created_at)],
          ["Started", time(job.started_at)],
          ["Finished", time(job.finished_at)],
          ["Attempt", String(job.attempt)],
          ["Base model", modelLink(job.spec?.base_model_id)],
          [
            "Started from",
            job.base_checkpoint_job_id &&
              h("span", { id: "base-checkpoint" }, `checkpoint ${job.spec.base_checkpoint_id} of `, jobLink(job.base_checkpoint_job_id)),
          ],
          ["Result model", resultModel(job)],
          ["Error", job.error && h("span", { class: "error-text" }, `${job.error.type}: ${job.error.message}`)],
        ]),
      );
      const active = ACTIVE.has(job.status);
      replace(metrics, metricsTable(job.metrics, "Final metrics", active ? "Not until it ends." : "None."));
      noPoints.textContent = active ? "No metric points yet." : "No metric points.";
    }
    const specText = JSON.stringify(job.spec, null, 2);
    if (spec.textContent !== specText) spec.textContent = specText;
  }

  function addEvent(event) {
    if (seenEvents.has(event.id)) return;
    seenEvents.add(event.id);
    if (event.type === "status") {
      events.append(
        h(
          "li",
          {},
          time(event.time),
          " ",
          event.status ? statusBadge(event.status) : null,
          event.message && event.message !== event.status ? ` ${event.message}` : "",
        ),
      );
      return;
    }
    const following = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const at = new Date(event.time).toLocaleTimeString();
    log.append(h("li", {}, h("span", { class: "log-time" }, at), " ", event.message));
    while (log.childElementCount > LOG_LINES) log.firstElementChild.remove();
    if (following) log.scrollTop = log.scrollHeight;
  }

  function onData(type, data) {
    if (type === "status" || type === "end") show(data);
    else if (type === "metric") {
      noPoints.hidden = true;
      charts.add(data);
    } else if (type === "log") addEvent(data);
  }

  replace(
    view,
    h("p", { class: "breadcrumb" }, h("a", { href: "#/jobs" }, "← Jobs")),
    title,
    line.element,
    h(
      "p",
      { class: "actions" },
      h("a", { class: "button", id: "clone-job", href: `#/jobs/new?job=${encodeURIComponent(jobId)}` }, "Clone"),
      h("a", { class: "button secondary", href: `#/sweeps/new?job=${encodeURIComponent(jobId)}` }, "Sweep over it"),
      pause,
      resume,
    ),
    line.message,
    card("h-summary", "Summary", {}, summary),
    card("h-metrics", "Metrics", {}, metrics),
    card("h-curves", "Training curves", { wide: true }, noPoints, chartArea),
    card("h-checkpoints", "Checkpoints", { wide: true }, checkpoints.element),
    card("h-events", "Events", {}, events),
    card("h-log", "Log", {}, log),
    card(
      "h-spec",
      "Spec",
      { wide: true },
      h("details", {}, h("summary", {}, "The spec, defaults filled in"), spec),
    ),
  );

  (async () => {
    let job;
    try {
      job = await apiJson(jobPath);
    } catch (error) {
      line.showError(error);
      return;
    }
    show(job);
    line.follow(`${jobPath}/stream`, onData);
  })();

  return () => {
    line.close();
    charts.destroy();
  };
}

// #/jobs: the job list, newest first. Filters by status and kind (both GET /v1/jobs query
// parameters, so the server filters), cursor paging, and a refresh every few seconds. A checkbox
// per row picks jobs to compare (#/compare?jobs=…); the picks outlive refreshes and pages.

import { AuthRequired, apiJson, withQuery } from "./api.js";
import { MAX_JOBS, MIN_JOBS } from "./compare-page.js";
import { errorBox, h, heading, jobLink, progress, replace, statusBadge, time } from "./dom.js";
import { CursorPager } from "./paging.js";

const STATUSES = ["queued", "running", "paused", "succeeded", "failed", "cancelled", "pruned"];
const KINDS = ["pretrain", "finetune", "adapt"];
export const REFRESH_MS = 5000;

function choice(id, label, values, selected, onchange) {
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    h(
      "select",
      { id, name: id.replace("filter-", ""), onchange },
      h("option", { value: "" }, "any"),
      values.map((value) => h("option", { value, selected: value === selected }, value)),
    ),
  );
}

/** A row's checkbox: adds the job to `picked` (or takes it out), then calls `onPick`. */
function pickBox(job, picked, onPick) {
  return h("input", {
    type: "checkbox",
    class: "pick",
    "aria-label": `Compare ${job.name || job.id}`,
    checked: picked.has(job.id),
    onchange: (event) => {
      if (event.target.checked) picked.add(job.id);
      else picked.delete(job.id);
      onPick();
    },
  });
}

function row(job, picked, onPick) {
  return h(
    "tr",
    { dataset: { jobId: job.id } },
    h("td", {}, pickBox(job, picked, onPick)),
    h(
      "td",
      {},
      jobLink(job.id, job.name || job.id),
      job.name ? h("div", { class: "muted small mono" }, job.id) : null,
    ),
    h("td", {}, statusBadge(job.status)),
    h("td", {}, job.kind),
    h("td", {}, time(job.created_at)),
    h("td", {}, progress(job)),
  );
}

export function render(view, _params, query) {
  const limit = Math.min(Math.max(Number(query.get("limit")) || 20, 1), 1000);
  const filters = { status: query.get("status") ?? "", kind: query.get("kind") ?? "" };
  let timer = null;
  let inFlight = null;
  let disposed = false;

  const pager = new CursorPager(() => load());
  const rows = h("tbody");
  const message = h("div", { class: "message" });
  const updated = h("span", { class: "muted", role: "status" });
  const auto = h("input", { type: "checkbox", id: "auto-refresh", checked: true, onchange: schedule });
  const compare = h("button", { type: "button", id: "compare-jobs", onclick: openCompare }, "Compare");
  const pickedCount = h("span", { class: "muted", role: "status" });
  const picked = new Set(); // job ids, in the order they were picked

  function showPicked() {
    compare.disabled = picked.size < MIN_JOBS || picked.size > MAX_JOBS;
    pickedCount.textContent = picked.size
      ? `${picked.size} picked (compare ${MIN_JOBS} to ${MAX_JOBS})`
      : `Pick ${MIN_JOBS} to ${MAX_JOBS} jobs to compare.`;
  }

  function openCompare() {
    location.hash = `#/compare?jobs=${[...picked].map(encodeURIComponent).join(",")}`;
  }

  function setFilter(name) {
    return (event) => {
      filters[name] = event.target.value;
      history.replaceState(null, "", withQuery("#/jobs", { ...filters, limit: query.get("limit") }));
      pager.reset();
      load();
    };
  }

  function schedule() {
    clearTimeout(timer);
    if (!disposed && auto.checked && !document.hidden) timer = setTimeout(load, REFRESH_MS);
  }

  async function load() {
    clearTimeout(timer);
    inFlight?.abort();
    const controller = new AbortController();
    inFlight = controller;
    try {
      const path = withQuery("/v1/jobs", { ...filters, limit, cursor: pager.cursor });
      const page = await apiJson(path, { signal: controller.signal });
      if (disposed || controller.signal.aborted) return;
      replace(
        rows,
        page.data.length
          ? page.data.map((job) => row(job, picked, showPicked))
          : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No jobs match these filters.")),
      );
      pager.update(page, page.data.length);
      message.replaceChildren();
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      view.dataset.loaded = "true";
    } catch (error) {
      if (error.name === "AbortError" || error instanceof AuthRequired) return;
      replace(message, errorBox(error));
    } finally {
      if (inFlight === controller) inFlight = null;
    }
    schedule();
  }

  const onVisible = () => {
    if (!document.hidden && auto.checked) load();
  };
  document.addEventListener("visibilitychange", onVisible);

  replace(
    view,
    heading("Jobs"),
    h(
      "p",
      { class: "actions" },
      h("a", { class: "button", href: "#/jobs/new", id: "new-job" }, "New job"),
      h("a", { class: "button secondary", href: "#/datasets/upload" }, "Upload a dataset"),
    ),
    h(
      "form",
      { class: "filters", "aria-label": "Filter jobs", onsubmit: (e) => e.preventDefault() },
      choice("filter-status", "Status", STATUSES, filters.status, setFilter("status")),
      choice("filter-kind", "Kind", KINDS, filters.kind, setFilter("kind")),
      h(
        "div",
        { class: "field checkbox" },
        auto,
        h("label", { for: "auto-refresh" }, `Refresh every ${REFRESH_MS / 1000} s`),
      ),
      h("button", { type: "button", onclick: () => load() }, "Refresh now"),
      updated,
    ),
    message,
    h("div", { class: "compare-bar" }, compare, pickedCount),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "jobs" },
        h("caption", { class: "visually-hidden" }, "Jobs, newest first"),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Compare")),
            ["Job", "Status", "Kind", "Created", "Progress"].map((t) => h("th", { scope: "col" }, t)),
          ),
        ),
        rows,
      ),
    ),
    pager.nav,
  );
  showPicked();
  load();

  return () => {
    disposed = true;
    clearTimeout(timer);
    inFlight?.abort();
    document.removeEventListener("visibilitychange", onVisible);
  };
}

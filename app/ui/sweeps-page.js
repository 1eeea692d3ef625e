// #/sweeps: the hyperparameter sweeps, newest first, with cursor paging: each one's status,
// its trials counted by state, and the best objective value so far.

import { h, number, statusBadge, sweepLink, time } from "./dom.js";
import { renderPagedList } from "./paging.js";
import { countsText, objectiveOf } from "./sweep-spec.js";

const COLUMNS = ["Sweep", "Status", "Trials", "Best value", "Created"];
const EMPTY = "No sweeps yet: New sweep (or POST /v1/sweeps) starts one (docs/SWEEPS.md).";

function best(sweep) {
  const trial = sweep.best_trial;
  if (!trial) return h("span", { class: "muted" }, "—");
  return [
    number(trial.value),
    h("div", { class: "muted small" }, `${objectiveOf(sweep).label} · trial ${trial.number}`),
  ];
}

function row(sweep) {
  return h(
    "tr",
    { dataset: { sweepId: sweep.id } },
    h(
      "td",
      {},
      sweepLink(sweep.id, sweep.name || sweep.id),
      sweep.name ? h("div", { class: "muted small mono" }, sweep.id) : null,
    ),
    h("td", {}, statusBadge(sweep.status)),
    h("td", { class: "trial-counts" }, countsText(sweep.trials)),
    h("td", { class: "best-value" }, best(sweep)),
    h("td", {}, time(sweep.created_at)),
  );
}

export function render(view, _params, query) {
  return renderPagedList(view, query, {
    title: "Sweeps",
    path: "/v1/sweeps",
    columns: COLUMNS,
    row,
    empty: EMPTY,
    tableClass: "sweeps",
    actions: h("a", { class: "button", href: "#/sweeps/new", id: "new-sweep" }, "New sweep"),
  });
}

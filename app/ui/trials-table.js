// A sweep's trials as a table sorted by any column (trial number, state, each parameter, the
// objective value): a click on a column's header sorts by it, a second click reverses. Each
// trial links to its job.

import { h, jobLink, number, replace, statusBadge } from "./dom.js";
import { paramName, paramText } from "./sweep-spec.js";

/** Numbers by value, anything else as text (numerals by value: "trial 2" before "trial 10"). */
function compare(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

export class TrialsTable {
  /** `paths`: the sweep's parameters, a column each; `objective`: from objectiveOf(sweep). */
  constructor(paths, objective) {
    this.columns = [
      { key: "number", label: "Trial", value: (t) => t.number },
      { key: "state", label: "State", value: (t) => t.state },
      ...paths.map((path) => ({
        key: `param:${path}`,
        label: paramName(path),
        title: path,
        value: (t) => t.params[path],
      })),
      { key: "value", label: `Value (${objective.label})`, value: (t) => t.value },
    ];
    this.sort = { key: "number", descending: false };
    this.trials = [];
    this.shownKey = null;
    this.headers = this.columns.map((column) =>
      h(
        "th",
        { scope: "col", title: column.title, dataset: { column: column.key } },
        h(
          "button",
          { type: "button", class: "sort", onclick: () => this.sortBy(column.key) },
          column.label,
          h("span", { class: "sort-mark", "aria-hidden": "true" }),
        ),
      ),
    );
    this.rows = h("tbody");
    this.element = h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "trials", id: "trials" },
        h("caption", { class: "visually-hidden" }, "Trials; a column's button sorts by it"),
        h("thead", {}, h("tr", {}, this.headers)),
        this.rows,
      ),
    );
    this.markSort();
  }

  sortBy(key) {
    const descending = this.sort.key === key && !this.sort.descending;
    this.sort = { key, descending };
    this.markSort();
    this.draw();
  }

  markSort() {
    for (const header of this.headers) {
      const sorted = header.dataset.column === this.sort.key;
      const [order, mark] = this.sort.descending ? ["descending", " ▼"] : ["ascending", " ▲"];
      header.setAttribute("aria-sort", sorted ? order : "none");
      header.querySelector(".sort-mark").textContent = sorted ? mark : "";
    }
  }

  /** Shows `trials` (TrialOut), redrawing only when what the table shows of them changed. */
  update(trials) {
    this.trials = trials;
    const key = JSON.stringify(trials.map((t) => [t.number, t.state, t.params, t.value, t.job_id]));
    if (key === this.shownKey) return;
    this.shownKey = key;
    this.draw();
  }

  draw() {
    const column = this.columns.find((c) => c.key === this.sort.key);
    const sign = this.sort.descending ? -1 : 1;
    const missing = (value) => value === null || value === undefined;
    const sorted = [...this.trials].sort((a, b) => {
      const [x, y] = [column.value(a), column.value(b)];
      // Trials without a value (running, failed) go last whichever way; ties by number.
      if (missing(x) || missing(y)) return missing(x) - missing(y) || a.number - b.number;
      return sign * compare(x, y) || a.number - b.number;
    });
    replace(
      this.rows,
      sorted.length
        ? sorted.map((trial) => this.row(trial))
        : h("tr", {}, h("td", { colspan: this.columns.length, class: "muted" }, "No trials yet.")),
    );
  }

  row(trial) {
    const name = `trial ${trial.number}`;
    return h(
      "tr",
      { dataset: { trialNumber: trial.number, state: trial.state } },
      h("td", {}, jobLink(trial.job_id, name) ?? name),
      h("td", {}, statusBadge(trial.state)),
      this.columns
        .filter((c) => c.key.startsWith("param:"))
        .map((c) => h("td", { class: "num" }, paramText(c.value(trial)))),
      h("td", { class: "num" }, trial.value === null ? "—" : number(trial.value)),
    );
  }
}

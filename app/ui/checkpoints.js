// The checkpoints a job's retention policy keeps (GET /v1/jobs/{id}/checkpoints), each with a
// link that starts a new job from it: its job's spec in the new job form, `base_checkpoint_id`
// set to it.

import { apiJson } from "./api.js";
import { bytes, errorBox, h, number, replace, time } from "./dom.js";

export class CheckpointsTable {
  #jobId;
  #seen = null; // the (epoch, status) last loaded for: a new one may have a new checkpoint

  constructor(jobId) {
    this.#jobId = jobId;
    this.element = h("div", { id: "job-checkpoints" }, h("p", { class: "muted" }, "Loading…"));
  }

  async refresh(epoch, status) {
    const seen = `${epoch} ${status}`;
    if (seen === this.#seen) return;
    this.#seen = seen;
    try {
      const page = await apiJson(`/v1/jobs/${encodeURIComponent(this.#jobId)}/checkpoints`);
      replace(this.element, this.#table(page.data));
    } catch (error) {
      replace(this.element, errorBox(error));
    }
  }

  #table(checkpoints) {
    if (checkpoints.length === 0) return h("p", { class: "muted" }, "None kept yet.");
    const job = encodeURIComponent(this.#jobId);
    const rows = checkpoints.map((c) =>
      h(
        "tr",
        { dataset: { checkpoint: c.id } },
        h("td", { class: "mono" }, c.id),
        h("td", {}, number(c.step)),
        h("td", {}, number(c.epoch)),
        h(
          "td",
          {},
          Object.entries(c.metrics)
            .map(([name, value]) => `${name} ${number(value)}`)
            .join(", ") || h("span", { class: "muted" }, "mid-epoch"),
        ),
        h("td", {}, bytes(c.size_bytes)),
        h("td", {}, time(c.created_at)),
        h("td", {}, h("a", { href: `#/jobs/new?job=${job}&checkpoint=${encodeURIComponent(c.id)}` }, "Start a job from it")),
      ),
    );
    return h(
      "table",
      {},
      h("thead", {}, h("tr", {}, ["Id", "Step", "Epoch", "Validation", "Size", "Saved", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows),
    );
  }
}

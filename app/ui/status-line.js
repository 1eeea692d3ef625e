// The line under a job's or a sweep's title, and the message area below it: the status badge
// (a live region of its own), the state of the page's event stream, and a Cancel button shown
// while the job or sweep is active. The button stays put as the rest is redrawn: re-inserted
// on every update, it would lose the keyboard focus.

import { AuthRequired, apiJson } from "./api.js";
import { errorBox, h, replace, statusBadge } from "./dom.js";
import { STREAM_STATES } from "./stream.js";

export class StatusLine {
  /**
   * `what`: "job" or "sweep" (the elements' ids, the button's label); `cancelPath`: where the
   * button POSTs; `show(resource)`: the page's redraw, given the cancel's answer.
   */
  constructor(what, cancelPath, show) {
    this.label = `Cancel ${what}`;
    this.badge = h("span", { id: `${what}-status`, role: "status" });
    this.streamState = h("span", { id: "stream-state", class: "stream-state" }, "(connecting…)");
    this.cancel = h(
      "button",
      { type: "button", id: `cancel-${what}`, class: "danger", hidden: true },
      this.label,
    );
    this.cancel.onclick = () => this.#cancel(cancelPath, show);
    this.element = h("div", { class: "status-line" }, this.badge, this.streamState, this.cancel);
    this.message = h("div", { class: "message" });
  }

  setStatus(status, active) {
    if (this.badge.firstElementChild?.dataset.status !== status) {
      replace(this.badge, statusBadge(status));
    }
    this.cancel.hidden = !active;
  }

  setStreamState(state) {
    this.streamState.textContent = `(${STREAM_STATES[state] ?? state})`;
    this.streamState.dataset.state = state;
  }

  /** An error in the message area; a missing key brings back the key form instead. */
  showError(error) {
    if (!(error instanceof AuthRequired)) replace(this.message, errorBox(error));
  }

  async #cancel(path, show) {
    this.cancel.disabled = true;
    this.cancel.textContent = "Cancelling…";
    try {
      show(await apiJson(path, { method: "POST" }));
      this.message.replaceChildren();
    } catch (error) {
      this.showError(error);
    } finally {
      this.cancel.disabled = false;
      this.cancel.textContent = this.label;
    }
  }
}

// The line under a job's or a sweep's title, and the message area below it: the status badge
// (a live region of its own), the page's event stream and its state, and a Cancel button shown
// while the job or sweep is active. The button stays put as the rest is redrawn: re-inserted
// on every update, it would lose the keyboard focus.

import { AuthRequired, apiJson } from "./api.js";
import { errorBox, h, replace, statusBadge } from "./dom.js";
import { STREAM_STATES, openEventStream } from "./stream.js";

export class StatusLine {
  #stream = null;
  #closed = false;

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

  /**
   * Follow the event stream at `path` until its end or close(): each event's type and data,
   * parsed, to `onData(type, data)` (one that is not JSON is skipped rather than stopping the
   * stream); its state beside the badge; a final failure in the message area.
   */
  follow(path, onData) {
    if (this.#closed) return;
    this.#stream = openEventStream(path, {
      onEvent: (event) => {
        if (this.#closed) return;
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        onData(event.type, data);
      },
      onState: (state) => {
        if (this.#closed) return;
        this.streamState.textContent = `(${STREAM_STATES[state] ?? state})`;
        this.streamState.dataset.state = state;
      },
      onFatal: (error) => this.showError(error),
    });
  }

  /** The page is gone: no more events, states or messages. */
  close() {
    this.#closed = true;
    this.#stream?.close();
  }

  /** An error in the message area; a missing key brings back the key form instead. */
  showError(error) {
    if (!this.#closed && !(error instanceof AuthRequired)) replace(this.message, errorBox(error));
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

// Cursor paging for the list pages: the API gives `next_cursor`; going back needs the cursors
// of the pages before, kept here as a stack. And the list page the models and sweeps share.

import { AuthRequired, apiJson, withQuery } from "./api.js";
import { errorBox, h, heading, replace } from "./dom.js";

export class CursorPager {
  constructor(onChange) {
    this.onChange = onChange; // called with no arguments when the page to show changes
    this.previous = []; // cursors of the pages before this one (null: the first page)
    this.cursor = null; // this page's cursor
    this.next = null; // the next page's cursor, from the last answer
    this.nav = h("nav", { class: "pager", "aria-label": "Pages" });
  }

  reset() {
    this.previous = [];
    this.cursor = null;
    this.next = null;
  }

  /** Records the answer's next_cursor and redraws the buttons. */
  update(page, shown) {
    this.next = page.next_cursor ?? null;
    const number = this.previous.length + 1;
    this.nav.replaceChildren(
      h(
        "button",
        { type: "button", disabled: this.previous.length === 0, onclick: () => this.back() },
        "← Newer",
      ),
      h("span", { class: "page-number" }, `Page ${number}`, shown !== undefined ? ` · ${shown} shown` : ""),
      h("button", { type: "button", disabled: !this.next, onclick: () => this.forward() }, "Older →"),
    );
  }

  forward() {
    if (!this.next) return;
    this.previous.push(this.cursor);
    this.cursor = this.next;
    this.onChange();
  }

  back() {
    if (this.previous.length === 0) return;
    this.cursor = this.previous.pop();
    this.onChange();
  }
}

/**
 * A list page: heading `title`, then a table of what GET `path` lists, newest first, a
 * `row(item)` each under `columns`, paged (`?limit=` in the page's query sets the page size).
 * `empty`: what an empty list says; `actions`: what goes under the heading (a link to make
 * one). Returns the page's cleanup.
 */
export function renderPagedList(view, query, { title, path, columns, row, empty, tableClass, actions }) {
  const limit = Math.min(Math.max(Number(query.get("limit")) || 20, 1), 1000);
  let disposed = false;
  let inFlight = null;
  const pager = new CursorPager(() => load());
  const rows = h("tbody");
  const message = h("div", { class: "message" });

  async function load() {
    inFlight?.abort();
    const controller = new AbortController();
    inFlight = controller;
    try {
      const page = await apiJson(withQuery(path, { limit, cursor: pager.cursor }), {
        signal: controller.signal,
      });
      if (disposed || controller.signal.aborted) return;
      replace(
        rows,
        page.data.length
          ? page.data.map(row)
          : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty)),
      );
      pager.update(page, page.data.length);
      message.replaceChildren();
      view.dataset.loaded = "true";
    } catch (error) {
      if (error.name === "AbortError" || error instanceof AuthRequired) return;
      replace(message, errorBox(error));
    }
  }

  replace(
    view,
    heading(title),
    actions ? h("p", { class: "actions" }, actions) : null,
    message,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: tableClass },
        h("caption", { class: "visually-hidden" }, `${title}, newest first`),
        h("thead", {}, h("tr", {}, columns.map((column) => h("th", { scope: "col" }, column)))),
        rows,
      ),
    ),
    pager.nav,
  );
  load();

  return () => {
    disposed = true;
    inFlight?.abort();
  };
}

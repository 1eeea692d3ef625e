// Cursor paging for the list pages: the API gives `next_cursor`; going back needs the cursors
// of the pages before, kept here as a stack.

import { h } from "./dom.js";

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

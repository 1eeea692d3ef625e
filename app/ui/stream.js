// Server-sent events read with fetch(), because EventSource cannot send an Authorization
// header (and the key must never go in a URL). A small parser of the text/event-stream format,
// and a reader that reconnects after a drop, resuming with Last-Event-ID.

import { ApiError, apiFetch } from "./api.js";

/**
 * The text/event-stream format (WHATWG HTML, "Server-sent events"): push() text as it arrives,
 * in pieces of any size. Lines end in CRLF, LF or CR (also split between two pieces); `data`
 * lines join with "\n"; lines starting with ":" are comments (keep-alives); a blank line
 * dispatches `onEvent({type, data, id})`. `lastEventId` persists from one event to the next,
 * as the spec says, and `retry` holds the last reconnection time the server asked for.
 */
export class SSEParser {
  constructor(onEvent, lastEventId = "") {
    this.onEvent = onEvent;
    this.lastEventId = lastEventId;
    this.retry = null;
    this.pending = "";
    this.skipLineFeed = false;
    this.data = [];
    this.type = "";
  }

  push(text) {
    let chunk = text;
    if (this.skipLineFeed && chunk.startsWith("\n")) chunk = chunk.slice(1);
    this.skipLineFeed = false;
    const buffer = this.pending + chunk;
    const lineEnd = /\r\n|\r|\n/g;
    let start = 0;
    let match;
    while ((match = lineEnd.exec(buffer)) !== null) {
      // A CR that ends this piece may be the first half of a CRLF split across two pieces.
      if (match[0] === "\r" && lineEnd.lastIndex === buffer.length) this.skipLineFeed = true;
      this.line(buffer.slice(start, match.index));
      start = lineEnd.lastIndex;
    }
    this.pending = buffer.slice(start);
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return undefined; // a comment: keep-alive
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
    return undefined;
  }

  dispatch() {
    const event = { type: this.type || "message", data: this.data.join("\n"), id: this.lastEventId };
    const hasData = this.data.length > 0;
    this.data = [];
    this.type = "";
    if (hasData) this.onEvent(event);
  }
}

/** What each state openEventStream reports means, in words, for a page to show. */
export const STREAM_STATES = {
  connecting: "connecting…",
  open: "live",
  reconnecting: "reconnecting…",
  ended: "final",
  closed: "closed",
  failed: "not available",
};

/** Waits `ms`, or less if `signal` aborts first. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/**
 * Reads the event stream at `path` until an event of type `endType` arrives or close() is
 * called. After a drop (the connection fails, the body ends early, or nothing at all, not even
 * a keep-alive, arrives for `idleMs`) it reconnects with `Last-Event-ID`, waiting the server's
 * `retry` time, doubled after each failure in a row (at most 15 s). A 4xx answer other than 429
 * is final: `onFatal(error)` (a 401 has already brought back the key form).
 *
 * handlers: onEvent({type, data, id}), onState("connecting" | "open" | "reconnecting" |
 * "ended" | "closed" | "failed"), onFatal(error). Returns {close()}.
 */
export function openEventStream(path, handlers, { endType = "end", idleMs = 45_000 } = {}) {
  const { onEvent, onState = () => {}, onFatal = () => {} } = handlers;
  const stopped = new AbortController();
  let lastEventId = "";
  let retryMs = 1000;
  let failures = 0;

  async function readOnce() {
    const connection = new AbortController();
    const abort = () => connection.abort();
    stopped.signal.addEventListener("abort", abort);
    let idle = setTimeout(abort, idleMs);
    let ended = false;
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      const response = await apiFetch(path, { headers, signal: connection.signal });
      const type = response.headers.get("content-type") || "";
      if (!type.startsWith("text/event-stream")) {
        throw new ApiError(response.status, { title: "Not an event stream", detail: type });
      }
      onState("open");
      const parser = new SSEParser((event) => {
        failures = 0;
        lastEventId = event.id;
        if (event.type === endType) ended = true;
        onEvent(event);
      }, lastEventId);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      while (!ended) {
        const { value, done } = await reader.read();
        if (done) break;
        clearTimeout(idle);
        idle = setTimeout(abort, idleMs);
        parser.push(value);
        if (parser.retry !== null) retryMs = parser.retry;
      }
      if (ended) await reader.cancel().catch(() => {});
      return ended;
    } finally {
      clearTimeout(idle);
      stopped.signal.removeEventListener("abort", abort);
    }
  }

  async function run() {
    onState("connecting");
    while (!stopped.signal.aborted) {
      try {
        if (await readOnce()) {
          onState("ended");
          return;
        }
      } catch (error) {
        if (stopped.signal.aborted) break;
        const final = error instanceof ApiError && error.status < 500 && error.status !== 429;
        if (final) {
          onState("failed");
          onFatal(error);
          return;
        }
      }
      if (stopped.signal.aborted) break;
      onState("reconnecting");
      await sleep(Math.min(retryMs * 2 ** failures, 15_000), stopped.signal);
      failures += 1;
    }
    onState("closed");
  }

  run();
  return { close: () => stopped.abort() };
}

"""An incremental Server-Sent Events parser, after the WHATWG HTML standard's "event stream
interpretation". (No SSE client library is a dependency; this is the small part we need.)"""

import codecs
import re
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str  # the stream's last event id when this event was dispatched


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the events completed so far. `last_event_id`
    and `retry` (milliseconds, from `retry:` fields) outlive single events, as in a browser."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._at_start = True
        self._after_cr = False  # a chunk ended in CR: a LF opening the next one ends no line
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._utf8.decode(chunk)
        if not text:
            return []
        if self._at_start:
            text, self._at_start = text.removeprefix("\ufeff"), False
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = False
        self._buffer += text
        events = []
        start = 0
        for end in _LINE_END.finditer(self._buffer):
            event = self._line(self._buffer[start : end.start()])
            if event is not None:
                events.append(event)
            start = end.end()
        self._after_cr = self._buffer[start - 1 : start] == "\r"
        self._buffer = self._buffer[start:]
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment: the server's keep-alive
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(event or "message", "\n".join(data), self.last_event_id)

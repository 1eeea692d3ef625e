"""One logging configuration for the API and the worker: a JSON object per line on stderr
(`TUNERY_LOG_FORMAT=json`, the default) or plain text lines (`text`).

A JSON record carries `time` (UTC, ISO 8601), `level`, `logger` and `message`, plus every
`extra` of the call: log calls about a job pass `extra={"job_id": ...}`, so a log collector can
follow one job across the API and the workers.
"""

import logging
import sys
from typing import Literal, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# uvicorn configures these before it imports the app, with plain-text handlers of its own.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class _StderrHandler(logging.StreamHandler):
    """Writes to `sys.stderr` as it is when a record is written, not as it was when the handler
    was made: a test runner that swaps the stream between tests leaves no handler writing to a
    closed one."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
        # uvicorn adds an ANSI-coloured copy of some messages: noise in a JSON record.
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )


def _access_fields(record: logging.LogRecord) -> bool:
    """uvicorn's access records carry the request in their arguments; as fields, a log
    collector can filter on them without parsing the message."""
    if isinstance(record.args, tuple) and len(record.args) == 5:
        _client, record.method, record.path, _version, record.status_code = record.args
    return True


def configure_logging(log_format: LogFormat, level: int | str = logging.INFO) -> None:
    """Route every record through one handler on the root logger, in `log_format`.

    Idempotent: a second call replaces the handler the first one added, and leaves handlers
    that others added (a test runner's) alone.
    """
    chosen = formatter(log_format)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(chosen)
    root.addHandler(handler)
    root.setLevel(level)
    # Their handlers keep their streams and levels (and `--no-access-log` keeps the access
    # log off); only the format changes.
    for name in UVICORN_LOGGERS:
        for uvicorn_handler in logging.getLogger(name).handlers:
            uvicorn_handler.setFormatter(chosen)
    logging.getLogger("uvicorn.access").addFilter(_access_fields)
    # Warnings become records too, instead of bare lines on stderr.
    logging.captureWarnings(True)

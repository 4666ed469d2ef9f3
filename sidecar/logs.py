"""Log lines an operator can use: time, level and logger on every line, text or JSON.

    text: 2026-12-07T00:51:36.123Z INFO sidecar.daemon: ready in 0.42s
    json: {"ts": "2026-12-07T00:51:36.123Z", "level": "INFO", "logger": "sidecar.daemon",
           "msg": "ready in 0.42s"}

Times are UTC with milliseconds. A traceback stays inside its record: indented under
the text line, in ``exc`` in JSON, so one event is one journald / Loki entry.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def utc_timestamp(created: float) -> str:
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record.created)

    def formatException(self, ei: object) -> str:
        text = super().formatException(ei)  # type: ignore[arg-type]
        return "\n".join("    " + line for line in text.splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (and exc with a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def configure(
    level: str = "INFO",
    fmt: str = "text",
    *,
    split: bool = False,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> None:
    """Route every logger through one format. ``split``: records below WARNING go to
    ``out`` (stdout), the rest to ``err`` (stderr); otherwise everything to ``err``."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    errors = logging.StreamHandler(err or sys.stderr)
    errors.setFormatter(formatter)
    if split:
        errors.setLevel(logging.WARNING)
        normal = logging.StreamHandler(out or sys.stdout)
        normal.setFormatter(formatter)
        normal.addFilter(_Below(logging.WARNING))
        root.addHandler(normal)
    root.addHandler(errors)
    numeric = logging.getLevelNamesMapping()[level]
    root.setLevel(numeric)
    # asyncssh logs several INFO lines per connection; keep them for DEBUG.
    logging.getLogger("asyncssh").setLevel(max(numeric, logging.WARNING))


def level_from_flags(default: str, verbose: int, quiet: int) -> str:
    """``-v`` one level more, ``-q`` one level less, from ``default``."""
    index = LEVELS.index(default) - verbose + quiet
    return LEVELS[max(0, min(len(LEVELS) - 1, index))]

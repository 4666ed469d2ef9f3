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
import threading
import time
from collections.abc import Callable
from typing import IO, Any

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LIBRARIES = ("asyncssh", "httpx", "httpcore")


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
    # Libraries that log at INFO per connection or request stay at WARNING, whatever
    # the level: asyncssh several lines per SSH connection; httpx (httpcore under it)
    # one per KME or remote QRNG request, so a tier-4 node said one every hardware
    # check, for ever, and one per sealed channel and rekey.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


def printable(text: str) -> str:
    """``text`` with every character that is not printable (a newline, a carriage
    return, a terminal escape) escaped as Python writes it (``\\n``, ``\\x1b``), for
    what a stranger or a peer chose: it must not start a log line of its own, nor move
    a terminal's cursor."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def level_from_flags(default: str, verbose: int, quiet: int) -> str:
    """``-v`` one level more, ``-q`` one level less, from ``default``."""
    index = LEVELS.index(default) - verbose + quiet
    return LEVELS[max(0, min(len(LEVELS) - 1, index))]


PROGRESS_EVERY = 2.0  # seconds between two progress log lines


class ProgressReport:
    """Progress of a long job (recovering a large log, `wal compact`): a rich progress
    bar on a terminal, otherwise one log line with the percentage every
    ``PROGRESS_EVERY`` seconds. Callable as ``report(done, total)`` from any thread."""

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        tty: bool | None = None,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.logger = logger
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.every = PROGRESS_EVERY if every is None else every
        self.clock = clock
        self._started = clock()
        self._last_line = self._started
        self._lock = threading.Lock()
        self._bar: Any = None
        self._task: Any = None
        self.lines = 0

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            if self.tty:
                self._show_bar(done, total)
                return
            now = self.clock()
            if now - self._last_line < self.every and done < total:
                return
            if done >= total and self.lines == 0:
                return  # a short job: nothing to report
            self._last_line = now
            self.lines += 1
            percent = 100 * done // max(total, 1)
            self.logger.info("%s: %d%% (%d of %d bytes)", self.what, percent, done, total)

    def _show_bar(self, done: int, total: int) -> None:
        if self._bar is None:
            from rich.progress import Progress  # noqa: PLC0415 - only on a terminal

            self._bar = Progress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=total)
        self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.stop()
                self._bar = None

"""The one logging setup of the services (ingestion, landing, query): JSON lines on stderr, floods held back.

Every line is one JSON object with ``ts`` (UTC), ``level``, ``logger`` and either
``event`` plus its fields (the project's structured events, see ``log_event``) or
``message`` (plain records, ours and third-party). A line that stands for records
held back carries ``suppressed`` (how many, since the previous line of its kind).

Invariant kept by ``RepeatThrottle``: while a dependency is down, each kind of
repeated line (a Kafka client's "Unable connect to node", a 503 answered) is
written at most twice per ``THROTTLE_INTERVAL_S``, whatever the request rate; the
first one at once, so the start of an outage is never delayed. The project's own
records below WARNING are deliberate (one per batch, one per progress interval)
and pass untouched; so do events logged with ``always=True`` (state changes such as
"Kafka unreachable since T" and "Kafka back after N s"), which must never be lost.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import threading
import time
from datetime import UTC, datetime

import msgspec

THROTTLE_INTERVAL_S = 60.0
# Loggers whose INFO/DEBUG records are the project's own deliberate lines.
OWN_LOGGERS = ("heatmap_core", "heatmap_http", "heatmap_assets", "ingestion_api", "landing", "query_api", "infra")
# Servers that may install handlers of their own before our entry point runs; their records go through ours.
_REROUTED = ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar")

_json = msgspec.json.Encoder()


def log_event(
    logger: logging.Logger, event: str, level: int = logging.INFO, *, always: bool = False, **fields: object
) -> None:
    """One structured line: ``event`` names what happened, ``fields`` are its values (JSON-encodable)."""
    logger.log(level, event, extra={"event_fields": fields, "always": always})


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "event_fields", None)
        if fields is None:
            line["message"] = record.getMessage()
        else:
            line["event"] = record.msg
            line.update(fields)
        if suppressed := getattr(record, "suppressed", 0):
            line["suppressed"] = suppressed
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _json.encode(line).decode()


class RepeatThrottle(logging.Filter):
    """Lets the first record of a kind through, then holds that kind back until ``interval_s`` has passed.

    The next record of the kind after that passes with ``suppressed`` set to the
    number held back meanwhile. A kind is a call site and level (plus the event name
    for structured events), so a message whose text varies (node ids, error reprs)
    is still one kind, and the state stays as small as the number of call sites.
    """

    def __init__(self, interval_s: float = THROTTLE_INTERVAL_S):
        super().__init__()
        self.interval_s = interval_s
        # kind -> [end of its current window (monotonic s), records held back in it]
        self._windows: dict[tuple, list] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _exempt(record: logging.LogRecord) -> bool:
        if getattr(record, "always", False):
            return True
        own = record.name.partition(".")[0] in OWN_LOGGERS
        return own and record.levelno < logging.WARNING

    def filter(self, record: logging.LogRecord) -> bool:
        if self._exempt(record):
            return True
        event = record.msg if hasattr(record, "event_fields") else None
        kind = (record.name, record.levelno, record.pathname, record.lineno, event)
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(kind)
            if window is None or now >= window[0]:
                record.suppressed = window[1] if window else 0
                self._windows[kind] = [now + self.interval_s, 0]
                return True
            window[1] += 1
            return False


_listener: logging.handlers.QueueListener | None = None


def _stop_listener() -> None:
    """Write out what is queued; safe to call again."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def configure_logging(level: str | int = "INFO", library_info: tuple[str, ...] = ()) -> None:
    """Make this process's logging the project's one setup; call it from an entry point (again: replaces it).

    Our loggers log from ``level`` up; every other library from WARNING up (their
    INFO is connection chatter), except the loggers named in ``library_info``: from
    ``level`` but at least INFO up. Everything, including what uvicorn and Litestar
    log, is throttled and formatted in the caller, then written to stderr by a
    listener thread, so a slow stderr never blocks an event loop.
    """
    global _listener
    _stop_listener()
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(logging.Formatter("%(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = logging.handlers.QueueHandler(records)
    handler.setFormatter(JsonLines())
    handler.addFilter(RepeatThrottle())
    _listener = logging.handlers.QueueListener(records, writer)
    _listener.start()
    atexit.register(_stop_listener)

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level.upper() if isinstance(level, str) else level)
    for name in library_info:
        logging.getLogger(name).setLevel(max(logging.getLogger(OWN_LOGGERS[0]).level, logging.INFO))
    for name in _REROUTED:
        rerouted = logging.getLogger(name)
        # A logger the server silenced (uvicorn --no-access-log: no handler, no propagation) stays silent.
        if rerouted.handlers:
            rerouted.handlers.clear()
            rerouted.propagate = True

"""Landing's health: whether the object store takes its writes, told once in the log and always at GET /health.

Invariant kept by ``StoreHealth``: while the object store refuses writes (access
denied, no such bucket, unreachable), landing holds its offsets uncommitted and
says so exactly twice in its log, once when the refusal starts (naming the
bucket and the S3 error code) and once when writes go through again (naming the
same code), however many writes are retried meanwhile; GET /health answers 503
for as long as it lasts, naming the current cause: a refusal whose cause changes
(the bucket put back, but now the key refused) is still one refusal, with its
``since``, and /health names the code of the latest failure, not the first.

The endpoint (``--health-port``, HEATMAP_LANDING_HEALTH_PORT) is a stdlib HTTP
server on a daemon thread: the consumer loop may be blocked in a flush waiting
for the store, which is exactly when the answer matters.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
from botocore.exceptions import ClientError

from heatmap_core.logs import log_event

log = logging.getLogger(__name__)


class StoreState(msgspec.Struct, frozen=True, omit_defaults=True):
    state: str  # "ok" or "refusing"
    error_code: str | None = None  # S3's error code (AccessDenied, NoSuchBucket ...) or the client error's class
    message: str | None = None
    since: datetime | None = None


class Health(msgspec.Struct, frozen=True):
    """GET /health's body: degraded while the object store refuses writes."""

    status: str  # "ok" or "degraded"
    bucket: str
    object_store: StoreState
    last_commit_at: datetime | None  # offsets committed last (they stay put while the store refuses)


def error_code(exc: BaseException) -> str:
    """S3's code for a refusal the server answered; the exception's class when none answered."""
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code") or type(exc).__name__
    return type(exc).__name__


@dataclass
class StoreHealth:
    bucket: str

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._refusal: StoreState | None = None  # its error_code is the latest failure's
        self._logged_code: str | None = None  # the code the refusal's log line named, for its back line
        self._refused_at = 0.0  # time.monotonic() when the refusal was noted
        self.last_commit_at: datetime | None = None

    def refused(self, exc: BaseException) -> None:
        """A write failed and will be retried: the first failure of a refusal is logged, the rest are not;
        one with another code than the refusal's becomes its cause (same ``since``)."""
        code = error_code(exc)
        with self._lock:
            if self._refusal is not None:
                if code != self._refusal.error_code:
                    self._refusal = StoreState("refusing", code, str(exc), self._refusal.since)
                return
            refusal = self._refusal = StoreState("refusing", code, str(exc), datetime.now(UTC))
            self._refused_at = time.monotonic()
            self._logged_code = code
        log_event(
            log,
            "object_store_refusing",
            logging.WARNING,
            always=True,
            bucket=self.bucket,
            error_code=refusal.error_code,
            error=refusal.message,
            detail="offsets stay uncommitted; retrying the flush",
        )

    def accepted(self, sent_at: float) -> None:
        """A write sent at ``sent_at`` (time.monotonic()) went through: a refusal noted before it was sent
        is over. One sent before the refusal began says nothing of the store now (parallel writes: one
        of them may be stored just as the server goes away while another fails)."""
        if not self.refusing:  # the common case, without the lock
            return
        with self._lock:  # another thread may have ended it meanwhile
            if sent_at < self._refused_at:
                return
            refusal, logged_code, self._refusal = self._refusal, self._logged_code, None
        if refusal is not None and refusal.since is not None:
            log_event(
                log,
                "object_store_back",
                always=True,
                bucket=self.bucket,
                error_code=logged_code,
                after_s=round((datetime.now(UTC) - refusal.since).total_seconds(), 1),
            )

    @property
    def refusing(self) -> bool:
        return self._refusal is not None

    def committed(self) -> None:
        self.last_commit_at = datetime.now(UTC)

    def report(self) -> Health:
        refusal = self._refusal
        return Health(
            status="ok" if refusal is None else "degraded",
            bucket=self.bucket,
            object_store=refusal or StoreState("ok"),
            last_commit_at=self.last_commit_at,
        )


class HealthServer:
    """GET /health on 127.0.0.1:``port``: 200 with the report when ok, 503 when degraded."""

    def __init__(self, health: StoreHealth, port: int):
        encoder = msgspec.json.Encoder()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/health":
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                report = health.report()
                body = encoder.encode(report)
                self.send_response(HTTPStatus.OK if report.status == "ok" else HTTPStatus.SERVICE_UNAVAILABLE)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    def __enter__(self) -> HealthServer:
        self.thread.start()
        log.info("health at http://127.0.0.1:%d/health", self.server.server_address[1])
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()

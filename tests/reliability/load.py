"""Senders that post batches the way a well-behaved client does, for tests that break a dependency under load."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from tests.ingestion.conftest import make_batch

SENDERS = 4
EVENTS_PER_BATCH = 5
# Retry-After says 5 s; waiting at most this long keeps the test short and the load on.
MAX_RETRY_WAIT_S = 1.0


@dataclass
class Load:
    """What the senders saw: every batch answered 202 (by batch_id) and how often each answer came.

    ``refused`` holds every batch answered 503 at least once (by batch_id): with ``accepted`` it tells
    the batches retried to a 202 from those never acknowledged (given up, or still retried at the end).
    """

    url: str
    accepted: dict[str, dict] = field(default_factory=dict)
    answers: Counter[str] = field(default_factory=Counter)
    refused: dict[str, dict] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _count(self, answer: str, batch: dict | None = None) -> None:
        with self._lock:
            self.answers[answer] += 1
            if batch is not None:
                self.accepted[batch["batch_id"]] = batch

    def _refuse(self, batch: dict) -> None:
        with self._lock:
            self.refused[batch["batch_id"]] = batch

    @property
    def never_acknowledged(self) -> set[str]:
        """batch_ids answered 503 and never 202."""
        return self.refused.keys() - self.accepted.keys()

    def send(self, give_up_on_503: bool = False) -> None:
        """Post new batches until stopped; the same batch_id again after a 409, a 503 or a lost connection.

        With ``give_up_on_503``, a client that drops data: a batch answered 503 is given up and a new one sent.
        """
        with httpx.Client(base_url=self.url, timeout=30.0) as http:
            batch = make_batch(events=EVENTS_PER_BATCH)
            while not self.stop.is_set():
                try:
                    answer = http.post("/events/batch", json=batch)
                except httpx.TransportError:
                    self._count("connection error")
                    time.sleep(MAX_RETRY_WAIT_S)
                    continue
                if answer.status_code == 202:
                    self._count("202", batch)
                    batch = make_batch(events=EVENTS_PER_BATCH)
                elif answer.status_code in (409, 503):
                    self._count(str(answer.status_code))
                    time.sleep(min(float(answer.headers["Retry-After"]), MAX_RETRY_WAIT_S))
                    if answer.status_code == 503:
                        self._refuse(batch)
                        if give_up_on_503:
                            batch = make_batch(events=EVENTS_PER_BATCH)
                else:
                    raise AssertionError(f"unexpected answer {answer.status_code}: {answer.text}")


@contextmanager
def under_load(url: str, giving_up: int = 0) -> Iterator[Load]:
    """SENDERS threads posting to ``url`` while the block runs, the first ``giving_up`` of them giving a
    batch up at its first 503; a sender's failure fails the test."""
    load = Load(url)
    errors: list[BaseException] = []

    def run(give_up_on_503: bool) -> None:
        try:
            load.send(give_up_on_503)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the test's thread below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i < giving_up,), name=f"sender-{i}") for i in range(SENDERS)]
    for thread in threads:
        thread.start()
    try:
        yield load
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors

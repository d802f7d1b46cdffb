"""The request forms of POST /events/batch as OpenAPI examples: v1 (no page view) and v2 (with one).

Both are the one schema ``BatchIn`` (``view`` is optional); the examples show a
client which form is which. Litestar builds no media-type examples for a DTO
body, so the route's Operation adds them to the request body it was given.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import Example, Operation, Reference, RequestBody

_EVENT_TIME = "2026-02-02T10:15:00Z"

V1_REQUEST = {
    "client_id": "acme",
    "screen_id": "home_v1",
    "batch_id": "9b2f6d0e-3c1a-4c7e-9d8a-1f2e3d4c5b6a",
    "events": [
        {"event_time": _EVENT_TIME, "x_norm": 0.25, "y_norm": 0.2, "event_type": "mousemove"},
        {"event_time": "2026-02-02T10:15:01Z", "x_norm": 0.5, "y_norm": 0.22, "event_type": "click"},
    ],
}

V2_REQUEST = {
    "client_id": "acme",
    "screen_id": "home_v1",
    "batch_id": "5c7e1a2b-8d9f-4e3a-b1c2-d3e4f5a6b7c8",
    "view": {"view_id": "v-3f9a1c2e7b5d", "viewport_w": 390, "viewport_h": 844, "screen_w": 390, "screen_h": 2100},
    "events": [
        # The scroll event sent at page load: the depth of the viewport's bottom edge (844 / 2100).
        {"event_time": _EVENT_TIME, "x_norm": 0.5, "y_norm": 0.4019, "event_type": "scroll"},
        {"event_time": "2026-02-02T10:15:02Z", "x_norm": 0.5, "y_norm": 0.22, "event_type": "mousemove"},
        {"event_time": "2026-02-02T10:15:03Z", "x_norm": 0.5, "y_norm": 0.221, "event_type": "click"},
        # A burst of clicks on one spot is also reported as one rage click.
        {"event_time": "2026-02-02T10:15:04Z", "x_norm": 0.5, "y_norm": 0.221, "event_type": "rageclick"},
        {"event_time": "2026-02-02T10:15:06Z", "x_norm": 0.5, "y_norm": 0.7, "event_type": "scroll"},
    ],
}

REQUEST_EXAMPLES: dict[str, Example | Reference] = {
    "v1": Example(
        summary="v1: events only (device unknown)",
        description="The request before page views; still accepted. Its events count under device `unknown`.",
        value=V1_REQUEST,
    ),
    "v2": Example(
        summary="v2: events of one page view",
        description="`view` describes the page load: a random `view_id`, the viewport and the screen element's "
        "rendered size in CSS pixels. The server derives the device from `viewport_w` (mobile < 768, "
        "tablet < 1024, desktop). A scroll event's `y_norm` is the depth of the viewport's bottom edge.",
        value=V2_REQUEST,
    ),
}


@dataclass
class BatchOperation(Operation):
    """The ingest route's Operation: its request body documents the v1 and v2 forms."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            for media_type in self.request_body.content.values():
                media_type.examples = REQUEST_EXAMPLES

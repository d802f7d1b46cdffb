"""The ASGI application: ClickHouse's HTTP endpoints over one ``Engine``.

``GET``/``HEAD`` ``/ping`` and a bare ``GET /`` answer ``Ok.``; ``GET /`` and
``POST /`` run a statement (see ``protocol``). The engine works in worker threads,
so requests proceed concurrently while the event loop keeps reading others.
"""

from __future__ import annotations

import json
import logging
import uuid
from urllib.parse import parse_qsl

import anyio.to_thread

from chdb_server.engine import Answer, Engine
from chdb_server.protocol import ENCODERS, ClickHouseError, choose_encoding, content_type_for, parse_request

log = logging.getLogger(__name__)
OK = b"Ok.\n"


def create_app(engine: Engine):
    base_headers = [
        (b"x-clickhouse-server-display-name", b"chdb-server"),
        (b"x-clickhouse-timezone", engine.timezone.encode()),
    ]

    async def respond(
        send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, head_only: bool = False
    ) -> None:
        headers = [*base_headers, *headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head_only else body})

    def answer(method: str, params: dict[str, str], headers: dict[str, str], body: bytes):
        """Run one statement: (status, headers, body), in a worker thread."""
        query_id = params.get("query_id") or str(uuid.uuid4())
        reply = [(b"x-clickhouse-query-id", query_id.encode())]
        try:
            result = engine.run(parse_request(method, params, headers, body))
        except ClickHouseError as failure:
            error = failure
        except Exception as failure:  # a bug here, still answered in the shape clients parse
            log.exception("query %s failed unexpectedly", query_id)
            error = ClickHouseError.of(1001, "STD_EXCEPTION", repr(failure))
        else:
            wanted = (
                choose_encoding(headers.get("accept-encoding"))
                if params.get("enable_http_compression") == "1"
                else None
            )
            return 200, reply + _result_headers(result, wanted if result.body else None), _encoded(result.body, wanted)
        reply += [
            (b"x-clickhouse-exception-code", str(error.code).encode()),
            (b"content-type", b"text/plain; charset=UTF-8"),
        ]
        return error.http_status, reply, f"{error} (version {engine.version})\n".encode()

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            engine.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        method, path = scope["method"], scope["path"]
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        params = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        if path == "/ping" or (path == "/" and method in ("GET", "HEAD") and "query" not in params):
            await respond(send, 200, [(b"content-type", b"text/plain; charset=UTF-8")], OK, head_only=method == "HEAD")
            return
        if path != "/" or method not in ("GET", "POST"):
            text = f"Code: 1001. DB::Exception: There is no handle {method} {path}. (STD_EXCEPTION)\n".encode()
            await respond(send, 404, [(b"content-type", b"text/plain; charset=UTF-8")], text)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        status, reply, payload = await anyio.to_thread.run_sync(answer, method, params, headers, body)
        await respond(send, status, reply, payload)

    return app


def _result_headers(result: Answer, encoding: str | None) -> list[tuple[bytes, bytes]]:
    reply = [(b"x-clickhouse-summary", json.dumps(result.summary).encode())]
    if result.output_format:
        reply += [
            (b"x-clickhouse-format", result.output_format.encode()),
            (b"content-type", content_type_for(result.output_format).encode()),
        ]
    if encoding:
        reply.append((b"content-encoding", encoding.encode()))
    return reply


def _encoded(body: bytes, encoding: str | None) -> bytes:
    return ENCODERS[encoding](body) if body and encoding else body

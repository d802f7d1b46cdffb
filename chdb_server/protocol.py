"""ClickHouse's HTTP interface as clickhouse-connect uses it: pure functions, no I/O.

What a request means: the SQL is the ``query`` URL parameter followed by a newline
and the body (or the ``query`` field of a multipart form); ``param_<name>`` values
bind ``{name:Type}`` placeholders on the server; ``database`` picks the current
database; every other parameter that is not a transport switch is a ClickHouse
setting for that one query. An ``INSERT INTO t [(cols)] [SETTINGS ...] FORMAT f``
head followed by data is an insert of that data (``sql`` is then the ``INSERT INTO t [(cols)]`` target). The answer carries the output
format in X-ClickHouse-Format when the statement produced a result set, and a
failure carries ``Code: N. DB::Exception: ...`` with X-ClickHouse-Exception-Code.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP

import lz4.frame
from backports import zstd

# URL parameters the HTTP layer consumes itself; they never reach the engine as settings.
TRANSPORT_PARAMETERS = frozenset(
    {
        "query", "database", "default_format", "query_id", "session_id", "session_timeout", "session_check",
        "user", "password", "quota_key", "buffer_size", "wait_end_of_query", "client_protocol_version", "role",
        "compress", "decompress", "enable_http_compression", "http_zlib_compression_level",
        "send_progress_in_http_headers", "http_headers_progress_interval_ms",
        "cancel_http_readonly_queries_on_client_close", "add_http_cors_header",
    }
)  # fmt: skip
SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
INSERT_WITH_DATA = re.compile(
    rb"\A\s*(?P<target>INSERT\s+INTO\s+(?:TABLE\s+)?[\w.`\"]+\s*(?:\([^)]*\))?)\s*(?P<settings>SETTINGS\s[^;]*?)?"
    rb"\s*FORMAT\s+(?P<format>\w+)[ \t]*(?:\r?\n)?",
    re.IGNORECASE,
)
TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*\Z", re.IGNORECASE)
ERROR_CODE = re.compile(r"Code: (\d+)\.")
ERROR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*$")
BINARY_FORMATS = ("Native", "RowBinary", "Arrow", "ArrowStream", "Parquet", "ORC", "Avro", "MsgPack", "Protobuf")
# Response encodings in this server's order of preference, and what each one does.
ENCODERS = {
    "lz4": lz4.frame.compress,
    "zstd": zstd.compress,
    "gzip": lambda data: gzip.compress(data, compresslevel=1),
    "deflate": zlib.compress,
}

# ClickHouse answers client mistakes 400 or 404 (HTTPHandler's exceptionCodeToHTTPStatus);
# everything else is a 500.
BAD_REQUEST_NAMES = frozenset(
    {
        "SYNTAX_ERROR", "CANNOT_PARSE_TEXT", "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE",
        "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER", "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "INCORRECT_DATA",
        "TYPE_MISMATCH", "ILLEGAL_COLUMN", "DUPLICATE_COLUMN", "THERE_IS_NO_COLUMN", "BAD_ARGUMENTS",
        "UNKNOWN_QUERY_PARAMETER", "BAD_QUERY_PARAMETER", "ILLEGAL_TYPE_OF_ARGUMENT", "NUMBER_OF_ARGUMENTS_DOESNT_MATCH",
        "UNKNOWN_COMPRESSION_METHOD",
    }
)  # fmt: skip
NOT_FOUND_NAMES = frozenset(
    {
        "UNKNOWN_TABLE", "UNKNOWN_DATABASE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE",
        "UNKNOWN_STORAGE", "UNKNOWN_SETTING", "UNKNOWN_FORMAT", "UNKNOWN_AGGREGATE_FUNCTION", "UNKNOWN_TYPE_OF_QUERY",
    }
)  # fmt: skip


class ClickHouseError(Exception):
    """A failure as ClickHouse words it: ``Code: N. DB::Exception: ... (NAME)``."""

    def __init__(self, text: str):
        super().__init__(text)
        code, name = ERROR_CODE.search(text), ERROR_NAME.search(text)
        self.code = int(code.group(1)) if code else 1001
        self.name = name.group(1) if name else "STD_EXCEPTION"

    @classmethod
    def of(cls, code: int, name: str, message: str) -> ClickHouseError:
        return cls(f"Code: {code}. DB::Exception: {message}. ({name})")

    @classmethod
    def from_engine(cls, message: str) -> ClickHouseError:
        """The engine's own message, which already reads ``Code: N. DB::Exception: ... (NAME)``."""
        if "Code: " not in message:
            return cls.of(1001, "STD_EXCEPTION", message.strip())
        return cls(message[message.find("Code: ") :].strip())

    @property
    def http_status(self) -> int:
        if self.name in BAD_REQUEST_NAMES:
            return 400
        if self.name in NOT_FOUND_NAMES:
            return 404
        if self.name == "NOT_IMPLEMENTED":
            return 501
        return 500


def refuse(what: str) -> ClickHouseError:
    return ClickHouseError.of(48, "NOT_IMPLEMENTED", f"{what} is not supported by the local chDB server")


@dataclass
class Statement:
    """One request's work: SQL for the engine, or an insert head plus its data."""

    sql: str
    database: str | None
    settings: dict[str, str]
    parameters: dict[str, str]
    output_format: str
    explicit_format: bool
    read_only: bool
    insert_data: bytes | None = None
    insert_format: str | None = None
    insert_settings: str = ""  # the head's own SETTINGS clause, which ClickHouse wants after the data's source


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    """The body with its Content-Encoding undone (clickhouse-connect sends one frame per block)."""
    encoding = (content_encoding or "identity").strip().lower()
    try:
        if encoding in ("", "identity", "none"):
            return body
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
        if encoding == "zstd":
            return zstd.decompress(body)
        if encoding == "lz4":
            return _lz4_frames(body)
    except (OSError, EOFError, RuntimeError, ValueError, zlib.error, zstd.ZstdError) as error:
        raise ClickHouseError.of(432, "UNKNOWN_CODEC", f"Cannot decode the {encoding} body: {error}") from error
    raise ClickHouseError.of(89, "UNKNOWN_COMPRESSION_METHOD", f"Unknown Content-Encoding {encoding!r}")


def _lz4_frames(data: bytes) -> bytes:
    out = bytearray()
    while data:
        frame = lz4.frame.LZ4FrameDecompressor()
        out += frame.decompress(data)
        if not frame.eof:
            raise ValueError("truncated LZ4 frame")
        data = frame.unused_data
    return bytes(out)


def choose_encoding(accept_encoding: str | None) -> str | None:
    """The first encoding the client accepts that this server can produce."""
    offered = [part.split(";")[0].strip().lower() for part in (accept_encoding or "").split(",")]
    return next((name for name in offered if name in ENCODERS), None)


def _form_fields(body: bytes, content_type: str) -> dict[str, str]:
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename() is not None:
            raise refuse("External data (a file in the form)")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):  # a part that is itself multipart has no payload of its own
            raise refuse("A nested multipart part in the form")
        fields[str(name)] = payload.decode()
    return fields


def parse_request(method: str, params: dict[str, str], headers: dict[str, str], body: bytes) -> Statement:
    """Read one HTTP request the way ClickHouse's HTTPHandler does (see the module docstring)."""
    if params.get("compress") == "1" or params.get("decompress") == "1":
        raise refuse("ClickHouse's native compression framing (compress=1/decompress=1)")
    params = dict(params)
    content_type = headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        params.update(_form_fields(body, content_type))
        body = b""
    else:
        body = decode_body(body, headers.get("content-encoding"))
    head = params.get("query", "").encode()
    text = head + b"\n" + body if head and body else head or body
    insert_data = insert_format = None
    insert_settings = ""
    if match := INSERT_WITH_DATA.match(text):
        insert_data, insert_format = text[match.end() :], match.group("format").decode()
        insert_settings = (match.group("settings") or b"").decode(errors="replace").strip()
        text = match.group("target")
    try:
        sql = text.decode()
    except UnicodeDecodeError as error:
        raise ClickHouseError.of(36, "BAD_ARGUMENTS", f"The query is not valid UTF-8: {error}") from error
    if not sql.strip():
        raise ClickHouseError.of(62, "SYNTAX_ERROR", "Empty query")
    settings = {
        name: value
        for name, value in params.items()
        if name not in TRANSPORT_PARAMETERS and not name.startswith("param_")
    }
    for name in settings:
        if not SETTING_NAME.match(name):
            raise ClickHouseError.of(115, "UNKNOWN_SETTING", f"Unknown setting {name!r}")
    trailing = TRAILING_FORMAT.search(sql) if insert_data is None else None
    return Statement(
        sql=sql,
        database=params.get("database") or None,
        settings=settings,
        parameters={name[len("param_") :]: value for name, value in params.items() if name.startswith("param_")},
        output_format=trailing.group(1) if trailing else params.get("default_format") or "TabSeparated",
        explicit_format=trailing is not None,
        # Like ClickHouse: a GET request may only read (readonly=2 still lets it change settings).
        read_only=method == "GET",
        insert_data=insert_data,
        insert_format=insert_format,
        insert_settings=insert_settings,
    )


def content_type_for(output_format: str) -> str:
    if output_format in BINARY_FORMATS:
        return "application/octet-stream"
    if output_format.startswith(("TabSeparated", "TSV")):
        return "text/tab-separated-values; charset=UTF-8"
    if output_format.startswith("JSON"):
        return "application/json; charset=UTF-8"
    if output_format.startswith("CSV"):
        return "text/csv; charset=UTF-8"
    return "text/plain; charset=UTF-8"


def quote_setting(value: str) -> str:
    """A setting value as a SQL string literal; ClickHouse converts it to the setting's type."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

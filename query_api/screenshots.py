"""Screen screenshots on the object store (settings.assets_bucket).

One object per (client, screen) at ``screenshots/<client_id>/<screen_id>``;
an upload replaces it. Only PNG, JPEG and WebP are kept, and the body must
start with its declared format's signature, so the API never serves markup
under an image type.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError

from heatmap_core.s3 import ensure_bucket, s3_client
from heatmap_core.settings import Settings

MAX_SCREENSHOT_BYTES = 5 * 1024 * 1024
SIGNATURES = {
    "image/png": lambda body: body.startswith(b"\x89PNG\r\n\x1a\n"),
    "image/jpeg": lambda body: body.startswith(b"\xff\xd8\xff"),
    "image/webp": lambda body: body[:4] == b"RIFF" and body[8:12] == b"WEBP",
}


class InvalidImage(ValueError):
    pass


@dataclass(frozen=True)
class Screenshot:
    body: bytes
    content_type: str
    etag: str


def check_image(body: bytes, content_type: str) -> None:
    if content_type not in SIGNATURES:
        raise InvalidImage(f"Content-Type must be one of {', '.join(SIGNATURES)}, got {content_type or 'none'!r}")
    if not body:
        raise InvalidImage("the request body is empty; send the image bytes")
    if not SIGNATURES[content_type](body):
        raise InvalidImage(f"the body is not a {content_type} image")


class ScreenshotStore:
    def __init__(self, settings: Settings):
        self._bucket = settings.assets_bucket
        self._s3 = s3_client(settings)

    @staticmethod
    def key(client_id: str, screen_id: str) -> str:
        return f"screenshots/{client_id}/{screen_id}"

    def put(self, client_id: str, screen_id: str, body: bytes, content_type: str) -> str:
        """Store a checked image; returns its ETag."""
        check_image(body, content_type)
        request = {
            "Bucket": self._bucket,
            "Key": self.key(client_id, screen_id),
            "Body": body,
            "ContentType": content_type,
        }
        try:
            return self._s3.put_object(**request)["ETag"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "NoSuchBucket":
                raise
        ensure_bucket(self._s3, self._bucket)
        return self._s3.put_object(**request)["ETag"]

    def get(self, client_id: str, screen_id: str) -> Screenshot | None:
        try:
            found = self._s3.get_object(Bucket=self._bucket, Key=self.key(client_id, screen_id))
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "NoSuchBucket", "404"):
                return None
            raise
        return Screenshot(found["Body"].read(), found["ContentType"], found["ETag"])

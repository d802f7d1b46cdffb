"""Object store access (S3 API: S3Proxy locally, MinIO or S3 in production)."""

from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from heatmap_core.settings import Settings, get_settings


def s3_client(settings: Settings | None = None, sign_payloads: bool = True):
    """A client of the object store. ``sign_payloads=False`` sends bodies as UNSIGNED-PAYLOAD: SigV4
    still signs the request (key, headers, length), but no SHA-256 of the body is computed here nor
    checked by the server; the transport (loopback locally, TLS in production) carries it intact. For
    bulk writers: hashing cost landing about 1 ms of its CPU and 1 ms of S3Proxy's per MB written."""
    settings = settings or get_settings()
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name=settings.s3_region,
        config=Config(
            # Without payload_signing_enabled, botocore signs every body over plain http.
            s3={"addressing_style": "path", "payload_signing_enabled": sign_payloads},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            # A CRC32 of every body only where the API requires one (DeleteObjects): SigV4 already
            # hashes each body, and the extra pass was a few percent of landing's CPU.
            request_checksum_calculation="when_required",
        ),
    )


def ensure_bucket(client, bucket: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError:
        client.create_bucket(Bucket=bucket)


def _folders(client, bucket: str, prefix: str = "") -> list[str]:
    """The "folders" under ``prefix``, deepest first. S3Proxy's filesystem store keeps a folder that
    Spark's s3a marked (``key/``) as a directory that no object listing shows, and a bucket holding
    one cannot be deleted; on S3 or MinIO an empty bucket has none."""
    found: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            found += [*_folders(client, bucket, common["Prefix"]), common["Prefix"]]
    return found


def remove_bucket(client, bucket: str) -> None:
    """``bucket`` and every object in it; a bucket that does not exist is left so."""
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            if keys := [{"Key": item["Key"]} for item in page.get("Contents", [])]:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        for folder in _folders(client, bucket):
            client.delete_object(Bucket=bucket, Key=folder)
        client.delete_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NoSuchBucket":
            raise

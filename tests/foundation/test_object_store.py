"""The S3 server of the local stack, through boto3 and through Spark's s3a."""

import json

import pytest
from botocore.exceptions import ClientError

from heatmap_core.s3 import ensure_bucket, remove_bucket, s3_client


def test_put_list_get_round_trip(settings):
    client = s3_client(settings)
    bodies = {f"dt=2026-02-02/hour=10/client_id=acme/part-{i}.json": f'{{"i": {i}}}\n'.encode() for i in range(3)}
    for key, body in bodies.items():
        client.put_object(Bucket=settings.raw_bucket, Key=key, Body=body)
    listed = client.list_objects_v2(Bucket=settings.raw_bucket, Prefix="dt=2026-02-02/hour=10/")
    assert sorted(obj["Key"] for obj in listed["Contents"]) == sorted(bodies)
    for key, body in bodies.items():
        assert client.get_object(Bucket=settings.raw_bucket, Key=key)["Body"].read() == body


def test_spark_reads_json_lines_through_s3a(settings, spark):
    client = s3_client(settings)
    rows = [{"client_id": "acme", "x_norm": i / 10, "n": i} for i in range(10)]
    for part in range(2):
        body = "".join(json.dumps(row) + "\n" for row in rows[part * 5 : part * 5 + 5])
        client.put_object(Bucket=settings.raw_bucket, Key=f"s3a-check/part-{part}.json", Body=body.encode())
    frame = spark.read.schema("client_id string, x_norm double, n int").json(
        f"s3a://{settings.raw_bucket}/s3a-check/part-*.json"
    )
    got = sorted((row.client_id, row.x_norm, row.n) for row in frame.collect())
    assert got == sorted((row["client_id"], row["x_norm"], row["n"]) for row in rows)


def test_remove_bucket_removes_objects_and_folder_markers(settings):
    client = s3_client(settings)
    bucket = f"{settings.raw_bucket}-removed"
    ensure_bucket(client, bucket)
    client.put_object(Bucket=bucket, Key="dt=2026-02-02/hour=10/client_id=acme/part-0.json", Body=b"{}\n")
    # A folder marker as Spark's s3a writes them. (The empty directory a Dagster run's staging
    # cleanup leaves in S3Proxy's store, which only _folders removes, is not reproduced here: the
    # teardown of tests/assets/test_assets_inprocess.py meets it, and without _folders it leaves
    # the bucket behind with a warning in the summary.)
    client.put_object(Bucket=bucket, Key="_staging/run/kind=scroll/hour_id=2026020210/", Body=b"")
    client.put_object(Bucket=bucket, Key="_staging/run/kind=scroll/hour_id=2026020210/part-0.parquet", Body=b"x")
    remove_bucket(client, bucket)
    with pytest.raises(ClientError) as missing:
        client.head_bucket(Bucket=bucket)
    assert missing.value.response["Error"]["Code"] == "404"
    remove_bucket(client, bucket)  # a bucket already gone is left so

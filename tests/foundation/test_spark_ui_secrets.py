"""The S3 keys handed to Spark never show in its UI: Spark's default redaction covers fs.s3a.*.key.

Spark's UI is off in heatmap_core.spark; a cluster deployment may turn it on.
The check runs a session with the UI on in a child process (one SparkContext
per JVM, and the test session's has its UI off) and reads the Environment
tab's data from Spark's REST API, where both the spark.hadoop.* properties and
the Hadoop configuration are listed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3-secret-7e57"
ACCESS = "s3-access-7e57"

PROBE = f"""
import json, socket, urllib.request
from heatmap_core.settings import Settings
from heatmap_core.spark import spark_session

with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
settings = Settings(s3_secret_key={SECRET!r}, s3_access_key={ACCESS!r})
spark = spark_session("ui-secrets", settings, {{"spark.ui.enabled": "true", "spark.ui.port": str(port)}})
try:
    base = f"http://127.0.0.1:{{port}}/api/v1/applications"
    app_id = json.load(urllib.request.urlopen(base))[0]["id"]
    print(json.dumps(json.load(urllib.request.urlopen(f"{{base}}/{{app_id}}/environment"))))
finally:
    spark.stop()
"""


def test_spark_environment_tab_redacts_the_s3_keys():
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    environment = json.loads(done.stdout.strip().splitlines()[-1])
    spark_props = dict(environment["sparkProperties"])
    hadoop_props = dict(environment["hadoopProperties"])
    assert spark_props["spark.hadoop.fs.s3a.secret.key"] == "*********(redacted)"
    assert spark_props["spark.hadoop.fs.s3a.access.key"] == "*********(redacted)"
    assert hadoop_props["fs.s3a.secret.key"] == "*********(redacted)"
    assert hadoop_props["fs.s3a.access.key"] == "*********(redacted)"
    assert SECRET not in done.stdout and ACCESS not in done.stdout

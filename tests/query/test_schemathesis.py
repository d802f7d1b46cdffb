"""Property-based requests from the OpenAPI schema against the live API: no 5xx, and every
answer matches what the schema documents (status codes, content types, bodies, headers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance"


def test_schemathesis_finds_no_server_errors(live_api: str, dataset, tmp_path: Path):
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{live_api}/schema/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            "10",
            "--seed",
            "6",
            "--workers",
            "1",
            "--request-timeout",
            "60",
        ],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]

"""bench.profile's sampler of a process outside the profiled tree: a real py-spy on a real process."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from bench.common import SAMPLE_DIR_ENV, SAMPLE_OPTIONS_ENV, sampled
from bench.profile import summarize

# A busy Python process whose command line names it the way chdb_server's does.
BUSY = "import time\ndef chdb_server_spin():\n    while True: sum(range(1000))\nchdb_server_spin()"


def test_a_sampled_process_is_named_in_the_summary(tmp_path, monkeypatch):
    monkeypatch.setenv(SAMPLE_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(SAMPLE_OPTIONS_ENV, "--nonblocking -r 100")
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        with sampled(psutil.Process(busy.pid)):
            time.sleep(2)
    finally:
        busy.kill()
        busy.wait()
    (stacks,) = tmp_path.glob("*.collapsed")
    assert stacks.name == f"{busy.pid}.collapsed"
    summary = summarize(stacks)
    # The root frame names the process (its command line holds the marker), and its own frames were sampled.
    assert "## chdb_server: " in summary, summary
    assert "chdb_server_spin (<string>" in summary, summary

"""Several landing processes of one group on one machine: ``python -m landing run-instances``.

One ``landing run`` process is one consumer and, bound by Python's GIL, about one core.
The stack runs ``HEATMAP_LANDING_INSTANCES`` of them (one per two cores by default), and the
group shares the topic's partitions among them as it does among machines. Each child
is a plain ``landing run``: the flush protocol, its names and its commits are those of
one instance, and members joining or leaving is the rebalance the protocol already
survives (tests/landing/test_two_instances.py).

The parent only starts and ends them together. SIGTERM or SIGINT is passed on (each
child flushes, commits and leaves the group). When a child exits on its own, the
others are stopped the same way and the parent exits non-zero, so the supervisor
restarts the set; the children die with the parent (Linux's parent-death signal),
so no orphan keeps consuming beside a restarted set.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time

from heatmap_core.settings import LandingSettings, env_name

log = logging.getLogger("landing")

_PR_SET_PDEATHSIG = 1


def _instance_env(options: LandingSettings, number: int) -> dict[str, str]:
    """The variables that set child ``number`` apart (LandingSettings.of_instance)."""
    own = options.of_instance(number)
    return {
        env_name(LandingSettings, name): str(value)
        for name in ("instance_id", "health_port")
        if (value := getattr(own, name)) is not None
    }


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def run_instances(options: LandingSettings) -> int:
    """Run ``options.instances`` landing processes until a signal or one of them ends; the exit code."""
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "landing", "run"],
            env={**os.environ, **_instance_env(options, number)},
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        for number in range(options.instances)
    ]
    log.info("started %d landing processes: %s", len(children), [child.pid for child in children])
    stopping = False

    def stop(signum: int, _frame) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while all(child.poll() is None for child in children):
        time.sleep(0.2)
    ended_alone = not stopping
    if ended_alone:
        ended = next(child for child in children if child.returncode is not None)
        log.warning("landing process %d exited with %d: stopping the others", ended.pid, ended.returncode)
        stop(signal.SIGTERM, None)
    codes = [child.wait() for child in children]
    log.info("landing processes exited with %s", codes)
    return 1 if ended_alone or any(codes) else 0

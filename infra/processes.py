"""Finding and ending a stack's processes, and who owns a port.

Every process a stack starts carries ``HEATMAP_STACK_ID=<its stack dir>`` in
its environment, and each program's pid and start time are recorded in
``stack/<name>.pid`` (redis rewrites its environment block, so the marker
alone can miss it; the start time keeps a reused pid from being mistaken for
ours). A start after an unclean stop, and every stop, end whatever these find,
so nothing outlives its stack and no other stack's process is touched.
"""

from __future__ import annotations

import contextlib
import os
import time

import psutil

from infra.console import StackError, console
from infra.paths import StackPaths


def listening_pids() -> dict[int, int | None]:
    """{port: pid} of every listening TCP socket on this machine (pid None when it is not ours to see)."""
    return {
        conn.laddr.port: conn.pid
        for conn in psutil.net_connections("tcp")
        if conn.laddr and conn.status == psutil.CONN_LISTEN
    }


def command_line(process: psutil.Process) -> list[str]:
    """A process's command line; none for one that has exited, such as a child not yet reaped (a
    zombie's command line cannot be read), so a scan of children skips it."""
    try:
        return process.cmdline()
    except psutil.NoSuchProcess:  # ZombieProcess included
        return []


def ensure_ports_free(name: str, ports: tuple[int, ...]) -> None:
    """Refuse to start ``name`` on a port something else listens on, naming that process."""
    listening = listening_pids()
    for port in ports:
        if port in listening:
            owner = listening[port]
            try:
                what = " ".join(psutil.Process(owner).cmdline())[:120] if owner else "another process"
            except psutil.Error:
                what = "another process"
            raise StackError(
                f"port {port} needed by {name} is taken by pid {owner}: {what}\n"
                "stop that process (another stack? `python -m infra.stack stop` with its HEATMAP_DATA_DIR) "
                "or point the HEATMAP_* setting for this port elsewhere"
            )


def record_pid(paths: StackPaths, name: str, pid: int) -> None:
    """Remember a program's pid and start time, for when its supervisord is gone."""
    paths.program_pid(name).write_text(f"{pid} {psutil.Process(pid).create_time()}")


def _recorded_processes(paths: StackPaths) -> list[psutil.Process]:
    found = []
    for pidfile in paths.program_pids():
        try:
            pid, created = pidfile.read_text().split()
            proc = psutil.Process(int(pid))
            if abs(proc.create_time() - float(created)) < 0.01:
                found.append(proc)
        except (ValueError, psutil.Error):
            continue
    return found


def stack_processes(paths: StackPaths) -> list[psutil.Process]:
    """Every live process started for this data directory (by HEATMAP_STACK_ID or recorded pid)."""
    found = {proc.pid: proc for proc in _recorded_processes(paths)}
    marker = str(paths.stack)
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid() or proc.pid in found:
            continue
        try:
            if proc.environ().get("HEATMAP_STACK_ID") == marker or str(paths.conf) in proc.cmdline():
                found[proc.pid] = proc
        except psutil.Error:
            continue
    # This machine's init does not always reap orphans: a zombie is already gone.
    return [proc for proc in found.values() if _alive(proc)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill(processes: list[psutil.Process], timeout: float = 15.0) -> None:
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _wait_gone(processes, timeout)
    for proc in processes:
        if _alive(proc):
            with contextlib.suppress(psutil.Error):
                proc.kill()
    _wait_gone(processes, 5.0)


def _wait_gone(processes: list[psutil.Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(proc) for proc in processes):
        time.sleep(0.2)


def clear_leftovers(paths: StackPaths, why: str = "") -> None:
    """End every process of this stack that survived its supervisord, and forget its socket and pids."""
    leftovers = stack_processes(paths)
    if leftovers:
        if why:
            console.print(f"[yellow]{why}[/]ending {len(leftovers)} leftover process(es)")
        _kill(leftovers)
    paths.socket.unlink(missing_ok=True)
    paths.pidfile.unlink(missing_ok=True)
    for pidfile in paths.program_pids():
        pidfile.unlink()

"""Running programs under supervisord: one supervisord per data directory.

``start`` receives the program table and the names to run. It writes
supervisord's config (``stack/supervisord.conf``), starts supervisord if this
data directory has none, starts each program whose ports are free and waits
until its health check passes, then runs its ``after_start`` (topic, buckets).
A second start adds only the programs the running supervisord lacks, so what
already runs is never restarted. ``stop`` stops everything of the data
directory and then ends whatever survived (see infra.processes).

A program is a supervisord group: one process named as the program, or, for a
program with ``processes``, supervisord's ``numprocs`` of them named
``<program>-<n>`` (``landing:landing-0`` to supervisorctl), each with its own log.
Everything here addresses a program as its group (``<program>:*``) and reads
its processes' states and pids from supervisord's XML-RPC interface, so one
process or several are handled alike: a program is healthy once every process
of it is RUNNING and its health check passes, and every process's pid is recorded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil
from supervisor.childutils import getRPCInterface
from supervisor.options import make_namespec
from tenacity import RetryError, Retrying, retry_if_not_exception_type, stop_after_delay, wait_fixed

from heatmap_core.settings import Settings
from infra.console import StackError, console
from infra.fetch import fetch_apt, fetch_jars
from infra.paths import ROOT, StackPaths
from infra.processes import clear_leftovers, ensure_ports_free, record_pid
from infra.programs import Program


def _env(settings: Settings, paths: StackPaths) -> dict[str, str]:
    env = settings.as_env()
    env["HEATMAP_DATA_DIR"] = str(paths.data)
    env["HEATMAP_STACK_ID"] = str(paths.stack)
    env["DAGSTER_HOME"] = str(paths.data / "dagster_home")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _supervisorctl(paths: StackPaths, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(paths.conf), *args],
        capture_output=True,
        text=True,
        check=check,
    )


def _processes(paths: StackPaths, name: str | None = None) -> list[dict[str, Any]]:
    """supervisord's info (``name``, ``group``, ``statename``, ``description``, ``pid``, ``stdout_logfile``, ...)
    of every process of program ``name`` (its group), or of every program; supervisorctl reads the same."""
    with getRPCInterface({"SUPERVISOR_SERVER_URL": f"unix://{paths.socket}"}) as rpc:
        processes = rpc.supervisor.getAllProcessInfo()
    return [info for info in processes if name is None or info["group"] == name]


def _logs(processes: list[dict[str, Any]]) -> str:
    return ", ".join(info["stdout_logfile"] for info in processes)


def _tails(processes: list[dict[str, Any]]) -> str:
    """The last lines of each process's log, for an error that says why a program is not up."""
    return "\n".join(_tail(Path(info["stdout_logfile"])) for info in processes)


def _supervisord_pid(paths: StackPaths) -> int | None:
    try:
        pid = int(paths.pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and "supervisord" in " ".join(proc.cmdline()):
            return pid
    except psutil.Error:
        pass
    return None


def _global_sections(settings: Settings, paths: StackPaths) -> str:
    env = _env(settings, paths)
    env_line = ",".join(f'{key}="{value.replace("%", "%%").replace(chr(34), "")}"' for key, value in env.items())
    return "\n".join(
        [
            f"[unix_http_server]\nfile={paths.socket}\nchmod=0700\n",
            f"[supervisord]\nlogfile={paths.log('supervisord')}\npidfile={paths.pidfile}\n"
            f"directory={ROOT}\nenvironment={env_line}\nminfds=4096\n",
            "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
            f"[supervisorctl]\nserverurl=unix://{paths.socket}\n",
        ]
    )


def config(settings: Settings, paths: StackPaths, programs: Iterable[Program]) -> str:
    """supervisord.conf of a stack running ``programs``."""
    return _global_sections(settings, paths) + _program_sections(settings, paths, programs)


def _program_sections(settings: Settings, paths: StackPaths, programs: Iterable[Program]) -> str:
    return "".join(_program_section(program, settings, paths) for program in programs)


def _program_section(program: Program, settings: Settings, paths: StackPaths) -> str:
    """One [program:x] section. A process that exits unexpectedly (not 0) is restarted by supervisord, each of
    several on its own: ``process_name`` and ``environment`` expand ``%(process_num)d`` per process."""
    quoted = " ".join(_quote(part) for part in program.command(settings, paths))
    several = ""
    process_name = program.name
    if program.processes:
        process_name = "%(program_name)s-%(process_num)d"
        several = (
            f"numprocs={program.processes.count(settings)}\nprocess_name={process_name}\n"
            f'environment={program.processes.number_variable}="%(process_num)d"\n'
        )
    return (
        f"\n[program:{program.name}]\ncommand={quoted}\n{several}autostart=false\nautorestart=unexpected\n"
        f"startsecs=2\nstartretries=3\nstopasgroup=true\nkillasgroup=true\nstopwaitsecs=30\nstopsignal=TERM\n"
        f"redirect_stderr=true\nstdout_logfile={paths.log(process_name)}\nstdout_logfile_maxbytes=50MB\n"
        f"stdout_logfile_backups=2\n"
    )


def _quote(part: str) -> str:
    part = part.replace("%", "%%")
    return f'"{part}"' if any(ch in part for ch in " ;*") else part


def _wanted(table: Mapping[str, Program], names: Iterable[str], with_requirements: bool) -> list[Program]:
    """The named programs in start order, each preceded by what it requires (unless told not to)."""
    wanted: dict[str, Program] = {}
    for name in names:
        if name not in table:
            raise StackError(f"unknown program {name!r}; known: {', '.join(table)}")
        for dep in (*(table[name].requires if with_requirements else ()), name):
            wanted.setdefault(dep, table[dep])
    return list(wanted.values())


class _StartAbandoned(StackError):
    """supervisord gave up starting a process (FATAL, after its ``startretries``): waiting longer cannot help."""


def _wait_healthy(program: Program, settings: Settings, paths: StackPaths) -> None:
    started = time.monotonic()
    try:
        for attempt in Retrying(
            stop=stop_after_delay(program.start_timeout_s),
            wait=wait_fixed(0.5),
            retry=retry_if_not_exception_type(_StartAbandoned),
            reraise=False,
        ):
            with attempt:
                processes = _processes(paths, program.name)
                states = {info["name"]: info["statename"] for info in processes}
                if "FATAL" in states.values():
                    raise _StartAbandoned(
                        f"{program.name} failed to start: {states}; see {_logs(processes)}\n{_tails(processes)}"
                    )
                # BACKOFF included: supervisord is still retrying the start.
                if not states or set(states.values()) != {"RUNNING"}:
                    raise StackError(f"{program.name} is not running yet: {states}")
                program.health(settings)
    except RetryError as exc:
        cause = exc.last_attempt.exception()
        tails = _tails(_processes(paths, program.name))
        raise StackError(
            f"{program.name} not healthy after {program.start_timeout_s:.0f} s: {cause}\n{tails}"
        ) from cause
    console.print(f"[green]{program.name}[/] healthy in {time.monotonic() - started:.1f} s")


def _record_pids(paths: StackPaths, name: str) -> None:
    """Each process of program ``name`` under its own name (``landing-1.pid``), for when supervisord is gone."""
    for info in _processes(paths, name):
        if not info["pid"]:
            log = Path(info["stdout_logfile"])
            raise StackError(f"{info['name']} is not running ({info['statename']}); see {log}\n{_tail(log)}")
        record_pid(paths, info["name"], info["pid"])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def is_running(settings: Settings) -> bool:
    return _supervisord_pid(StackPaths(settings.data_path)) is not None


def start(
    settings: Settings,
    table: Mapping[str, Program],
    names: Iterable[str],
    do_fetch: bool = True,
    with_requirements: bool = True,
) -> None:
    """Start the named programs of ``table`` (and what they require), waiting until each is healthy.

    with_requirements=False runs only the named programs, against infrastructure
    that already runs elsewhere (the end-to-end tests use this).
    """
    paths = StackPaths(settings.data_path)
    wanted = _wanted(table, names, with_requirements)
    if do_fetch:
        fetch_jars(settings)
        if any(program.name == "redis" for program in wanted):
            fetch_apt(["redis-server"])
    for directory in (paths.stack, paths.logs):
        directory.mkdir(parents=True, exist_ok=True)

    if _supervisord_pid(paths) is None:
        clear_leftovers(paths, "recovering from an unclean stop: ")
        paths.conf.write_text(config(settings, paths, wanted))
        subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(paths.conf)],
            check=True,
            env={**os.environ, **_env(settings, paths)},
        )
        for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.2), reraise=True):
            with attempt:
                _supervisorctl(paths, "pid")
    else:
        # Append only the programs the running supervisord lacks: rewriting the
        # global section would make `update` restart everything already running.
        known = paths.conf.read_text()
        missing = [program for program in wanted if f"[program:{program.name}]" not in known]
        if missing:
            paths.conf.write_text(known + _program_sections(settings, paths, missing))
            _supervisorctl(paths, "update")

    for program in wanted:
        processes = _processes(paths, program.name)
        running = [info for info in processes if info["statename"] == "RUNNING"]
        if len(running) < len(processes):
            if not running:  # a running one holds its own port
                ensure_ports_free(program.name, program.ports(settings))
            console.print(f"[cyan]{program.name}[/] starting (log: {_logs(processes)})")
            _supervisorctl(paths, "start", f"{program.name}:*", check=False)
        _wait_healthy(program, settings, paths)
        _record_pids(paths, program.name)
        if program.after_start:
            program.after_start(settings)


def stop(settings: Settings, timeout: float = 60.0) -> None:
    """Stop every program and supervisord; then make sure no process of this stack is left."""
    paths = StackPaths(settings.data_path)
    pid = _supervisord_pid(paths)
    if pid is not None:
        console.print("[cyan]stack[/] stopping ...")
        _supervisorctl(paths, "stop", "all", check=False)
        _supervisorctl(paths, "shutdown", check=False)
        try:
            psutil.Process(pid).wait(timeout=timeout)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            console.print("[yellow]supervisord did not exit in time; killing it[/]")
    clear_leftovers(paths)
    console.print("[green]stack[/] stopped")


def stop_program(settings: Settings, name: str) -> None:
    """Stop every process of program ``name``."""
    _supervisorctl(StackPaths(settings.data_path), "stop", f"{name}:*", check=False)


def pids(settings: Settings, name: str) -> dict[str, int]:
    """{process: pid} of program ``name``'s processes that have one (starting, running or stopping), as
    supervisord reports them; the process named as in its log (``kafka``, ``landing-0``)."""
    return {info["name"]: info["pid"] for info in _processes(StackPaths(settings.data_path), name) if info["pid"]}


def status(settings: Settings) -> dict[str, str]:
    """{process: supervisord's state line}, the process named as supervisorctl names it (``kafka``,
    ``landing:landing-0``); empty when this data directory's stack is not running."""
    paths = StackPaths(settings.data_path)
    if _supervisord_pid(paths) is None:
        return {}
    return {
        make_namespec(info["group"], info["name"]): f"{info['statename']} {info['description']}".rstrip()
        for info in _processes(paths)
    }

"""Running programs under supervisord: one supervisord per data directory.

``start`` receives the program table and the names to run. It writes
supervisord's config (``stack/supervisord.conf``), starts supervisord if this
data directory has none, starts each program whose ports are free and waits
until its health check passes, then runs its ``after_start`` (topic, buckets).
A second start adds only the programs the running supervisord lacks, so what
already runs is never restarted. ``stop`` stops everything of the data
directory and then ends whatever survived (see infra.processes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import psutil
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

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


def _program_sections(settings: Settings, paths: StackPaths, programs: Iterable[Program]) -> str:
    return "".join(_program_section(program.name, program.command(settings, paths), paths) for program in programs)


def _program_section(name: str, command: list[str], paths: StackPaths) -> str:
    quoted = " ".join(_quote(part) for part in command)
    return (
        f"\n[program:{name}]\ncommand={quoted}\nautostart=false\nautorestart=unexpected\nstartsecs=2\n"
        f"startretries=3\nstopasgroup=true\nkillasgroup=true\nstopwaitsecs=30\nstopsignal=TERM\n"
        f"redirect_stderr=true\nstdout_logfile={paths.log(name)}\nstdout_logfile_maxbytes=50MB\n"
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


def _wait_healthy(program: Program, settings: Settings, paths: StackPaths) -> None:
    started = time.monotonic()
    try:
        for attempt in Retrying(
            stop=stop_after_delay(program.start_timeout_s),
            wait=wait_fixed(0.5),
            retry=retry_if_exception_type(Exception),
            reraise=False,
        ):
            with attempt:
                state = _supervisorctl(paths, "status", program.name, check=False).stdout
                if "FATAL" in state or "BACKOFF" in state:
                    raise StackError(f"{program.name} failed to start: {state.strip()}; see {paths.log(program.name)}")
                program.health(settings)
    except RetryError as exc:
        cause = exc.last_attempt.exception()
        tail = _tail(paths.log(program.name))
        raise StackError(
            f"{program.name} not healthy after {program.start_timeout_s:.0f} s: {cause}\n{tail}"
        ) from cause
    console.print(f"[green]{program.name}[/] healthy in {time.monotonic() - started:.1f} s")


def _record_pid(paths: StackPaths, name: str) -> None:
    answer = _supervisorctl(paths, "pid", name, check=False).stdout.strip()
    if not answer.isdigit() or answer == "0":
        raise StackError(f"{name} is not running ({answer}); see {paths.log(name)}\n{_tail(paths.log(name))}")
    record_pid(paths, name, int(answer))


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
        paths.conf.write_text(_global_sections(settings, paths) + _program_sections(settings, paths, wanted))
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
        state = _supervisorctl(paths, "status", program.name, check=False).stdout
        if "RUNNING" not in state:
            ensure_ports_free(program.name, program.ports(settings))
            console.print(f"[cyan]{program.name}[/] starting (log: {paths.log(program.name)})")
            _supervisorctl(paths, "start", program.name, check=False)
        _wait_healthy(program, settings, paths)
        _record_pid(paths, program.name)
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
    _supervisorctl(StackPaths(settings.data_path), "stop", name, check=False)


def status(settings: Settings) -> dict[str, str]:
    """{program: supervisord's state line}; empty when this data directory's stack is not running."""
    paths = StackPaths(settings.data_path)
    if _supervisord_pid(paths) is None:
        return {}
    states = {}
    for line in _supervisorctl(paths, "status", check=False).stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2:
            states[parts[0]] = " ".join(parts[1:])
    return states

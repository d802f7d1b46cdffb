"""Import each project module first, in a process of its own: ``python -m tests.foundation.import_each``.

A fresh interpreter per module costs seconds (Dagster, Spark, Litestar load
for each), so this process loads the third-party libraries the project
imports, checks that none of the project's own modules came with them, and
then forks once per module: each child starts with no project module loaded,
which is all that a cycle between project modules needs to show. A
``<package>.__main__`` is run as ``python -m <package> --help`` would run it.
Prints ``{module: traceback}`` for the failures as JSON (``{}`` when all import).

Imports only the standard library, so that loading it loads no project module.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import multiprocessing
import os
import runpy
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("heatmap_core", "ingestion_api", "landing", "heatmap_assets", "query_api", "infra", "traffic", "bench")


def project_modules() -> dict[str, Path]:
    """{dotted module name: source file} for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(path: Path) -> set[str]:
    """Every absolute import in a source file, at any depth (``from a.b import c`` gives a.b and a.b.c)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _preload_third_party(modules: dict[str, Path]) -> None:
    for name in sorted({name for path in modules.values() for name in imported_names(path)}):
        if name.split(".")[0] not in PACKAGES:
            # `from x import function` names no module; a real failure shows in the child.
            with contextlib.suppress(Exception):
                importlib.import_module(name)


def _import_first(module: str) -> str | None:
    # A command's help text must not mix with the JSON answer on stdout (each child is a throwaway fork).
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    try:
        if module.endswith(".__main__"):
            sys.argv = [module, "--help"]
            try:
                runpy.run_module(module.removesuffix(".__main__"), run_name="__main__", alter_sys=True)
            except SystemExit as exit_:
                if exit_.code not in (0, None):
                    return f"`python -m {module.removesuffix('.__main__')} --help` exited {exit_.code}"
        else:
            importlib.import_module(module)
    except BaseException:  # noqa: BLE001  (any failure of the import is the finding)
        return traceback.format_exc()
    return None


def main() -> dict[str, str]:
    modules = project_modules()
    _preload_third_party(modules)
    preloaded = sorted(name for name in sys.modules if name.split(".")[0] in PACKAGES)
    if preloaded:
        return {"(preload)": f"third-party imports loaded project modules: {preloaded}"}
    # maxtasksperchild=1: every module is imported by a new fork of this process, never after another.
    with multiprocessing.get_context("fork").Pool(processes=2, maxtasksperchild=1) as pool:
        errors = pool.map(_import_first, list(modules), chunksize=1)
    return {module: error for module, error in zip(modules, errors, strict=True) if error}


if __name__ == "__main__":
    print(json.dumps(main()))

"""Every project module imports on its own, and no two modules import each other, even lazily.

An import cycle only breaks when one of its modules is imported before the
others, so each module is imported first in a process of its own
(tests/foundation/import_each.py: forks of one process that holds only the
third-party libraries, which keeps the run to seconds). A cycle closed by an
import inside a function breaks nothing at import time but is still a cycle
(infra.stack and infra.programs had one): the import graph read from the
sources must have none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter

from tests.conftest import ROOT
from tests.foundation.import_each import imported_names, project_modules


def test_the_walk_finds_packages_modules_and_entry_points():
    modules = project_modules()
    assert {
        "infra",
        "infra.stack",
        "infra.programs",
        "heatmap_core.settings",
        "landing.__main__",
        "bench.__main__",
    } <= set(modules)


def test_each_module_imports_on_its_own():
    result = subprocess.run(
        [sys.executable, "-m", "tests.foundation.import_each"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == {}


def test_no_import_cycle_between_project_modules():
    modules = project_modules()
    graph = {
        module: {name for name in imported_names(path) if name in modules and name != module}
        for module, path in modules.items()
    }
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as cycle:
        raise AssertionError(f"import cycle: {' -> '.join(cycle.args[1])}") from None

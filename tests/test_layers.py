"""The package's layers point one way: cli > flows > prefect > client > incidents > core, and no circles.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``) and are checked statically by import-linter;
the Prefect-free promise is also checked at run time, in a fresh interpreter.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
import warnings
from pathlib import Path

import grimp
import pytest

import arcanos_flows

ROOT = Path(__file__).resolve().parents[1]
PREFECT_FREE = ("arcanos_flows.core", "arcanos_flows.incidents", "arcanos_flows.client")


def _modules_of(package: str) -> list[str]:
    path = ROOT / package.replace(".", "/")
    return [package] + [f"{package}.{info.name}" for info in pkgutil.walk_packages([str(path)])]


def test_import_contracts_hold() -> None:
    """lint-imports finds every contract of pyproject.toml kept (layers, no Prefect below it, no circles)."""
    done = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout
    assert done.stdout.count("KEPT") == 5


@pytest.mark.parametrize("package", PREFECT_FREE)
def test_prefect_free_layers_import_no_prefect_at_run_time(package: str) -> None:
    """Importing every module of the core, incidents and the client in a fresh interpreter loads no Prefect."""
    modules = _modules_of(package)
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
    assert len(modules) > 1


def test_no_module_imports_itself_through_others() -> None:
    """No import circle between any two modules (function-level and TYPE_CHECKING imports included)."""
    graph = grimp.build_graph("arcanos_flows")
    circles = [
        (importer, imported)
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if graph.find_shortest_chain(importer=imported, imported=importer)
    ]
    assert circles == []
    assert len(graph.modules) > 40


DEPRECATED_PATHS = {
    "arcanos_flows.tasks": "arcanos_flows.prefect.tasks",
    "arcanos_flows.hooks": "arcanos_flows.prefect.hooks",
    "arcanos_flows.credentials": "arcanos_flows.prefect.credentials",
    "arcanos_flows.caching": "arcanos_flows.prefect.caching",
    "arcanos_flows.research": "arcanos_flows.flows.research",
    "arcanos_flows.maintenance": "arcanos_flows.flows.maintenance",
    "arcanos_flows.relay": "arcanos_flows.flows.relay",
    "arcanos_flows.ratelimit": "arcanos_flows.core.ratelimit",
}


@pytest.mark.parametrize(("old", "new"), sorted(DEPRECATED_PATHS.items()))
def test_module_paths_of_the_previous_release_still_work_and_say_where_to_go(old: str, new: str) -> None:
    """Each module path the README documented before the move re-exports the same objects, with a warning."""
    script = (
        "import importlib, warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module({old!r})\n"
        f"new = importlib.import_module({new!r})\n"
        "assert all(getattr(old, name) is getattr(new, name) for name in new.__all__), 'objects differ'\n"
        "assert sorted(old.__all__) == sorted(new.__all__)\n"
        "print([str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)])"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{old} is deprecated; import from {new}" in done.stdout


def test_public_surfaces_export_what_they_list() -> None:
    """arcanos_flows, arcanos_flows.prefect and arcanos_flows.testing: every name of __all__ resolves."""
    import arcanos_flows.prefect
    import arcanos_flows.testing

    for package in (arcanos_flows, arcanos_flows.prefect, arcanos_flows.testing):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            missing = [name for name in package.__all__ if getattr(package, name, None) is None]
        assert missing == [], package.__name__
    for name in ("run_reasoning", "run_simple_prompt", "notify_maintenance", "arcanos_flow", "research_flow"):
        assert name in arcanos_flows.prefect.__all__


def test_exceptions_keep_their_public_path() -> None:
    """Incidents name exceptions by arcanos_flows.errors.<Class>, whatever module defines them."""
    from arcanos_flows.errors import ConfigurationError, IncidentClass, ModelEnforcementError

    assert {cls.__module__ for cls in (ConfigurationError, IncidentClass, ModelEnforcementError)} == {
        "arcanos_flows.errors"
    }
    assert arcanos_flows.Incident.from_exception(ModelEnforcementError("x")).error_type == (
        "arcanos_flows.errors.ModelEnforcementError"
    )

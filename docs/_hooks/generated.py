"""MkDocs hook: the reference tables are generated from the code at build time, so they cannot drift.

A page asks for one with a marker line, ``<!-- generated: configuration -->``; the hook replaces it with the
table. ``tests/test_docs.py`` imports this module too, to compare the hand-written tables with the code.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from pydantic.fields import FieldInfo

import arcanos_flows.core.errors as errors
from arcanos_flows.core.settings import CREDENTIALS_BLOCK_VARIABLE, ENV_FILE_VARIABLE, ArcanosSettings

MARKER = re.compile(r"^<!-- generated: (?P<name>[a-z-]+) -->$", re.M)


def _cell(text: str) -> str:
    # Docstrings quote code reST-style (``x``); Markdown wants single backticks.
    return " ".join(text.split()).replace("``", "`").replace("|", "\\|")


def _shown_default(field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "shown_default" in extra:
        return str(extra["shown_default"])
    if field.is_required() or field.default is None:
        return ""
    default = field.default
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return f"`{default}`"


def configuration_table() -> str:
    """Every environment variable the settings read: required, default, meaning (from the fields)."""
    rows = ["| variable | required | default | meaning |", "| --- | --- | --- | --- |"]
    fields = sorted(ArcanosSettings.model_fields.values(), key=lambda field: not field.is_required())
    for field in fields:
        rows.append(
            f"| `{field.validation_alias}` | {'yes' if field.is_required() else 'no'} | {_shown_default(field)} "
            f"| {_cell(field.description or '')} |"
        )
    rows.append(f"| `{ENV_FILE_VARIABLE}` | no | `.env` | another dotenv file to read |")
    rows.append(
        f"| `{CREDENTIALS_BLOCK_VARIABLE}` | no | | name of an `ArcanosCredentials` block to load settings from "
        "(Prefect) |"
    )
    return "\n".join(rows)


def documented_variables() -> set[str]:
    """The variables :func:`configuration_table` lists."""
    return set(re.findall(r"^\| `([A-Z_]+)` \|", configuration_table(), re.M))


def _exception_classes() -> list[type[errors.ArcanosError]]:
    from arcanos_flows.flows.research.report import ResearchStepsFailed

    defined = [
        value
        for name in errors.__all__
        if isinstance(value := getattr(errors, name), type) and issubclass(value, errors.ArcanosError)
    ]
    return [*defined, ResearchStepsFailed]


def exceptions_table() -> str:
    """Every project exception: what it derives from, its incident class, and its docstring's first line."""
    rows = ["| exception | derives from | incident class | raised when |", "| --- | --- | --- | --- |"]
    for cls in _exception_classes():
        bases = ", ".join(f"`{base.__name__}`" for base in cls.__bases__)
        summary = (inspect.getdoc(cls) or "").split("\n\n")[0]
        rows.append(f"| `{cls.__name__}` | {bases} | `{cls.incident_class.value}` | {_cell(summary)} |")
    return "\n".join(rows)


def incident_classes_table() -> str:
    """Every incident class: its value, whether it is transient (retried), and what failed."""
    rows = ["| incident class | retried | what failed |", "| --- | --- | --- |"]
    for member in errors.IncidentClass:
        transient = "yes" if member in errors.TRANSIENT_CLASSES else "no"
        rows.append(f"| `{member.value}` | {transient} | {_cell(member.meaning)} |")
    return "\n".join(rows)


def cli_reference() -> str:
    """Typer's own Markdown reference of the ``arcanos-flows`` app (``typer ... utils docs``), one level down."""
    done = subprocess.run(
        [sys.executable, "-m", "typer", "arcanos_flows.cli.app", "utils", "docs", "--name", "arcanos-flows"],
        capture_output=True,
        text=True,
        check=True,
    )
    return re.sub(r"^(#+) ", r"#\1 ", done.stdout.strip(), flags=re.M)


GENERATORS: dict[str, Callable[[], str]] = {
    "configuration": configuration_table,
    "exceptions": exceptions_table,
    "incident-classes": incident_classes_table,
    "cli": cli_reference,
}


def render(markdown: str) -> str:
    """Replace every ``<!-- generated: name -->`` marker line with its table; an unknown name is an error."""

    def generate(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in GENERATORS:
            raise KeyError(f"unknown generated section {name!r}; known: {', '.join(sorted(GENERATORS))}")
        return GENERATORS[name]()

    return MARKER.sub(generate, markdown)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs event: generate the marked sections of each page."""
    return render(markdown)

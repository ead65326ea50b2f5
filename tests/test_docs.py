"""The docs say what the code does: generated references, hand-written tables checked, the site builds strictly.

Every Python example of the docs and the README runs in ``tests/test_examples.py``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import typer.main

from arcanos_flows import ArcanosSettings, ConfigurationError, Incident, IncidentClass
from arcanos_flows.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _section(text: str, marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->(.*?)<!-- /{marker} -->", text, re.S)
    assert match, f"lost its <!-- {marker} --> section"
    return match.group(1)


def _first_column(table: str) -> set[str]:
    return set(re.findall(r"^\| `([^`]+)` \|", table, re.M))


def _load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generated", DOCS / "_hooks" / "generated.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generated = _load_hooks()


def test_configuration_reference_lists_every_variable_with_its_meaning() -> None:
    """The generated table has a row for every setting's variable, each with a description, and no other."""
    aliases = {field.validation_alias for field in ArcanosSettings.model_fields.values()}
    assert generated.documented_variables() == aliases | {"ARCANOS_ENV_FILE", "ARCANOS_CREDENTIALS_BLOCK"}
    assert [name for name, field in ArcanosSettings.model_fields.items() if not field.description] == []
    assert "<!-- generated: configuration -->" in _page("reference/configuration.md")


def test_exception_and_incident_class_references_cover_every_class() -> None:
    """Each exception and each incident class is a row of the generated reference, with a meaning."""
    exceptions = generated.exceptions_table()
    for name in ("ConfigurationError", "ModelEnforcementError", "RefusalError", "ResearchStepsFailed"):
        assert f"| `{name}` |" in exceptions
    classes = generated.incident_classes_table()
    assert {member.value for member in IncidentClass} == _first_column(classes)
    assert "| `rate_limit` | yes |" in classes
    assert "| `refusal` | no |" in classes


def test_hand_written_incident_classes_are_real_ones() -> None:
    """The failure-flow table's incident class column names real classes only, and most of them."""
    table = re.search(r"^\| upstream does \| incident class \|.*?\n\n", _page("concepts/incidents.md"), re.M | re.S)
    assert table, "concepts/incidents.md lost its failure-flow table"
    named = {
        value
        for row in table.group(0).splitlines()[2:]
        if row.startswith("|")
        for value in re.findall(r"`([a-z_]+)`", row.split("|")[2])
    }
    assert named <= {member.value for member in IncidentClass}
    assert len(named) >= 12


def test_unknown_generated_marker_is_an_error() -> None:
    """A page asking for a table the hook does not know fails the build, naming the known ones."""
    with pytest.raises(KeyError, match="configuration"):
        generated.render("<!-- generated: configurations -->")


def test_incident_field_table_matches_the_model() -> None:
    """The hand-written incident field table has exactly the fields an incident carries."""
    assert _first_column(_section(_page("reference/incident-schema.md"), "incident-fields")) == set(
        Incident.model_fields
    )


def test_incident_json_schema_file_matches_the_model() -> None:
    """docs/incident.schema.json is the model's schema (regenerate it from Incident.model_json_schema)."""
    documented = json.loads((DOCS / "incident.schema.json").read_text(encoding="utf-8"))
    generated_schema = Incident.model_json_schema(mode="serialization")
    generated_schema.pop("description", None)
    documented.pop("$schema")
    documented.pop("$id")
    assert documented == generated_schema


def test_cli_summary_table_names_exactly_the_commands() -> None:
    """The CLI page's summary table has a row for every command of the Typer app, and none for another."""
    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    rows = re.findall(r"^\| `arcanos-flows ([a-z-]+)", _page("reference/cli.md"), re.M)
    assert set(rows) == commands
    assert "<!-- generated: cli -->" in _page("reference/cli.md")
    reference = generated.cli_reference()
    for group in ("run research", "incidents flush", "server status", "automations install"):
        assert f"## `arcanos-flows {group}`" in reference


def test_quick_start_test_command_is_what_ci_runs() -> None:
    """README's test command is the one .ci/run executes."""
    quick_start = _section(README, "quick-start")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = 'pip install -e ".[dev]" && pytest'
    assert command in quick_start
    assert command in ci


def test_readme_is_a_landing_page_whose_links_resolve() -> None:
    """README stays short and every link into the docs names a page that exists."""
    assert len(README) <= 8000
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert len(links) > 15
    assert [link for link in links if not (ROOT / link).exists()] == []


def test_every_docs_page_is_in_the_navigation() -> None:
    """No page is orphaned: mkdocs.yml's nav names every Markdown file under docs/."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md") if "_hooks" not in path.parts}
    assert [page for page in sorted(pages) if f": {page}" not in nav] == []


@pytest.mark.parametrize(
    ("environment", "documented"),
    [
        (
            {"OPENAI_API_KEY": "sk-docs-000000000"},
            "Missing required environment variable: ARCANOS_FINE_TUNED_MODEL (set it in the environment or in .env)",
        ),
        (
            {"OPENAI_API_KEY": "sk-docs-000000000", "ARCANOS_FINE_TUNED_MODEL": "gpt 5.1"},
            "ARCANOS_FINE_TUNED_MODEL: 'gpt 5.1' is not a model id (letters, digits and . _ : - / only, no spaces)",
        ),
        (
            {
                "OPENAI_API_KEY": "sk-docs-000000000",
                "ARCANOS_FINE_TUNED_MODEL": "gpt-5.1",
                "ARCANOS_MAINTENANCE_WEBHOOK": "http://maintenance.example.com/hook",
            },
            "ARCANOS_MAINTENANCE_WEBHOOK: plain http:// is only allowed to loopback hosts; use https:// "
            "or set ARCANOS_ALLOW_INSECURE_WEBHOOK=1",
        ),
        (
            {
                "OPENAI_API_KEY": "sk-docs-000000000",
                "ARCANOS_FINE_TUNED_MODEL": "gpt-5.1",
                "ARCANOS_WEBHOOK_SECRET": "not-a-secret",
            },
            "ARCANOS_WEBHOOK_SECRET: must be a Standard Webhooks secret: 'whsec_' followed by base64 of at least "
            "16 random bytes",
        ),
    ],
)
def test_troubleshooting_messages_are_the_real_ones(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], documented: str
) -> None:
    """The troubleshooting table quotes the exact ConfigurationError texts."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        ArcanosSettings()
    assert str(raised.value) == documented
    assert f"ConfigurationError: {documented}" in _page("operations/troubleshooting.md")


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict`: no broken link or anchor, no missing reference, every generated table known."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    configuration = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "ARCANOS_STEP_CACHE_EXPIRATION" in configuration
    assert "generated:" not in configuration

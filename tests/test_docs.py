"""README and docs say what the code does: tables, schema and the exact error texts are checked here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from arcanos_flows import ArcanosSettings, ConfigurationError, Incident, IncidentClass

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->(.*?)<!-- /{marker} -->", README, re.S)
    assert match, f"README lost its <!-- {marker} --> section"
    return match.group(1)


def _first_column(table: str) -> set[str]:
    return set(re.findall(r"^\| `([^`]+)` \|", table, re.M))


def test_configuration_table_lists_every_variable_and_no_other() -> None:
    """Every setting's environment variable is documented, and every documented one exists."""
    aliases = {field.validation_alias for field in ArcanosSettings.model_fields.values()}
    aliases |= {"ARCANOS_ENV_FILE", "ARCANOS_CREDENTIALS_BLOCK"}
    assert _first_column(_section("configuration")) == aliases


def test_incident_field_table_matches_the_model() -> None:
    """The README's incident schema table has exactly the fields an incident carries."""
    assert _first_column(_section("incident-fields")) == set(Incident.model_fields)


def test_every_incident_class_is_named_in_readme() -> None:
    """Each incident class value appears in README."""
    missing = [member.value for member in IncidentClass if f"`{member.value}`" not in README]
    assert missing == []


def test_incident_json_schema_file_matches_the_model() -> None:
    """docs/incident.schema.json is the model's schema (regenerate it from Incident.model_json_schema)."""
    documented = json.loads((ROOT / "docs" / "incident.schema.json").read_text(encoding="utf-8"))
    generated = Incident.model_json_schema(mode="serialization")
    generated.pop("description", None)
    documented.pop("$schema")
    documented.pop("$id")
    assert documented == generated


def test_quick_start_test_command_is_what_ci_runs() -> None:
    """README's test command is the one .ci/run executes."""
    quick_start = _section("quick-start")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = 'pip install -e ".[dev]" && pytest'
    assert command in quick_start
    assert command in ci


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
    assert f"ConfigurationError: {documented}" in README

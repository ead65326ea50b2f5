"""FakeOpenAIServer and structured output: answers to a ``json_schema`` format match the schema, on both APIs.

Everything goes through the real ``openai`` SDK to a real FakeOpenAIServer, with the strict schemas the SDK
itself makes from pydantic models (``to_strict_json_schema``), checked with ``jsonschema`` and pydantic.
"""

from __future__ import annotations

import datetime
import enum
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal, Optional

import jsonschema
import openai
import pydantic
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from arcanos_flows.testing import FakeOpenAIServer, Reply

QUESTION = "Plan the research on confirmation layers in payment systems, please"
TOPIC = "Plan the research on confirmation layers"  # the first six words, as the fake quotes them
FORMAT_CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER


# --- Models, as a typed step would declare its output_type ---------------------------------------------


class Flat(BaseModel):
    title: str
    count: int
    ratio: float
    done: bool


class Source(BaseModel):
    url: str
    quality: int = Field(ge=2, le=5)


class Finding(BaseModel):
    claim: str
    confidence: float = Field(gt=0, lt=1)
    sources: list[Source]


class Report(BaseModel):
    summary: str
    lead: Finding
    findings: list[Finding]


class Bounded(BaseModel):
    tags: list[str] = Field(min_length=4, max_length=5)
    at_most_one: list[int] = Field(max_length=1)
    many: list[Source] = Field(min_length=5)
    none: list[str] = Field(max_length=0)
    pair: tuple[int, str]


class Severity(str, enum.Enum):
    MINOR = "minor"
    MAJOR = "major"


class Choices(BaseModel):
    severity: Severity
    kind: Literal["bug", "feature"]
    fixed: Literal["yes"]
    severities: list[Severity]


class Optionals(BaseModel):
    note: Optional[str] = None  # noqa: UP045 - the spelling users write, on purpose
    finding: Finding | None = None
    either: int | str | None
    severity: Severity | None = None


class Plan(BaseModel):
    questions: list[str] = Field(min_length=1, max_length=8)


class Node(BaseModel):
    name: str
    children: list[Node]
    parent: Node | None


class Formats(BaseModel):
    day: datetime.date
    at: datetime.datetime
    site: pydantic.AnyUrl
    key: uuid.UUID
    days: list[datetime.date]
    code: str = Field(min_length=60, max_length=70)
    short: str = Field(max_length=4)
    labels: list[str] = Field(min_length=3, max_length=3)


MODELS: list[type[BaseModel]] = [Flat, Report, Bounded, Choices, Optionals, Plan, Node, Formats]


# --- Fixtures and helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def server(shared_server: FakeOpenAIServer) -> FakeOpenAIServer:
    shared_server.clear()
    shared_server.always(Reply.ok())
    return shared_server


@pytest.fixture(scope="module")
def client(shared_server: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-test", base_url=shared_server.base_url, max_retries=0) as sdk:
        yield sdk


def chat_content(client: openai.OpenAI, schema: dict[str, Any], name: str, question: str = QUESTION) -> str:
    completion = client.chat.completions.create(
        model="gpt-5.1",
        messages=[{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": question}],
        response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}},
    )
    content = completion.choices[0].message.content
    assert content is not None
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(content.split())
    return content


def responses_content(client: openai.OpenAI, schema: dict[str, Any], name: str, question: str = QUESTION) -> str:
    response = client.responses.create(
        model="gpt-5.1",
        instructions="Answer in JSON.",
        input=question,
        text={"format": {"type": "json_schema", "name": name, "schema": schema, "strict": True}},
    )
    assert response.status == "completed"
    assert response.usage is not None
    assert response.usage.output_tokens == len(response.output_text.split())
    return response.output_text


Ask = Callable[..., str]
APIS: dict[str, Ask] = {"chat": chat_content, "responses": responses_content}


@pytest.fixture(params=sorted(APIS))
def ask(request: pytest.FixtureRequest, client: openai.OpenAI, server: FakeOpenAIServer) -> Callable[..., str]:
    """Ask through one API: ``ask(schema, name, question=...)`` returns the answer's text."""
    return lambda schema, name, question=QUESTION: APIS[request.param](client, schema, name, question)


def answer(ask: Ask, model: type[BaseModel]) -> tuple[Any, Any]:
    """Ask for ``model`` with its strict schema; check the answer against both schemas and the model."""
    schema = to_strict_json_schema(model)
    content = ask(schema, model.__name__)
    assert "\n" not in content
    assert content == json.dumps(json.loads(content), ensure_ascii=False, separators=(",", ":"))  # compact
    value = json.loads(content)
    jsonschema.validate(value, schema, format_checker=FORMAT_CHECKER)
    jsonschema.validate(value, pydantic.TypeAdapter(model).json_schema(), format_checker=FORMAT_CHECKER)
    return value, model.model_validate_json(content)


# --- Answers match the schema --------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_answers_validate_against_the_strict_schema_and_the_model(ask: Ask, model: type[BaseModel]) -> None:
    answer(ask, model)


def test_flat_model_strings_come_from_the_property_and_the_question(ask: Ask) -> None:
    value, flat = answer(ask, Flat)
    assert value == {"title": f"[fake] title of {TOPIC}", "count": 1, "ratio": 1, "done": True}
    assert isinstance(flat, Flat)


def test_nested_models_resolve_defs(ask: Ask) -> None:
    schema = to_strict_json_schema(Report)
    assert "$defs" in schema
    _, report = answer(ask, Report)
    assert len(report.findings) == 3
    assert report.lead.sources
    assert all(2 <= source.quality <= 5 for source in report.lead.sources)
    assert all(0 < finding.confidence < 1 for finding in report.findings)
    claims = [finding.claim for finding in report.findings]
    assert len(set(claims)) == len(claims)


def test_arrays_honour_min_and_max_items_with_distinct_strings(ask: Ask) -> None:
    value, bounded = answer(ask, Bounded)
    assert 4 <= len(bounded.tags) <= 5
    assert len(set(bounded.tags)) == len(bounded.tags)
    assert len(bounded.at_most_one) <= 1
    assert len(bounded.many) >= 5
    assert bounded.none == []
    assert isinstance(value["pair"][0], int)
    assert isinstance(value["pair"][1], str)


def test_enums_and_literals_take_their_first_value(ask: Ask) -> None:
    _, choices = answer(ask, Choices)
    assert choices.severity is Severity.MINOR
    assert (choices.kind, choices.fixed) == ("bug", "yes")
    assert set(choices.severities) <= set(Severity)


def test_optional_fields_take_the_first_option_that_is_not_null(ask: Ask) -> None:
    schema = to_strict_json_schema(Optionals)
    assert {"type": "null"} in schema["properties"]["note"]["anyOf"]
    _, optionals = answer(ask, Optionals)
    assert optionals.note == f"[fake] note of {TOPIC}"
    assert optionals.finding is not None
    assert optionals.either == 1
    assert optionals.severity is Severity.MINOR


def test_a_plan_asks_distinct_questions(ask: Ask) -> None:
    schema = to_strict_json_schema(Plan)
    assert schema["properties"]["questions"]["maxItems"] == 8
    _, plan = answer(ask, Plan)
    assert 1 <= len(plan.questions) <= 8
    assert len(set(plan.questions)) == len(plan.questions)
    assert all(question.endswith("?") and TOPIC in question for question in plan.questions)


def test_a_self_referencing_schema_stops_at_a_depth(ask: Ask) -> None:
    _, node = answer(ask, Node)

    def depth(node: Node | None) -> int:
        if node is None:
            return 0
        return 1 + max([depth(node.parent), *(depth(child) for child in node.children)])

    assert 2 <= depth(node) <= 8


def test_string_formats_and_lengths(ask: Ask) -> None:
    value, formats = answer(ask, Formats)
    assert isinstance(formats.day, datetime.date)
    assert formats.at.tzinfo is not None
    assert formats.site.scheme == "https"
    assert len(set(formats.days)) == len(formats.days) == 3
    assert 60 <= len(formats.code) <= 70
    assert len(formats.short) <= 4
    assert len(set(formats.labels)) == 3
    assert value["key"] == str(formats.key)


# --- Hand-written schemas: what pydantic does not produce ----------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param({}, id="empty"),
        pytest.param({"type": "object", "properties": {"any": {}}, "required": ["any"]}, id="empty-property"),
        pytest.param(
            {
                "definitions": {"n": {"type": "integer", "minimum": 7}},
                "type": "array",
                "items": {"$ref": "#/definitions/n"},
            },
            id="definitions",
        ),
        pytest.param({"type": ["null", "integer"], "exclusiveMinimum": 3, "maximum": 4}, id="type-list"),
        pytest.param(
            {
                "$schema": "http://json-schema.org/draft-04/schema#",
                "type": "number",
                "minimum": 5,
                "exclusiveMinimum": True,
            },
            id="draft4-exclusive",
        ),
        pytest.param({"type": "integer", "multipleOf": 5, "minimum": 6}, id="multiple-of"),
        pytest.param({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.001}, id="narrow"),
        pytest.param({"const": {"fixed": [1, 2]}}, id="const"),
        pytest.param({"oneOf": [{"type": "null"}, {"type": "boolean"}]}, id="one-of"),
        pytest.param(
            {
                "allOf": [
                    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                    {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
                ]
            },
            id="all-of",
        ),
        pytest.param(
            {"type": "array", "uniqueItems": True, "minItems": 3, "items": {"type": "integer", "maximum": 10}},
            id="unique-integers",
        ),
        pytest.param(
            {"type": "array", "items": {"type": "string", "format": "email"}, "minItems": 2, "uniqueItems": True},
            id="emails",
        ),
        pytest.param(
            {
                "type": "object",
                "properties": {"next": {"$ref": "#"}, "items": {"type": "array", "items": {"$ref": "#"}}},
                "required": ["items"],
                "additionalProperties": False,
            },
            id="root-recursion",
        ),
        pytest.param({"type": "string", "minLength": 3, "maxLength": 3}, id="exact-length"),
        pytest.param(
            {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 1}, "uniqueItems": True},
            id="tiny-distinct-strings",
        ),
    ],
)
def test_hand_written_schemas(ask: Ask, schema: dict[str, Any]) -> None:
    value = json.loads(ask(schema, "value"))
    jsonschema.validate(value, schema, format_checker=FORMAT_CHECKER)


def test_an_empty_schema_gets_a_string(ask: Ask) -> None:
    assert json.loads(ask({}, "note")) == f"[fake] note of {TOPIC}"


def test_a_question_string_outside_an_array_ends_with_a_question_mark(ask: Ask) -> None:
    schema = {"type": "object", "properties": {"next_question": {"type": "string"}}, "required": ["next_question"]}
    assert json.loads(ask(schema, "Next"))["next_question"].endswith("?")


def test_answers_are_deterministic(client: openai.OpenAI, server: FakeOpenAIServer) -> None:
    schema = to_strict_json_schema(Report)
    first = chat_content(client, schema, "Report")
    assert chat_content(client, schema, "Report") == first == responses_content(client, schema, "Report")
    assert chat_content(client, schema, "Report", question="Something else entirely") != first


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    integer=st.booleans(),
    low=st.one_of(st.none(), st.integers(-50, 50)),
    width=st.integers(0, 20),
    open_low=st.booleans(),
    open_high=st.booleans(),
)
def test_numeric_bounds(
    client: openai.OpenAI,
    server: FakeOpenAIServer,
    integer: bool,
    low: int | None,
    width: int,
    open_low: bool,
    open_high: bool,
) -> None:
    schema: dict[str, Any] = {"type": "integer" if integer else "number"}
    high = (low if low is not None else 0) + width
    schema["exclusiveMaximum" if open_high else "maximum"] = high
    if low is not None:
        schema["exclusiveMinimum" if open_low else "minimum"] = low
    if low is not None:  # an empty range has no valid answer
        if integer:
            assume(low + open_low <= high - open_high)
        else:
            assume(width > 0 or not (open_low or open_high))
    jsonschema.validate(json.loads(chat_content(client, schema, "n")), schema)


# --- The SDK's own structured-output helpers -----------------------------------------------------------


def test_sdk_parse_helpers_get_a_parsed_model(client: openai.OpenAI, server: FakeOpenAIServer) -> None:
    completion = client.chat.completions.parse(
        model="gpt-5.1", messages=[{"role": "user", "content": QUESTION}], response_format=Report
    )
    assert isinstance(completion.choices[0].message.parsed, Report)
    response = client.responses.parse(model="gpt-5.1", input=QUESTION, text_format=Plan)
    assert isinstance(response.output_parsed, Plan)
    assert all(question.endswith("?") for question in response.output_parsed.questions)


# --- Scripted failures and scripted content ------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_invalid_json_reply_is_not_json(ask: Ask, server: FakeOpenAIServer, model: type[BaseModel]) -> None:
    server.script(Reply.invalid_json())
    content = ask(to_strict_json_schema(model), model.__name__)
    assert content == "Here is the plan: 1. Who?"
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)
    with pytest.raises(pydantic.ValidationError):
        model.model_validate_json(content)


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_schema_mismatch_reply_is_json_of_another_shape(
    ask: Ask, server: FakeOpenAIServer, model: type[BaseModel]
) -> None:
    server.script(Reply.schema_mismatch())
    schema = to_strict_json_schema(model)
    content = ask(schema, model.__name__)
    value = json.loads(content)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, schema)
    with pytest.raises(pydantic.ValidationError):
        model.model_validate_json(content)


@pytest.mark.parametrize("content", ['{"title": "exact",   "count": 2}', "plain words", ""])
def test_scripted_content_is_sent_verbatim(ask: Ask, server: FakeOpenAIServer, content: str) -> None:
    server.script(Reply.ok(content))
    assert ask(to_strict_json_schema(Flat), "Flat") == content


def test_reply_when_scripts_one_typed_step(ask: Ask, server: FakeOpenAIServer) -> None:
    server.reply_when("Investigate: B", Reply.schema_mismatch())
    schema = to_strict_json_schema(Flat)
    Flat.model_validate_json(ask(schema, "Flat", question="Investigate: A"))
    with pytest.raises(pydantic.ValidationError):
        Flat.model_validate_json(ask(schema, "Flat", question="Investigate: B"))


def test_length_reply_keeps_its_partial_content(client: openai.OpenAI, server: FakeOpenAIServer) -> None:
    server.script(Reply.length('{"title": "cut'))
    completion = client.chat.completions.create(
        model="gpt-5.1",
        messages=[{"role": "user", "content": QUESTION}],
        response_format={"type": "json_schema", "json_schema": {"name": "Flat", "schema": to_strict_json_schema(Flat)}},
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == '{"title": "cut'


# --- Requests without a json_schema format are answered as before -------------------------------------


def test_text_requests_are_answered_as_before(client: openai.OpenAI, server: FakeOpenAIServer) -> None:
    messages: Any = [{"role": "user", "content": QUESTION}]
    plain = client.chat.completions.create(model="gpt-5.1", messages=messages)
    assert plain.choices[0].message.content == f"[fake] {QUESTION}"
    json_object = client.chat.completions.create(
        model="gpt-5.1", messages=messages, response_format={"type": "json_object"}
    )
    assert json_object.choices[0].message.content == f"[fake] {QUESTION}"
    text = client.chat.completions.create(model="gpt-5.1", messages=messages, response_format={"type": "text"})
    assert text.choices[0].message.content == f"[fake] {QUESTION}"
    response = client.responses.create(model="gpt-5.1", input=QUESTION)
    assert response.output_text == f"[fake] {QUESTION}"
    response = client.responses.create(model="gpt-5.1", input=QUESTION, text={"format": {"type": "text"}})
    assert response.output_text == f"[fake] {QUESTION}"


def test_the_response_echoes_the_requested_format(client: openai.OpenAI, server: FakeOpenAIServer) -> None:
    text_format: Any = {"type": "json_schema", "name": "Plan", "schema": to_strict_json_schema(Plan), "strict": True}
    response = client.responses.create(model="gpt-5.1", input=QUESTION, text={"format": text_format})
    assert response.text is not None
    assert response.text.format is not None
    assert response.text.format.type == "json_schema"
    (request,) = server.completion_requests
    assert request.json["text"]["format"]["name"] == "Plan"

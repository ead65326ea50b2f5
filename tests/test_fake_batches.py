"""FakeOpenAIServer's Files and Batch APIs, through the real ``openai`` SDK, every object checked against the spec.

Batches run their rows as direct requests would be answered, move through the real statuses on a short
delay, and can be scripted to fail rows, answer with another model, expire, stall (for a cancel) or fail
validation. ``BatchRequestOutput`` is no longer in OpenAI's OpenAPI description, so its rows are checked against
the schema it last documented (``ROW_SCHEMA``); ``Batch``, ``OpenAIFile`` and the list objects are not in the
vendored subset either, so they are checked against the full spec next to this checkout when it is there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal

import jsonschema
import openai
import pytest
from openai.lib._pydantic import to_strict_json_schema
from openapi_schemas import schema_names, validate
from pydantic import BaseModel, Field
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from arcanos_flows.testing import BatchControls, FakeOpenAIServer, FileStore, Reply
from arcanos_flows.testing._batches import MAX_BATCH_REQUESTS
from arcanos_flows.testing._files import MAX_BATCH_FILE_BYTES

CHAT: Final = "/v1/chat/completions"
RESPONSES: Final = "/v1/responses"
Endpoint = Literal["/v1/chat/completions", "/v1/responses"]
MODEL = "gpt-5.1"
FULL_SPEC = Path(__file__).resolve().parents[2] / "shared" / "openai-openapi" / "openapi.json"
ENDED = ("completed", "failed", "expired", "cancelled")

ROW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "custom_id", "response", "error"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "custom_id": {"type": "string"},
        "response": {
            "anyOf": [
                {
                    "type": "object",
                    "required": ["status_code", "request_id", "body"],
                    "additionalProperties": False,
                    "properties": {
                        "status_code": {"type": "integer"},
                        "request_id": {"type": "string"},
                        "body": {"type": "object"},
                    },
                },
                {"type": "null"},
            ]
        },
        "error": {
            "anyOf": [
                {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                },
                {"type": "null"},
            ]
        },
    },
}
"""``BatchRequestOutput`` as OpenAI's OpenAPI description documented it (since dropped from it)."""


# --- Spec checks -----------------------------------------------------------------------------------------------


@cache
def _full_spec_validator(name: str) -> jsonschema.Draft202012Validator:
    uri = "urn:arcanos:openai-openapi-full"
    spec = json.loads(FULL_SPEC.read_text(encoding="utf-8"))
    registry = Registry().with_resource(uri, Resource.from_contents(spec, default_specification=DRAFT202012))
    return jsonschema.Draft202012Validator({"$ref": f"{uri}#/components/schemas/{name}"}, registry=registry)


def check(instance: Any, name: str) -> None:
    """Validate against ``components.schemas[name]``: the vendored subset when it has it, else the full spec."""
    if name in schema_names():
        validate(instance, name)
        return
    if not FULL_SPEC.is_file():
        pytest.skip(f"{name} is not in the vendored schemas and the full OpenAI spec is not at {FULL_SPEC}")
    _full_spec_validator(name).validate(instance)


def check_batch(batch: openai.types.Batch) -> dict[str, Any]:
    """The batch as it came over the wire, checked against ``Batch``."""
    raw = batch.to_dict()
    check(raw, "Batch")
    return raw


# --- Helpers ---------------------------------------------------------------------------------------------------


def chat_line(custom_id: str, question: str, **body: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": question}]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": MODEL, "messages": messages, **body},
    }


def responses_line(custom_id: str, question: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": RESPONSES,
        "body": {"model": MODEL, "input": question, **body},
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((line if isinstance(line, str) else json.dumps(line)).encode() + b"\n" for line in lines)


def upload(client: openai.OpenAI, lines: list[Any], purpose: str = "batch") -> str:
    stored = client.files.create(file=("in.jsonl", jsonl(lines)), purpose=purpose)  # type: ignore[arg-type]
    check(stored.to_dict(), "OpenAIFile")
    return stored.id


def start(client: openai.OpenAI, lines: list[Any], endpoint: Endpoint = CHAT, **options: Any) -> str:
    batch = client.batches.create(
        input_file_id=upload(client, lines),
        endpoint=endpoint,
        completion_window="24h",
        **options,
    )
    assert check_batch(batch)["status"] == "validating"
    return batch.id


def wait(client: openai.OpenAI, batch_id: str, until: tuple[str, ...] = ENDED, timeout: float = 15.0) -> dict[str, Any]:
    """Poll the batch until its status is one of ``until``; every answer is checked against the spec."""
    deadline = time.monotonic() + timeout
    while True:
        raw = check_batch(client.batches.retrieve(batch_id))
        if raw["status"] in until:
            return raw
        assert time.monotonic() < deadline, f"batch {batch_id} still {raw['status']} after {timeout}s"
        time.sleep(0.01)


def rows(client: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    """The rows of an output or error file, each checked against ``ROW_SCHEMA``."""
    stored = client.files.retrieve(file_id)
    check(stored.to_dict(), "OpenAIFile")
    assert stored.purpose == "batch_output"
    text = client.files.content(file_id).text
    assert text.endswith("\n")
    parsed = [json.loads(line) for line in text.splitlines()]
    for row in parsed:
        jsonschema.validate(row, ROW_SCHEMA)
    return parsed


def content_of(row: dict[str, Any]) -> str:
    body = row["response"]["body"]
    if body["object"] == "chat.completion":
        text = body["choices"][0]["message"]["content"]
    else:
        text = body["output"][0]["content"][0]["text"]
    assert isinstance(text, str)
    return text


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(batch_delay=0.2) as fake:
        yield fake


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as sdk:
        yield sdk


# --- Files -----------------------------------------------------------------------------------------------------


def test_files_upload_retrieve_download_delete(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    data = jsonl([chat_line("a", "One?"), chat_line("b", "Two?")]) + "é\n".encode()
    stored = client.files.create(file=("steps.jsonl", data), purpose="batch")
    raw = stored.to_dict()
    check(raw, "OpenAIFile")
    assert raw["filename"] == "steps.jsonl"
    assert raw["bytes"] == len(data)
    assert raw["purpose"] == "batch"
    assert raw["status"] == "processed"

    again = client.files.retrieve(stored.id)
    check(again.to_dict(), "OpenAIFile")
    assert again.to_dict() == raw
    assert client.files.content(stored.id).content == data
    assert server.files.get(stored.id) is not None

    deleted = client.files.delete(stored.id)
    check(deleted.to_dict(), "DeleteFileResponse")
    assert deleted.to_dict() == {"id": stored.id, "object": "file", "deleted": True}
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        client.files.retrieve(stored.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(stored.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(stored.id)


def test_file_uploads_are_checked(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("in.jsonl", b"{}\n"), purpose="homework")  # type: ignore[arg-type]
    check(caught.value.response.json(), "ErrorResponse")
    assert caught.value.param == "purpose"
    with pytest.raises(openai.BadRequestError, match="multipart"):
        client.post("/files", body={"purpose": "batch"}, cast_to=object)
    assert server.files.ids == []


def test_batch_file_size_limit(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    assert MAX_BATCH_FILE_BYTES == 200 * 1024 * 1024
    assert server.files.max_batch_bytes == MAX_BATCH_FILE_BYTES
    server.files.max_batch_bytes = 100
    with pytest.raises(openai.BadRequestError, match="too large") as caught:
        client.files.create(file=("in.jsonl", b"x" * 101), purpose="batch")
    assert caught.value.code == "file_too_large"
    assert client.files.create(file=("notes.txt", b"x" * 101), purpose="user_data").bytes == 101

    # A file over the limit that got in anyway (here, added directly) fails the batch at validation.
    big = server.files.add(jsonl([chat_line("a", "Hi")]) + b" " * 100, purpose="batch")
    batch = client.batches.create(input_file_id=big.id, endpoint=CHAT, completion_window="24h")
    failed = wait(client, batch.id)
    assert failed["status"] == "failed"
    assert [error["code"] for error in failed["errors"]["data"]] == ["file_too_large"]


# --- Batches: the happy paths ----------------------------------------------------------------------------------


def test_chat_batch_of_twenty_rows_end_to_end(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    lines = [chat_line(f"step-{i}", f"Question number {i} about the ledger") for i in range(1, 21)]
    batch_id = start(client, lines, metadata={"fingerprint": "abc123"})
    done = wait(client, batch_id)

    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
    assert done["endpoint"] == CHAT
    assert done["completion_window"] == "24h"
    assert done["model"] == MODEL
    assert done["metadata"] == {"fingerprint": "abc123"}
    assert "errors" not in done
    assert "error_file_id" not in done
    stamps = [done[name] for name in ("created_at", "in_progress_at", "finalizing_at", "completed_at")]
    assert stamps == sorted(stamps)
    assert done["expires_at"] == done["created_at"] + 24 * 3600
    assert server.batches.created == 1

    output = rows(client, done["output_file_id"])
    assert sorted(row["custom_id"] for row in output) == sorted(line["custom_id"] for line in lines)
    assert len({row["id"] for row in output}) == 20
    for row in output:
        assert row["error"] is None
        assert row["response"]["status_code"] == 200
        validate(row["response"]["body"], "CreateChatCompletionResponse")
        number = row["custom_id"].removeprefix("step-")
        assert content_of(row) == f"[fake] Question number {number} about the ledger"
        assert row["response"]["body"]["model"] == MODEL
    assert len({row["response"]["body"]["id"] for row in output}) == 20

    # Usage is counted as a direct answer to the same body counts it, and adds up on the batch.
    direct = client.chat.completions.create(**lines[0]["body"])
    first = next(row for row in output if row["custom_id"] == "step-1")
    assert first["response"]["body"]["usage"] == direct.to_dict()["usage"]
    usage = done["usage"]
    assert usage["input_tokens"] == sum(row["response"]["body"]["usage"]["prompt_tokens"] for row in output)
    assert usage["output_tokens"] == sum(row["response"]["body"]["usage"]["completion_tokens"] for row in output)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0

    # Rows are not HTTP requests: only the direct call is a recorded completion request.
    assert len(server.completion_requests) == 1


def test_responses_batch(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    lines = [responses_line(f"r-{i}", f"Summarise finding {i}", instructions="Be brief.") for i in range(3)]
    done = wait(client, start(client, lines, endpoint=RESPONSES))
    assert done["status"] == "completed"
    assert done["endpoint"] == RESPONSES
    assert done["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    output = rows(client, done["output_file_id"])
    assert [row["custom_id"] for row in output] == ["r-0", "r-1", "r-2"]
    for index, row in enumerate(output):
        body = row["response"]["body"]
        validate(body, "Response")
        assert body["object"] == "response"
        assert body["instructions"] == "Be brief."
        assert content_of(row) == f"[fake] Summarise finding {index}"
    assert done["usage"]["input_tokens"] == sum(row["response"]["body"]["usage"]["input_tokens"] for row in output)


def test_status_moves_through_the_real_lifecycle(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.batches.delay = 1.0
    batch_id = start(client, [chat_line(f"s-{i}", "Go") for i in range(10)])
    order = ["validating", "in_progress", "finalizing", "completed"]
    seen: list[str] = []
    counts: list[int] = []
    deadline = time.monotonic() + 15
    while not seen or seen[-1] != "completed":
        raw = check_batch(client.batches.retrieve(batch_id))
        if not seen or seen[-1] != raw["status"]:
            seen.append(raw["status"])
        counts.append(raw["request_counts"]["completed"])
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert seen == sorted(seen, key=order.index)  # never backwards, whatever polls a busy machine skips
    assert seen[0] == "validating"
    assert counts == sorted(counts)
    assert counts[-1] == 10


def test_batch_delay_is_an_argument_and_a_setting() -> None:
    assert FakeOpenAIServer().batches.delay == 0.5
    fake = FakeOpenAIServer(batch_delay=0)
    assert fake.batches.delay == 0
    fake.batches.delay = 2.5
    assert fake.batches.delay == 2.5
    with pytest.raises(ValueError, match="delay"):
        fake.batches.delay = -1


def test_listing_newest_first_with_metadata_and_pages(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    ids = [start(client, [chat_line("a", f"Run {n}")], metadata={"fingerprint": f"fp-{n}"}) for n in range(3)]

    raw = client.batches.with_raw_response.list(limit=2).http_response.json()
    check(raw, "ListBatchesResponse")
    assert [batch["id"] for batch in raw["data"]] == [ids[2], ids[1]]
    assert (raw["first_id"], raw["last_id"], raw["has_more"]) == (ids[2], ids[1], True)
    assert [batch["metadata"] for batch in raw["data"]] == [{"fingerprint": "fp-2"}, {"fingerprint": "fp-1"}]

    rest = client.batches.with_raw_response.list(limit=2, after=ids[1]).http_response.json()
    check(rest, "ListBatchesResponse")
    assert [batch["id"] for batch in rest["data"]] == [ids[0]]
    assert rest["has_more"] is False

    # The SDK's auto-pagination follows the cursor; a caller finds its batch by its fingerprint.
    every = list(client.batches.list(limit=1))
    assert [batch.id for batch in every] == ids[::-1]
    found = [batch for batch in every if (batch.metadata or {}).get("fingerprint") == "fp-1"]
    assert [batch.id for batch in found] == [ids[1]]
    assert server.batches.created == 3

    empty = client.batches.with_raw_response.list().http_response.json()
    assert len(empty["data"]) == 3
    server.clear()
    cleared = client.batches.with_raw_response.list().http_response.json()
    check(cleared, "ListBatchesResponse")
    assert cleared == {"object": "list", "data": [], "has_more": False}
    assert server.batches.created == 0


def test_creation_parameters_are_checked(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    file_id = upload(client, [chat_line("a", "Hi")])
    bad: list[tuple[dict[str, Any], str]] = [
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"input_file_id": ""}, "input_file_id"),
    ]
    for change, param in bad:
        options: dict[str, Any] = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", **change}
        with pytest.raises(openai.BadRequestError) as caught:
            client.batches.create(**options)
        check(caught.value.response.json(), "ErrorResponse")
        assert caught.value.param == param
    sixteen = {f"k{i}": "v" for i in range(16)}
    check_batch(client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h", metadata=sixteen))
    assert server.batches.created == 1
    with pytest.raises(openai.NotFoundError, match="No such Batch object"):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_nope")


def test_scripted_http_replies_apply_to_batch_requests(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    file_id = upload(client, [chat_line("a", "Hi")])
    server.script(Reply.error(500))
    with pytest.raises(openai.InternalServerError):
        client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    assert server.batches.created == 0
    check_batch(client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h"))
    assert server.batches.created == 1


# --- Cancel and expiry -----------------------------------------------------------------------------------------


def test_cancel_keeps_the_rows_finished_before_it(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.batches.stall_next(finished=3)
    lines = [chat_line(f"step-{i}", f"Question {i}") for i in range(1, 11)]
    batch_id = start(client, lines)
    running = wait(client, batch_id, until=("in_progress",))
    deadline = time.monotonic() + 15
    while running["request_counts"]["completed"] < 3:
        assert time.monotonic() < deadline
        running = check_batch(client.batches.retrieve(batch_id))
    time.sleep(0.3)  # well past the batch's delay: a stalled batch stays in progress
    assert wait(client, batch_id, until=("in_progress",))["request_counts"] == {
        "total": 10,
        "completed": 3,
        "failed": 0,
    }

    cancelling = check_batch(client.batches.cancel(batch_id))
    assert cancelling["status"] == "cancelling"
    assert "cancelled_at" not in cancelling
    assert cancelling["cancelling_at"] >= cancelling["in_progress_at"]
    assert check_batch(client.batches.cancel(batch_id))["status"] in ("cancelling", "cancelled")

    cancelled = wait(client, batch_id)
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelled_at"] >= cancelled["cancelling_at"]
    assert cancelled["request_counts"] == {"total": 10, "completed": 3, "failed": 0}
    kept = rows(client, cancelled["output_file_id"])
    assert [row["custom_id"] for row in kept] == ["step-1", "step-2", "step-3"]
    for row in kept:
        validate(row["response"]["body"], "CreateChatCompletionResponse")
    dropped = rows(client, cancelled["error_file_id"])
    assert [row["custom_id"] for row in dropped] == [f"step-{i}" for i in range(4, 11)]
    assert {row["error"]["code"] for row in dropped} == {"batch_cancelled"}
    assert all(row["response"] is None for row in dropped)

    with pytest.raises(openai.ConflictError, match="Cannot cancel a batch with status 'cancelled'"):
        client.batches.cancel(batch_id)


def test_cancel_while_validating_runs_nothing(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.batches.delay = 10  # validating for 1 s; cancelled 1 s after the cancel
    batch_id = start(client, [chat_line(f"v-{i}", "Hi") for i in range(4)])
    cancelling = check_batch(client.batches.cancel(batch_id))
    assert cancelling["status"] == "cancelling"
    assert "in_progress_at" not in cancelling
    cancelled = wait(client, batch_id)
    assert cancelled["status"] == "cancelled"
    assert cancelled["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert "output_file_id" not in cancelled
    dropped = rows(client, cancelled["error_file_id"])
    assert [row["error"]["code"] for row in dropped] == ["batch_cancelled"] * 4


def test_cancel_of_a_completed_batch_is_refused(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    batch_id = start(client, [chat_line("a", "Hi")])
    assert wait(client, batch_id)["status"] == "completed"
    with pytest.raises(openai.ConflictError) as caught:
        client.batches.cancel(batch_id)
    check(caught.value.response.json(), "ErrorResponse")


def test_expiry_keeps_the_rows_finished_before_it(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.batches.expire_next(finished=2)
    server.batches.fail_rows({"step-2": 500})
    lines = [chat_line(f"step-{i}", f"Question {i}") for i in range(1, 6)]
    expired = wait(client, start(client, lines))

    assert expired["status"] == "expired"
    assert expired["expired_at"] >= expired["in_progress_at"]
    assert "completed_at" not in expired
    assert expired["request_counts"] == {"total": 5, "completed": 1, "failed": 1}
    assert [row["custom_id"] for row in rows(client, expired["output_file_id"])] == ["step-1"]
    errors = rows(client, expired["error_file_id"])
    assert [row["custom_id"] for row in errors] == ["step-2", "step-3", "step-4", "step-5"]
    assert errors[0]["response"]["status_code"] == 500
    assert [row["error"]["code"] for row in errors[1:]] == ["batch_expired"] * 3

    # Only the next batch expires; by default half its rows run first.
    server.batches.expire_next()
    assert wait(client, start(client, lines))["request_counts"]["completed"] == 2
    assert wait(client, start(client, lines))["status"] == "completed"


# --- Validation ------------------------------------------------------------------------------------------------

GOOD = chat_line("ok", "Fine")


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([GOOD, "{not json", chat_line("b", "x")], [("invalid_json_line", 2)], id="bad-line"),
        pytest.param([GOOD, "[1, 2]"], [("invalid_json_line", 2)], id="not-an-object"),
        pytest.param([GOOD, {**chat_line("b", "x"), "url": RESPONSES}], [("url_mismatch", 2)], id="wrong-url"),
        pytest.param([GOOD, chat_line("b", "x"), chat_line("ok", "y")], [("duplicate_custom_id", 3)], id="duplicate"),
        pytest.param(
            [{k: v for k, v in GOOD.items() if k != "custom_id"}], [("missing_required_parameter", 1)], id="no-id"
        ),
        pytest.param([{**GOOD, "method": "GET"}], [("invalid_method", 1)], id="method"),
        pytest.param([{**GOOD, "body": "text"}], [("missing_required_parameter", 1)], id="no-body"),
        pytest.param(
            ["", GOOD, {**chat_line("b", "x"), "url": "/v1/x"}],
            [("invalid_json_line", 1), ("url_mismatch", 3)],
            id="several",
        ),
        pytest.param([], [("empty_file", None)], id="empty"),
    ],
)
def test_invalid_input_fails_the_batch(
    client: openai.OpenAI, lines: list[Any], expected: list[tuple[str, int | None]]
) -> None:
    failed = wait(client, start(client, lines))
    assert failed["status"] == "failed"
    assert failed["errors"]["object"] == "list"
    assert [(error["code"], error["line"]) for error in failed["errors"]["data"]] == expected
    assert all(error["message"] for error in failed["errors"]["data"])
    assert failed["failed_at"] >= failed["created_at"]
    assert failed["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    for name in ("in_progress_at", "output_file_id", "error_file_id"):
        assert name not in failed


def test_input_file_must_exist_and_be_for_batches(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    notes = upload(client, [GOOD], purpose="user_data")
    for file_id, code in (("file-missing", "invalid_file"), (notes, "invalid_file_purpose")):
        batch = client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
        failed = wait(client, batch.id)
        assert failed["status"] == "failed"
        assert [(error["code"], error["param"]) for error in failed["errors"]["data"]] == [(code, "input_file_id")]
    assert server.batches.created == 2


def test_fail_next_validation(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.batches.fail_next_validation(code="token_limit_exceeded", message="Too many enqueued tokens.")
    failed = wait(client, start(client, [GOOD]))
    assert failed["status"] == "failed"
    assert failed["errors"]["data"] == [
        {"code": "token_limit_exceeded", "message": "Too many enqueued tokens.", "param": None, "line": None}
    ]
    assert wait(client, start(client, [GOOD]))["status"] == "completed"


def test_request_limit(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    assert MAX_BATCH_REQUESTS == 50_000
    assert server.batches.max_requests == MAX_BATCH_REQUESTS
    server.batches.max_requests = 5
    too_many = wait(client, start(client, [chat_line(f"n-{i}", "Hi") for i in range(6)]))
    assert too_many["status"] == "failed"
    assert [error["code"] for error in too_many["errors"]["data"]] == ["too_many_tasks"]
    assert "limit of 5" in too_many["errors"]["data"][0]["message"]
    at_limit = wait(client, start(client, [chat_line(f"n-{i}", "Hi") for i in range(5)]))
    assert at_limit["request_counts"] == {"total": 5, "completed": 5, "failed": 0}


# --- Scripted rows ---------------------------------------------------------------------------------------------


def test_scripted_failed_rows_and_another_model(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.batches.fail_rows({"step-3": 500, "step-4": 429})
    server.batches.error_rows({"step-5": "server_error"})
    server.batches.answer_with_model({"step-2": "gpt-4o"})
    lines = [chat_line(f"step-{i}", f"Question {i}") for i in range(1, 7)]
    done = wait(client, start(client, lines))

    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 6, "completed": 3, "failed": 3}
    output = {row["custom_id"]: row for row in rows(client, done["output_file_id"])}
    assert sorted(output) == ["step-1", "step-2", "step-6"]
    assert output["step-2"]["response"]["body"]["model"] == "gpt-4o"
    assert output["step-1"]["response"]["body"]["model"] == MODEL
    for row in output.values():
        validate(row["response"]["body"], "CreateChatCompletionResponse")

    errors = {row["custom_id"]: row for row in rows(client, done["error_file_id"])}
    assert sorted(errors) == ["step-3", "step-4", "step-5"]
    for custom_id, status, code in (("step-3", 500, None), ("step-4", 429, "rate_limit_exceeded")):
        response = errors[custom_id]["response"]
        assert response["status_code"] == status
        validate(response["body"], "ErrorResponse")
        assert response["body"]["error"]["code"] == code
        assert errors[custom_id]["error"] is None
    assert errors["step-5"]["response"] is None
    assert errors["step-5"]["error"]["code"] == "server_error"

    # The scripts were used up: the same rows in a new batch all succeed.
    again = wait(client, start(client, lines))
    assert again["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
    assert {row["response"]["body"]["model"] for row in rows(client, again["output_file_id"])} == {MODEL}
    assert server.batches.created == 2


def test_row_scripts_can_last(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.batches.fail_rows({"flaky": 503}, times=None)
    server.batches.reply_rows({"refuse": Reply.refused("No.")}, times=2)
    lines = [chat_line("flaky", "Hi"), chat_line("refuse", "Hi")]
    for _ in range(3):
        wait(client, start(client, lines))
    batches = list(client.batches.list())
    counts = [batch.request_counts.failed for batch in batches if batch.request_counts is not None]
    assert counts == [1, 1, 1]
    refusals = [
        rows(client, batch.output_file_id)[0]["response"]["body"]["choices"][0]["message"]["refusal"]
        for batch in batches[::-1]
        if batch.output_file_id is not None
    ]
    assert refusals == ["No.", "No.", None]
    with pytest.raises(ValueError, match="times"):
        server.batches.fail_rows({"x": 500}, times=0)
    with pytest.raises(ValueError, match="hang up"):
        server.batches.reply_rows({"x": Reply.drop()})


def test_model_override_answers_rows_too(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.model_override = "gpt-4o-mini"
    done = wait(client, start(client, [chat_line("a", "Hi")]))
    assert rows(client, done["output_file_id"])[0]["response"]["body"]["model"] == "gpt-4o-mini"


# --- Structured output -----------------------------------------------------------------------------------------


class Source(BaseModel):
    url: str
    quality: int = Field(ge=2, le=5)


class Finding(BaseModel):
    claim: str
    confidence: float = Field(gt=0, lt=1)
    sources: list[Source]


def test_rows_asking_for_a_json_schema_answer_schema_valid_json(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    schema = to_strict_json_schema(Finding)
    chat_format = {"type": "json_schema", "json_schema": {"name": "Finding", "strict": True, "schema": schema}}
    response_format = {"format": {"type": "json_schema", "name": "Finding", "strict": True, "schema": schema}}
    server.batches.answer_invalid_json(["chat-bad"])
    chat = [chat_line(name, "Check the ledger", response_format=chat_format) for name in ("chat-1", "chat-bad")]
    responses = [responses_line("resp-1", "Check the ledger", text=response_format)]

    chat_done = wait(client, start(client, chat))
    responses_done = wait(client, start(client, responses, endpoint=RESPONSES))
    chat_rows = {row["custom_id"]: row for row in rows(client, chat_done["output_file_id"])}
    (responses_row,) = rows(client, responses_done["output_file_id"])

    for row in (chat_rows["chat-1"], responses_row):
        answer = json.loads(content_of(row))
        jsonschema.validate(answer, schema)
        Finding.model_validate(answer)
    validate(chat_rows["chat-1"]["response"]["body"], "CreateChatCompletionResponse")
    validate(responses_row["response"]["body"], "Response")

    # The scripted row is answered 200, with prose where JSON was asked for, as a direct answer would be.
    bad = chat_rows["chat-bad"]
    assert bad["response"]["status_code"] == 200
    assert content_of(bad) == Reply.invalid_json().content
    with pytest.raises(json.JSONDecodeError):
        json.loads(content_of(bad))


def test_public_names() -> None:
    fake = FakeOpenAIServer(batch_delay=0)
    assert isinstance(fake.batches, BatchControls)
    assert isinstance(fake.files, FileStore)

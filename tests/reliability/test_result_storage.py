"""Nothing Prefect writes to disk for a failed run holds the API key, even when the upstream echoed it.

The SDK's exceptions carry the HTTP exchange (the request with its ``Authorization`` header, the raw response
body); Prefect pickles a failed flow's exception into result storage. The client hands both over redacted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import pickle
from pathlib import Path

import openai
import pytest
from prefect import flow
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from arcanos_flows import ArcanosPythonClient, ArcanosSettings
from arcanos_flows.prefect.tasks import run_reasoning
from arcanos_flows.testing import FakeOpenAIServer, Reply
from tests.conftest import API_KEY

pytestmark = pytest.mark.usefixtures("prefect_harness")

MESSAGES = [{"role": "user", "content": "List the current confirmation layers."}]
ECHOES = [
    Reply.error(401, message=f"Incorrect API key provided: {API_KEY}"),
    Reply.error(500, message=f"upstream saw Authorization: Bearer {API_KEY}"),
]


def _contents(folder: Path) -> list[bytes]:
    blobs = []
    for path in folder.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            blobs.append(raw)
            with contextlib.suppress(binascii.Error, ValueError):  # Prefect stores pickles base64-encoded
                blobs.append(base64.b64decode(raw, validate=False))
    return blobs


@pytest.mark.parametrize("reply", ECHOES, ids=["401-echo", "500-echo"])
def test_a_raised_sdk_exception_pickles_without_the_key(
    openai_server: FakeOpenAIServer, make_settings: object, reply: Reply
) -> None:
    """The exception a caller (or Prefect) pickles keeps its type, status and request id, but not the key."""
    settings: ArcanosSettings = make_settings(max_retries=0)  # type: ignore[operator]
    openai_server.script(reply)
    with ArcanosPythonClient(settings) as client, pytest.raises(openai.APIStatusError) as raised:
        client.run_reasoning(MESSAGES, notify=False)

    blob = pickle.dumps(raised.value)
    assert API_KEY.encode() not in blob
    # openai 3.63 no longer leaves the Authorization header on the request it attaches; older releases do, and
    # then it must be the redacted copy.
    assert raised.value.request.headers.get("authorization", "[REDACTED]") == "[REDACTED]"
    assert raised.value.response.status_code == reply.status
    assert raised.value.response.headers["x-request-id"] == raised.value.request_id


def test_a_failed_flow_writes_no_key_to_result_storage(
    arcanos_env: dict[str, str], openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """A flow failing on a reasoning step leaves result storage free of the key (decoded pickles included)."""
    storage = tmp_path / "results"
    openai_server.always(ECHOES[0])

    @flow(name="arcanos-test-storage")
    def failing() -> None:
        run_reasoning(MESSAGES, step="echo")

    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        state = failing(return_state=True)

    assert state.is_failed()
    blobs = _contents(storage)
    assert blobs, "Prefect wrote nothing: the test would prove nothing"
    assert not [blob for blob in blobs if API_KEY.encode() in blob]

"""The Batch API's I/O for the enforced model: upload, create or re-attach, poll, download the rows.

:class:`BatchClient` speaks to the Files and Batches endpoints through the OpenAI SDK, with the settings the
reasoning client uses (key, base URL, timeout, SDK retries). Nothing here knows Prefect: the Prefect task
(:func:`arcanos_flows.prefect.batch.run_reasoning_batch`) polls with it and reports incidents.

A batch is created at most once per input: :meth:`BatchClient.submit` first lists the account's recent batches and
re-attaches to the one whose metadata carries the input's fingerprint, whatever its status (a completed batch's rows
are read, never resubmitted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import openai
from openai.types import Batch
from pydantic import BaseModel, ConfigDict

from arcanos_flows.client._output import check_output_options
from arcanos_flows.client.batch import (
    COMPLETION_WINDOW,
    FINGERPRINT_KEY,
    MAX_BATCH_FILE_BYTES,
    MAX_BATCH_REQUESTS,
    BatchInput,
    BatchRow,
    BatchStep,
    batch_pricing,
    build_batch_input,
    read_batch_row,
)
from arcanos_flows.core.errors import BatchError, BatchRowError, BatchTimeoutError, ConfigurationError, IncidentClass
from arcanos_flows.core.metadata import MetadataValue
from arcanos_flows.core.redaction import redact, register_token
from arcanos_flows.core.settings import ArcanosSettings, settings_from_environment

__all__ = ["FINISHED_STATUSES", "BatchClient", "BatchStatus", "status_history"]

FINISHED_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
"""Statuses a batch does not leave."""
_HISTORY_FIELDS = (
    ("validating", "created_at"),
    ("in_progress", "in_progress_at"),
    ("finalizing", "finalizing_at"),
    ("completed", "completed_at"),
    ("failed", "failed_at"),
    ("cancelling", "cancelling_at"),
    ("cancelled", "cancelled_at"),
    ("expired", "expired_at"),
)
_LIST_PAGE = 100


class BatchStatus(BaseModel):
    """One status a batch went through, and when (from the batch's own timestamps).

    Examples:
        >>> BatchStatus(status="completed", at=datetime(2026, 12, 6, tzinfo=timezone.utc)).status
        'completed'
    """

    model_config = ConfigDict(frozen=True)

    status: str
    at: datetime


def status_history(batch: Batch) -> list[BatchStatus]:
    """The statuses a batch went through, in time order, from its ``*_at`` timestamps.

    Examples:
        >>> batch = Batch(id="batch_1", object="batch", endpoint="/v1/chat/completions", input_file_id="file-1",
        ...               completion_window="24h", status="completed", created_at=100, in_progress_at=101,
        ...               completed_at=160)
        >>> [entry.status for entry in status_history(batch)]
        ['validating', 'in_progress', 'completed']
    """
    history = [
        BatchStatus(status=status, at=datetime.fromtimestamp(stamp, tz=timezone.utc))
        for status, field in _HISTORY_FIELDS
        if isinstance(stamp := getattr(batch, field, None), int)
    ]
    return sorted(history, key=lambda entry: entry.at)


class BatchClient:
    """The Batch API for the enforced model: every request of a batch is checked, built and read like a direct one.

    Args:
        settings: Settings to use; read from the environment and ``.env`` when omitted.

    Examples:
        Against the bundled fake server::

            from arcanos_flows.client.batch_client import BatchClient

            with BatchClient() as client:
                steps = [{"step": "q-1", "messages": [{"role": "user", "content": "Which layers?"}]}]
                batch_input = client.prepare(steps)
                batch, created = client.submit(batch_input)
                batch = client.wait(batch.id, poll_interval=1.0)
                rows = client.rows(batch, batch_input)
    """

    def __init__(self, settings: ArcanosSettings | None = None) -> None:
        self.settings = settings if settings is not None else settings_from_environment()
        if self.settings.gateway in ("litellm", "azure"):
            # A gateway rewrites what the rows report (LiteLLM) or serves batches at other paths (Azure): the checks
            # that make a row trustworthy are made for OpenAI's own Batch API.
            raise ConfigurationError(
                f"ARCANOS_GATEWAY={self.settings.gateway}: the Batch API path speaks to OpenAI's Files and Batch APIs "
                "directly and cannot verify rows behind a gateway; run batches with ARCANOS_GATEWAY=none (or auto) "
                "and OPENAI_BASE_URL at OpenAI"
            )
        self.model = self.settings.fine_tuned_model
        self._sdk = openai.OpenAI(
            api_key=self.settings.openai_api_key.get_secret_value(),
            base_url=self.settings.openai_base_url,
            timeout=self.settings.request_timeout,
            max_retries=self.settings.max_retries,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, api={self.settings.openai_api!r})"

    def close(self) -> None:
        """Close the SDK client's connections."""
        self._sdk.close()

    def __enter__(self) -> BatchClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def prepare(
        self,
        steps: Sequence[BatchStep | Mapping[str, Any]],
        *,
        metadata: Mapping[str, MetadataValue] | None = None,
        identity: Mapping[str, str | None] | None = None,
        output_type: Any = None,
        max_requests: int = MAX_BATCH_REQUESTS,
        max_file_bytes: int = MAX_BATCH_FILE_BYTES,
    ) -> BatchInput:
        """Check the steps and build the input file, before anything is sent.

        Raises:
            InvalidReasoningInput: Naming the step and what is wrong (see :func:`build_batch_input`).
        """
        spec = check_output_options(output_type, 0, None)
        batch_input = build_batch_input(
            steps,
            model=self.model,
            api=self.settings.openai_api,
            store=self.settings.store,
            metadata=metadata,
            defaults={"confirmation_token": self.settings.confirmation_token},
            identity=identity,
            response_format=spec.response_format if spec is not None else None,
            max_requests=max_requests,
            max_file_bytes=max_file_bytes,
        )
        for token in {sent.get("confirmation_token") for sent in batch_input.metadata.values()}:
            register_token(token)  # a caller's own token is as secret as the setting
        return batch_input

    def find(self, fingerprint: str, *, max_pages: int = 10) -> Batch | None:
        """The newest batch whose metadata carries ``fingerprint``, among the account's latest ``max_pages`` x 100."""
        after: str | None = None
        for _ in range(max_pages):
            page = (
                self._sdk.batches.list(limit=_LIST_PAGE, after=after)
                if after
                else self._sdk.batches.list(limit=_LIST_PAGE)
            )
            for batch in page.data:
                if (batch.metadata or {}).get(FINGERPRINT_KEY) == fingerprint:
                    return batch
            if not page.has_more or not page.data:
                return None
            after = page.data[-1].id
        return None

    def submit(self, batch_input: BatchInput, *, metadata: Mapping[str, str] | None = None) -> tuple[Batch, bool]:
        """The batch of this input: the one already created for it, else a new one (uploaded, then created).

        Args:
            batch_input: From :meth:`prepare`.
            metadata: Batch metadata (the flow run, ...); the fingerprint is added.

        Returns:
            The batch, and whether it was created now (``False``: re-attached to an earlier one).

        Raises:
            BatchError: The upload or the creation was refused (the class ``batch_failed``), with the API's reason.
        """
        existing = self.find(batch_input.fingerprint)
        if existing is not None:
            return existing, False
        try:
            uploaded = self._sdk.files.create(file=("arcanos-batch.jsonl", batch_input.data), purpose="batch")
        except openai.BadRequestError as exc:
            raise _refused("the batch input file was refused at upload", exc) from None
        batch_metadata = {**(metadata or {}), FINGERPRINT_KEY: batch_input.fingerprint}
        try:
            batch = self._sdk.batches.create(
                input_file_id=uploaded.id,
                endpoint=batch_input.endpoint,  # type: ignore[arg-type]
                completion_window=COMPLETION_WINDOW,
                metadata=batch_metadata,
            )
        except openai.BadRequestError as exc:
            raise _refused("the batch was refused at creation", exc) from None
        return batch, True

    def retrieve(self, batch_id: str) -> Batch:
        """The batch as it is now."""
        return self._sdk.batches.retrieve(batch_id)

    def cancel(self, batch_id: str) -> Batch:
        """Ask the API to cancel the batch (it goes ``cancelling``, then ``cancelled``); finished rows are kept."""
        return self._sdk.batches.cancel(batch_id)

    def wait(
        self,
        batch_id: str,
        *,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        max_wait: float = 25 * 3600.0,
        on_poll: Callable[[Batch], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Batch:
        """Poll until the batch is finished, waiting longer between polls (x1.5, at most ``max_poll_interval``).

        Raises:
            BatchTimeoutError: Still running after ``max_wait`` seconds; the batch is left running.
        """
        started = time.monotonic()
        interval = poll_interval
        while True:
            batch = self.retrieve(batch_id)
            if on_poll is not None:
                on_poll(batch)
            if batch.status in FINISHED_STATUSES:
                return batch
            waited = time.monotonic() - started
            if waited + interval > max_wait:
                raise BatchTimeoutError(
                    f"batch {batch_id} is still {batch.status} after {waited:.0f} s (max_wait {max_wait:.0f} s); it "
                    "is left running, and a rerun of the same flow run re-attaches to it",
                    batch_id=batch_id,
                    status=batch.status,
                )
            sleep(interval)
            interval = min(interval * 1.5, max_poll_interval)

    def rows(self, batch: Batch, batch_input: BatchInput, *, output_type: Any = None) -> list[BatchRow]:
        """Every step's row, in the input's order: checked answers, failed rows, and rows the batch never ran.

        Raises:
            BatchError: The batch ended ``failed`` (its input did not validate): the API's errors are named.
        """
        if batch.status == "failed":
            raise BatchError(f"batch {batch.id} failed: {_errors_of(batch)}", batch_id=batch.id, status=batch.status)
        spec = check_output_options(output_type, 0, None)
        pricing = batch_pricing(self.settings.pricing)
        read: dict[str, BatchRow] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for line in self._sdk.files.content(file_id).content.splitlines():
                if line.strip():
                    row = read_batch_row(
                        line,
                        api=batch_input.api,
                        model=self.model,
                        pricing=pricing,
                        metadata=batch_input.metadata,
                        stored=batch_input.stored,
                        output=spec,
                    )
                    read.setdefault(row.custom_id, row)
        not_run = IncidentClass.BATCH_CANCELLED if batch.status == "cancelled" else IncidentClass.BATCH_EXPIRED
        return [
            read.get(custom_id)
            or BatchRow(
                custom_id,
                None,
                BatchRowError(
                    f"{custom_id}: no row in the output or error file of batch {batch.id} ({batch.status})",
                    custom_id=custom_id,
                    incident_class=not_run if batch.status in ("cancelled", "expired") else IncidentClass.UNKNOWN,
                    attempts=0,
                ),
            )
            for custom_id in batch_input.custom_ids
        ]


def _refused(what: str, error: openai.APIStatusError) -> BatchError:
    detail = error.body.get("message") if isinstance(error.body, dict) else None
    return BatchError(
        f"{what}: HTTP {error.status_code}: {redact(str(detail or error.message))}",
        request_id=error.request_id,
        http_status=error.status_code,
        attempts=1,
    )


def _errors_of(batch: Batch) -> str:
    errors = batch.errors.data if batch.errors is not None and batch.errors.data else []
    if not errors:
        return "the API gave no reason"
    shown = [
        f"line {error.line}: {error.message}" if error.line is not None else str(error.message) for error in errors[:5]
    ]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return redact("; ".join(shown) + more)

"""The Files API in the fake OpenAI server: upload, metadata, content and deletion, held in memory.

``POST /v1/files`` takes ``multipart/form-data`` (``file``, ``purpose``) as the SDK's ``files.create``
sends it and answers an ``OpenAIFile``; ``GET /v1/files/{id}`` answers it again, ``GET
/v1/files/{id}/content`` the bytes as uploaded, ``DELETE /v1/files/{id}`` forgets them. The batches
(``_batches``) read their input files here and store their output and error files here. A test reaches
the store as ``server.files`` (:class:`FileStore`), e.g. to add a file without uploading it.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from email.message import Message
from typing import Any

from arcanos_flows.testing._errors import error_body
from arcanos_flows.testing._http import dump_json
from arcanos_flows.testing._routes import Call, Route

__all__ = [
    "FILE_PURPOSES",
    "MAX_BATCH_FILE_BYTES",
    "ROUTES",
    "FileStore",
    "StoredFile",
    "file_not_found",
    "parse_multipart",
]

MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024
"""The largest batch input file the API takes (200 MB); :attr:`FileStore.max_batch_bytes` starts at it."""

FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
"""The purposes an upload may name (the API itself names its batch outputs ``batch_output``)."""

_FILE_ID = r"(?P<file_id>[^/]+)"


@dataclass(frozen=True)
class StoredFile:
    """A file the fake server holds.

    Attributes:
        id: ``file-<n>``, ``n`` counting the store's files from 1.
        filename: The name it was uploaded under.
        purpose: ``batch``, ``batch_output``, ...
        data: Its bytes.
        created_at: Unix time of the upload.

    Examples:
        >>> StoredFile("file-1", "in.jsonl", "batch", b"{}", 0).object()["bytes"]
        2
    """

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def object(self) -> dict[str, Any]:
        """Return the ``OpenAIFile`` the API answers for this file (no ``expires_at``: it never expires)."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


class FileStore:
    r"""The files of a fake server, in memory (``server.files``); safe to use from any thread.

    Examples:
        >>> store = FileStore()
        >>> stored = store.add(b'{"custom_id": "a"}\n', filename="in.jsonl")
        >>> stored.id, stored.purpose, store.get(stored.id) is stored
        ('file-1', 'batch', True)
        >>> store.delete(stored.id), store.get(stored.id)
        (True, None)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}
        self._counter = 0
        self._max_batch_bytes = MAX_BATCH_FILE_BYTES

    @property
    def max_batch_bytes(self) -> int:
        """The size limit of a ``batch`` file, checked at upload and when a batch validates (settable)."""
        with self._lock:
            return self._max_batch_bytes

    @max_batch_bytes.setter
    def max_batch_bytes(self, size: int) -> None:
        with self._lock:
            self._max_batch_bytes = size

    @property
    def ids(self) -> list[str]:
        """The ids of the files held, oldest first."""
        with self._lock:
            return list(self._files)

    def add(self, data: bytes, *, filename: str = "input.jsonl", purpose: str = "batch") -> StoredFile:
        """Store a file as if it had been uploaded (no checks).

        Args:
            data: Its bytes.
            filename: Its name.
            purpose: Its purpose.

        Returns:
            The stored file.
        """
        with self._lock:
            self._counter += 1
            stored = StoredFile(f"file-{self._counter}", filename, purpose, data, int(time.time()))
            self._files[stored.id] = stored
            return stored

    def get(self, file_id: str) -> StoredFile | None:
        """Return the file with this id, or ``None``."""
        with self._lock:
            return self._files.get(file_id)

    def delete(self, file_id: str) -> bool:
        """Forget a file; return whether there was one."""
        with self._lock:
            return self._files.pop(file_id, None) is not None

    def clear(self) -> None:
        """Forget every file (ids keep counting)."""
        with self._lock:
            self._files.clear()


def parse_multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]] | None:
    r"""Return the fields of a ``multipart/form-data`` body: name to (filename or ``None``, bytes).

    Args:
        content_type: The request's ``Content-Type`` (it carries the boundary).
        raw: The body.

    Returns:
        The fields, or ``None`` when the body is not ``multipart/form-data``.

    Examples:
        >>> body = (
        ...     b"--xx\r\n"
        ...     b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        ...     b"--xx\r\n"
        ...     b'Content-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        ...     b"Content-Type: application/octet-stream\r\n\r\n{}\n\r\n"
        ...     b"--xx--\r\n"
        ... )
        >>> parse_multipart("multipart/form-data; boundary=xx", body)
        {'purpose': (None, b'batch'), 'file': ('in.jsonl', b'{}\n')}
        >>> parse_multipart("application/json", b"{}") is None
        True
    """
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        return None
    # A delimiter is CRLF "--" boundary; the first one may open the body, hence the CRLF put in front.
    parts = (b"\r\n" + raw).split(b"\r\n--" + boundary.encode("latin-1"))
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in parts[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, _, data = part.partition(b"\r\n\r\n")
        disposition = Message()
        for line in head.split(b"\r\n"):
            name, colon, value = line.decode("utf-8", "replace").partition(":")
            if colon and name.strip().lower() == "content-disposition":
                disposition["content-disposition"] = value.strip()
        field = disposition.get_param("name", header="content-disposition")
        if isinstance(field, str):
            fields[field] = (disposition.get_filename(), data)
    return fields


def file_not_found(file_id: str) -> tuple[int, bytes]:
    """Return the 404 the API answers for an unknown file id.

    Examples:
        >>> file_not_found("file-9")[0]
        404
    """
    return 404, error_body(f"No such File object: {file_id}", "invalid_request_error", None, param="id")


def _store(call: Call) -> FileStore:
    store = getattr(call.server, "files", None)
    if not isinstance(store, FileStore):
        raise TypeError(f"{type(call.server).__name__} has no FileStore at .files")
    return store


def _missing(param: str) -> tuple[int, bytes]:
    message = f"Missing required parameter: '{param}'."
    return 400, error_body(message, "invalid_request_error", "missing_required_parameter", param=param)


def _upload(call: Call) -> tuple[int, bytes]:
    store = _store(call)
    fields = parse_multipart(call.request.headers.get("content-type", ""), call.request.body)
    if fields is None:
        message = "Invalid request: expected a multipart/form-data body with 'file' and 'purpose'."
        return 400, error_body(message, "invalid_request_error", None)
    if "file" not in fields or fields["file"][0] is None:
        return _missing("file")
    if "purpose" not in fields:
        return _missing("purpose")
    purpose = fields["purpose"][1].decode("utf-8", "replace")
    if purpose not in FILE_PURPOSES:
        supported = ", ".join(f"'{name}'" for name in sorted(FILE_PURPOSES))
        message = f"Invalid value: '{purpose}'. Supported values are: {supported}."
        return 400, error_body(message, "invalid_request_error", "invalid_value", param="purpose")
    filename, data = fields["file"]
    limit = store.max_batch_bytes
    if purpose == "batch" and len(data) > limit:
        message = f"File is too large: {len(data)} bytes, more than the {limit} bytes a batch input file may have."
        return 400, error_body(message, "invalid_request_error", "file_too_large", param="file")
    stored = store.add(data, filename=filename or "file", purpose=purpose)
    return call.reply.status, dump_json(stored.object())


def _retrieve(call: Call) -> tuple[int, bytes]:
    stored = _store(call).get(call.params["file_id"])
    if stored is None:
        return file_not_found(call.params["file_id"])
    return call.reply.status, dump_json(stored.object())


def _content(call: Call) -> tuple[int, bytes]:
    stored = _store(call).get(call.params["file_id"])
    if stored is None:
        return file_not_found(call.params["file_id"])
    return call.reply.status, stored.data


def _delete(call: Call) -> tuple[int, bytes]:
    file_id = call.params["file_id"]
    if not _store(call).delete(file_id):
        return file_not_found(file_id)
    return call.reply.status, dump_json({"id": file_id, "object": "file", "deleted": True})


ROUTES: tuple[Route, ...] = (
    Route("POST", re.escape("/v1/files"), _upload),
    Route("GET", rf"/v1/files/{_FILE_ID}/content", _content),
    Route("GET", rf"/v1/files/{_FILE_ID}", _retrieve),
    Route("DELETE", rf"/v1/files/{_FILE_ID}", _delete),
)
"""Upload, metadata, content and deletion of a file."""

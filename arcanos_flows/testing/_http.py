"""Shared plumbing of the test servers: a quiet keep-alive HTTP server that runs in a background thread.

Both doubles need the same things from ``http.server``, none of which are its defaults: HTTP/1.1
keep-alive with an exact ``Content-Length`` on every answer, no Nagle delay, no tracebacks when a
client hangs up, and a ``stop()`` that really closes every socket at once, so a test that stops a
server sees refused connections rather than a hung keep-alive pool.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar

__all__ = [
    "BackgroundServer",
    "QuietHTTPServer",
    "QuietHandler",
    "dump_json",
    "format_seconds",
    "format_url_host",
    "parse_json",
]

_log = logging.getLogger("arcanos_flows.testing")

_BackgroundServerT = TypeVar("_BackgroundServerT", bound="BackgroundServer")


def format_url_host(host: str) -> str:
    """Return ``host`` as it must appear in a URL (IPv6 literals get brackets).

    Args:
        host: A host name or IP literal.

    Returns:
        The host, bracketed when it is an IPv6 literal.

    Examples:
        >>> format_url_host("::1"), format_url_host("127.0.0.1")
        ('[::1]', '127.0.0.1')
    """
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def parse_json(raw: bytes) -> Any:
    """Parse a request body as JSON.

    Args:
        raw: The body bytes.

    Returns:
        The parsed value, or ``None`` when the body is empty or not JSON.

    Examples:
        >>> parse_json(b'{"a": 1}'), parse_json(b"<html>"), parse_json(b"")
        ({'a': 1}, None, None)
    """
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def dump_json(value: Any) -> bytes:
    """Encode a response body as UTF-8 JSON, non-ASCII text kept as is (as the real API sends it).

    Args:
        value: A JSON-serialisable value.

    Returns:
        The body bytes.

    Examples:
        >>> dump_json({"ok": True, "error": None})
        b'{"ok": true, "error": null}'
    """
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def format_seconds(seconds: float) -> str:
    """Format seconds for a ``Retry-After`` header (whole numbers without a fraction).

    Args:
        seconds: The delay.

    Returns:
        The header value.

    Examples:
        >>> format_seconds(2.0), format_seconds(0.5)
        ('2', '0.5')
    """
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class QuietHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that tracks its connections so it can close them all on stop.

    Attributes:
        owner: The test double the handlers serve (read by handlers through ``self.server.owner``).
        stopping: Set when the server is being stopped; handlers sleep on it so delays end at once.

    Examples:
        >>> server = QuietHTTPServer(("127.0.0.1", 0), QuietHandler, owner=None)
        >>> server.server_address[1] > 0
        True
        >>> server.server_close()
    """

    daemon_threads = True
    allow_reuse_address = True
    # The stdlib backlog (5) overflows when a few dozen clients connect at once: the kernel drops SYNs and each
    # client waits a second to retry, which a fan-out test or benchmark would measure instead of the client.
    request_queue_size = 256
    # Handler threads are daemons that end once their socket is shut down; joining them is pointless.
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler_class: type[BaseHTTPRequestHandler], *, owner: Any) -> None:
        self.owner = owner
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler_class)

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse-DNS lookup of the host, which can stall for seconds."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Remember the connection, then serve it in a new daemon thread."""
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection, then close it."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log at debug level instead of printing a traceback: clients hanging up is normal here."""
        _log.debug("error while serving %s", client_address, exc_info=True)

    def close_connections(self) -> None:
        """Shut down every open connection; blocked handler threads see end-of-stream and exit."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            # Only shutdown(): the handler thread owns the descriptor and closes it itself, so a
            # number reused by another socket in the meantime is never closed by mistake.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class QuietHandler(BaseHTTPRequestHandler):
    """Request handler base: HTTP/1.1 keep-alive, no Nagle delay, no logging, exact ``Content-Length``.

    Examples:
        >>> QuietHandler.protocol_version, QuietHandler.disable_nagle_algorithm
        ('HTTP/1.1', True)
    """

    server: QuietHTTPServer
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY the body segment waits for the client's delayed ACK: ~40 ms per response.
    disable_nagle_algorithm = True
    # Idle keep-alive connections are closed eventually even if nobody stops the server.
    timeout = 60.0

    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing: test output stays readable."""

    def read_body(self) -> bytes:
        """Read the whole request body (``Content-Length`` or chunked); empty when there is none.

        Returns:
            The body bytes.
        """
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_line = self.rfile.readline(65537)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Trailer section: header lines until the blank line that ends the message.
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def lowercase_headers(self) -> dict[str, str]:
        """Return the request headers with lower-cased names (a repeated header keeps its last value)."""
        return {name.lower(): value for name, value in self.headers.items()}

    def send_payload(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str | None = "application/json",
        headers: Mapping[str, str] | None = None,
        content_length: int | None = None,
        close_delimited: bool = False,
    ) -> None:
        """Send a complete response with an exact ``Content-Length`` (unless told to lie or omit it).

        Args:
            status: HTTP status code.
            body: Body bytes (dropped for statuses that cannot carry one, such as 204).
            content_type: ``Content-Type`` header, or ``None`` for none.
            headers: Extra headers; they replace same-named defaults (except ``Content-Length``).
            content_length: ``Content-Length`` to announce instead of the body's real length (a lying
                server); the whole body is still written, and when it is shorter than announced the
                connection is closed after it (the server hangs up mid-body).
            close_delimited: Announce no length at all: the body ends when the connection closes.
        """
        bodiless = status in (204, 304) or status < 200
        # Keyed by lower-cased name so an extra header replaces a default whatever its spelling.
        merged: dict[str, tuple[str, str]] = {}
        if content_type is not None and not bodiless:
            merged["content-type"] = ("Content-Type", content_type)
        for name, value in (headers or {}).items():
            if name.lower() != "content-length":
                merged[name.lower()] = (name, value)
        if close_delimited:
            merged["connection"] = ("Connection", "close")
            self.close_connection = True
        elif content_length is not None and content_length > len(body):
            self.close_connection = True
        self.send_response(status)
        for name, value in merged.values():
            self.send_header(name, value)
        if not bodiless and not close_delimited:
            self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        self.end_headers()
        if body and not bodiless and self.command != "HEAD":
            self.wfile.write(body)

    def drop_connection(self) -> None:
        """Close the connection without answering: the client sees the server hang up mid-request."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def pause(self, seconds: float) -> bool:
        """Sleep, waking early if the server is stopping.

        Args:
            seconds: How long to wait.

        Returns:
            ``True`` when the full delay elapsed, ``False`` when the server is stopping.
        """
        if seconds <= 0:
            return not self.server.stopping.is_set()
        return not self.server.stopping.wait(seconds)


class BackgroundServer:
    """Runs a :class:`QuietHTTPServer` in a daemon thread; base class of the test doubles.

    Subclasses set :attr:`handler_class`. Binding port 0 picks a free port; once bound, the port is
    kept, so :meth:`stop` followed by :meth:`start` listens on the same port again.

    Examples:
        >>> class Echo(BackgroundServer):
        ...     handler_class = QuietHandler
        >>> with Echo() as server:
        ...     server.port > 0
        True
    """

    handler_class: type[QuietHandler] = QuietHandler

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._requested_port = port
        self._bound_port: int | None = None
        self._server: QuietHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle_lock = threading.Lock()

    @property
    def host(self) -> str:
        """The host the server binds."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (kept across :meth:`stop`/:meth:`start`).

        Raises:
            RuntimeError: The server was never started.
        """
        if self._bound_port is None:
            raise RuntimeError(f"{type(self).__name__} has not been started")
        return self._bound_port

    @property
    def origin(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{format_url_host(self._host)}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is currently accepting connections."""
        return self._server is not None

    def start(self: _BackgroundServerT) -> _BackgroundServerT:
        """Start listening (no-op when already running).

        Returns:
            The server itself, for chaining.
        """
        with self._lifecycle_lock:
            if self._server is not None:
                return self
            port = self._bound_port if self._bound_port is not None else self._requested_port
            server = QuietHTTPServer((self._host, port), self.handler_class, owner=self)
            self._bound_port = int(server.server_address[1])
            thread = threading.Thread(
                target=server.serve_forever,
                # A short poll interval keeps stop() fast: shutdown() waits for the loop to notice.
                kwargs={"poll_interval": 0.05},
                name=f"{type(self).__name__}:{self._bound_port}",
                daemon=True,
            )
            self._server, self._thread = server, thread
            thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close every open connection; safe to call more than once."""
        with self._lifecycle_lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return
            server.stopping.set()
            server.shutdown()
            server.server_close()
            server.close_connections()
            if thread is not None:
                thread.join(timeout=1.0)

    def __enter__(self: _BackgroundServerT) -> _BackgroundServerT:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

"""The fake OpenAI server as the bench runs it: its own process, a latency, and counters the bench can read.

``python -m bench._fake_server --latency 0.25 [--rpm 600]`` prints ``READY <base_url>`` and then answers one JSON
line on stdout per command line on stdin: ``stats`` (counters since the last ``reset``) and ``reset``. The counters
are taken where the answers are sent, so they count what reached the server and what it answered (200, 429...),
whatever the client believes.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import threading
import time
from collections import Counter
from typing import Any

from arcanos_flows.testing import FakeOpenAIServer, _http

# The stdlib default (5) overflows when 16+ clients open their connections at once; the kernel then drops SYNs and
# the client retries a second later. A real API server accepts far more; the bench must measure the client, not this.
_http.QuietHTTPServer.request_queue_size = 256

# Keyword names the fake server may give its requests-per-minute limit (the rate-limit mode, issue 5).
RPM_KEYWORDS = ("rpm", "requests_per_minute", "rate_limit_rpm", "rate_limit")


def rpm_keyword() -> str | None:
    """The keyword of :class:`FakeOpenAIServer` that sets a requests-per-minute limit, if it has one."""
    parameters = inspect.signature(FakeOpenAIServer.__init__).parameters
    return next((name for name in RPM_KEYWORDS if name in parameters), None)


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.completions = 0
        self.dropped = 0
        self.first: float | None = None
        self.last: float | None = None
        self.last_answer: float | None = None

    def record(self, status: int, path: str, received: float) -> None:
        now = time.monotonic()
        with self.lock:
            self.statuses[status] += 1
            if path.rstrip("/").endswith(("/chat/completions", "/responses")):
                self.completions += 1
                self.first = received if self.first is None else min(self.first, received)
                self.last = received if self.last is None else max(self.last, received)
                self.last_answer = now

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": sum(self.statuses.values()) + self.dropped,
                "completion_requests": self.completions,
                "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
                "dropped": self.dropped,
                "first_request_at": self.first,
                "last_request_at": self.last,
                "last_answer_at": self.last_answer,
            }


COUNTERS = _Counters()


class _CountingHandler(FakeOpenAIServer.handler_class):  # type: ignore[misc,valid-type]
    def read_body(self) -> bytes:
        # The first thing the fake server does with a request, once its headers are in.
        self._bench_received = time.monotonic()
        return super().read_body()

    def send_payload(self, status: int, *args: Any, **kwargs: Any) -> None:
        COUNTERS.record(status, self.path, getattr(self, "_bench_received", time.monotonic()))
        super().send_payload(status, *args, **kwargs)

    def drop_connection(self) -> None:
        with COUNTERS.lock:
            COUNTERS.dropped += 1
        super().drop_connection()


class BenchOpenAIServer(FakeOpenAIServer):
    """The project's fake server, counting the statuses it answers."""

    handler_class = _CountingHandler

    def clear_requests(self) -> None:
        """Forget the recorded requests (the fake server keeps them all; the bench only needs the counters)."""
        self.clear()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._fake_server")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute before 429 (needs the feature)")
    parser.add_argument("--gateway", choices=["litellm", "azure"], default=None, help="act as this gateway")
    parser.add_argument("--alias", action="append", default=[], metavar="NAME=MODEL", help="a gateway alias")
    parser.add_argument("--batch-delay", type=float, default=None, help="seconds from a batch's creation to its end")
    args = parser.parse_args()
    options: dict[str, Any] = {"latency": args.latency}
    if args.gateway is not None:
        options["gateway"] = args.gateway
        options["aliases"] = dict(alias.split("=", 1) for alias in args.alias)
    if args.batch_delay is not None:
        options["batch_delay"] = args.batch_delay
    if args.rpm is not None:
        keyword = rpm_keyword()
        if keyword is None:
            print("ERROR the fake server has no requests-per-minute mode", flush=True)
            return 2
        options[keyword] = args.rpm
    server = BenchOpenAIServer(**options).start()
    print(f"READY {server.base_url}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "stats":
            print(json.dumps(COUNTERS.snapshot()), flush=True)
        elif command == "reset":
            with COUNTERS.lock:
                COUNTERS.reset()
            server.clear_requests()
            print(json.dumps({"ok": True}), flush=True)
        elif command == "quit":
            break
        else:
            print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

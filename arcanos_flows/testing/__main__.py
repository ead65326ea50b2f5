"""Run a test double as a process: ``python -m arcanos_flows.testing {openai,webhook} [options]``.

The first line on stdout is ``READY <url>`` once the server accepts connections (the OpenAI base
URL, the Azure resource endpoint with ``--gateway azure``, or the webhook delivery URL); the process
then serves until SIGTERM or SIGINT and exits 0.
The webhook receiver logs one JSON line per delivery on stderr. The fake OpenAI server's counters
are at ``GET <origin>/_stats`` (JSON; ``DELETE`` resets them), e.g. for a benchmark in another process.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from arcanos_flows.testing._gateways import GATEWAYS
from arcanos_flows.testing.openai_server import FakeOpenAIServer
from arcanos_flows.testing.webhook_receiver import Delivery, WebhookReceiver

__all__ = ["main"]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _alias(text: str) -> tuple[str, str]:
    name, equals, model = text.partition("=")
    if not equals or not name or not model:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=MODEL")
    return name, model


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m arcanos_flows.testing",
        description="Run an arcanos-flows test double until SIGTERM/SIGINT.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    openai = commands.add_parser("openai", help="a fake OpenAI API (Chat Completions, Responses, Models)")
    openai.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    openai.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default: 0)")
    openai.add_argument("--latency", type=float, default=0.0, help="seconds added before every answer")
    openai.add_argument("--model-override", default=None, metavar="NAME", help="model that answers every completion")
    openai.add_argument(
        "--rpm",
        type=_positive,
        default=None,
        metavar="N",
        help="answer 429 rate_limit_exceeded beyond N API requests per minute (a token bucket)",
    )
    openai.add_argument(
        "--burst", type=_positive, default=None, metavar="N", help="requests let through at once (default: rpm/60)"
    )
    openai.add_argument(
        "--gateway",
        choices=GATEWAYS,
        default=None,
        help="act as a LiteLLM proxy (x-litellm-* headers) or as Azure OpenAI (its paths; READY prints the endpoint)",
    )
    openai.add_argument(
        "--alias",
        action="append",
        type=_alias,
        default=[],
        metavar="NAME=MODEL",
        help="with --gateway, the model behind a name requests carry (an alias, an Azure deployment); repeatable",
    )

    webhook = commands.add_parser("webhook", help="a webhook receiver that records deliveries")
    webhook.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    webhook.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default: 0)")
    webhook.add_argument("--secret", default=None, help="Standard Webhooks secret (whsec_...) to verify signatures")
    webhook.add_argument("--path", default="/incidents", help="path of the printed URL (any path is accepted)")
    return parser


def _log_delivery(delivery: Delivery) -> None:
    line = {
        "status": delivery.status,
        "path": delivery.path,
        "signature_valid": delivery.signature_valid,
        "webhook_id": delivery.headers.get("webhook-id"),
        "bytes": len(delivery.body),
    }
    print(json.dumps(line), file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Start the chosen server, announce it, and serve until SIGTERM or SIGINT.

    Args:
        argv: Command-line arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 after a clean shutdown.
    """
    args = _parser().parse_args(argv)
    server: FakeOpenAIServer | WebhookReceiver
    if args.command == "openai":
        if args.burst is not None and args.rpm is None:
            print("error: --burst needs --rpm", file=sys.stderr)
            return 2
        try:
            server = FakeOpenAIServer(
                host=args.host,
                port=args.port,
                latency=args.latency,
                model_override=args.model_override,
                requests_per_minute=args.rpm,
                burst=args.burst,
                gateway=args.gateway,
                aliases=dict(args.alias),
            )
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        try:
            server = WebhookReceiver(
                args.secret, host=args.host, port=args.port, path=args.path, on_delivery=_log_delivery
            )
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    stop = threading.Event()

    def _request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before starting, so a signal sent right after READY is never lost to the default action.
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    try:
        server.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        if isinstance(server, FakeOpenAIServer):
            # Azure's OPENAI_BASE_URL is the resource endpoint; the client adds /openai/... itself.
            url = server.origin if server.gateway == "azure" else server.base_url
        else:
            url = server.url
        print(f"READY {url}", flush=True)
        # A timeout keeps the main thread waking up, so signal handlers run promptly everywhere.
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`omnidesk serve`: load a bundle once and answer chat completions over HTTP (app/serve/).

It listens on 127.0.0.1 unless told otherwise; any other address needs an API key, since anyone who
reaches the port could use the model. TLS is left to what sits in front (docs/serving.md: an SSH
tunnel or a reverse proxy). Each request's shape (never its content, unless --log-content) is logged
on stderr and in the log file.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from app.cli.talk import plan_choice, say_where_speech_runs
from app.serve.request import RequestLimits
from app.serve.server import Engine, ServeOptions, create_app
from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.files.store import resolve
from model.pipeline import Conversation
from model.prompt_layout import SPEECH_SYSTEM_PROMPT
from model.thinker_types import ThinkerOptions

DEFAULT_VOICE = "Chelsie"


def serve_options(args: argparse.Namespace, model: str) -> ServeOptions:
    """The server's options from the command line, checked: OmnideskError for a bad one."""
    if not is_loopback(args.host) and not args.api_key:
        raise OmnideskError(
            f"--host {args.host} lets other computers in: give --api-key KEY (or set OMNIDESK_API_KEY), "
            "and put TLS in front (docs/serving.md)"
        )
    if min(args.max_waiting, args.max_media) < 0 or min(args.max_request_mb, args.max_codes) < 1:
        raise OmnideskError(
            "--max-waiting and --max-media must be 0 or more, --max-request-mb and --max-codes 1 or more"
        )
    if args.max_media_seconds <= 0:
        raise OmnideskError("--max-media-seconds must be more than 0")
    return ServeOptions(
        model=model,
        api_key=args.api_key or None,
        max_body_bytes=args.max_request_mb << 20,
        limits=RequestLimits(args.max_media, args.max_media_seconds, args.max_codes),
        max_waiting=args.max_waiting,
        log_content=args.log_content,
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    root = resolve(args.models)
    options = serve_options(args, root.name)  # before the model loads: a bad option costs nothing
    conversation = Conversation.planned(
        Bundle.open(root),
        plan_choice(args),
        ThinkerOptions(n_ctx=args.context, n_gpu_layers=args.gpu_layers, n_threads=args.threads),
        system=SPEECH_SYSTEM_PROMPT,
    )
    say_where_speech_runs(conversation, conversation.prepare(DEFAULT_VOICE))
    requests = logging.StreamHandler(sys.stderr)
    requests.setFormatter(logging.Formatter("omnidesk: %(message)s"))
    logging.getLogger("app.serve").addHandler(requests)
    logging.getLogger("app.serve").setLevel(logging.INFO)
    print(
        f"omnidesk: serving {options.model} at http://{args.host}:{args.port}/v1 "
        f"({'API key required' if options.api_key else 'no API key'}); Ctrl-C stops",
        file=sys.stderr,
    )
    app = create_app(Engine(conversation, options))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    conversation.close()
    return 0

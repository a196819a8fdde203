"""A real `omnidesk serve` front (uvicorn, a loopback socket) run on a thread of the test process, so that
tests can look at its engine: the `engine` and `url` fixtures (tests/app/conftest.py makes them known),
the turn options a greedy request asks for, and a small reader of server-sent events."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx2
import pytest
import uvicorn
from starlette.applications import Starlette

from app.serve.request import GREEDY_TALKER, GREEDY_THINKER, RequestLimits
from app.serve.server import Engine, ServeOptions, create_app
from model.files.bundle import Bundle
from model.pipeline import Conversation, TurnOptions
from model.placement import PlanChoice
from model.talker import SpeechOptions
from model.thinker_types import ThinkerOptions

START_TIMEOUT_S = 30
SEED, MAX_TOKENS, MAX_CODES = 5, 10, 60
WAVEFORM_TOLERANCE = 1e-4  # 16-bit PCM rounds by up to 1.5e-5
STAGE_THREADS = {"thinker", "talker", "dit", "vocoder"}  # model/pipeline/stages.py's thread names
TIMEOUT_S = 120  # a bound on a failing test's wait


@contextlib.contextmanager
def serving(engine: Engine | Starlette) -> Iterator[str]:
    """The server's base URL (http://127.0.0.1:PORT) while it runs (an engine behind `create_app`, or
    another app: a hostile server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(engine) if isinstance(engine, Engine) else engine
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(START_TIMEOUT_S * 100):
        if server.started:
            started.set()
            break
        started.wait(0.01)
    assert started.is_set(), "the server did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)
        sock.close()


def chunks(response: httpx2.Response) -> Iterator[Any]:
    """The JSON of each server-sent event of a streamed reply, up to `[DONE]`."""
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        data = line.removeprefix("data: ")
        if data == "[DONE]":
            return
        yield json.loads(data)


def streamed(response: httpx2.Response) -> tuple[str, bytes, list[Any]]:
    """A streamed reply's text, its speech's PCM bytes (pieces decoded one by one) and every chunk."""
    every = list(chunks(response))
    text, pcm = "", b""
    for chunk in every:
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
            pcm += base64.b64decode(choice["delta"].get("audio", {}).get("data", ""))
    return text, pcm, every


def greedy_options(speak: bool = True, max_tokens: int = MAX_TOKENS) -> TurnOptions:
    """What a request with temperature 0 and SEED asks for, written out as `omnidesk ask --greedy` runs it."""
    return TurnOptions(
        speak=speak,
        max_tokens=max_tokens,
        sampling=replace(GREEDY_THINKER, seed=SEED),
        speech=SpeechOptions(voice="Chelsie", sampling=GREEDY_TALKER, max_codes=MAX_CODES),
        seed=SEED,
    )


def conversation(bundle: Bundle) -> Conversation:
    """A conversation on the Exact speech path, the one parity holds to (Fast's bfloat16 windows may
    round differently as the codes arrive in other groups: two like turns of 82 s once differed by 1e-2)."""
    made = Conversation.planned(bundle, PlanChoice(quality="exact"), ThinkerOptions(n_ctx=2048))
    made.prepare("Chelsie")
    return made


@pytest.fixture(scope="module")
def engine(tiny_bundle: Bundle) -> Engine:
    options = ServeOptions(
        model="tiny",
        max_body_bytes=2 << 20,
        limits=RequestLimits(max_parts=2, max_seconds=10, max_codes=MAX_CODES),
        max_waiting=1,
    )
    return Engine(conversation(tiny_bundle), options)


@pytest.fixture(scope="module")
def url(engine: Engine):
    with serving(engine) as base:
        yield base


def wait_for(condition, timeout_s: float = TIMEOUT_S) -> None:
    """Poll `condition` until it holds (a bound on a failing test's wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)

"""The app as a client of a real `omnidesk serve` (tiny model, loopback): `ask --server` prints and speaks
what `ask` does locally; Stop ends the turn on the server; a server that refuses or is not there ends
the turn in one line and the conversation goes on."""

from __future__ import annotations

import threading
import wave
from dataclasses import replace
from pathlib import Path

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from app.remote.conversation import RemoteConversation
from app.serve.server import Engine
from model.files.bundle import Bundle
from model.pipeline import TextDelta, TurnFinished
from tests.app.cli.test_main import omnidesk
from tests.app.serve.live import (
    MAX_CODES,
    MAX_TOKENS,
    SEED,
    STAGE_THREADS,
    WAVEFORM_TOLERANCE,
    greedy_options,
    serving,
    wait_for,
)
from tests.helpers import max_abs_error


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as f:
        return np.frombuffer(f.readframes(f.getnframes()), "<i2").astype(np.float64) / 32767.0


def test_ask_through_the_server_prints_and_speaks_the_local_reply(url, tiny_bundle: Bundle, tmp_path):
    common = ["Say hello.", "--greedy", "--seed", SEED, "--max-tokens", MAX_TOKENS, "--max-codes", MAX_CODES]
    remote = omnidesk("ask", "--server", url, *common, "--out", tmp_path / "remote.wav")
    local = omnidesk(
        "ask",
        "--models",
        tiny_bundle.root,
        "--speech-quality",
        "exact",
        *common,
        "--out",
        tmp_path / "local.wav",
    )
    print(remote.stderr, local.stderr)
    assert remote.returncode == local.returncode == 0
    assert remote.stdout == local.stdout and remote.stdout.strip()
    assert f"the model runs at {url}/v1" in remote.stderr
    heard, expected = read_wav(tmp_path / "remote.wav"), read_wav(tmp_path / "local.wav")
    assert max_abs_error("speech through the server", heard, expected) <= WAVEFORM_TOLERANCE


def test_stop_ends_the_turn_on_the_server_and_the_conversation_goes_on(url, engine):
    conversation = RemoteConversation(url)
    engine.finished = None
    finished = None
    for event in conversation.turn("Talk for long.", greedy_options(max_tokens=1500)):
        if isinstance(event, TextDelta):
            conversation.cancel()  # as the window's Stop, from whichever thread
        if isinstance(event, TurnFinished):
            finished = event
    assert finished is not None and finished.reason == "cancelled"
    wait_for(lambda: engine.finished is not None)
    assert engine.finished.reason == "cancelled"
    assert not {t.name for t in threading.enumerate() if t.is_alive()} & STAGE_THREADS
    last = list(conversation.turn("Hi", greedy_options(speak=False)))[-1]
    assert last.reason in ("end", "length") and len(conversation.history) == 2
    conversation.close()


def test_a_wrong_key_or_no_server_is_one_line_and_the_conversation_goes_on(engine, tmp_path):
    with serving(Engine(engine.conversation, replace(engine.options, api_key="right"))) as keyed:
        conversation = RemoteConversation(keyed, api_key="wrong", model="tiny")
        finished = list(conversation.turn("Hi", greedy_options(speak=False)))[-1]
        assert (
            finished.reason == "error" and "401" in finished.error and "check the API key" in finished.error
        )
        conversation.close()
    gone = RemoteConversation(keyed, model="tiny")  # the server has stopped: nothing listens there
    finished = list(gone.turn("Hi", greedy_options(speak=False)))[-1]
    assert finished.reason == "error" and "cannot reach" in finished.error
    assert "\n" not in finished.error
    result = omnidesk("ask", "--server", "ftp://example", "Hi")
    assert (
        result.returncode != 0
        and "not a server's address" in result.stderr
        and "Traceback" not in result.stderr
    )


def hostile_server() -> Starlette:
    """An HTML error page where a reply should be, and a stream that stops sending."""

    async def proxy_error(request: Request) -> Response:
        return HTMLResponse("<html><body><h1>502 Bad Gateway</h1></body></html>", 502)

    async def stalls(request: Request) -> Response:
        async def first_then_nothing():
            yield b'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n'
            await anyio.sleep_forever()

        return StreamingResponse(first_then_nothing(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/html/v1/chat/completions", proxy_error, methods=["POST"]),
            Route("/stall/v1/chat/completions", stalls, methods=["POST"]),
        ]
    )


def test_a_hostile_server_ends_the_turn_in_one_line_that_says_what_to_check():
    with serving(hostile_server()) as base:
        html = RemoteConversation(f"{base}/html/v1", model="any")
        finished = list(html.turn("Hi", greedy_options(speak=False)))[-1]
        assert finished.reason == "error" and "502" in finished.error and "not JSON" in finished.error
        stalled = RemoteConversation(f"{base}/stall/v1", model="any", read_timeout_s=0.5)
        events = list(stalled.turn("Hi", greedy_options(speak=False)))
        assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel"]
        assert events[-1].reason == "error" and "stopped answering" in events[-1].error
        assert stalled.history == []  # a failed reply is not kept as an answer
        html.close(), stalled.close()


def test_chat_through_the_server_is_the_local_chat(url, tiny_bundle: Bundle):
    """Turn after turn: the server keeps the conversation a client continues (the replies' tokens as they
    were made), so the second reply is the local one too (the tiny model's replies are not even valid
    text, so their text alone could not give their tokens back)."""
    options = ["--text-only", "--greedy", "--max-tokens", 8]  # 8: a first reply its text cannot give back
    lines = "Hi\nAgain please\n"
    remote = omnidesk("chat", "--server", url, *options, stdin=lines)
    local = omnidesk("chat", "--models", tiny_bundle.root, *options, stdin=lines)
    assert remote.returncode == local.returncode == 0
    assert remote.stdout == local.stdout and remote.stdout.count("omnidesk> ") == 2

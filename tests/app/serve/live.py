"""A real `omnidesk serve` front (uvicorn, a loopback socket) run on a thread of the test process, so that
tests can look at its engine, and a small streaming reader of its server-sent events."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx2
import numpy as np
import uvicorn

from app.serve.server import Engine, create_app

START_TIMEOUT_S = 30


@contextlib.contextmanager
def serving(engine: Engine) -> Iterator[str]:
    """The server's base URL (http://127.0.0.1:PORT) while it runs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(engine), log_level="warning", access_log=False)
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


def samples(pcm: bytes) -> np.ndarray:
    """16-bit PCM as floats in [-1, 1] (the scale `model.wav_writer.pcm16` writes)."""
    return np.frombuffer(pcm, "<i2").astype(np.float64) / 32767.0

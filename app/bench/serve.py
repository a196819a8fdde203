"""`omnidesk bench serve --models BUNDLE`: first audio through `omnidesk serve` on loopback against the same
turn run in-process, in one run.

Two conversations of the same bundle: one behind a real server (uvicorn on a loopback socket, on a
thread of this process), asked through `RemoteConversation` as `ask --server` asks; the other run
directly. Turns alternate (greedy, the same question, `--turns` of each); each is timed from the call
to the first audio chunk in the caller's hands, with `time.perf_counter`. Then `--turns` long replies are
stopped at their first audio, as the window's Stop does, each timed until the server's turn has ended. The
last line reads `serve: first audio X s through the server, Y s in-process (median of N), overhead Z ms;
Stop ended the server's stages S ms after it (median, ...), load L`.

Threads: the server's event loop and its turn's stages run beside the in-process turns, never at the
same time (each turn ends before the next starts).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import uvicorn

from app.remote.conversation import RemoteConversation
from app.serve.request import GREEDY_TALKER, GREEDY_THINKER, RequestLimits
from app.serve.server import Engine, ServeOptions, create_app
from model.files.bundle import Bundle
from model.files.store import resolve
from model.hardware import cpu_name
from model.pipeline import AudioChunk, Conversation, Event, TurnOptions
from model.talker import SpeechOptions

QUESTION = "Say hello."
STOP_TOKENS = 1000  # a reply long enough to be stopped mid-way


def first_audio_s(events: Iterator[Event]) -> float:
    """Seconds from now to the first audio chunk of `events` (which are then run to their end)."""
    start, first = time.perf_counter(), None
    for event in events:
        if first is None and isinstance(event, AudioChunk):
            first = time.perf_counter() - start
    if first is None:
        raise SystemExit("the turn made no speech: raise --max-codes")
    return first


def stop_s(remote: RemoteConversation, engine: Engine, options: TurnOptions) -> float:
    """Seconds from Stop (`cancel` at the first audio chunk, as the window's Stop) until the server's turn
    has ended, every stage joined (its TurnFinished comes after `TurnStages.stop`)."""
    engine.finished, stopped = None, 0.0
    for event in remote.turn(QUESTION, options):
        if isinstance(event, AudioChunk) and not stopped:
            stopped = time.perf_counter()
            remote.cancel()
    while engine.finished is None:
        time.sleep(0.001)
    ended = time.perf_counter() - stopped
    if not stopped or engine.finished.reason != "cancelled":
        raise SystemExit(f"the turn was not stopped mid-reply ({engine.finished.reason}): raise STOP_TOKENS")
    return ended


def rounded(seconds: list[float]) -> list[float]:
    return [round(s, 4) for s in seconds]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnidesk bench serve", description=__doc__)
    parser.add_argument("--models", required=True, help="a bundle (name or folder)")
    parser.add_argument("--turns", type=int, default=5, help="turns of each kind")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-codes", type=int, default=100)
    args = parser.parse_args(argv)
    bundle = Bundle.open(resolve(args.models))
    options = TurnOptions(
        max_tokens=args.max_tokens,
        sampling=replace(GREEDY_THINKER, seed=0),
        speech=SpeechOptions(sampling=GREEDY_TALKER, max_codes=args.max_codes),
        seed=0,
    )
    served, local = (Conversation.planned(bundle) for _ in range(2))
    for conversation in (served, local):
        conversation.prepare(options.speech.voice)
    limits = RequestLimits(max_codes=args.max_codes)
    engine = Engine(served, ServeOptions("bench", limits=limits))
    server = uvicorn.Server(uvicorn.Config(create_app(engine), log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    remote = RemoteConversation(f"http://127.0.0.1:{sock.getsockname()[1]}", model="bench")
    through, direct = [], []
    for _ in range(args.turns + 1):  # the first of each warms up
        remote.restore([])
        through.append(first_audio_s(remote.turn(QUESTION, options)))
        local.restore([])
        direct.append(first_audio_s(local.turn(QUESTION, options)))
    stops = [stop_s(remote, engine, replace(options, max_tokens=STOP_TOKENS)) for _ in range(args.turns)]
    server.should_exit = True
    thread.join()
    remote_s, local_s = statistics.median(through[1:]), statistics.median(direct[1:])
    print(f"cpu: {cpu_name()}; through the server {rounded(through[1:])}, in-process {rounded(direct[1:])}")
    print(
        f"serve: first audio {remote_s:.4f} s through the server, {local_s:.4f} s in-process (median of "
        f"{args.turns}), overhead {1000 * (remote_s - local_s):.1f} ms; Stop ended the server's stages "
        f"{1000 * statistics.median(stops):.1f} ms after it (median, {rounded(stops)} s), "
        f"load {os.getloadavg()[0]:.1f}"
    )
    return 0

"""`omnidesk serve`'s HTTP front: one `Conversation` behind OpenAI-compatible chat completions.

Routes: `POST /v1/chat/completions` (streamed or whole, text and speech), `GET /v1/models` (the one
model), `GET /health` (no key needed; says whether a turn runs). Built on Starlette, run by uvicorn.

One turn runs at a time (the model has one KV cache); up to `max_waiting` more requests wait for it
in arrival order, and any beyond get 429 with Retry-After. Each request carries the whole conversation
(OpenAI's chat API is stateless): its earlier exchanges are restored as text, its last user message is
the question. A client that goes away (closes the stream, or the connection drops) cancels its turn
at once: `Conversation.cancel`, the window's Stop, ends all stages within a step. Errors found before
any output (a question too long for the context, a failed turn) are HTTP errors; afterwards they end
the stream with an `error` event. Request content (text, media) is logged only with `log_content`.

Threads: uvicorn's event loop runs the handlers; `Conversation.turn`'s iterator, which blocks, is
advanced one event at a time on anyio's worker threads (so a client that reads slowly slows the turn
down through the stages' bounded queues instead of piling replies up in memory); the stages run on
their own threads (model/pipeline/stages.py).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.serve.replies import FINISH_REASONS, PcmPieces, Reply, error_body, event, speech_file
from app.serve.request import ChatRequest, RequestError, RequestLimits, parse_chat_request
from model.pipeline import AudioChunk, Conversation, Event, TextDelta, TurnFinished

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5  # what a refused client is told to wait: a short spoken reply's time on a GPU
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class ServeOptions:
    model: str  # the name clients see (the bundle's folder name)
    api_key: str | None = None  # required as "Authorization: Bearer KEY" when set
    max_body_bytes: int = 64 << 20
    limits: RequestLimits = field(default_factory=RequestLimits)
    max_waiting: int = 2  # requests that wait while a turn runs; more get 429
    log_content: bool = False  # log the questions and replies (else only their sizes)


class TurnGate:
    """One turn at a time, at most `max_waiting` waiting (event loop only)."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self.waiting = 0
        self._lock = anyio.Lock()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def admits(self) -> bool:
        return not self.busy or self.waiting < self.max_waiting

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self._lock.release()


class Engine:
    """The conversation the server runs and its gate; `finished` is the last turn's end (for the log
    and for tests)."""

    def __init__(self, conversation: Conversation, options: ServeOptions) -> None:
        self.conversation = conversation
        self.options = options
        self.gate = TurnGate(options.max_waiting)
        self.voices = {name.lower(): name for name in conversation.voices}
        self.finished: TurnFinished | None = None

    def start(self, request: ChatRequest) -> Iterator[Event]:
        """The request's turn (a generator: nothing runs before its first event is asked for).

        A request that continues the conversation the server holds (the same persona, and earlier
        messages that are its exchanges' texts) keeps those exchanges: their reply tokens as they were
        made and their pictures and recordings, as a local conversation keeps them. Any other starts
        from its messages' texts (a reply's text may not give back the tokens that made it)."""
        conversation = self.conversation
        held = [(exchange.question, exchange.reply_text) for exchange in conversation.history]
        if request.persona != conversation.persona or held != list(request.earlier):
            conversation.persona = request.persona
            conversation.restore(list(request.earlier))
        return conversation.turn(request.question, request.options)


def create_app(engine: Engine) -> Starlette:
    async def completions(request: Request) -> Response:
        if not authorized(request, engine.options.api_key):
            return unauthorized()
        try:
            body = await read_json(request, engine.options.max_body_bytes)
            chat = await anyio.to_thread.run_sync(
                parse_chat_request, body, engine.voices, engine.options.limits
            )
        except RequestError as exc:
            return error_response(exc)
        if chat.question.is_empty:
            return error_response(RequestError("the question is empty: send text, or an image or recording"))
        if not engine.gate.admits():
            return error_response(
                RequestError("the server is busy with other questions; try again shortly", 429),
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        describe(chat, engine.options.log_content)
        return TurnResponse(engine, chat)  # type: ignore[return-value]  # an ASGI app, as a Response is

    async def models(request: Request) -> Response:
        if not authorized(request, engine.options.api_key):
            return unauthorized()
        card = {
            "id": engine.options.model,
            "object": "model",
            "created": 0,
            "owned_by": "omnidesk",
            "voices": sorted(engine.voices.values()),  # not OpenAI's: what `audio.voice` may name
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "busy": engine.gate.busy, "waiting": engine.gate.waiting})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def authorized(request: Request, api_key: str | None) -> bool:
    if api_key is None:
        return True
    given = request.headers.get("authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode())


def unauthorized() -> Response:
    return error_response(
        RequestError("a valid API key is needed: send the header Authorization: Bearer KEY", 401),
        headers={"WWW-Authenticate": "Bearer"},
    )


def error_response(exc: RequestError, headers: dict[str, str] | None = None) -> Response:
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    return JSONResponse(error_body(str(exc), kind, exc.param, exc.code), exc.status, headers)


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, read no further than `limit` bytes (413 beyond)."""
    too_big = RequestError(f"the request is larger than this server takes ({limit >> 20} MB)", 413)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise too_big
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON ({exc})") from None


def describe(chat: ChatRequest, content: bool) -> None:
    """The log line of an admitted request: its shape, and its question only when asked to."""
    media = ", ".join(f"{n} {kind}" for kind, n in chat.media_counts.items() if n) or "no media"
    log.info(
        "request: %d earlier exchanges, %d characters, %s, %s, %s",
        len(chat.earlier),
        len(chat.question.text),
        media,
        "speech " + chat.options.speech.voice if chat.options.speak else "text only",
        "streamed" if chat.stream else "whole",
    )
    if content:
        log.info("question: %r", chat.question.text)


class TurnResponse:
    """The ASGI answer to one admitted request: it waits for its turn, runs it, and streams it or sends it
    whole; meanwhile it listens for the client going away, which cancels the turn (or the wait)."""

    def __init__(self, engine: Engine, chat: ChatRequest) -> None:
        self.engine = engine
        self.chat = chat
        self.reply = Reply(engine.options.model)
        self.gone = False  # the client went away
        self.running = False
        self.headers_sent = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch, receive, group.cancel_scope)
            await self.engine.gate.acquire()
            try:
                await self._answer(send)
            finally:
                self.engine.gate.release()
            group.cancel_scope.cancel()

    async def _watch(self, receive: Receive, waiting: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self.running:
            self.engine.conversation.cancel()
        else:
            waiting.cancel()  # still waiting for the gate: leave the queue

    async def _answer(self, send: Send) -> None:
        engine, chat = self.engine, self.chat
        self.running = True
        events = await anyio.to_thread.run_sync(engine.start, chat)  # (it tokenizes the history)
        pieces, pcm = PcmPieces(), bytearray()
        finished: TurnFinished | None = None
        try:
            while finished is None:
                item = await anyio.to_thread.run_sync(next, events)
                if self.gone:  # also when the cancel came before the turn began (it clears the flag)
                    engine.conversation.cancel()
                if isinstance(item, TurnFinished):
                    finished = item
                elif isinstance(item, TextDelta) and chat.stream:
                    await self._stream(send, self.reply.chunk(self._delta(content=item.text)))
                elif isinstance(item, AudioChunk):
                    if chat.stream:
                        piece = pieces.piece(item.samples)
                        if piece:
                            await self._stream(
                                send, self.reply.chunk(self._delta(**self.reply.audio_delta(piece)))
                            )
                    else:
                        pcm += pieces.piece(item.samples)
        finally:
            if finished is None:  # never leave a turn running: stop it
                engine.conversation.cancel()
            # ... and let it end: it keeps its exchange in the history after its last event
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_drain, events)
        engine.finished = finished
        log.info("turn ended: %s, %d tokens", finished.reason, len(finished.reply_ids))
        if engine.options.log_content:
            log.info("reply: %r", finished.text)
        if chat.stream:
            await self._end_stream(send, finished, pieces.rest())
        else:
            await self._whole(send, finished, bytes(pcm + pieces.rest()))

    def _delta(self, **delta: Any) -> dict[str, Any]:
        if not self.headers_sent:
            delta = {"role": "assistant", **delta}
        return delta

    async def _stream(self, send: Send, data: dict[str, Any] | str) -> None:
        if not self.headers_sent:
            self.headers_sent = True
            await self._send(send, {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await self._send(send, {"type": "http.response.body", "body": event(data), "more_body": True})

    async def _send(self, send: Send, message: dict[str, Any]) -> None:
        if self.gone:
            return
        try:
            await send(message)
        except OSError:  # the client went away (ASGI 2.4); the watcher may not have heard yet
            self.gone = True
            self.engine.conversation.cancel()

    async def _end_stream(self, send: Send, finished: TurnFinished, rest: bytes) -> None:
        failure = turn_failure(finished)
        if failure is not None and not self.headers_sent:
            await self._json(
                send, failure.status, error_body(str(failure), "server_error", code=failure.code)
            )
            return
        if failure is not None:
            await self._stream(send, error_body(str(failure), "server_error", code=failure.code))
        else:
            if rest:
                await self._stream(send, self.reply.chunk(self._delta(**self.reply.audio_delta(rest))))
            if self.chat.options.speak:
                transcript = {"audio": {"id": self.reply.audio_id, "transcript": finished.text}}
                await self._stream(send, self.reply.chunk(self._delta(**transcript)))
            await self._stream(send, self.reply.chunk({}, FINISH_REASONS.get(finished.reason, "stop")))
            if self.chat.include_usage:
                await self._stream(send, self.reply.usage_chunk(finished))
        await self._stream(send, "[DONE]")
        await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})

    async def _whole(self, send: Send, finished: TurnFinished, pcm: bytes) -> None:
        failure = turn_failure(finished)
        if failure is not None:
            await self._json(
                send, failure.status, error_body(str(failure), "server_error", code=failure.code)
            )
            return
        audio = speech_file(pcm, self.chat.audio_format) if self.chat.options.speak else None
        await self._json(send, 200, self.reply.completion(finished, audio))

    async def _json(self, send: Send, status: int, body: dict[str, Any]) -> None:
        response = JSONResponse(body, status)
        await self._send(
            send, {"type": "http.response.start", "status": status, "headers": response.raw_headers}
        )
        await self._send(send, {"type": "http.response.body", "body": response.body})


SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]


def turn_failure(finished: TurnFinished) -> RequestError | None:
    """What a turn that did not answer tells the client (None: it answered, or the client left)."""
    if finished.reason == "context_full":
        return RequestError(
            "the conversation does not fit the model's context: send fewer or shorter messages",
            400,
            code="context_length_exceeded",
        )
    if finished.reason == "error":
        return RequestError(f"the turn failed: {finished.error}", 500)
    return None


def _drain(events: Iterator[Event]) -> None:
    for _ in events:
        pass

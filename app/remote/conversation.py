"""A conversation whose model runs on a server: `RemoteConversation.turn` yields the events a local
`Conversation.turn` yields (TextDelta, AudioChunk, TurnFinished with first_text and first_audio marks),
so that `ask`, `chat` and the window drive either unchanged.

The server speaks OpenAI's chat completions (`omnidesk serve`, vllm-omni, Qwen's hosted API). The history
is kept here, as text, and each turn sends it whole with the new question (images as PNG and recordings
as 16-bit WAV data URLs). A failure of the server or the network ends the turn with a TurnFinished
"error" whose message says what to check; the conversation goes on.

Threads: `turn` runs on the caller's thread and blocks on the network (at most READ_TIMEOUT_S without a
byte); `cancel` may be called from any thread: the turn stops at the next line the server sends, and
closing the connection stops the turn on the server.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
from PIL import Image as PilImage

from app.remote.stream import ReplyReader, ServerReplyError, bounded_lines, error_message
from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import OmnideskError
from model.media import Question
from model.pipeline import Event, Mark, TextDelta, TurnFinished
from model.pipeline.options import TurnOptions
from model.wav_writer import pcm16, wav_header

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0  # between two bytes of a reply: a long question's media may take a while to encode
API_KEY_VARIABLE = "OMNIDESK_API_KEY"
FINISHED = {"stop": "end", "length": "length", "": "end"}


class RemoteConversation:
    """The history of a conversation with a model on a server; `turn` answers the next question there."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        model: str | None = None,
        persona: str = "",
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        """`url`: the server's OpenAI base URL (http://host:8091/v1; a bare http://host:8091 gets /v1);
        `model`: the model's name there (None: the first the server lists); `read_timeout_s`: the
        longest wait for the next byte of a reply."""
        self.base_url = base_url(url)
        self.persona = persona
        self.history: list[tuple[str, str]] = []  # (question, reply) texts, oldest first
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.read_timeout_s = read_timeout_s
        timeout = httpx2.Timeout(read_timeout_s, connect=CONNECT_TIMEOUT_S)
        self._client = httpx2.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self._model = model
        self._voices: list[str] | None = None
        self._cancel = threading.Event()
        self.speech_at_end = False  # the last reply's speech came as one file after its text (vllm-omni)

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        self._client.close()

    def restore(self, exchanges: list[tuple[str, str]]) -> None:
        self.history = list(exchanges)

    @property
    def model(self) -> str:
        """The model's name on the server (asked for once, when none was given)."""
        if self._model is None:
            self._model = str(self._card()["id"])
        return self._model

    @property
    def voices(self) -> list[str]:
        """The voices the server's model card lists (`omnidesk serve` lists its bundle's); none where
        it lists none (vllm-omni, whose voice choice for 2.5 is unfinished: its default speaks)."""
        if self._voices is None:
            listed = self._card(self._model).get("voices")
            self._voices = [str(v) for v in listed] if isinstance(listed, list) else []
        return self._voices

    def _card(self, name: str | None = None) -> dict[str, Any]:
        """The server's card of the model `name` (None: the first it lists)."""
        listing = self._json("GET", "/models")
        try:
            cards = [card for card in listing["data"] if isinstance(card, dict) and "id" in card]
        except (KeyError, TypeError):
            cards = []
        named = [card for card in cards if name is None or card["id"] == name]
        if not named and name is None:
            raise OmnideskError(f"{self.base_url}/models lists no model; name one with --server-model")
        return named[0] if named else {}

    def turn(self, question: str | Question, options: TurnOptions = TurnOptions()) -> Iterator[Event]:
        self._cancel.clear()
        self.speech_at_end = False
        if isinstance(question, str):
            question = Question(question)
        started = time.perf_counter()
        marks: dict[str, float] = {}
        text: list[str] = []
        reason, error = "end", ""
        try:
            body = self._body(question, options)
            with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    raise ServerReplyError(self._refusal(response))
                reader = ReplyReader()
                for event in reader.events(bounded_lines(response.iter_bytes())):
                    name = "first_text" if isinstance(event, TextDelta) else "first_audio"
                    if name not in marks:
                        marks[name] = time.perf_counter() - started
                        yield Mark(name, marks[name])
                    if isinstance(event, TextDelta):
                        text.append(event.text)
                    yield event
                    if self._cancel.is_set():
                        break  # leaving the stream closes the connection: the server stops the turn
                reason = FINISHED.get(reader.ending.finish_reason, "end")
                self.speech_at_end = reader.ending.speech_at_end
        except (OmnideskError, httpx2.HTTPError) as exc:
            reason, error = "error", self._failure(exc)
        if self._cancel.is_set():
            reason, error = "cancelled", ""
        reply = "".join(text)
        if reply and reason != "error":
            self.history.append((question.text, reply))
        yield TurnFinished(reason, reply, (), (), error, marks=marks)

    def _body(self, question: Question, options: TurnOptions) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.persona}] if self.persona else []
        for asked, answered in self.history:
            messages += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
        messages.append({"role": "user", "content": content_parts(question)})
        sampling = options.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "max_tokens": options.max_tokens,
            "temperature": 0 if sampling.greedy else sampling.temperature,
            "modalities": ["text", "audio"] if options.speak else ["text"],
        }
        if not sampling.greedy:
            body["top_p"] = sampling.top_p
        if options.seed is not None or sampling.seed is not None:
            body["seed"] = options.seed if options.seed is not None else sampling.seed
        if options.speak:
            voice = {"voice": options.speech.voice} if options.speech.voice else {}  # "": the server's own
            body["audio"] = {**voice, "format": "wav"}
        return body

    def _json(self, method: str, path: str) -> Any:
        try:
            response = self._client.request(method, path)
        except httpx2.HTTPError as exc:
            raise OmnideskError(self._failure(exc)) from None
        if response.status_code != 200:
            raise OmnideskError(self._refusal(response))
        try:
            return response.json()
        except ValueError:
            raise OmnideskError(
                f"{self.base_url}{path} did not answer in JSON: is this an OpenAI-compatible server?"
            ) from None

    def _refusal(self, response: httpx2.Response) -> str:
        """What a non-200 answer says, in one line, with what to check."""
        response.read()
        try:
            reason = error_message(response.json())
        except ValueError:
            reason = "its answer is not JSON (a proxy's error page?)"
        hint = {
            401: "; check the API key",
            403: "; check the API key",
            404: "; check the URL (it ends in /v1)",
        }
        return f"the server answered {response.status_code}: {reason}{hint.get(response.status_code, '')}"

    def _failure(self, exc: BaseException) -> str:
        if isinstance(exc, OmnideskError):
            return str(exc)
        if isinstance(exc, httpx2.ConnectError):
            return f"cannot reach {self.base_url} ({exc}): check the URL, and that the server runs"
        if isinstance(exc, httpx2.TimeoutException):
            return (
                f"{self.base_url} stopped answering (nothing for {self.read_timeout_s:g} s): check the server"
            )
        return f"the connection to {self.base_url} failed ({type(exc).__name__}: {exc})"


def base_url(url: str) -> str:
    """The OpenAI base URL: as given, without a trailing slash; a URL with no path gets /v1."""
    parsed = httpx2.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise OmnideskError(f"{url} is not a server's address: give one such as http://127.0.0.1:8091/v1")
    if parsed.path in ("", "/"):
        return str(parsed.copy_with(path="/v1"))
    return str(parsed).rstrip("/")


def content_parts(question: Question) -> list[dict[str, Any]]:
    """The question as OpenAI content parts: images (PNG) and recordings (WAV) as data URLs, then text."""
    if question.videos:
        raise OmnideskError("a video cannot be sent to a server yet: ask about it on this computer")
    parts: list[dict[str, Any]] = []
    for image in question.images:
        png = io.BytesIO()
        PilImage.fromarray(image.pixels).save(png, format="PNG")
        parts.append({"type": "image_url", "image_url": {"url": data_url("image/png", png.getvalue())}})
    for audio in question.audios:
        wav = wav_header(len(audio.samples), INPUT_SAMPLE_RATE) + pcm16(audio.samples)
        parts.append(
            {"type": "input_audio", "input_audio": {"data": data_url("audio/wav", wav), "format": "wav"}}
        )
    if question.text:
        parts.append({"type": "text", "text": question.text})
    return parts


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"

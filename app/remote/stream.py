"""A chat-completions reply read as the pipeline's events: server-sent `chat.completion.chunk`s in,
`TextDelta` and `AudioChunk` out, and how the reply ended.

Speech comes in either of the two shapes servers use for Qwen2.5-Omni: `delta.audio.data` pieces of bare
16-bit mono PCM at 24 kHz as they are made (Qwen's hosted API, `omnidesk serve`), or one base64 WAV file
once the whole answer is made (vllm-omni, whose speech for 2.5 comes at the end). A piece may split a
sample; the odd byte waits for the next. Model-free and Qt-free: the window's worker and `ask` both use it.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import wave
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from model.audio_rates import OUTPUT_SAMPLE_RATE
from model.errors import OmnideskError
from model.pipeline import AudioChunk, TextDelta
from model.wav_writer import from_pcm16

MAX_LINE_BYTES = 16 << 20  # one event: a whole reply's WAV of ~5 minutes at most


class ServerReplyError(OmnideskError):
    """The server's stream said it failed, or was not a chat-completions stream."""


@dataclass
class Ending:
    """How the reply ended: the OpenAI finish reason ("stop", "length"; "" if the stream just stopped)."""

    finish_reason: str = ""
    speech_at_end: bool = False  # the speech came as one file after the text (vllm-omni's shape)


class ReplyReader:
    """Turns the lines of one streamed reply into events; `ending` says how it ended."""

    def __init__(self) -> None:
        self.ending = Ending()
        self._odd = b""  # a PCM byte whose sample's other half is in the next piece

    def events(self, lines: Iterable[str]) -> Iterator[TextDelta | AudioChunk]:
        """The events of `lines` (see `bounded_lines`) up to `data: [DONE]` or their end."""
        for line in lines:
            if not line.startswith("data:"):
                continue  # comments, event names, blank lines
            data = line[5:].strip()
            if data == "[DONE]":
                return
            yield from self._chunk(data)

    def _chunk(self, data: str) -> Iterator[TextDelta | AudioChunk]:
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise ServerReplyError("the server's stream held something that is not JSON") from None
        if not isinstance(chunk, dict):
            raise ServerReplyError("the server's stream held something that is not a chat completion chunk")
        if "error" in chunk:
            raise ServerReplyError(f"the server stopped: {error_message(chunk)}")
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            content = delta.get("content")
            if isinstance(content, str) and content:
                yield TextDelta(content)
            audio = delta.get("audio")
            if isinstance(audio, dict) and isinstance(audio.get("data"), str) and audio["data"]:
                chunk_audio = self._audio(audio["data"])
                if chunk_audio is not None:
                    yield chunk_audio
            if isinstance(choice.get("finish_reason"), str):
                self.ending.finish_reason = choice["finish_reason"]

    def _audio(self, text: str) -> AudioChunk | None:
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ServerReplyError("the server sent speech that is not valid base64") from None
        if data.startswith(b"RIFF"):
            self.ending.speech_at_end = True
            return wav_chunk(data)
        data = self._odd + data
        whole = len(data) - len(data) % 2
        self._odd = data[whole:]
        if not whole:
            return None
        return AudioChunk(from_pcm16(data[:whole]))


def bounded_lines(pieces: Iterable[bytes], limit: int = MAX_LINE_BYTES) -> Iterator[str]:
    """The lines of a byte stream, each held whole in memory only up to `limit` bytes: a server that
    sends a longer one (or one that never ends) ends the reply instead of filling the memory."""
    held = bytearray()
    for piece in pieces:
        if b"\n" in piece:  # only then is what is held split: a long line is scanned once
            *lines, rest = (held + piece).split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode("utf-8", "replace")
            held = bytearray(rest)
        else:
            held += piece
        if len(held) > limit:
            raise ServerReplyError(
                f"the server sent an event of more than {limit >> 20} MB, larger than any reply"
            )
    if held:
        yield held.decode("utf-8", "replace")


def wav_chunk(data: bytes) -> AudioChunk:
    """A whole WAV reply (16-bit mono at 24 kHz, as the model speaks) as one chunk."""
    try:
        with wave.open(io.BytesIO(data)) as f:
            rate, width, channels = f.getframerate(), f.getsampwidth(), f.getnchannels()
            frames = f.readframes(f.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ServerReplyError(f"the server sent a damaged WAV file ({exc})") from None
    if (rate, width, channels) != (OUTPUT_SAMPLE_RATE, 2, 1):
        raise ServerReplyError(
            f"the server sent speech at {rate} Hz, {8 * width}-bit, {channels} channel(s); "
            f"expected {OUTPUT_SAMPLE_RATE} Hz 16-bit mono"
        )
    return AudioChunk(from_pcm16(frames))


def error_message(body: object) -> str:
    """The message of an OpenAI-shaped error body ({"error": {"message": ...}}), or what there is."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if isinstance(body.get("detail"), str):  # FastAPI's (vLLM's) shape
            return body["detail"]
    return "no reason given"

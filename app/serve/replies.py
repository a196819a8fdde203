"""The answers of `POST /v1/chat/completions`, in OpenAI's shapes as Qwen's hosted API fills them for
speech: a stream of `chat.completion.chunk` server-sent events whose `delta` carries `content` (text) or
`audio.data` (base64 16-bit mono PCM at 24 kHz, in pieces as they are made), then a chunk with the
`finish_reason`, a `usage` chunk when asked, and `data: [DONE]`; or one `chat.completion` whose message
holds the whole text and, with speech, `audio.data` (a base64 WAV or bare PCM file).

Every piece of audio is a whole number of 3-sample groups (6 bytes, so its base64 has no padding) until
the last: a client that joins the base64 strings before decoding them, as Qwen's own examples do, gets
the same bytes as one that decodes each piece.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import numpy as np

from model.audio_rates import OUTPUT_SAMPLE_RATE
from model.pipeline import TurnFinished
from model.wav_writer import pcm16, wav_header

FINISH_REASONS = {"end": "stop", "length": "length", "cancelled": "stop"}
PIECE_BYTES = 6  # 3 samples of 2 bytes: 8 base64 characters, never padded


class Reply:
    """The ids and shapes of one reply; `chunk`/`completion` make its JSON objects."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.audio_id = f"audio-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def usage_chunk(self, finished: TurnFinished) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage(finished),
        }

    def audio_delta(self, data: bytes, **more: Any) -> dict[str, Any]:
        return {"audio": {"id": self.audio_id, "data": base64.b64encode(data).decode("ascii"), **more}}

    def completion(self, finished: TurnFinished, audio: bytes | None) -> dict[str, Any]:
        """The whole reply; `audio`: the speech file's bytes (None: text only)."""
        message: dict[str, Any] = {"role": "assistant", "content": finished.text}
        if audio is not None:
            message["audio"] = {
                "id": self.audio_id,
                "data": base64.b64encode(audio).decode("ascii"),
                "expires_at": 0,
                "transcript": finished.text,
            }
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": FINISH_REASONS.get(finished.reason, "stop")}
            ],
            "usage": usage(finished),
        }


def usage(finished: TurnFinished) -> dict[str, int]:
    prompt, completion = len(finished.prompt_ids), len(finished.reply_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def event(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class PcmPieces:
    """Audio chunks made into 16-bit PCM pieces of whole 3-sample groups (see the module's docstring)."""

    def __init__(self) -> None:
        self._held = b""

    def piece(self, samples: np.ndarray) -> bytes:
        """The PCM of `samples` (float, 24 kHz) that completes whole groups; the rest is held for the next."""
        data = self._held + pcm16(samples)
        cut = len(data) - len(data) % PIECE_BYTES
        self._held = data[cut:]
        return data[:cut]

    def rest(self) -> bytes:
        rest, self._held = self._held, b""
        return rest


def speech_file(pcm: bytes, audio_format: str) -> bytes:
    """A whole reply's PCM as the client asked for it: a WAV file, or the bare samples ("pcm16")."""
    if audio_format == "pcm16":
        return pcm
    return wav_header(len(pcm) // 2, OUTPUT_SAMPLE_RATE) + pcm

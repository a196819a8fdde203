"""An OpenAI chat-completions request body made into what a `Conversation` takes: the persona, the earlier
exchanges, the new question and the turn's options.

The shape followed is OpenAI's `POST /v1/chat/completions` as Qwen's hosted API takes it for its Omni
models: `messages` (system, user and assistant; a user's `content` is a string or a list of parts:
`text`, `image_url`, `input_audio`, `video_url`), `modalities` (["text"] or ["text", "audio"]), `audio`
(`voice`, `format`), `stream`, `stream_options.include_usage`, `max_tokens` (or
`max_completion_tokens`), `temperature` (0: greedy, as `omnidesk ask --greedy`), `top_p`, `seed`.
Media come as base64 data URLs (or, for `input_audio`, bare base64 with a `format`): the server
fetches no URL. Each problem is a `RequestError` with the HTTP status and a message that says what
to send instead; nothing here runs a model.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from model.audio_features import load_recording
from model.errors import OmnideskError
from model.media import Audio, Image, Question, Video
from model.pipeline import TurnOptions
from model.sampling import SamplingOptions
from model.talker import REFERENCE_SAMPLING, SpeechOptions
from model.video import load_video
from model.vision import load_image

GREEDY_THINKER = SamplingOptions(greedy=True, repetition_penalty=1.0)  # as `omnidesk ask --greedy`
GREEDY_TALKER = replace(REFERENCE_SAMPLING, greedy=True)
DEFAULT_MAX_TOKENS = 1024
AUDIO_FORMATS = ("wav", "pcm16")  # of the reply's speech (a stream always sends 16-bit PCM pieces)
# A data URL's media type -> the file suffix its loader knows it by.
IMAGE_TYPES = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg", "webp": ".webp", "gif": ".gif", "bmp": ".bmp"}
VIDEO_TYPES = {"mp4": ".mp4", "webm": ".webm", "quicktime": ".mov", "x-matroska": ".mkv", "mpeg": ".mpg"}
AUDIO_TYPES = {"wav": ".wav", "x-wav": ".wav", "wave": ".wav", "mpeg": ".mp3", "mp3": ".mp3", "ogg": ".ogg"}
AUDIO_TYPES |= {"flac": ".flac", "x-flac": ".flac", "webm": ".webm", "mp4": ".m4a", "aac": ".aac"}


class RequestError(Exception):
    """A request the server cannot answer as sent: `status` (4xx), a message that says what to send."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code


@dataclass(frozen=True)
class RequestLimits:
    """What one request may carry besides text, and how long its speech may be."""

    max_parts: int = 8  # images, recordings and videos together
    max_seconds: float = 300.0  # recordings and videos together (the released models hear 300 s)
    max_codes: int = SpeechOptions.max_codes  # speech codes of one reply (50 a second)


@dataclass(frozen=True)
class ChatRequest:
    """One request, ready for `Conversation.turn`."""

    persona: str  # the system messages, as the user's instructions (speech needs the model's own prompt)
    earlier: tuple[tuple[str, str], ...]  # (question, reply) texts of the exchanges before, oldest first
    question: Question
    options: TurnOptions
    stream: bool
    include_usage: bool
    audio_format: str  # "wav" or "pcm16", for a reply that is not streamed
    media_counts: Mapping[str, int]  # what the question carries, for the log: {"images": 1, ...}


def parse_chat_request(
    body: Any, voices: Mapping[str, str], limits: RequestLimits = RequestLimits()
) -> ChatRequest:
    """`body`: the decoded JSON; `voices`: lower-case name -> the bundle's name of each voice."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object with `messages`")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` must be a non-empty list of messages", param="messages")
    modalities = body.get("modalities", ["text"])
    if (
        not isinstance(modalities, list)
        or not set(modalities) <= {"text", "audio"}
        or "text" not in modalities
    ):
        raise RequestError('`modalities` must be ["text"] or ["text", "audio"]', param="modalities")
    speak = "audio" in modalities
    audio = body.get("audio") or {}
    if not isinstance(audio, dict):
        raise RequestError('`audio` must be an object such as {"voice": "Chelsie"}', param="audio")
    voice = _voice(audio.get("voice"), voices) if speak else "Chelsie"
    audio_format = audio.get("format", "wav")
    if audio_format not in AUDIO_FORMATS:
        raise RequestError(f"audio.format must be one of {', '.join(AUDIO_FORMATS)}", param="audio.format")
    persona, earlier, last = _turns(messages)
    with tempfile.TemporaryDirectory(prefix="omnidesk-request-") as folder:
        question = _question(last, Path(folder), limits, bool(body.get("use_audio_in_video", False)))
    stream_options = body.get("stream_options") or {}
    return ChatRequest(
        persona=persona,
        earlier=earlier,
        question=question,
        options=_turn_options(body, speak, voice, limits.max_codes),
        stream=body.get("stream") is True,
        include_usage=isinstance(stream_options, dict) and stream_options.get("include_usage") is True,
        audio_format=audio_format,
        media_counts={
            "images": len(question.images),
            "recordings": len(question.audios),
            "videos": len(question.videos),
        },
    )


def _voice(name: Any, voices: Mapping[str, str]) -> str:
    if name is None:
        name = "Chelsie"
    if not isinstance(name, str) or name.lower() not in voices:
        listed = ", ".join(sorted(voices.values())) or "none"
        raise RequestError(f"unknown voice {name!r}: this server has {listed}", param="audio.voice")
    return voices[name.lower()]


def _turn_options(body: Mapping[str, Any], speak: bool, voice: str, max_codes: int) -> TurnOptions:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", DEFAULT_MAX_TOKENS))
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError("`max_tokens` must be a whole number of at least 1", param="max_tokens")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise RequestError("`seed` must be a whole number from 0 to 2**32 - 1", param="seed")
    temperature = _number(body, "temperature", 0.7)
    thinker, talker = SamplingOptions(), REFERENCE_SAMPLING
    if temperature == 0:
        thinker, talker = GREEDY_THINKER, GREEDY_TALKER
    else:
        try:
            thinker = replace(thinker, temperature=temperature, top_p=_number(body, "top_p", thinker.top_p))
        except ValueError as exc:
            raise RequestError(f"{exc}", param="temperature") from None
    return TurnOptions(
        speak=speak,
        max_tokens=max_tokens,
        sampling=replace(thinker, seed=seed),
        speech=SpeechOptions(voice=voice, sampling=talker, max_codes=max_codes),
        seed=seed,
    )


def _number(body: Mapping[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise RequestError(f"`{name}` must be a number of at least 0", param=name)
    return float(value)


def _turns(messages: list[Any]) -> tuple[str, tuple[tuple[str, str], ...], list[Any]]:
    """The system text, the earlier (question, reply) texts and the last user message's parts."""
    system: list[str] = []
    exchanges: list[tuple[str, str]] = []
    asked: list[list[Any]] = []  # the user messages since the last reply
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
            "system",
            "developer",
            "user",
            "assistant",
        ):
            raise RequestError(
                f"messages[{index}] must be an object with role system, user or assistant", param="messages"
            )
        parts = _parts(message.get("content"), index)
        role = message["role"]
        if role in ("system", "developer"):
            system.append(_text(parts, index))
        elif role == "user":
            asked.append(parts)
        else:
            reply = _text(parts, index) or _transcript(message)
            question = "\n".join(_text(p, index) for p in asked)
            exchanges.append((question, reply))
            asked = []
    if not asked:
        raise RequestError("the last message must be the user's question", param="messages")
    return "\n".join(filter(None, system)), tuple(exchanges), [p for parts in asked for p in parts]


def _transcript(message: Mapping[str, Any]) -> str:
    """An assistant message sent back as the API gave it: its speech's transcript."""
    audio = message.get("audio")
    transcript = audio.get("transcript") if isinstance(audio, dict) else None
    return transcript if isinstance(transcript, str) else ""


def _parts(content: Any, index: int) -> list[Any]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(
        isinstance(p, dict) and isinstance(p.get("type"), str) for p in content
    ):
        return content
    raise RequestError(
        f"messages[{index}].content must be a string or a list of parts with a `type`", param="messages"
    )


def _text(parts: list[Any], index: int) -> str:
    """The text of an earlier message (its media are not seen again: the server keeps no media)."""
    texts = [p.get("text") for p in parts if p["type"] == "text"]
    if not all(isinstance(t, str) for t in texts):
        raise RequestError(f"messages[{index}]: a text part's `text` must be a string", param="messages")
    return "\n".join(texts)


def _question(parts: list[Any], folder: Path, limits: RequestLimits, audio_in_video: bool) -> Question:
    texts: list[str] = []
    images: list[Image] = []
    audios: list[Audio] = []
    videos: list[Video] = []
    for number, part in enumerate(parts, 1):
        kind = part["type"]
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RequestError(f"part {number}: a text part's `text` must be a string", param="messages")
            texts.append(part["text"])
            continue
        if kind not in ("image_url", "input_audio", "audio_url", "video_url"):
            raise RequestError(
                f"part {number}: unknown content part type {kind!r} "
                "(this server takes text, image_url, input_audio and video_url)",
                param="messages",
            )
        if len(images) + len(audios) + len(videos) >= limits.max_parts:
            raise RequestError(f"at most {limits.max_parts} images, recordings and videos in one question")
        data, suffix = _media_bytes(part, number)
        path = folder / f"part-{number}{suffix}"
        path.write_bytes(data)
        try:
            loaded = _load(kind, path, audio_in_video)
        except OmnideskError as exc:
            raise RequestError(str(exc).replace(str(path), f"part {number}"), param="messages") from None
        if isinstance(loaded, Image):
            images.append(loaded)
        elif isinstance(loaded, Audio):
            audios.append(loaded)
        else:
            videos.append(loaded)
    seconds = sum(a.recording_s for a in audios) + sum(len(v.frames) * v.seconds_per_frame for v in videos)
    if seconds > limits.max_seconds:
        raise RequestError(
            f"the recordings and videos last {seconds:.0f} s; this server takes at most "
            f"{limits.max_seconds:.0f} s in one question: send shorter ones"
        )
    return Question("\n".join(texts), tuple(images), tuple(audios), tuple(videos), audio_in_video)


def _load(kind: str, path: Path, audio_in_video: bool) -> Image | Audio | Video:
    if kind == "image_url":
        return load_image(path)
    if kind == "video_url":
        return load_video(path, with_audio=audio_in_video)
    return load_recording(path)


def _media_bytes(part: Mapping[str, Any], number: int) -> tuple[bytes, str]:
    """The bytes of a media part and the file suffix its type says."""
    kind = part["type"]
    inner = part.get(kind)
    if kind == "input_audio":  # OpenAI: {"data": base64, "format": "wav"}; Qwen: {"data": data URL}
        if not isinstance(inner, dict) or not isinstance(inner.get("data"), str):
            raise RequestError(f'part {number}: input_audio must be {{"data": ..., "format": ...}}')
        data = inner["data"]
        if not data.startswith("data:"):
            suffix = AUDIO_TYPES.get(str(inner.get("format", "wav")).lower())
            if suffix is None:
                raise RequestError(f"part {number}: unknown audio format {inner.get('format')!r}")
            return _base64(data, number), suffix
        url = data
    else:
        url = inner.get("url") if isinstance(inner, dict) else inner
    if not isinstance(url, str) or not url.startswith("data:"):
        raise RequestError(
            f"part {number}: send the {kind.removesuffix('_url').replace('input_', '')} as a base64 data "
            "URL (data:TYPE;base64,...): this server fetches no URL"
        )
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise RequestError(f"part {number}: the data URL must be base64 (data:TYPE;base64,...)")
    return _base64(payload, number), _suffix(kind, header[5:].removesuffix(";base64"), number)


def _suffix(kind: str, media_type: str, number: int) -> str:
    """The loader's suffix for a data URL's media type. The decoders read the content itself, so a bare
    "data:;base64," (or an octet stream) gets its kind's common suffix."""
    family, _, subtype = media_type.lower().partition("/")
    table, default = {"image_url": (IMAGE_TYPES, ".png"), "video_url": (VIDEO_TYPES, ".mp4")}.get(
        kind, (AUDIO_TYPES, ".ogg")
    )
    if not media_type or family == "application":
        return default
    if subtype not in table:
        raise RequestError(f"part {number}: {media_type} is not a type this server reads for {kind}")
    return table[subtype]


def _base64(text: str, number: int) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"part {number}: the data is not valid base64") from None

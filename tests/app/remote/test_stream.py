"""Reading replies in the shapes servers send for Qwen2.5-Omni, written from their documentation, and
replies no honest server sends: each ends in one clear error."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from app.remote.stream import ReplyReader, ServerReplyError, bounded_lines
from model.pipeline import AudioChunk, TextDelta
from model.wav_writer import from_pcm16, pcm16, wav_header


def sse(*chunks: object) -> list[str]:
    lines = []
    for chunk in chunks:
        lines += [f"data: {chunk if isinstance(chunk, str) else json.dumps(chunk)}", ""]
    return lines


def delta(**fields: object) -> dict[str, object]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": fields, "finish_reason": None}],
    }


def finish(reason: str) -> dict[str, object]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {}, "finish_reason": reason}],
    }


def read(lines: list[str]) -> tuple[str, np.ndarray, ReplyReader]:
    reader = ReplyReader()
    events = list(reader.events(lines))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    audio = [e.samples for e in events if isinstance(e, AudioChunk)]
    return text, np.concatenate(audio) if audio else np.zeros(0, np.float32), reader


SPEECH = np.sin(np.arange(2401) / 7).astype(np.float32) * 0.5  # an odd number of samples


def test_qwen_hosted_shape_pcm_pieces_beside_the_text():
    """Alibaba Model Studio, Qwen-Omni (help/en/model-studio/qwen-omni): streamed chunks whose
    `delta.audio.data` is base64 16-bit PCM at 24 kHz, joined by the client; the last audio chunk
    carries the transcript; then usage with empty choices, then [DONE]."""
    pcm = pcm16(SPEECH)
    cut = 1001  # a piece that splits a sample
    lines = sse(
        delta(role="assistant", content="Hello"),
        delta(audio={"data": base64.b64encode(pcm[:cut]).decode(), "expires_at": 1, "id": "audio_1"}),
        delta(content=" there"),
        delta(audio={"data": base64.b64encode(pcm[cut:]).decode(), "expires_at": 1, "id": "audio_1"}),
        delta(audio={"transcript": "Hello there"}),
        finish("stop"),
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
        "[DONE]",
    )
    text, audio, reader = read(lines)
    assert text == "Hello there"
    assert np.array_equal(audio, from_pcm16(pcm))
    assert reader.ending.finish_reason == "stop" and not reader.ending.speech_at_end


def test_vllm_omni_shape_text_then_one_wav_at_the_end():
    """vllm-omni serving Qwen2.5-Omni (its issues 652 and 7627): the text streams, then the speech
    comes as one base64 WAV chunk after the whole answer."""
    wav = wav_header(len(SPEECH), 24_000) + pcm16(SPEECH)
    lines = sse(
        delta(content="Hi"), delta(audio={"data": base64.b64encode(wav).decode()}), finish("stop"), "[DONE]"
    )
    text, audio, reader = read(lines)
    assert text == "Hi" and reader.ending.speech_at_end
    assert np.array_equal(audio, from_pcm16(pcm16(SPEECH)))


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        (sse(delta(audio={"data": "@@not base64@@"})), "not valid base64"),
        (
            sse(delta(audio={"data": base64.b64encode(wav_header(10, 16_000) + bytes(20)).decode()})),
            "16000 Hz",
        ),
        (sse(delta(audio={"data": base64.b64encode(b"RIFF" + bytes(10)).decode()})), "damaged WAV"),
        (["<html><body>502 Bad Gateway</body></html>"], None),
        (sse("{not json"), "not JSON"),
        (sse({"error": {"message": "out of memory"}}), "out of memory"),
    ],
    ids=["base64", "sample-rate", "damaged-wav", "html", "not-json", "error-event"],
)
def test_a_broken_reply_is_one_clear_error(lines, says):
    if says is None:  # an HTML page holds no event: an empty reply, no crash
        assert read(lines)[0] == ""
        return
    with pytest.raises(ServerReplyError, match=says):
        read(lines)


def test_lines_are_split_across_pieces_and_bounded():
    pieces = [b'data: {"a"', b": 1}\r\n\nda", b"ta: [DONE]\n"]
    assert list(bounded_lines(pieces)) == ['data: {"a": 1}', "", "data: [DONE]"]

    def endless():  # a line that never ends: memory stays bounded, the reply ends
        while True:
            yield b"x" * 4096

    with pytest.raises(ServerReplyError, match="larger than any reply"):
        list(bounded_lines(endless(), limit=1 << 20))

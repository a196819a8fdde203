"""`omnidesk serve` answering real HTTP clients, tiny model: what it streams is what the same turn gives
in-process; its limits, key and queue answer in 4xx; a client that leaves stops the turn's stages."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import wave
from dataclasses import replace

import cv2
import httpx2
import numpy as np
import pytest

from app.serve.server import Engine
from model.audio_features import load_recording
from model.files.bundle import Bundle
from model.media import Question
from model.pipeline import AudioChunk, Conversation, TextDelta, TurnFinished, TurnOptions
from model.talker import SpeechOptions
from model.vision import load_image
from model.wav_writer import from_pcm16 as samples
from tests.app.serve.live import (
    MAX_TOKENS,
    SEED,
    STAGE_THREADS,
    TIMEOUT_S,
    WAVEFORM_TOLERANCE,
    conversation,
    greedy_options,
    serving,
    streamed,
    wait_for,
)
from tests.helpers import max_abs_error, photo_like, speech_like


def body(content: object, speak: bool = True, stream: bool = True, **more: object) -> dict[str, object]:
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": content}],
        "modalities": ["text", "audio"] if speak else ["text"],
        "audio": {"voice": "Chelsie", "format": "wav"},
        "stream": stream,
        "temperature": 0,
        "seed": SEED,
        "max_tokens": MAX_TOKENS,
        **more,
    }


@pytest.fixture(scope="module")
def local(tiny_bundle: Bundle) -> Conversation:
    return conversation(tiny_bundle)


@pytest.fixture()
def client(url: str):
    with httpx2.Client(base_url=url, timeout=TIMEOUT_S) as made:
        yield made


def local_turn(conversation: Conversation, question: str | Question, options: TurnOptions):
    """The text and speech (float samples) of a turn run in-process, and its end."""
    conversation.restore([])
    text, audio, finished = "", [np.zeros(0, np.float32)], None
    for event in conversation.turn(question, options):
        if isinstance(event, TextDelta):
            text += event.text
        elif isinstance(event, AudioChunk):
            audio.append(event.samples)
        elif isinstance(event, TurnFinished):
            finished = event
    return text, np.concatenate(audio), finished


def data_url(kind: str, data: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def wav_bytes(samples_16k: np.ndarray) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(16_000)
        f.writeframes((samples_16k * 32767).round().astype("<i2").tobytes())
    return out.getvalue()


def png_bytes(pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes()


class TestReplies:
    def test_streamed_text_and_speech_are_the_turn_run_in_process(self, client, local):
        with client.stream("POST", "/v1/chat/completions", json=body("Say hello.")) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            text, pcm, every = streamed(response)
        expected_text, expected_audio, _ = local_turn(local, "Say hello.", greedy_options())
        assert text == expected_text and text
        assert every[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        heard = samples(pcm)
        print(f"speech: {len(heard)} samples, rms {np.sqrt(np.mean(heard**2)):.3g}")
        assert max_abs_error("streamed speech", heard, expected_audio) <= WAVEFORM_TOLERANCE

    def test_audio_pieces_are_whole_samples_whose_base64_joins(self, client):
        """Qwen's own examples join the base64 strings before decoding: that must give the same bytes."""
        with client.stream("POST", "/v1/chat/completions", json=body("Say hello.")) as response:
            _, pcm, every = streamed(response)
        pieces = [
            c["choices"][0]["delta"]["audio"]["data"]
            for c in every
            if "data" in c["choices"][0]["delta"].get("audio", {})
        ]
        assert len(pieces) > 1
        assert base64.b64decode("".join(pieces)) == pcm
        assert all(len(base64.b64decode(p)) % 2 == 0 for p in pieces)

    def test_a_whole_reply_is_the_streamed_one(self, client):
        with client.stream("POST", "/v1/chat/completions", json=body("Say hello.")) as response:
            text, pcm, _ = streamed(response)
        whole = client.post("/v1/chat/completions", json=body("Say hello.", stream=False))
        assert whole.status_code == 200
        message = whole.json()["choices"][0]["message"]
        assert message["content"] == text
        with wave.open(io.BytesIO(base64.b64decode(message["audio"]["data"]))) as f:
            assert (f.getframerate(), f.getsampwidth(), f.getnchannels()) == (24_000, 2, 1)
            spoken = f.readframes(f.getnframes())
        assert max_abs_error("whole reply's speech", samples(spoken), samples(pcm)) <= WAVEFORM_TOLERANCE

    def test_an_image_and_a_recording_are_seen_and_heard(self, client, local, tmp_path):
        photo, speech = photo_like(56, 84, seed=3), speech_like(1.0, seed=3)
        (tmp_path / "p.png").write_bytes(png_bytes(photo))
        (tmp_path / "s.wav").write_bytes(wav_bytes(speech))
        content = [
            {"type": "image_url", "image_url": {"url": data_url("image/png", png_bytes(photo))}},
            {
                "type": "input_audio",
                "input_audio": {"data": base64.b64encode(wav_bytes(speech)).decode(), "format": "wav"},
            },
            {"type": "text", "text": "What is this?"},
        ]
        reply = client.post("/v1/chat/completions", json=body(content, speak=False, stream=False))
        assert reply.status_code == 200, reply.text
        question = Question(
            "What is this?",
            images=(load_image(tmp_path / "p.png"),),
            audios=(load_recording(tmp_path / "s.wav"),),
        )
        expected, _, finished = local_turn(local, question, greedy_options(speak=False))
        assert reply.json()["choices"][0]["message"]["content"] == expected
        assert reply.json()["usage"]["prompt_tokens"] == len(finished.prompt_ids)

    def test_earlier_exchanges_are_the_conversation_so_far(self, client, local):
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there"},
            {"role": "user", "content": "And now?"},
        ]
        reply = client.post(
            "/v1/chat/completions", json={**body("", speak=False, stream=False), "messages": messages}
        )
        assert reply.status_code == 200, reply.text
        local.restore([("Hello", "Hi there")])
        local.persona = "Be brief."
        try:
            text = "".join(
                e.text
                for e in local.turn("And now?", greedy_options(speak=False))
                if isinstance(e, TextDelta)
            )
        finally:
            local.persona = ""
        assert reply.json()["choices"][0]["message"]["content"] == text

    def test_models_and_health(self, client):
        assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
        assert client.get("/health").json()["busy"] is False


class TestBadRequests:
    @pytest.mark.parametrize(
        ("request_body", "status", "says"),
        [
            ("not json", 400, "not valid JSON"),
            ({"messages": []}, 400, "messages"),
            (body([{"type": "picture"}]), 400, "unknown content part type"),
            (
                body([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]),
                400,
                "data URL",
            ),
            (body([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]), 400, "base64"),
            (
                body([{"type": "image_url", "image_url": {"url": data_url("image/png", b"no picture")}}]),
                400,
                "part 1: not a readable image",  # the server's file names are not the client's business
            ),
            (body("Hi", audio={"voice": "Nobody"}), 400, "unknown voice"),
            (body("Hi", max_tokens=0), 400, "max_tokens"),
            ({**body("Hi"), "messages": [{"role": "assistant", "content": "Hi"}]}, 400, "last message"),
            (
                body(
                    [
                        {
                            "type": "input_audio",
                            "input_audio": {"data": base64.b64encode(wav_bytes(speech_like(11.0))).decode()},
                        }
                    ]
                ),
                400,
                "at most 10 s",
            ),
            (
                body(
                    [
                        {
                            "type": "input_audio",
                            "input_audio": {"data": base64.b64encode(wav_bytes(speech_like(0.2))).decode()},
                        }
                    ]
                    * 3
                ),
                400,
                "at most 2",
            ),
            (body("word " * 3000, max_tokens=5), 400, "context"),
            (body("x" * (3 << 20)), 413, "larger than"),
        ],
        ids=[
            "json",
            "no-messages",
            "part-type",
            "remote-url",
            "base64",
            "not-an-image",
            "voice",
            "max-tokens",
            "last-role",
            "too-long",
            "too-many",
            "context",
            "too-big",
        ],
    )
    def test_each_is_a_4xx_with_a_message_and_the_server_goes_on(self, client, request_body, status, says):
        if isinstance(request_body, str):
            response = client.post("/v1/chat/completions", content=request_body)
        else:
            response = client.post("/v1/chat/completions", json=request_body)
        print(response.text)
        assert response.status_code == status
        assert says in response.json()["error"]["message"]
        assert (
            client.post("/v1/chat/completions", json=body("Hi", speak=False, stream=False)).status_code == 200
        )


class TestKey:
    @pytest.fixture()
    def keyed(self, engine: Engine):
        with serving(Engine(engine.conversation, replace(engine.options, api_key="s3cret"))) as base:
            yield base

    @pytest.mark.parametrize("header", [None, "Bearer wrong", "s3cret"])
    def test_no_or_a_wrong_key_is_401(self, keyed, header):
        headers = {"Authorization": header} if header else {}
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
            response = httpx2.request(
                method, keyed + path, headers=headers, json=body("Hi"), timeout=TIMEOUT_S
            )
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"

    def test_the_key_lets_in(self, keyed):
        response = httpx2.get(
            keyed + "/v1/models", headers={"Authorization": "Bearer s3cret"}, timeout=TIMEOUT_S
        )
        assert response.status_code == 200


class TestOneTurnAtATime:
    @pytest.fixture()
    def long_speech(self, engine: Engine):
        """A server whose replies may speak long enough that a reader that stops holds the turn: the
        stages wait on the stream it no longer takes."""
        limits = replace(engine.options.limits, max_codes=SpeechOptions.max_codes)
        with serving(Engine(engine.conversation, replace(engine.options, limits=limits))) as base:
            yield base

    def test_a_request_waits_while_one_runs_and_one_more_is_refused(self, long_speech):
        client = httpx2.Client(base_url=long_speech, timeout=TIMEOUT_S)
        second: dict[str, httpx2.Response] = {}

        def ask_meanwhile() -> None:
            second["answer"] = client.post("/v1/chat/completions", json=body("Hi", speak=False, stream=False))

        with client.stream("POST", "/v1/chat/completions", json=body("Talk.", max_tokens=1500)) as first:
            lines = first.iter_lines()  # kept: a line iterator dropped closes the connection
            next(lines)  # the first turn runs, held by this reader that reads no more
            waiter = threading.Thread(target=ask_meanwhile)
            waiter.start()
            wait_for(lambda: client.get("/health").json()["waiting"] == 1)
            refused = client.post("/v1/chat/completions", json=body("Hi", speak=False, stream=False))
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) > 0
        waiter.join(TIMEOUT_S)  # leaving the first stream cancelled its turn
        assert second["answer"].status_code == 200
        client.close()

    def test_a_waiting_client_that_leaves_leaves_the_queue(self, long_speech):
        client = httpx2.Client(base_url=long_speech, timeout=TIMEOUT_S)
        with client.stream("POST", "/v1/chat/completions", json=body("Talk.", max_tokens=1500)) as first:
            lines = first.iter_lines()
            next(lines)  # the first turn runs, held
            request = json.dumps(body("Hi", speak=False, stream=False)).encode()
            port = int(long_speech.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port)) as waiting:
                waiting.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(request)}\r\n\r\n".encode()
                    + request
                )
                wait_for(lambda: client.get("/health").json()["waiting"] == 1)
            wait_for(lambda: client.get("/health").json()["waiting"] == 0)  # it left: the place is free
            assert client.get("/health").json()["busy"] is True  # and the first turn runs on
        client.close()


class TestLeaving:
    def test_a_client_that_leaves_mid_stream_stops_every_stage(self, client, engine):
        engine.finished = None
        long = body("Talk for long.", max_tokens=1500)
        with client.stream("POST", "/v1/chat/completions", json=long) as response:
            for chunk_line in response.iter_lines():
                if '"audio"' in chunk_line:
                    break  # speech has begun: all stages run; leaving closes the connection
        wait_for(lambda: engine.finished is not None)
        assert engine.finished.reason == "cancelled"
        assert 0 < len(engine.finished.reply_ids) < 1500
        assert not {t.name for t in threading.enumerate() if t.is_alive()} & STAGE_THREADS
        assert client.post("/v1/chat/completions", json=body("Hi", stream=False)).status_code == 200


class TestLogs:
    def test_no_request_content_is_logged_unless_asked(self, engine, url, caplog):
        caplog.set_level(logging.INFO, logger="app.serve")
        secret = "zebra umbrella 42"
        answer = httpx2.post(url + "/v1/chat/completions", json=body(secret, speak=False, stream=False))
        assert answer.status_code == 200
        assert "request:" in caplog.text and "turn ended" in caplog.text
        assert secret not in caplog.text and "reply:" not in caplog.text
        with serving(Engine(engine.conversation, replace(engine.options, log_content=True))) as logged:
            httpx2.post(logged + "/v1/chat/completions", json=body(secret, speak=False, stream=False))
        assert secret in caplog.text and "reply:" in caplog.text

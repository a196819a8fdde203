"""The window as a client (Settings → Engine: a server): MainWindow and its real worker talk to a real
`omnidesk serve` on loopback with the tiny model. A typed greedy turn shows and speaks what the same turn
does on this computer; Stop ends the server's stages; a spoken question is sent at the release (nothing
is encoded here); a server that gives speech only at the end is told once; one that cannot be reached
is one notice, and the window goes on."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import replace

import anyio
import numpy as np
from PIL import Image as PilImage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.remote.conversation import RemoteConversation
from app.serve.request import GREEDY_TALKER, GREEDY_THINKER
from app.window.main_window import Devices, MainWindow
from app.window.model_loader import NO_SERVER
from app.window.preferences import Preferences
from app.worker import SPEECH_AT_END, Ask, ConversationWorker, ModelChoice
from model.audio_rates import OUTPUT_SAMPLE_RATE
from model.files.bundle import Bundle
from model.media import Question
from model.talker import SpeechOptions
from model.wav_writer import pcm16, wav_header
from tests.app.fakes import MicrophoneFactory
from tests.app.serve.live import MAX_CODES, SEED, STAGE_THREADS, WAVEFORM_TOLERANCE, serving, wait_for
from tests.app.windows import TIMEOUT_MS, RecordingSink, ask, load, talk
from tests.helpers import max_abs_error

MAX_TOKENS = 10
SOUND = np.full(2400, 0.25, np.float32)  # a tenth of a second
GREEDY_SPEECH = SpeechOptions(sampling=GREEDY_TALKER, max_codes=MAX_CODES)  # what temperature 0 asks for


def greedy_worker(sink: RecordingSink, max_tokens: int = MAX_TOKENS) -> ConversationWorker:
    """The window's worker asking greedily with SEED, as a request with temperature 0 and SEED is run."""
    return ConversationWorker(
        max_tokens=max_tokens,
        speech=GREEDY_SPEECH,
        sink_factory=lambda rate: sink,
        sampling=replace(GREEDY_THINKER, seed=SEED),
        seed=SEED,
    )


def on_server(settings, url: str, api_key: str = "") -> None:
    Preferences(engine="server", server_url=url, api_key=api_key, speech_quality="exact").save(settings)


def open_window(qtbot, settings, history_store, conversation_worker, devices=None) -> MainWindow:
    window = MainWindow(settings, conversation_worker, history_store, devices)
    qtbot.addWidget(window)
    return window


def reply_of(qtbot, window: MainWindow, question: str) -> tuple[str, str]:
    """How the reply to `question` ended, and its text."""
    pieces: list[str] = []
    window.session.reply_progressed.connect(pieces.append)
    reason = ask(qtbot, window, question)
    window.session.reply_progressed.disconnect(pieces.append)
    return reason, "".join(pieces)


def test_a_typed_greedy_turn_through_the_server_is_the_local_turn(
    qtbot, settings, history_store, url, tiny_bundle: Bundle
):
    remote_sink = RecordingSink()
    on_server(settings, url)
    window = open_window(qtbot, settings, history_store, greedy_worker(remote_sink))
    qtbot.waitUntil(lambda: window.models.loaded, timeout=TIMEOUT_MS)
    assert window.models.status.text() == f"Model: server {url}/v1 (tiny)"
    assert window.composer.voices() == ["Chelsie", "Ethan"]  # the voices the server's model card lists
    remote_reason, remote_text = reply_of(qtbot, window, "Say hello.")
    window.close()

    local_sink = RecordingSink()
    settings.clear()
    Preferences(speech_quality="exact").save(settings)  # the served conversation's speech path
    local = open_window(qtbot, settings, history_store, greedy_worker(local_sink))
    load(qtbot, local, tiny_bundle)
    local_reason, local_text = reply_of(qtbot, local, "Say hello.")
    local.close()

    assert remote_reason == local_reason and remote_text == local_text and remote_text.strip()
    heard, expected = np.concatenate(remote_sink.chunks), np.concatenate(local_sink.chunks)
    assert max_abs_error("the window's speech through the server", heard, expected) <= WAVEFORM_TOLERANCE


def test_stop_mid_reply_ends_the_servers_stages_and_the_window_goes_on(
    qtbot, settings, history_store, url, engine
):
    on_server(settings, url)
    window = open_window(qtbot, settings, history_store, greedy_worker(RecordingSink(), max_tokens=1500))
    qtbot.waitUntil(lambda: window.models.loaded, timeout=TIMEOUT_MS)
    engine.finished = None
    window.session.reply_progressed.connect(lambda _: window.composer.stop_button.click())
    window.composer.question_box.setPlainText("Talk for long.")
    with qtbot.waitSignal(window.session.reply_completed, timeout=TIMEOUT_MS) as stopped:
        window.composer.send_button.click()
    assert stopped.args[0] == "cancelled"
    wait_for(lambda: engine.finished is not None)
    assert engine.finished.reason == "cancelled"
    assert not {t.name for t in threading.enumerate() if t.is_alive()} & STAGE_THREADS
    window.session.reply_progressed.disconnect()
    window.worker._max_tokens = MAX_TOKENS  # the next reply ends by itself
    assert ask(qtbot, window, "Hi") in ("end", "length")
    window.close()


def test_a_spoken_question_is_sent_at_the_release_and_nothing_is_encoded_here(
    qtbot, settings, history_store, url, spoken_samples, questions
):
    on_server(settings, url)
    sink = RecordingSink()
    devices = Devices(microphone_stream=MicrophoneFactory(spoken_samples))
    window = open_window(qtbot, settings, history_store, greedy_worker(sink), devices)
    qtbot.waitUntil(lambda: window.models.loaded, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(window.session.reply_completed, timeout=TIMEOUT_MS) as reply:
        talk(qtbot, window)
    assert reply.args[0] in ("end", "length")
    assert isinstance(window.worker._conversation, RemoteConversation) and window.worker._listening is None
    (question,) = questions  # what reached the server's pipeline: the recording, sent whole
    (recording,) = question.audios
    assert len(recording.samples) == len(spoken_samples)
    assert max_abs_error("the recording as the server heard it", recording.samples, spoken_samples) <= 1e-4
    assert sum(len(c) for c in sink.chunks) > 0, "the reply was spoken"
    window.close()


def test_a_picture_goes_to_the_server_with_its_question(
    qtbot, settings, history_store, url, questions, tmp_path
):
    """Screen shots and camera frames are attached pictures: each is sent as an image with the question."""
    pixels = np.random.default_rng(0).integers(0, 256, (56, 84, 3), dtype=np.uint8)
    PilImage.fromarray(pixels).save(tmp_path / "screen.png")
    on_server(settings, url)
    window = open_window(qtbot, settings, history_store, greedy_worker(RecordingSink()))
    qtbot.waitUntil(lambda: window.models.loaded, timeout=TIMEOUT_MS)
    window.composer.attach_file(tmp_path / "screen.png")
    assert ask(qtbot, window, "What is this?") in ("end", "length")
    (question,) = questions
    (image,) = question.images
    assert question.text == "What is this?" and np.array_equal(image.pixels, pixels)
    window.close()


def test_an_unreachable_server_is_one_notice_and_the_window_stays_usable(
    qtbot, settings, history_store, tiny_bundle: Bundle
):
    with serving(Starlette()) as gone:  # a port that nothing listens on once this server has stopped
        pass
    on_server(settings, gone)
    failures: list[str] = []
    conversation_worker = greedy_worker(RecordingSink())
    conversation_worker.model_failed.connect(failures.append)
    window = open_window(qtbot, settings, history_store, conversation_worker)
    qtbot.waitUntil(lambda: bool(window.notices.label.text()), timeout=TIMEOUT_MS)
    assert "cannot reach" in window.notices.label.text() and "\n" not in window.notices.label.text()
    assert window.models.status.text() == "No model" and not window.models.loaded
    assert window.composer.missing == NO_SERVER and not window.composer.send_button.isEnabled()
    with qtbot.waitSignal(window.model_ready, timeout=TIMEOUT_MS):
        window.apply_preferences(
            replace(window.preferences(), engine="local", models_folder=str(tiny_bundle.root))
        )
    assert len(failures) == 1 and ask(qtbot, window, "Hi") in ("end", "length")
    window.close()


def vllm_omni_shaped() -> Starlette:
    """A server that streams the text, then the whole speech as one base64 WAV, as vllm-omni does for
    Qwen2.5-Omni (its issues 652 and 7627: "the audio is returned in a single chunk at the end")."""

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "Qwen/Qwen2.5-Omni-7B", "object": "model"}]})

    async def completions(request: Request) -> Response:
        wav = wav_header(len(SOUND), OUTPUT_SAMPLE_RATE) + pcm16(SOUND)
        deltas = (
            {"content": "Hello"},
            {"content": " there."},
            {"audio": {"data": base64.b64encode(wav).decode()}},
        )

        async def events():
            for delta in deltas:
                yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta}]})}\n\n".encode()
                await anyio.sleep(0)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(
        routes=[Route("/v1/models", models), Route("/v1/chat/completions", completions, methods=["POST"])]
    )


def test_speech_only_at_the_end_is_told_once(qtbot):
    sink = RecordingSink()
    worker = greedy_worker(sink)
    noted: list[str] = []
    worker.plan_noted.connect(noted.append)
    with serving(vllm_omni_shaped()) as base:
        with qtbot.waitSignal(worker.model_loaded, timeout=TIMEOUT_MS) as loaded:
            worker.load(ModelChoice("", server=base))
        assert loaded.args[0] == f"server {base}/v1 (Qwen/Qwen2.5-Omni-7B)"
        for number in (1, 2):
            worker.ask(Ask(Question("Hi"), voice="", speak=True, number=number))
    worker.close()
    assert noted == [SPEECH_AT_END]
    assert [len(c) for c in sink.chunks] == [len(SOUND)] * 2  # each reply's whole speech, at its end

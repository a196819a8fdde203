"""The worker's signals: a reply's end as a ReplyFinished (None for what it lacks), and turns on
the tiny bundle, run here on the test's thread (the window runs them on its own). Spoken turns
are tested through the window (test_main_window.TestSpeech)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import replace

import pytest

from app.worker import Ask, ConversationWorker, ModelChoice, ReplyFinished
from model.files.bundle import Bundle
from model.media import Image, Question
from model.pipeline import SpeechCut, TurnFinished
from model.speech_bound import SpeechBound
from tests.app.windows import MAX_TOKENS, SPEECH, RecordingSink
from tests.helpers import photo_like, speech_like


class TestReplyFinished:
    def test_a_missing_mark_is_none(self):
        turn = TurnFinished(
            "end", "Hi", (1, 2), (), tokens_per_s=None, marks={"first_text": 0.25, "done": 1.0}
        )
        assert ReplyFinished.of(turn) == ReplyFinished("end", 0.25, None, None)

    def test_the_speeds_name_only_what_is_known(self):
        assert ReplyFinished("end", 0.25, 1.5, 12.34).speeds == (
            "first audio 1500 ms · first token 250 ms · 12.3 tokens/s"
        )
        assert ReplyFinished("end", 0.25, None, 12.34).speeds == "first token 250 ms · 12.3 tokens/s"
        assert ReplyFinished("error", None, None, None).speeds == ""

    def test_it_is_a_frozen_value(self):
        finished = ReplyFinished("end", None, None, None)
        with pytest.raises(dataclasses.FrozenInstanceError):
            finished.reason = "cancelled"  # type: ignore[misc]


class Signals:
    """What a worker emitted, in order."""

    def __init__(self, worker: ConversationWorker) -> None:
        self.emitted: list[tuple[str, object]] = []
        for name in ("model_loaded", "model_failed", "text_received", "reply_finished", "turn_failed"):
            getattr(worker, name).connect(lambda value, name=name: self.emitted.append((name, value)))

    def named(self, name: str) -> list:
        return [value for emitted, value in self.emitted if emitted == name]


class TestTurns:
    def test_asking_without_a_model_fails_the_turn_only(self, qtbot):
        worker = ConversationWorker()
        signals = Signals(worker)
        worker.ask(Ask(Question("Hello?"), "Chelsie", speak=False))
        assert signals.emitted == [
            ("turn_failed", "No model is loaded yet: choose a model bundle first."),
            ("reply_finished", ReplyFinished("error", None, None, None)),
        ]

    def test_the_figures_count_from_the_end_of_the_question(self, qtbot, tiny_bundle: Bundle):
        """They had counted from the turn's input_ready, after the speakers opened and the question's
        last sound was encoded: 1.0 to 3.3 s of a first spoken turn at load 5 went uncounted."""
        sink = RecordingSink()
        worker = ConversationWorker(max_tokens=MAX_TOKENS, speech=SPEECH, sink_factory=lambda rate: sink)
        signals = Signals(worker)
        worker.load(ModelChoice(str(tiny_bundle.root)))
        ended = time.perf_counter() - 30.0  # as if the question had ended 30 s before the worker took it
        worker.ask(Ask(Question("Hello"), "Chelsie", speak=True, sent_at=ended))
        (finished,) = signals.named("reply_finished")
        assert finished.first_text_s >= 30.0 and finished.first_audio_s >= 30.0
        worker.close()

    def test_a_text_reply_has_no_first_audio(self, qtbot, tiny_bundle: Bundle):
        worker = ConversationWorker(max_tokens=MAX_TOKENS, speech=SPEECH)
        signals = Signals(worker)
        worker.load(ModelChoice(str(tiny_bundle.root)))
        assert signals.named("model_loaded") and not signals.named("model_failed")
        worker.ask(Ask(Question("What is this?"), "Chelsie", speak=False))
        (finished,) = signals.named("reply_finished")
        assert finished.reason in ("end", "length") and signals.named("text_received")
        assert finished.first_text_s > 0 and finished.first_audio_s is None
        assert signals.emitted[-1] == ("reply_finished", finished)
        worker.close()

    def test_a_screenshot_shrunk_past_small_text_is_said_once(self, qtbot, tiny_bundle: Bundle):
        worker = ConversationWorker(max_tokens=MAX_TOKENS, speech=SPEECH)
        noted: list[str] = []
        worker.plan_noted.connect(noted.append)
        worker.load(ModelChoice(str(tiny_bundle.root), detail="quick"))
        screen = Image(photo_like(1080, 1920, seed=3))
        for _ in range(2):
            worker.ask(Ask(Question("What is on my screen?", images=(screen,)), "Chelsie", speak=False))
        said = [note for note in noted if "small text" in note]
        assert len(said) == 1 and "Settings > Detail" in said[0]
        worker.close()

    def test_speech_cut_short_by_the_plans_bound_is_noted(self, qtbot, tiny_bundle: Bundle):
        sink = RecordingSink()
        worker = ConversationWorker(max_tokens=MAX_TOKENS, speech=SPEECH, sink_factory=lambda rate: sink)
        noted: list[str] = []
        worker.plan_noted.connect(noted.append)
        worker.load(ModelChoice(str(tiny_bundle.root)))
        conversation = worker._conversation
        assert conversation is not None
        bound = SpeechBound(codes_per_token=0, slack_codes=5)  # the Talker makes 40 codes at least
        conversation.plan = replace(conversation.plan, speech_bound=bound)
        worker.ask(Ask(Question("Hello?"), "Chelsie", speak=True))
        assert [note for note in noted if "Speech was stopped" in note] == [SpeechCut(6 / 50).message]
        worker.close()

    def test_a_question_stopped_before_it_began_is_not_run(self, qtbot, tiny_bundle: Bundle, questions):
        sink = RecordingSink()
        worker = ConversationWorker(max_tokens=MAX_TOKENS, speech=SPEECH, sink_factory=lambda rate: sink)
        signals = Signals(worker)
        worker.load(ModelChoice(str(tiny_bundle.root)))
        worker.ask(Ask(Question("First"), "Chelsie", speak=True, number=1))
        assert sink.chunks and sink.stopped == 0
        worker.cancel(through=2)  # Stop, pressed before the worker takes the second question
        worker.ask(Ask(Question("Second"), "Chelsie", speak=True, number=2))
        assert sink.stopped == 2, "Stop silenced the speakers, and so did the next question"
        assert signals.named("reply_finished")[-1] == ReplyFinished("cancelled", None, None, None)
        assert [q.text for q in questions] == ["First"] and not signals.named("turn_failed")
        worker.ask(Ask(Question("Third"), "Chelsie", speak=False, number=3))
        assert signals.named("reply_finished")[-1].reason in ("end", "length"), "later ones run"
        worker.close()


class TestCall:
    """A live call through the worker, as the window drives it: begin_call, the microphone's pieces, an
    Ask of the call's turn at each pause, end_call."""

    PIECE = 320  # 20 ms at 16 kHz, as the window feeds them

    def hear(self, worker: ConversationWorker, seconds: float, seed: int) -> None:
        said = speech_like(seconds, seed=seed)
        for start in range(0, len(said), self.PIECE):
            worker.call_hear(said[start : start + self.PIECE], True)

    def test_a_call_goes_on_after_its_reply_is_stopped(self, qtbot, tiny_bundle: Bundle):
        sink = RecordingSink()
        worker = ConversationWorker(max_tokens=MAX_TOKENS, speech=SPEECH, sink_factory=lambda rate: sink)
        signals = Signals(worker)
        started: list[str] = []
        worker.call_started.connect(started.append)
        worker.load(ModelChoice(str(tiny_bundle.root)))
        frame = photo_like(120, 160)
        worker.begin_call(lambda: frame)
        assert started and worker._call is not None
        self.hear(worker, 2.5, seed=1)
        stop = worker.text_received.connect(lambda _: worker.cancel(through=1))  # Stop as it answers
        worker.ask(Ask(Question(""), "Chelsie", speak=True, number=1, call=True))
        worker.text_received.disconnect(stop)
        assert signals.named("reply_finished")[-1].reason == "cancelled"
        call = worker._call
        assert call is not None and call.current is not None and not call.heard, "the next turn listens"
        self.hear(worker, 2.5, seed=2)
        assert call.heard
        worker.ask(Ask(Question(""), "Chelsie", speak=True, number=2, call=True))
        assert signals.named("reply_finished")[-1].reason in ("end", "length")
        assert not signals.named("turn_failed")
        worker.end_call()
        assert worker._call is None
        worker.close()

    def test_a_call_without_a_model_says_what_to_do(self, qtbot):
        worker = ConversationWorker()
        failed: list[str] = []
        worker.call_failed.connect(failed.append)
        worker.begin_call(lambda: photo_like(120, 160))
        worker.call_hear(speech_like(0.1), True)  # heard by no call: dropped
        assert failed == [
            "A call needs the model on this computer: load a model bundle (a server takes questions)."
        ]
        assert worker._call is None

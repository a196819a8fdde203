"""`ask --play` and `chat --play` speak through the same paced speakers as the window: each turn
begins and finishes a reply on them, the speech plays whole and in order after the turn returns, a
new question silences the last reply, and a machine that speaks slowly is told so once."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from app.cli.main import _parser
from app.cli.talk import plan_choice, say_if_slow, say_where_speech_runs, speak_turn
from app.sound.playback import Playback
from model.files.bundle import Bundle
from model.pipeline import AudioChunk, Conversation, SpeechCut, TextDelta, TurnFinished, TurnOptions
from model.talker import SpeechOptions
from model.thinker_types import ThinkerOptions
from tests.app.fakes import Speakers
from tests.app.windows import MAX_TOKENS, SPEECH

WAIT_S = 60


@pytest.fixture
def conversation(tiny_bundle: Bundle):
    conversation = Conversation.planned(tiny_bundle, thinker_options=ThinkerOptions(n_ctx=2048))
    yield conversation
    conversation.close()


@pytest.fixture
def made(monkeypatch) -> list[np.ndarray]:
    """Every audio chunk the pipeline makes."""
    chunks: list[np.ndarray] = []
    turn = Conversation.turn

    def spy(self, question, options, heard=None):
        for event in turn(self, question, options, heard):
            if isinstance(event, AudioChunk):
                chunks.append(event.samples)
            yield event

    monkeypatch.setattr(Conversation, "turn", spy)
    return chunks


def test_a_turn_plays_whole_and_in_order_after_it_returns(conversation, made, capsys):
    speakers = Speakers()
    # On this clock speech is made 100 times faster than on the wall's, however busy the machine.
    playback = Playback(24_000, stream_factory=speakers, clock=lambda: time.perf_counter() / 100)
    options = TurnOptions(max_tokens=MAX_TOKENS, speech=SPEECH)
    finished, _ = speak_turn(conversation, "Read this aloud", options, playback, None)
    assert finished.reason in ("end", "length") and made
    assert playback.wait(WAIT_S), "played to the end"
    heard = speakers.outputs[0].heard()
    spoken = np.concatenate(made)
    assert np.array_equal(heard[heard != 0], spoken[spoken != 0])
    assert not say_if_slow(playback, conversation) and "slower" not in capsys.readouterr().err
    playback.close()


def test_a_new_reply_after_a_stop_plays_only_itself(conversation, made):
    speakers = Speakers()
    playback = Playback(24_000, stream_factory=speakers)
    options = TurnOptions(max_tokens=MAX_TOKENS, speech=SPEECH)
    speak_turn(conversation, "First", options, playback, None)
    playback.stop()  # what chat does at the next question
    first = len(made)
    speak_turn(conversation, "Second", options, playback, None)
    assert playback.wait(WAIT_S)
    heard = speakers.outputs[0].heard()
    second = np.concatenate(made[first:])
    second = second[second != 0]
    assert np.array_equal(heard[heard != 0][-second.size :], second), "the second reply, whole, last"
    playback.close()


def test_a_machine_that_speaks_slowly_is_told_what_would_help(conversation, capsys):
    slowed = lambda: 100 * time.perf_counter()  # noqa: E731 (on this clock, speech is made 100x slower)
    playback = Playback(24_000, stream_factory=Speakers(), clock=slowed)
    long_speech = TurnOptions(max_tokens=MAX_TOKENS, speech=SpeechOptions(max_codes=200, min_codes=150))
    speak_turn(conversation, "Tell me more", long_speech, playback, None)
    assert say_if_slow(playback, conversation)
    said = capsys.readouterr().err
    assert said.count("slower than it plays") == 1 and "a GPU" in said and said.endswith("\n")
    playback.close()


def test_where_speech_runs_is_said_with_why_it_is_not_on_the_gpu(conversation, capsys):
    """A CPU build of torch beside a CUDA llama.cpp (the plan's note) and a stage moved after running out
    of GPU memory (prepare's move, also noted in the plan): each said once, after where speech runs."""
    cpu_torch = "Speech runs on the CPU because torch cannot use the GPU (a CPU build of torch): ..."
    moved = "The GPU ran out of memory: Token2Wav now runs on the CPU."
    conversation.plan = replace(conversation.plan, notes=(cpu_torch, moved))
    say_where_speech_runs(conversation, [moved])
    said = capsys.readouterr().err.splitlines()
    plan = conversation.plan
    assert (
        said[0] == f"omnidesk: speech on Talker {plan.talker_label}, Token2Wav {plan.token2wav_label} (Fast)"
    )
    assert said[1:] == [f"omnidesk: {cpu_torch}", f"omnidesk: {moved}"]


class Replying:
    """A conversation whose reply is `pieces` of text."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def turn(self, question, options, heard=None):
        yield from (TextDelta(piece) for piece in self.pieces)
        yield TurnFinished("end", "".join(self.pieces), (), ())

    def cancel(self) -> None:
        pass


def test_a_reply_never_writes_control_characters_to_the_terminal(capsys):
    """A reply is untrusted: ESC would move the cursor, recolour or retitle the terminal."""
    pieces = ["Hello \x1b[2J\x1b]0;title\x07", "world\x0b\x1d\x9b31m", "\x1b", "[1A.\tdone\r\n"]
    finished, _ = speak_turn(Replying(pieces), "hi", TurnOptions(speak=False), None, None)  # type: ignore[arg-type]
    shown = capsys.readouterr().out
    assert not [c for c in shown if (ord(c) < 32 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F], repr(shown)
    assert shown.startswith("Hello ") and "world" in shown and ".\tdone\n" in shown
    assert finished.text == "".join(pieces), "what the model said is kept as it came"


class CutShort(Replying):
    """A conversation whose speech the plan's bound stopped (`model.pipeline.SpeechCut`)."""

    def turn(self, question, options, heard=None):
        yield TextDelta("Hello.")
        yield SpeechCut(38.0)
        yield TurnFinished("end", "Hello.", (), ())


def test_speech_cut_short_is_said_in_one_line_naming_the_setting(capsys):
    speak_turn(CutShort([]), "hi", TurnOptions(speak=False), None, None)  # type: ignore[arg-type]
    said = capsys.readouterr().err.splitlines()
    assert said == [f"omnidesk: {SpeechCut(38.0).message}"] and "Speech quality: Exact" in said[0]


@pytest.mark.parametrize("command", [["ask", "--models", "m", "Hello?"], ["serve", "--models", "m"]])
def test_quick_start_is_asked_for_on_the_command_line(command):
    assert not plan_choice(_parser().parse_args(command)).quick_start
    assert plan_choice(_parser().parse_args([*command[:3], "--quick-start", *command[3:]])).quick_start

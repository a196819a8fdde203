"""A model's life on a GPU, on this CPU: loading captures Token2Wav's window graph before the first
reply, and closing (a reload) gives the speech stages' memory back before the next model loads.

torch's CUDA graph primitives are stood in for by CPU ones (a capture runs the ODE once, a replay
returns what it made), so the real capture and replay code (`graph.WindowGraph`) runs; the tiny
bundle's stages stay on the CPU."""

from __future__ import annotations

import contextlib
import gc
import weakref
from dataclasses import replace

import pytest
import torch

from model.files.bundle import Bundle
from model.pipeline import Conversation, TurnFinished
from model.placement import EXACT
from model.thinker_types import ThinkerOptions
from model.token2wav.synthesizer import Token2Wav
from tests.model.test_pipeline import SPOKEN


class FakeGraphs:
    """torch.cuda's stream and graph calls, counted: captures and replays."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.captures = 0
        self.replays = 0
        fakes = self

        class Stream:
            def wait_stream(self, other: object) -> None:
                pass

        class CUDAGraph:
            def replay(self) -> None:
                fakes.replays += 1

        @contextlib.contextmanager
        def graph(graph: CUDAGraph, capture_error_mode: str = "global"):
            fakes.captures += 1
            yield

        monkeypatch.setattr(torch.cuda, "Stream", Stream)
        monkeypatch.setattr(torch.cuda, "current_stream", Stream)
        monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "CUDAGraph", CUDAGraph)
        monkeypatch.setattr(torch.cuda, "graph", graph)
        monkeypatch.setattr(Token2Wav, "graphs", property(lambda self: True))


def spoken_turn(conversation: Conversation) -> TurnFinished:
    events = list(conversation.turn("Hi", SPOKEN))
    finished = events[-1]
    assert isinstance(finished, TurnFinished) and finished.reason in ("end", "length")
    return finished


class TestLoadWarmsTheGraphs:
    def test_prepare_captures_the_window_graph_and_the_first_reply_only_replays_it(
        self, tiny_bundle: Bundle, monkeypatch
    ):
        graphs = FakeGraphs(monkeypatch)
        plan = replace(EXACT, stream=replace(EXACT.stream, fixed_windows=True))
        conversation = Conversation(tiny_bundle, ThinkerOptions(n_ctx=2048, kv_cache_type="f32"), plan)
        try:
            conversation.prepare("Chelsie")
            assert graphs.captures == 1 and graphs.replays == 0
            assert conversation.graph_capture_s > 0
            spoken_turn(conversation)
            assert graphs.captures == 1 and graphs.replays > 0  # the reply replayed what load captured
        finally:
            conversation.close()

    def test_windows_of_varying_shape_capture_nothing(self, tiny_bundle: Bundle, monkeypatch):
        graphs = FakeGraphs(monkeypatch)
        conversation = Conversation(tiny_bundle, ThinkerOptions(n_ctx=2048, kv_cache_type="f32"))
        try:
            conversation.prepare("Chelsie")
            assert graphs.captures == 0 and conversation.graph_capture_s == 0.0
        finally:
            conversation.close()


class TestReloadFreesTheGpu:
    def test_close_drops_the_speech_stages_before_giving_the_cache_back(
        self, tiny_bundle: Bundle, monkeypatch
    ):
        """The reload cycle: load, speak, close, load again. When torch's cache is emptied, nothing of the
        first model's Talker, Token2Wav or audio encoder is alive any more, so their memory goes back."""
        conversation = Conversation(tiny_bundle, ThinkerOptions(n_ctx=2048, kv_cache_type="f32"))
        conversation.prepare("Chelsie")
        spoken_turn(conversation)
        talker, token2wav = conversation._speech_parts()
        stages = [weakref.ref(talker.model), weakref.ref(token2wav.dit), weakref.ref(token2wav.vocoder)]
        encoder = conversation.perception._audio
        if encoder is not None:
            stages.append(weakref.ref(encoder))
        del talker, token2wav, encoder
        alive_when_emptied: list[int] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(
            torch.cuda, "empty_cache", lambda: alive_when_emptied.append(sum(s() is not None for s in stages))
        )
        gc.disable()  # only what close() collects counts
        try:
            conversation.close()
        finally:
            gc.enable()
        assert alive_when_emptied == [0]
        monkeypatch.undo()
        again = Conversation(tiny_bundle, ThinkerOptions(n_ctx=2048, kv_cache_type="f32"))
        try:
            again.prepare("Chelsie")
            spoken_turn(again)
        finally:
            again.close()

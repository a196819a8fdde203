"""The streaming pipeline on the tiny bundle: order of events, streaming, interruption, context."""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from model import native_library
from model.files.bundle import Bundle
from model.media import Audio, Image, Question
from model.pipeline import (
    AudioChunk,
    ContextTrimmed,
    Conversation,
    Exchange,
    Mark,
    RecordingCut,
    SpeechCut,
    TextDelta,
    TurnFinished,
    TurnOptions,
    stages,
)
from model.pipeline.out_of_memory import out_of_gpu_memory
from model.placement import CPU_FLOAT32, FAST_STREAM, Placement, Plan, ThreadBudget
from model.sampling import SamplingOptions
from model.speech_bound import SpeechBound
from model.talker import SpeechOptions, Talker
from model.thinker_types import Decoded, ThinkerOptions, TokenRun
from model.token2wav import fused_snake
from model.token2wav.streaming import StreamingSynthesizer
from model.token2wav.synthesizer import Token2Wav
from tests.helpers import (
    bundle_that_hears,
    generate_inputs,
    max_abs_error,
    photo_like,
    reference_inputs,
    speech_like,
)

GREEDY = SamplingOptions(greedy=True, repetition_penalty=1.0)
SPOKEN = TurnOptions(
    max_tokens=48,
    sampling=GREEDY,
    speech=SpeechOptions(sampling=SamplingOptions(greedy=True), max_codes=150),
    seed=3,
)


@pytest.fixture(autouse=True)
def fresh_history(conversation: Conversation):
    conversation.history.clear()
    conversation.thinker.reset()


def run(conversation: Conversation, question: str | Question, options: TurnOptions) -> list:
    events = list(conversation.turn(question, options))
    assert isinstance(events[-1], TurnFinished)
    return events


def marks(events: list) -> dict[str, float]:
    return {e.name: e.seconds for e in events if isinstance(e, Mark)}


def audio(events: list) -> np.ndarray:
    chunks = [e.samples for e in events if isinstance(e, AudioChunk)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


class TestTextOnly:
    def test_streams_text_and_never_loads_speech(self, tiny_bundle: Bundle):
        fresh = Conversation(tiny_bundle, ThinkerOptions(n_ctx=2048))
        events = run(fresh, "What am I looking at?", TurnOptions(speak=False, max_tokens=20, sampling=GREEDY))
        finished = events[-1]
        assert finished.reason == "length" and len(finished.reply_ids) == 20
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == finished.text
        assert not any(isinstance(e, AudioChunk) for e in events) and finished.codes == ()
        assert fresh._talker is None and fresh._token2wav is None, "speech parts are not even loaded"
        assert list(marks(events)) == ["input_ready", "first_text", "thinker_done", "done"]


class TestSpeech:
    def test_streamed_audio_equals_the_streaming_synthesis_of_the_same_codes(self, conversation):
        events = run(conversation, "Tell me about the picture.", SPOKEN)
        finished = events[-1]
        assert finished.reason in ("end", "length") and len(finished.codes) > 36
        talker, t2w = conversation._speech_parts()
        offline = StreamingSynthesizer(
            t2w, conversation.voices[SPOKEN.speech.voice], SPOKEN.seed, SPOKEN.stream
        )
        expected = torch.cat([offline.push(list(finished.codes)), offline.finish()]).numpy()
        streamed = audio(events)
        assert len(streamed) == 480 * len(finished.codes)
        assert max_abs_error("streamed vs offline streaming synthesis", streamed, expected) < 1e-5

    def test_the_first_audio_comes_before_the_thinker_finishes(self, conversation, monkeypatch):
        """The tiny Thinker writes ~1500 tokens/s; paced to 200 tokens/s (a real 7B on a GPU writes
        fewer), a 600-token reply lasts 3 s, and the first audio must come within it."""
        generate = conversation.thinker.generate

        def paced(*args, **kwargs):
            for event in generate(*args, **kwargs):
                if isinstance(event, Decoded):
                    time.sleep(1 / 200)
                yield event

        monkeypatch.setattr(conversation.thinker, "generate", paced)
        options = TurnOptions(max_tokens=600, sampling=GREEDY, speech=SpeechOptions(max_codes=60), seed=3)
        events = run(conversation, "Please answer at length.", options)
        times = marks(events)
        print({k: round(v, 3) for k, v in times.items()})
        assert len(events[-1].reply_ids) == 600, "a long reply"
        assert times["first_text"] < times["first_code"] < times["first_audio"] < times["thinker_done"]

    def test_full_utterance_speaks_the_same_codes_at_once(self, conversation):
        events = run(conversation, "Tell me about the picture.", SPOKEN)
        conversation.history.clear()
        whole = run(
            conversation,
            "Tell me about the picture.",
            TurnOptions(**{**vars(SPOKEN), "full_utterance": True}),
        )
        assert whole[-1].codes == events[-1].codes
        assert len([e for e in whole if isinstance(e, AudioChunk)]) == 1
        assert len(audio(whole)) == len(audio(events))


class TestInterruption:
    def test_cancel_stops_every_stage_quickly_and_keeps_the_partial_reply(self, conversation, tiny_bundle):
        options = TurnOptions(max_tokens=2000, sampling=GREEDY, speech=SpeechOptions(max_codes=4000), seed=3)
        threads_before = threading.active_count()
        stopped_at = None
        events = []
        for event in conversation.turn("Talk for a long time.", options):
            events.append(event)
            if isinstance(event, AudioChunk) and stopped_at is None:
                stopped_at = time.perf_counter()
                conversation.cancel()
        ended = time.perf_counter() - stopped_at
        finished = events[-1]
        print(f"all stages stopped {ended * 1000:.0f} ms after the cancel")
        assert finished.reason == "cancelled" and ended < 0.2
        assert threading.active_count() == threads_before
        exchange = conversation.history[-1]
        assert exchange.interrupted and exchange.reply_ids == finished.reply_ids

        # The next turn's prompt holds the interrupted reply, and its KV cache equals a fresh prefill.
        following = run(conversation, "And then?", TurnOptions(speak=False, max_tokens=4, sampling=GREEDY))[
            -1
        ]
        prompt = list(following.prompt_ids)
        reply = list(finished.reply_ids)
        assert any(prompt[i : i + len(reply)] == reply for i in range(len(prompt) - len(reply) + 1))
        thinker = conversation.thinker
        _, cached = thinker.prefill([TokenRun(tuple(prompt))], all_logits=False)
        thinker.reset()
        _, fresh = thinker.prefill([TokenRun(tuple(prompt))], all_logits=False)
        assert max_abs_error("logits, cached vs fresh prefill", cached, fresh) < 1e-5


def only_new_positions_decoded(
    conversation: Conversation, questions: list, options: TurnOptions
) -> list[int]:
    """Run the turns; assert each decoded only what the cache lacked. Returns the prompt lengths."""
    decoded, prompts, replies = [], [], []
    for question in questions:
        finished = run(conversation, question, options)[-1]
        assert finished.reason in ("end", "length"), finished.error
        decoded.append(finished.prompt_decoded)
        prompts.append(len(finished.prompt_ids))
        replies.append(len(finished.reply_ids))
    print("positions decoded per turn:", decoded, "prompt lengths:", prompts)
    assert decoded[0] == prompts[0]
    # The cache holds the previous prompt and its reply but its last token (never fed back).
    for turn in range(1, len(questions)):
        assert decoded[turn] == prompts[turn] - (prompts[turn - 1] + replies[turn - 1] - 1)
    return prompts


class TestConversation:
    def test_each_turn_decodes_only_its_new_tokens(self, conversation):
        options = TurnOptions(speak=False, max_tokens=16, sampling=GREEDY)
        only_new_positions_decoded(conversation, ["First question", "Second one", "Third"], options)

    def test_turns_with_media_decode_only_their_new_positions(self, conversation):
        options = TurnOptions(speak=False, max_tokens=16, sampling=GREEDY)
        questions = [
            Question("What is this?", images=(Image(photo_like(112, 168, seed=1)),)),
            Question("", audios=(Audio(speech_like(1.5, seed=2)),)),
            Question(
                "And now?", images=(Image(photo_like(168, 112, seed=3)),), audios=(Audio(speech_like(1.0)),)
            ),
        ]
        prompts = only_new_positions_decoded(conversation, questions, options)
        # What the cache holds after three turns equals one prefill of the third prompt.
        kept = conversation.thinker.states(0, prompts[2]).hidden
        third = conversation.history.pop()
        _, segments = conversation.prompt(list(third.user_ids), third.media)
        conversation.thinker.reset()
        conversation.thinker.prefill(segments)
        fresh = conversation.thinker.states(0, prompts[2]).hidden
        assert max_abs_error("hidden states, turn by turn vs one prefill", kept, fresh) < 1e-4

    def test_a_full_context_drops_the_oldest_turns_and_says_so(self, tiny_bundle: Bundle):
        small = Conversation(tiny_bundle, ThinkerOptions(n_ctx=256))
        options = TurnOptions(speak=False, max_tokens=40, sampling=GREEDY)
        trimmed = []
        for i in range(8):
            events = run(small, f"Question number {i} with some words in it", options)
            trimmed += [e for e in events if isinstance(e, ContextTrimmed)]
            assert events[-1].reason in ("end", "length")
            assert events[-1].prompt_ids[: len(small._system)] == tuple(small._system), (
                "the system prompt stays"
            )
        assert trimmed and all(t.dropped >= 1 for t in trimmed)
        assert len(small.history) < 8

    def test_the_persona_survives_trimming(self, tiny_bundle: Bundle):
        small = Conversation(tiny_bundle, ThinkerOptions(n_ctx=256), persona="Be brief.")
        options = TurnOptions(speak=False, max_tokens=40, sampling=GREEDY)
        for i in range(6):
            finished = run(small, f"Question {i} with a few more words", options)[-1]
        text = small.thinker.detokenize(list(finished.prompt_ids), special=True)
        assert len(small.history) < 6 and "Question 0" not in text
        assert text.count("Be brief.") == 1

    def test_the_persona_goes_into_the_first_question(self, tiny_bundle: Bundle):
        personal = Conversation(tiny_bundle, ThinkerOptions(n_ctx=2048), persona="You are a pirate.")
        first = run(personal, "Hello", TurnOptions(speak=False, max_tokens=4, sampling=GREEDY))[-1]
        text = personal.thinker.detokenize(list(first.prompt_ids), special=True)
        assert "<|im_start|>user\nYou are a pirate.\n\nHello<|im_end|>" in text
        assert "You are Qwen" in text, "the model's own system prompt stays, for speech"

    def test_a_recording_past_the_bundles_limit_is_cut_and_the_turn_says_so(self, tiny_bundle, tmp_path):
        """The limit is the checkpoint's, kept in the bundle: one that hears 2 s cuts a 3 s recording."""
        bundle = Bundle.open(bundle_that_hears(tiny_bundle, 2, tmp_path))
        hearing = Conversation(bundle, ThinkerOptions(n_ctx=1024))
        question = Question("What did I say?", audios=(Audio(speech_like(3.0)),))
        events = run(hearing, question, TurnOptions(speak=False, max_tokens=4, sampling=GREEDY))
        hearing.close()
        cuts = [e for e in events if isinstance(e, RecordingCut)]
        assert cuts == [RecordingCut(heard_s=2.0, length_s=3.0)]
        assert events.index(cuts[0]) < next(i for i, e in enumerate(events) if isinstance(e, Mark))
        assert events[-1].reason in ("end", "length")
        assert events[-1].prompt_ids.count(bundle.tokens["audio"]) == 50, "2 s, 25 embeddings a second"


class TestBadInput:
    def test_an_empty_question(self, conversation):
        finished = run(conversation, "   ", SPOKEN)[-1]
        assert finished.reason == "error" and "empty" in finished.error

    def test_an_unknown_voice(self, conversation):
        finished = run(conversation, "Hi", TurnOptions(speech=SpeechOptions(voice="Nobody")))[-1]
        assert finished.reason == "error" and "Nobody" in finished.error and "Chelsie" in finished.error

    @pytest.mark.parametrize("stage", ["talker", "token2wav"])
    def test_a_failing_stage_ends_the_turn_and_the_conversation_goes_on(
        self, conversation, monkeypatch, stage, tiny_bundle: Bundle
    ):
        talker, t2w = conversation._speech_parts()

        def broken(*args, **kwargs):
            raise RuntimeError(f"injected {stage} failure")

        if stage == "talker":
            monkeypatch.setattr(talker, "speak", broken)
        else:
            monkeypatch.setattr("model.pipeline.stages.StreamingSynthesizer.mel_chunks", broken)
        threads_before = threading.active_count()
        finished = run(conversation, "Hi", SPOKEN)[-1]
        assert finished.reason == "error" and f"injected {stage} failure" in finished.error
        assert f"omnidesk models verify {tiny_bundle.root}" in finished.error, "damage could explain it"
        assert threading.active_count() == threads_before
        monkeypatch.undo()
        assert run(conversation, "Hi again", SPOKEN)[-1].reason in ("end", "length")

    def test_a_batch_llama_cpp_refuses_suggests_verifying_the_files(
        self, conversation, monkeypatch, tiny_bundle
    ):
        monkeypatch.setattr("model.thinker.llama_cpp.llama_decode", lambda ctx, batch: 1)
        finished = run(conversation, "Hi", SPOKEN)[-1]
        assert (
            finished.reason == "error" and "llama.cpp failed to decode a batch (status 1)" in finished.error
        )
        assert f"omnidesk models verify {tiny_bundle.root}" in finished.error

    def test_a_bad_question_does_not_suggest_damage(self, conversation):
        finished = run(conversation, "Hi", replace(SPOKEN, speech=SpeechOptions(voice="Nobody")))[-1]
        assert finished.reason == "error" and "verify" not in finished.error

    def test_a_history_that_reads_as_media_is_an_error_event(self, conversation, tiny_bundle: Bundle):
        """A reply holding a media placeholder (never sampled, but a damaged history could hold one)."""
        user_ids = tuple(conversation.layout.message("user", "Hi"))
        conversation.history.append(Exchange("Hi", user_ids, (tiny_bundle.tokens["image"],), "?"))
        finished = run(conversation, "And now?", SPOKEN)[-1]
        assert finished.reason == "error" and "could not be laid out" in finished.error


class TestOutOfMemory:
    """A GPU that runs out of memory mid-turn, injected on this CPU: the stage's placement stands in for
    a GPU one (CPU bfloat16), and the stage raises the error torch raises on CUDA."""

    ON_GPU = Placement("cpu", torch.bfloat16)  # stands in for a GPU placement: what the move changes

    @pytest.fixture
    def placed(self, tiny_bundle: Bundle):
        plan = Plan(audio_encoder=self.ON_GPU, talker=self.ON_GPU, token2wav=self.ON_GPU, quality="exact")
        conversation = Conversation(tiny_bundle, ThinkerOptions(n_ctx=2048, kv_cache_type="f32"), plan)
        yield conversation
        conversation.close()

    @pytest.mark.parametrize(
        ("stage", "where", "said"),
        [
            ("talker", "model.talker.speech.Talker.speak", "the Talker"),
            ("token2wav", "model.token2wav.streaming.StreamingSynthesizer.mel_chunks", "Token2Wav"),
            ("audio_encoder", "model.audio_encoder.AudioEncoder.encode", "the audio encoder"),
            ("talker", "model.talker.speech.Talker.load", "the Talker"),  # while loading it
        ],
    )
    def test_the_turn_ends_with_a_clear_message_and_the_next_runs_the_stage_on_the_cpu(
        self, placed: Conversation, monkeypatch, stage, where, said
    ):
        def out_of_memory(*args, **kwargs):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        question = Question("What did I say?", audios=(Audio(speech_like(1.0)),))
        placed.prepare(None if where.endswith(".load") else "Chelsie")
        monkeypatch.setattr(where, out_of_memory)
        threads_before = threading.active_count()
        finished = run(placed, question, SPOKEN)[-1]
        assert finished.reason == "error"
        assert finished.error == f"The GPU ran out of memory: {said} now runs on the CPU; ask again."
        assert threading.active_count() == threads_before
        assert placed.plan.placement(stage) == CPU_FLOAT32 and placed.plan.notes[-1] == finished.error
        others = [s for s in ("audio_encoder", "talker", "token2wav") if s != stage]
        assert all(placed.plan.placement(s) == self.ON_GPU for s in others)

        monkeypatch.undo()
        again = run(placed, question, SPOKEN)
        assert again[-1].reason in ("end", "length") and len(audio(again)) > 0
        talker, t2w = placed._speech_parts()
        loaded = {"talker": talker.dtype, "token2wav": t2w.dtype, "audio_encoder": placed.perception.dtype}
        assert loaded[stage] == torch.float32
        assert all(loaded[s] == torch.bfloat16 for s in others)

    @pytest.mark.parametrize(
        ("stage", "part", "method", "said"),
        [("talker", Talker, "prime", "the Talker"), ("token2wav", Token2Wav, "voice_features", "Token2Wav")],
    )
    def test_running_out_while_getting_ready_moves_the_stage_to_the_cpu_at_once(
        self, placed: Conversation, monkeypatch, stage, part, method, said
    ):
        real = getattr(part, method)

        def out_of_memory_on_the_gpu(self, *args, **kwargs):
            if self.dtype != torch.float32:  # the stand-in GPU placement
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real(self, *args, **kwargs)

        monkeypatch.setattr(part, method, out_of_memory_on_the_gpu)
        assert placed.prepare("Chelsie") == [f"The GPU ran out of memory: {said} now runs on the CPU."]
        assert placed.plan.placement(stage) == CPU_FLOAT32
        spoken = run(placed, "Hi", SPOKEN)
        assert spoken[-1].reason in ("end", "length") and len(audio(spoken)) > 0

    def test_other_failures_are_not_taken_for_memory(self):
        assert out_of_gpu_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
        assert out_of_gpu_memory(RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"))
        assert not out_of_gpu_memory(RuntimeError("CUDA error: device-side assert triggered"))
        assert not out_of_gpu_memory(MemoryError())


class TestFusedVocoder:
    """The Fast profile's fused vocoder activations (token2wav/fused_snake.py), built by this machine's
    compiler, and what a machine without one gets: torch's, and a line that says what to install."""

    @pytest.fixture
    def fresh_builds(self):
        """Builds are looked up again, as in a new process (each module keeps what it loaded)."""
        fused_snake.load.cache_clear()
        native_library.load.cache_clear()
        yield
        fused_snake.load.cache_clear()
        native_library.load.cache_clear()

    def _speaks(self, tiny_bundle: Bundle) -> tuple[Conversation, list[str]]:
        plan = Plan(fused_vocoder=True, quality="exact")
        conversation = Conversation(tiny_bundle, ThinkerOptions(n_ctx=2048), plan)
        notes = conversation.prepare("Chelsie")
        spoken = run(conversation, "Hi", SPOKEN)
        assert spoken[-1].reason in ("end", "length") and len(audio(spoken)) > 0
        return conversation, notes

    def test_the_plan_speaks_with_them(self, tiny_bundle: Bundle, fresh_builds):
        conversation, notes = self._speaks(tiny_bundle)
        try:
            assert notes == [] and conversation.plan.fused_vocoder
            assert conversation._speech_parts()[1].vocoder.fused
        finally:
            conversation.close()

    def test_without_a_compiler_speech_uses_torchs_and_says_what_to_install(
        self, tiny_bundle: Bundle, fresh_builds, monkeypatch
    ):
        monkeypatch.setenv("CC", "/nonexistent/cc")
        conversation, notes = self._speaks(tiny_bundle)
        try:
            assert len(notes) == 1 and notes[0].startswith("Speech is made more slowly than it could be here")
            assert "install a C compiler" in notes[0] and notes[0] in conversation.plan.notes
            assert not conversation.plan.fused_vocoder
            assert not conversation._speech_parts()[1].vocoder.fused
        finally:
            conversation.close()


class TestEndToEnd:
    SEED, MAX_TEXT, MAX_CODES = 11, 12, 60
    REFERENCE_SPEECH = SpeechOptions(
        sampling=SamplingOptions(greedy=True),
        max_codes=MAX_CODES,
        embeddable_only=False,
        prompt_codec_embeddings=False,  # transformers 5's generate, see SpeechOptions
    )

    @pytest.mark.parametrize(
        "media",
        ["text", "audio", "image-and-audio"],
    )
    def test_full_utterance_equals_reference_generate(self, conversation, reference_model, media):
        """Greedy Thinker and Talker, seeded noise: reply ids, codes and waveform equal transformers'."""
        images = [photo_like(224, 336, seed=7)] if "image" in media else []
        audios = [speech_like(2.0, seed=7)] if "audio" in media else []
        question = Question(
            "Say hello to me.", images=tuple(map(Image, images)), audios=tuple(map(Audio, audios))
        )
        options = TurnOptions(
            max_tokens=self.MAX_TEXT,
            sampling=GREEDY,
            speech=self.REFERENCE_SPEECH,
            seed=self.SEED,
            full_utterance=True,
        )
        events = list(conversation.turn(question, options))
        ours = events[-1]
        assert ours.reason in ("end", "length"), ours.error

        torch.manual_seed(self.SEED)
        with torch.no_grad():
            sequences, waveform = reference_model.generate(
                input_ids=torch.tensor([list(ours.prompt_ids)]),
                attention_mask=torch.ones(1, len(ours.prompt_ids), dtype=torch.long),
                speaker="Chelsie",
                thinker_max_new_tokens=self.MAX_TEXT,
                thinker_do_sample=False,
                talker_max_new_tokens=self.MAX_CODES,
                talker_do_sample=False,
                **generate_inputs(reference_inputs(images, audios)),
            )
        assert sequences[0, len(ours.prompt_ids) :].tolist() == list(ours.reply_ids)
        expected = waveform.reshape(-1).numpy()
        assert len(expected) == 480 * len(ours.codes)
        assert max_abs_error(f"end-to-end waveform, {media}", audio(events), expected) < 1e-3


class TestLongConversations:
    def test_a_prompt_that_fills_the_context_still_speaks(self, tiny_bundle: Bundle):
        """The Talker holds whatever prompt the Thinker holds, plus the most codes a reply may speak
        (its cache was once a fixed 8192 positions: past 4095 prompt positions no reply could speak)."""
        conversation = Conversation(tiny_bundle, ThinkerOptions(n_ctx=6144))
        long_question = " ".join(f"word{i}" for i in range(700))
        options = replace(SPOKEN, speech=replace(SPOKEN.speech, max_codes=4096), max_tokens=8)
        try:
            finished = run(conversation, long_question, options)[-1]
            prompt = len(finished.prompt_ids)
            print(f"\nprompt of {prompt} positions, {len(finished.codes)} codes spoken")
            assert prompt + 1 + 4096 > 8192 and finished.reason in ("end", "length") and finished.codes
        finally:
            conversation.close()

    def test_prepare_decodes_the_system_prompt_before_the_first_question(self, conversation: Conversation):
        conversation.prepare("Chelsie")
        system = conversation.thinker.n_cached
        finished = run(conversation, "Hi", SPOKEN)[-1]
        assert 0 < finished.prompt_decoded == len(finished.prompt_ids) - system
        assert finished.codes


class TestSharedCores:
    def test_speech_comes_before_the_thinker_later_stages_or_the_talker_first_as_the_plan_says(
        self, conversation, monkeypatch
    ):
        niceness: dict[str, int] = {}

        def note(n: int) -> None:
            niceness[threading.current_thread().name] = n

        monkeypatch.setattr(stages, "yield_to_later_stages", note)
        budget = ThreadBudget(thinker=1, thinker_prompt=2, torch=1, downstream_first=True)
        monkeypatch.setattr(conversation, "plan", replace(conversation.plan, threads=budget))
        run(conversation, "Hi", SPOKEN)
        assert niceness == {"thinker": 3, "talker": 2, "dit": 1, "vocoder": 0}
        niceness.clear()
        monkeypatch.setattr(
            conversation, "plan", replace(conversation.plan, threads=replace(budget, talker_first=True))
        )
        run(conversation, "Hi", SPOKEN)
        assert niceness == {"thinker": 3, "dit": 2, "vocoder": 1, "talker": 0}

    @pytest.mark.skipif(sys.platform != "linux", reason="threads have nice values of their own on Linux")
    def test_a_thread_lowers_its_own_priority_only(self):
        seen: list[int] = []

        def stage() -> None:
            stages.yield_to_later_stages(2)
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

        before = os.getpriority(os.PRIO_PROCESS, 0)
        thread = threading.Thread(target=stage)
        thread.start()
        thread.join()
        assert seen == [before + 2] and os.getpriority(os.PRIO_PROCESS, 0) == before


def forced(tokens: int, codes: int) -> TurnOptions:
    """A greedy turn of exactly `tokens` text tokens and `codes` codes."""
    return TurnOptions(
        max_tokens=tokens,
        min_tokens=tokens,
        sampling=GREEDY,
        speech=SpeechOptions(sampling=SamplingOptions(greedy=True), min_codes=codes, max_codes=codes),
        seed=3,
    )


# The Thinker stops after 4 tokens; the Talker may not stop before 150 codes (what a Talker that missed
# its stop would do), so speech goes on long after the Thinker has finished.
SPEECH_PAST_THE_TEXT = forced(4, 150)


class TestCoresAfterTheReply:
    @pytest.mark.parametrize("talker_first", [False, True])
    def test_speech_gets_the_thinkers_cores_once_the_reply_is_decoded_and_gives_them_back(
        self, conversation, monkeypatch, talker_first
    ):
        """Each speech stage's torch threads, as set on its own thread (OpenMP counts per thread),
        after each of its units of work, in order with the ends of the Thinker's reply and the
        Talker's codes: every stage once the reply is decoded, or with `talker_first` Token2Wav's
        once the codes are made too, the Talker keeping its one."""
        timeline: list[tuple[str, int]] = []
        apply, generate = stages.SpeechThreads.apply, conversation.thinker.generate
        talker_finished = stages.SpeechThreads.talker_finished
        speech = {"talker", "dit", "vocoder"}

        def noted_apply(self, stage: str) -> None:
            apply(self, stage)
            timeline.append((threading.current_thread().name, torch.get_num_threads()))

        def noted_generate(*args, **kwargs):
            yield from generate(*args, **kwargs)
            for _ in range(3000):  # the reply ends once every speech stage has started (the tiny
                if speech <= {name for name, _ in timeline}:  # Thinker is quicker than a thread start)
                    break
                time.sleep(0.01)
            timeline.append(("thinker finished", 0))

        def noted_talker_finished(self) -> None:
            timeline.append(("talker finished", 0))
            talker_finished(self)

        budget = ThreadBudget(thinker=1, thinker_prompt=2, torch=1, speech_alone=2, talker_first=talker_first)
        monkeypatch.setattr(stages.SpeechThreads, "apply", noted_apply)
        monkeypatch.setattr(stages.SpeechThreads, "talker_finished", noted_talker_finished)
        monkeypatch.setattr(conversation.thinker, "generate", noted_generate)
        monkeypatch.setattr(conversation, "plan", replace(conversation.plan, threads=budget))
        before = torch.get_num_threads()
        try:
            for turn in range(2):
                timeline.clear()
                assert len(run(conversation, "Hi", SPEECH_PAST_THE_TEXT)[-1].codes) == 150
                thinker_done = timeline.index(("thinker finished", 0))
                talker_done = timeline.index(("talker finished", 0))
                assert thinker_done < talker_done, turn
                wide_from = talker_done if talker_first else thinker_done
                narrow = [(name, count) for name, count in timeline[:wide_from] if name in speech]
                assert {name for name, _ in narrow} == speech, turn
                assert all(count == 1 for _, count in narrow), turn  # the Thinker's cores are its own
                for stage in ("dit", "vocoder"):
                    counts = [count for name, count in timeline[wide_from:] if name == stage]
                    assert counts and counts[-1] == 2, (turn, stage)
                talker = [count for name, count in timeline if name == "talker"]
                assert talker[-1] == (1 if talker_first else 2), turn
                assert torch.get_num_threads() == 1, "taken back at the turn's end"
        finally:
            torch.set_num_threads(before)


# A reply whose first sound's codes (24, FAST_STREAM) come while the Thinker still decodes.
LONG_REPLY = forced(60, 80)


class TestFirstSoundFirst:
    @pytest.mark.parametrize("first_sound_first", [False, True])
    def test_the_thinker_waits_while_the_first_sound_is_made_on_its_cores(
        self, conversation, monkeypatch, first_sound_first
    ):
        """Between the code that completes the first sound's window and that sound, the Thinker
        decodes at most the token it was decoding, and the DiT and the vocoder take `speech_alone`;
        after it, they go back to `torch` while the Thinker decodes. Without the plan's
        `first_sound_first` the Thinker decodes on meanwhile."""
        timeline: list[tuple[str, int]] = []
        generate, apply, audio_out = (
            conversation.thinker.generate,
            stages.SpeechThreads.apply,
            stages.TurnStages._audio,
        )
        talker, token2wav = conversation._speech_parts()
        speak = talker.speak

        def noted_generate(*args, **kwargs):  # a Thinker slower than the tiny Talker, as a CPU's is
            for event in generate(*args, **kwargs):
                if isinstance(event, Decoded):
                    time.sleep(0.01)
                    timeline.append(("token", 0))
                yield event

        def noted_speak(*args, **kwargs):
            for count, code in enumerate(speak(*args, **kwargs), 1):
                timeline.append(("code", count))
                yield code

        def noted_apply(self, stage: str) -> None:
            apply(self, stage)
            timeline.append((threading.current_thread().name, torch.get_num_threads()))

        def noted_audio(self, samples) -> None:
            if samples.numel():
                timeline.append(("audio", 0))
            audio_out(self, samples)

        budget = ThreadBudget(
            thinker=1, thinker_prompt=2, torch=1, speech_alone=2, first_sound_first=first_sound_first
        )
        monkeypatch.setattr(conversation.thinker, "generate", noted_generate)
        monkeypatch.setattr(talker, "speak", noted_speak)
        monkeypatch.setattr(stages.SpeechThreads, "apply", noted_apply)
        monkeypatch.setattr(stages.TurnStages, "_audio", noted_audio)
        monkeypatch.setattr(
            conversation, "plan", replace(conversation.plan, threads=budget, stream=FAST_STREAM)
        )
        before = torch.get_num_threads()
        try:
            finished = run(conversation, "Hi", LONG_REPLY)[-1]
        finally:
            torch.set_num_threads(before)
        assert len(finished.reply_ids) == 60 and len(finished.codes) == 80
        complete = timeline.index(("code", FAST_STREAM.first_sound_codes(token2wav.block_codes)))
        heard = timeline.index(("audio", 0))
        while_made = timeline[complete:heard]
        tokens = sum(what == "token" for what, _ in while_made)
        print(
            f"\nfirst_sound_first={first_sound_first}: {tokens} tokens decoded while the first sound was made"
        )
        if not first_sound_first:
            assert tokens > 1
            return
        assert tokens <= 1  # the one in flight
        assert {count for name, count in while_made if name in ("dit", "vocoder")} == {2}
        after = timeline[heard:]
        last_token = max(i for i, (what, _) in enumerate(after) if what == "token")
        counts = [count for name, count in after[:last_token] if name in ("dit", "vocoder")]
        assert counts and set(counts[1:]) == {1}  # (the first may have been set as the sound went out)


class TestSpeechBound:
    def test_a_talker_that_never_stops_is_cut_at_the_bound_and_the_turn_says_so(
        self, conversation, monkeypatch
    ):
        bound = SpeechBound(codes_per_token=10, slack_codes=20)  # 4 tokens: 60 codes, then cut
        monkeypatch.setattr(conversation, "plan", replace(conversation.plan, speech_bound=bound))
        events = run(conversation, "Hi", SPEECH_PAST_THE_TEXT)
        finished, cuts = events[-1], [e for e in events if isinstance(e, SpeechCut)]
        assert len(finished.reply_ids) == 4 and len(finished.codes) == 61
        assert len(audio(events)) == 480 * 61, "every code made is heard"
        assert len(cuts) == 1 and "Speech quality: Exact" in cuts[0].message
        assert "\n" not in cuts[0].message

    def test_without_a_bound_the_talker_speaks_what_it_makes(self, conversation):
        assert conversation.plan.speech_bound is None  # Exact: the reference's behaviour
        events = run(conversation, "Hi", SPEECH_PAST_THE_TEXT)
        assert len(events[-1].codes) == 150 and not [e for e in events if isinstance(e, SpeechCut)]

"""The GGUF Thinker against transformers' Qwen2.5-Omni Thinker (text path), float32."""

from __future__ import annotations

import logging
import threading

import llama_cpp
import numpy as np
import pytest
import torch

from model.errors import ModelFileError, OmnideskError
from model.files.bundle import Bundle
from model.prompt_layout import SPEECH_SYSTEM_PROMPT, PromptLayout
from model.sampling import SamplingOptions
from model.thinker import Thinker
from model.thinker_types import (
    DEFAULT_CONTEXT,
    Decoded,
    EmbeddingRun,
    Finished,
    Sampled,
    ThinkerOptions,
    TokenRun,
)
from model.tmrope import TMRoPEConfig
from tests.fixtures.gguf_surgery import rewrite_gguf
from tests.helpers import max_abs_error

GREEDY = SamplingOptions(greedy=True, repetition_penalty=1.0)
SHORT_CONTEXT = 4096  # a trained context below the default
QUESTIONS = ["What am I looking at?", "Say it again, in 中文 please 😀", "def f(x):\n    return x  # why?"]


@pytest.fixture(scope="module")
def thinker(tiny_bundle: Bundle):
    with Thinker(
        tiny_bundle.file("thinker"), tiny_bundle.tokens, ThinkerOptions(n_ctx=2048, kv_cache_type="f32")
    ) as t:
        yield t


@pytest.fixture(scope="module")
def small_batches(tiny_bundle: Bundle):
    """The same Thinker decoding at most 7 rows a batch."""
    with Thinker(
        tiny_bundle.file("thinker"),
        tiny_bundle.tokens,
        ThinkerOptions(n_ctx=2048, n_batch=7, kv_cache_type="f32"),
    ) as t:
        yield t


@pytest.fixture(scope="module")
def layout(thinker: Thinker, tiny_bundle: Bundle) -> PromptLayout:
    return PromptLayout(
        thinker.tokenize,
        tiny_bundle.tokens,
        TMRoPEConfig.from_bundle(tiny_bundle.tokens, tiny_bundle.config["thinker_config"]),
    )


def reference_forward(reference_model, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Logits (n, V) and last hidden states (n, d) of the reference Thinker."""
    with torch.no_grad():
        out = reference_model.thinker(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.logits[0].numpy(), out.hidden_states[-1][0].numpy()


def reference_greedy(reference_model, ids: list[int], tokens: dict[str, int], n: int) -> list[int]:
    with torch.no_grad():
        out = reference_model.thinker.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=n,
            do_sample=False,
            repetition_penalty=1.0,
            eos_token_id=[tokens["im_end"], tokens["endoftext"]],
            pad_token_id=tokens["endoftext"],
        )
    return out[0, len(ids) :].tolist()


def run(thinker: Thinker, prompt: list[int], n: int, **kwargs) -> tuple[list, Finished]:
    events = list(thinker.generate([TokenRun(tuple(prompt))], GREEDY, max_tokens=n, **kwargs))
    finished = events[-1]
    assert isinstance(finished, Finished)
    return events, finished


def three_turn_prompts(layout: PromptLayout, replies: list[list[int]]) -> list[list[int]]:
    """The prompt of each turn, given the replies of the turns before it."""
    prompts, history = [], layout.message("system", SPEECH_SYSTEM_PROMPT)
    for i, question in enumerate(QUESTIONS):
        if i:
            history = history + layout.reply_header() + layout.closed_reply(replies[i - 1])
        history = history + layout.message("user", question)
        prompts.append(history + layout.reply_header())
    return prompts


class TestParity:
    def test_logits_and_hidden_states_match_at_every_position(self, thinker, layout, reference_model):
        replies = [thinker.tokenize(" Fine, thanks."), thinker.tokenize(" 好的！")]
        prompt = three_turn_prompts(layout, replies)[-1]
        thinker.reset()
        decoded, logits = thinker.prefill([TokenRun(tuple(prompt))], all_logits=True)
        ref_logits, ref_hidden = reference_forward(reference_model, prompt)
        assert decoded == len(prompt) > 100
        assert max_abs_error("logits", logits, ref_logits) < 1e-3
        assert max_abs_error("hidden", thinker.states(0, len(prompt)).hidden, ref_hidden) < 1e-3

    def test_input_embeddings_are_the_reference_embedding_rows(self, thinker, layout, reference_model):
        prompt = layout.prompt(SPEECH_SYSTEM_PROMPT, QUESTIONS[1])
        thinker.reset()
        thinker.prefill([TokenRun(tuple(prompt))])
        expected = reference_model.thinker.get_input_embeddings()(torch.tensor(prompt)).detach().numpy()
        assert max_abs_error("input embeddings", thinker.states(0, len(prompt)).embeddings, expected) == 0.0

    def test_greedy_reply_is_identical(self, thinker, layout, reference_model, tiny_bundle):
        prompt = layout.prompt(SPEECH_SYSTEM_PROMPT, QUESTIONS[0])
        thinker.reset()
        _, finished = run(thinker, prompt, 32)
        expected = reference_greedy(reference_model, prompt, tiny_bundle.tokens, 32)
        print("reply ids:", finished.reply_ids)
        assert list(finished.reply_ids) == expected
        assert len(expected) == 32

    def test_three_turns_reuse_the_cache_and_match(self, thinker, layout, reference_model, tiny_bundle):
        thinker.reset()
        replies: list[list[int]] = []
        decoded_counts = []
        for turn in range(3):
            prompt = three_turn_prompts(layout, replies + [[]] * (3 - len(replies)))[turn]
            cached_before = thinker.n_cached
            _, finished = run(thinker, prompt, 32)
            reply = list(finished.reply_ids)
            assert reply == reference_greedy(reference_model, prompt, tiny_bundle.tokens, 32), (
                f"turn {turn + 1}"
            )
            # Only what the cache lacks is decoded: the new turn, from the previous reply's last token on.
            common = 0 if turn == 0 else cached_before
            assert finished.prompt_decoded == len(prompt) - common
            decoded_counts.append(finished.prompt_decoded)
            replies.append(reply)
        print("prompt tokens decoded per turn:", decoded_counts)
        assert decoded_counts[1] < len(three_turn_prompts(layout, replies)[1]) / 2


class TestContext:
    def test_embedding_batches_with_explicit_positions_equal_token_batches(self, thinker, layout):
        prompt = layout.prompt(SPEECH_SYSTEM_PROMPT, QUESTIONS[2])
        thinker.reset()
        _, token_logits = thinker.prefill([TokenRun(tuple(prompt))], all_logits=True)
        token_hidden = thinker.states(0, len(prompt)).hidden
        middle = slice(10, 30)
        ids = prompt[middle]
        run_ = EmbeddingRun(
            embeddings=thinker.input_embeddings(ids),
            positions=np.broadcast_to(np.arange(middle.start, middle.stop), (3, len(ids))).copy(),
            key="same-text-as-embeddings",
            placeholder=ids[0],
        )
        thinker.reset()
        segments = [TokenRun(tuple(prompt[: middle.start])), run_, TokenRun(tuple(prompt[middle.stop :]))]
        _, mixed_logits = thinker.prefill(segments, all_logits=True)
        assert max_abs_error("logits, embeddings batch", mixed_logits, token_logits) < 1e-5
        assert (
            max_abs_error("hidden, embeddings batch", thinker.states(0, len(prompt)).hidden, token_hidden)
            < 1e-5
        )
        assert np.all(thinker.states(middle.start, middle.stop).embeddings == 0.0), "media rows are zeroed"

    def test_a_prompt_of_text_and_media_decodes_in_one_batch_whatever_the_batch_size(
        self, thinker, small_batches, layout, tiny_bundle, monkeypatch
    ):
        # Text, a media run, text: one llama_decode where the batch holds them all, as if each segment
        # had been decoded alone; in batches of 7 rows across the segments' edges, the same again.
        prompt = layout.prompt(SPEECH_SYSTEM_PROMPT, QUESTIONS[0])
        middle = slice(10, 30)
        ids = prompt[middle]
        rng = np.random.default_rng(5)
        run_ = EmbeddingRun(
            embeddings=rng.standard_normal((len(ids), thinker.n_embd)).astype(np.float32),
            positions=np.broadcast_to(np.arange(middle.start, middle.stop), (3, len(ids))).copy(),
            key="media",
            placeholder=tiny_bundle.tokens["image"],
        )
        segments = [TokenRun(tuple(prompt[: middle.start])), run_, TokenRun(tuple(prompt[middle.stop :]))]
        decodes: list[int] = []
        real_decode = llama_cpp.llama_decode

        def counted(ctx, batch):
            decodes.append(batch.n_tokens)
            return real_decode(ctx, batch)

        monkeypatch.setattr(llama_cpp, "llama_decode", counted)
        thinker.reset()
        for segment in segments:  # each alone
            thinker.extend([*segments[: segments.index(segment) + 1]])
        alone = thinker.states(0, len(prompt))
        assert decodes == [middle.start, len(ids), len(prompt) - middle.stop]
        decodes.clear()
        thinker.reset()
        _, logits = thinker.prefill(segments, all_logits=True)
        assert decodes == [len(prompt)]
        together = thinker.states(0, len(prompt))
        assert max_abs_error("hidden, one batch", together.hidden, alone.hidden) < 1e-5
        np.testing.assert_array_equal(together.token_ids, alone.token_ids)
        assert together.keys == alone.keys
        np.testing.assert_array_equal(together.embeddings, alone.embeddings)

        decodes.clear()
        small_batches.reset()
        _, small_logits = small_batches.prefill(segments, all_logits=True)
        assert decodes == [7] * (len(prompt) // 7) + ([len(prompt) % 7] if len(prompt) % 7 else [])
        assert max_abs_error("logits, batches of 7", small_logits, logits) < 1e-5
        np.testing.assert_array_equal(small_batches.states(0, len(prompt)).positions, together.positions)

    def test_a_batch_of_text_never_starts_at_the_time_the_cache_reached(self, thinker, small_batches, layout):
        # Two tokens at one time id (a video's end markers): llama.cpp refuses text at the cache's last
        # time id, so batches of 7 are not cut between them (rows 6 and 7) but before.
        prompt = layout.prompt(SPEECH_SYSTEM_PROMPT, QUESTIONS[0])[:20]
        times = tuple(range(7)) + tuple(range(6, 19))
        run_ = TokenRun(tuple(prompt), times)
        thinker.reset()
        _, logits = thinker.prefill([run_], all_logits=True)
        small_batches.reset()
        _, small_logits = small_batches.prefill([run_], all_logits=True)
        assert small_batches.states(0, 20).positions[0].tolist() == list(times)
        assert max_abs_error("logits, batches of 7", small_logits, logits) < 1e-5

    def test_rollback_equals_a_fresh_prefill(self, thinker, layout):
        prompt = layout.prompt(SPEECH_SYSTEM_PROMPT, QUESTIONS[0])
        thinker.reset()
        _, first = run(thinker, prompt, 12)
        thinker.truncate(len(prompt) + 3)
        _, rolled = thinker.prefill([TokenRun(tuple(prompt + list(first.reply_ids[:4])))], all_logits=True)
        thinker.reset()
        _, fresh = thinker.prefill([TokenRun(tuple(prompt + list(first.reply_ids[:4])))], all_logits=True)
        assert max_abs_error("logits after rollback", rolled[-1], fresh[-1]) < 1e-6

    def test_decoded_events_carry_each_fed_token_state(self, thinker, layout):
        prompt = layout.prompt(SPEECH_SYSTEM_PROMPT, QUESTIONS[0])
        thinker.reset()
        events, finished = run(thinker, prompt, 10)
        decoded = [e for e in events if isinstance(e, Decoded)]
        # A last Sampled(-1, ...) may flush the text of an unfinished UTF-8 sequence.
        sampled = [e for e in events if isinstance(e, Sampled) and e.token_id >= 0]
        assert [d.token_id for d in decoded] == list(finished.reply_ids[:-1]), (
            "the last token is not fed back"
        )
        assert len(sampled) == len(finished.reply_ids)
        states = thinker.states(len(prompt), len(prompt) + len(decoded))
        np.testing.assert_array_equal(np.stack([d.hidden for d in decoded]), states.hidden)
        np.testing.assert_array_equal(np.stack([d.embedding for d in decoded]), states.embeddings)

    def test_cancel_stops_between_tokens(self, thinker, layout):
        prompt = layout.prompt(SPEECH_SYSTEM_PROMPT, QUESTIONS[0])
        thinker.reset()
        cancel = threading.Event()
        events = []
        for event in thinker.generate([TokenRun(tuple(prompt))], GREEDY, max_tokens=50, cancel=cancel):
            events.append(event)
            if isinstance(event, Sampled) and len(events) > 4:
                cancel.set()
        finished = events[-1]
        assert isinstance(finished, Finished) and finished.reason == "cancelled"
        assert len(finished.reply_ids) < 50

    def test_a_prompt_larger_than_the_context_ends_with_context_full(self, tiny_bundle, layout):
        with Thinker(tiny_bundle.file("thinker"), tiny_bundle.tokens, ThinkerOptions(n_ctx=64)) as small:
            too_long = tuple(i % 400 for i in range(small.n_ctx + 5))  # llama.cpp may round n_ctx up
            events = list(small.generate([TokenRun(too_long)], GREEDY, max_tokens=4))
        assert events == [Finished("context_full", (), 0, None, None)]

    def test_sampling_with_a_seed_is_reproducible(self, thinker, layout):
        prompt = layout.prompt(SPEECH_SYSTEM_PROMPT, QUESTIONS[0])
        options = SamplingOptions(temperature=1.0, top_k=50, top_p=0.95, seed=7)
        replies = []
        for _ in range(2):
            events = list(thinker.generate([TokenRun(tuple(prompt))], options, max_tokens=16))
            replies.append(events[-1].reply_ids)
        assert replies[0] == replies[1]


@pytest.mark.xfail(
    strict=True, reason="llama.cpp (llama-cpp-python 0.3.36) reads no rms_norm_eps for qwen2vl"
)
def test_llama_cpp_reads_the_rms_norm_eps(tiny_bundle: Bundle, caplog: pytest.LogCaptureFixture):
    """When this passes, llama.cpp is fixed: drop THINKER_EMBEDDING_SCALE from the tiny checkpoint."""
    with caplog.at_level(logging.INFO, logger="llama.cpp"):
        Thinker(tiny_bundle.file("thinker"), tiny_bundle.tokens).close()
    lines = [r.getMessage() for r in caplog.records if "f_norm_rms_eps" in r.getMessage()]
    print(lines)
    assert lines and lines[0].split("=")[-1].strip() == "1.0e-06"


def test_media_placeholders_are_never_sampled(thinker, layout, tiny_bundle: Bundle, monkeypatch):
    """A reply holding <|IMAGE|> would read as an image in the next prompt: it is never sampled."""
    image = tiny_bundle.tokens["image"]
    prefill = thinker.prefill

    def favouring_an_image(prompt, all_logits=False):
        decoded, logits = prefill(prompt, all_logits)
        logits[image] = 1e3
        return decoded, logits

    monkeypatch.setattr(thinker, "prefill", favouring_an_image)
    thinker.reset()
    _, finished = run(thinker, layout.prompt(SPEECH_SYSTEM_PROMPT, QUESTIONS[0]), 1)
    assert finished.reply_ids and finished.reply_ids[0] != image


def test_min_tokens_holds_back_the_stop_as_the_reference_min_new_tokens(
    thinker, layout, reference_model, tiny_bundle: Bundle, monkeypatch
):
    """The tiny model never says <|im_end|> on its own, so its third greedy token stands in as a stop."""
    prompt = layout.prompt(SPEECH_SYSTEM_PROMPT, QUESTIONS[0])
    thinker.reset()
    stand_in = run(thinker, prompt, 3)[1].reply_ids[2]
    monkeypatch.setattr(thinker, "_stop_ids", {stand_in})
    thinker.reset()
    assert run(thinker, prompt, 12)[1].reason == "stop"
    thinker.reset()
    _, forced = run(thinker, prompt, 12, min_tokens=12)
    with torch.no_grad():
        out = reference_model.thinker.generate(
            input_ids=torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=12,
            min_new_tokens=12,
            do_sample=False,
            repetition_penalty=1.0,
            eos_token_id=[stand_in],
            pad_token_id=tiny_bundle.tokens["endoftext"],
        )
    print("forced reply ids:", forced.reply_ids, "stand-in stop:", stand_in)
    assert forced.reason == "length" and list(forced.reply_ids) == out[0, len(prompt) :].tolist()
    assert forced.reply_ids[2] != stand_in


@pytest.fixture(scope="module")
def short_gguf(tiny_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory):
    """The tiny Thinker, its trained context said to be SHORT_CONTEXT."""
    target = tmp_path_factory.mktemp("short-context") / "thinker.gguf"
    return rewrite_gguf(tiny_bundle.file("thinker"), target, {"qwen2vl.context_length": SHORT_CONTEXT})


class TestTrainedContext:
    """A model trained on fewer tokens than the default context gets its own context by default."""

    def test_no_context_given_is_the_models_own_when_it_is_smaller(self, short_gguf, tiny_bundle: Bundle):
        assert SHORT_CONTEXT < DEFAULT_CONTEXT
        with Thinker(short_gguf, tiny_bundle.tokens, ThinkerOptions()) as short:
            assert short.n_ctx == SHORT_CONTEXT

    def test_no_context_given_is_the_default_when_the_model_holds_more(self, tiny_bundle: Bundle):
        with Thinker(tiny_bundle.file("thinker"), tiny_bundle.tokens, ThinkerOptions()) as long:
            assert long.n_ctx == DEFAULT_CONTEXT

    def test_a_context_asked_for_above_the_models_is_refused(self, short_gguf, tiny_bundle: Bundle):
        with pytest.raises(OmnideskError, match=f"this model holds at most {SHORT_CONTEXT}"):
            Thinker(short_gguf, tiny_bundle.tokens, ThinkerOptions(n_ctx=DEFAULT_CONTEXT))


class TestLoadFailure:
    """llama.cpp's load returns nothing both for a GPU without room and for a damaged file; on this
    CPU a load with GPU layers is made to fail as a full GPU's does."""

    @pytest.fixture
    def gpu_full(self, monkeypatch):
        real = llama_cpp.llama_model_load_from_file

        def load(path, params):
            return None if params.n_gpu_layers > 0 else real(path, params)

        monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
        monkeypatch.setattr(llama_cpp, "llama_model_load_from_file", load)

    def test_a_gpu_without_room_is_said_and_the_file_is_not_blamed(self, tiny_bundle: Bundle, gpu_full):
        with pytest.raises(OmnideskError) as raised:
            Thinker(tiny_bundle.file("thinker"), tiny_bundle.tokens, ThinkerOptions(n_ctx=512))
        assert not isinstance(raised.value, ModelFileError)
        assert "does not fit in the GPU's free memory" in str(raised.value)

    def test_a_file_that_loads_nowhere_is_blamed(self, tiny_bundle: Bundle, gpu_full, monkeypatch):
        monkeypatch.setattr(llama_cpp, "llama_model_load_from_file", lambda path, params: None)
        with pytest.raises(ModelFileError, match="Download or convert the Thinker again"):
            Thinker(tiny_bundle.file("thinker"), tiny_bundle.tokens, ThinkerOptions(n_ctx=512))

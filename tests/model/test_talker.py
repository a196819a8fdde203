"""The native Talker against transformers' Qwen2.5-Omni Talker, on the tiny checkpoint."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from model.bench.parts.talker_run import TeacherForcing
from model.errors import ModelFileError, OmnideskError
from model.files.bundle import MANIFEST, Bundle, write_manifest
from model.pipeline.stages import ThinkerFeed
from model.sampling import SamplingOptions
from model.talker import REFERENCE_SAMPLING, SpeechOptions, Talker, graph
from model.talker.network import TalkerConfig, talker_positions
from model.thinker import Thinker
from model.thinker_types import Decoded, PositionStates, ThinkerOptions, TokenRun
from tests.helpers import give_the_talker_its_attention_mask

# The reference's talker repetition penalty applies to greedy decoding too.
GREEDY = SamplingOptions(greedy=True, repetition_penalty=1.05)
PROMPT_LEN, REPLY_LEN, STEPS = 9, 14, 64


@pytest.fixture(scope="module")
def thinker_embeddings(reference_model) -> torch.Tensor:
    """The Thinker's token embedding table (vocab, width)."""
    return reference_model.thinker.get_input_embeddings().weight.detach().float()


@pytest.fixture(scope="module")
def talker(tiny_bundle: Bundle, thinker_embeddings: torch.Tensor) -> Talker:
    return Talker.load(tiny_bundle, lambda ids: thinker_embeddings[list(ids)].numpy(), max_positions=256)


def random_states(width: int, seed: int = 0) -> tuple[PositionStates, list[Decoded]]:
    """A text-only prompt of PROMPT_LEN positions and REPLY_LEN fed-back reply tokens, states of order 1."""
    rng = np.random.default_rng(seed)
    n = PROMPT_LEN + REPLY_LEN
    hidden = rng.standard_normal((n, width)).astype(np.float32)
    embeddings = rng.standard_normal((n, width)).astype(np.float32)
    token_ids = rng.integers(0, 400, n)
    prompt = PositionStates(
        token_ids=token_ids[:PROMPT_LEN],
        hidden=hidden[:PROMPT_LEN],
        embeddings=embeddings[:PROMPT_LEN],
        positions=np.tile(np.arange(PROMPT_LEN), (3, 1)),
    )
    reply = [Decoded(int(token_ids[i]), i, hidden[i], embeddings[i]) for i in range(PROMPT_LEN, n)]
    return prompt, reply


def teacher_forced(
    talker: Talker, variant: Talker, seed: int, steps: int = 200
) -> tuple[torch.Tensor, torch.Tensor, TeacherForcing, TeacherForcing]:
    """`steps` greedy steps of `talker` on random states, then of `variant` fed `talker`'s codes:
    both runs' logits (steps, vocab), and each run's picks (the reference's and the variant's own)."""
    prompt, reply = random_states(talker.model.config.embedding_size, seed=seed)
    options = SpeechOptions(sampling=GREEDY, max_codes=steps, min_codes=steps)
    with TeacherForcing().standing_in() as reference:
        f32 = torch.stack([s.logits for s in talker.steps([prompt, *reply], options)])
    with TeacherForcing(reference.picks).standing_in() as forced:
        ours = torch.stack([s.logits for s in variant.steps([prompt, *reply], options)])
    return f32, ours, reference, forced


def reference_talker_generate(
    reference_model, bundle: Bundle, prompt, reply, voice, max_new_tokens, **kwargs
):
    """transformers' talker.generate fed exactly as Qwen2_5OmniForConditionalGeneration.generate feeds it."""
    talker = reference_model.talker
    embed = reference_model.thinker.get_input_embeddings()
    codec, tokens = bundle.codec, bundle.tokens
    states = [torch.from_numpy(s.hidden + s.embedding)[None] for s in reply]
    n = len(prompt.token_ids)
    bos = bundle.voices[voice]
    inputs_embeds = torch.cat(
        [torch.from_numpy(prompt.hidden + prompt.embeddings), embed(torch.tensor([bos])), states[0]]
    )[None]
    text_end = embed(torch.tensor([tokens["tts_text_eos"], tokens["tts_text_pad"]]))
    reply_part = torch.cat([*states[1:], text_end])[None]
    input_ids = torch.tensor([[codec["mask"]] * n + [codec["pad"], codec["bos"]]])
    input_text_ids = torch.cat([torch.from_numpy(prompt.token_ids), torch.tensor([bos, reply[0].token_id])])[
        None
    ]
    with torch.no_grad():
        return talker.generate(
            input_ids=input_ids,
            input_text_ids=input_text_ids,
            thinker_reply_part=reply_part,
            inputs_embeds=inputs_embeds,
            attention_mask=torch.ones_like(input_ids),
            suppress_tokens=[codec["bos"]],
            max_new_tokens=max_new_tokens,
            eos_token_id=[codec["pad"], codec["eos"]],
            pad_token_id=codec["pad"],
            repetition_penalty=1.05,
            return_dict_in_generate=True,
            output_logits=True,
            **kwargs,
        )


@pytest.fixture(params=["codec_prompt", "generate_drops_mask"])
def prompt_codec_embeddings(request, reference_model, monkeypatch) -> bool:
    """Which reference the Talker is held to; returns SpeechOptions.prompt_codec_embeddings for it.

    "codec_prompt": transformers' Talker.forward given the all-ones attention mask that transformers 4's
    generate passed, so it adds E_codec(pad) and E_codec(bos) to the last two prompt rows, as trained.
    "generate_drops_mask": transformers 5's generate as it is: it drops an all-ones mask, and the
    Talker then skips those two embeddings.
    """
    if request.param == "generate_drops_mask":
        return False
    give_the_talker_its_attention_mask(reference_model, monkeypatch)
    return True


class TestParity:
    def test_greedy_logits_and_codes_match_transformers(
        self, talker, tiny_bundle, reference_model, prompt_codec_embeddings
    ):
        prompt, reply = random_states(talker.model.config.embedding_size)
        options = SpeechOptions(
            voice="Ethan",
            sampling=GREEDY,
            max_codes=STEPS,
            embeddable_only=False,
            prompt_codec_embeddings=prompt_codec_embeddings,
        )
        steps = list(talker.steps([prompt, *reply], options))
        ours = torch.stack([s.logits for s in steps])
        result = reference_talker_generate(
            reference_model, tiny_bundle, prompt, reply, "Ethan", STEPS, do_sample=False
        )
        theirs = torch.cat(result.logits)
        ref_codes = result.sequences[0, PROMPT_LEN + 2 :].tolist()

        errors = (ours - theirs).abs().amax(dim=1)
        top2 = theirs.topk(2, dim=1).values
        print(
            f"\nlogits: max |ref| {theirs.abs().max():.3f}, max abs error per step: max {errors.max():.2e}, "
            f"mean {errors.mean():.2e}; smallest top-2 gap {(top2[:, 0] - top2[:, 1]).min():.2e}"
        )
        assert len(steps) == STEPS, "64 steps without a stop id: a shorter run compares less"
        assert ours.shape == theirs.shape
        assert errors.max() < 1e-4
        assert [s.code for s in steps] == ref_codes

    def test_sampled_codes_match_transformers_with_the_same_draws(
        self, talker, tiny_bundle, reference_model, prompt_codec_embeddings
    ):
        """Reference defaults (top-k 40, top-p 0.8, temperature 0.9, penalty 1.05): the same filtered
        distribution, so with generators seeded alike both draw the same codes."""
        prompt, reply = random_states(talker.model.config.embedding_size, seed=3)
        torch.manual_seed(7)
        result = reference_talker_generate(
            reference_model,
            tiny_bundle,
            prompt,
            reply,
            "Chelsie",
            40,
            do_sample=True,
            top_k=40,
            top_p=0.8,
            temperature=0.9,
        )
        ref_codes = result.sequences[0, PROMPT_LEN + 2 :].tolist()
        options = SpeechOptions(
            max_codes=40,
            embeddable_only=False,
            sampling=dataclasses.replace(REFERENCE_SAMPLING, seed=7),
            prompt_codec_embeddings=prompt_codec_embeddings,
        )
        ours = list(talker.steps([prompt, *reply], options))
        ours_logits = torch.stack([s.logits for s in ours])
        n = min(len(ours), len(ref_codes))
        error = (ours_logits[:n] - torch.cat(result.logits)[:n]).abs().max()
        print(f"\nsampled run: {len(ref_codes)} reference codes, logits max abs error {error:.2e}")
        assert error < 1e-4
        assert [s.code for s in ours] == ref_codes

    def test_full_chain_matches_reference_generate(
        self, tiny_bundle, reference_model, monkeypatch, prompt_codec_embeddings
    ):
        """Our f32 Thinker -> our Talker gives the codes transformers' generate hands to Token2Wav."""
        captured: list[torch.Tensor] = []

        def record_codes(code, conditioning, reference_mel, **kwargs):
            captured.append(code.clone())
            return torch.zeros(480)

        monkeypatch.setattr(reference_model.token2wav, "forward", record_codes)
        max_text, max_codes = 12, 48
        with Thinker(
            tiny_bundle.file("thinker"), tiny_bundle.tokens, ThinkerOptions(kv_cache_type="f32")
        ) as thinker:
            prompt_ids = thinker.tokenize(
                "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n", special=True
            )
            events = list(
                thinker.generate(
                    [TokenRun(tuple(prompt_ids))],
                    SamplingOptions(greedy=True, repetition_penalty=1.0),
                    max_tokens=max_text,
                )
            )
            decoded = [e for e in events if isinstance(e, Decoded)]
            prompt = thinker.states(0, len(prompt_ids))
            talker = Talker.load(tiny_bundle, thinker.input_embeddings, max_positions=128)
        reply_ids = events[-1].reply_ids
        options = SpeechOptions(
            voice="Chelsie",
            sampling=GREEDY,
            max_codes=max_codes,
            embeddable_only=False,
            prompt_codec_embeddings=prompt_codec_embeddings,
        )
        ours = list(talker.speak([prompt, *decoded], options))

        with torch.no_grad():
            sequences, _ = reference_model.generate(
                input_ids=torch.tensor([prompt_ids]),
                speaker="Chelsie",
                thinker_max_new_tokens=max_text,
                thinker_do_sample=False,
                talker_max_new_tokens=max_codes,
                talker_do_sample=False,
            )
        assert sequences[0, len(prompt_ids) :].tolist() == list(reply_ids), "the Thinkers disagree"
        assert len(captured) == 1
        theirs = captured[0][0].tolist()
        print(f"\nchain: {len(reply_ids)} text tokens, {len(ours)} codes, first {ours[:12]}")
        assert len(ours) > 0
        assert ours == theirs

    def test_compiled_static_step_matches_eager(self, tiny_bundle, thinker_embeddings, talker, monkeypatch):
        """The static-shape step (`graph.StaticStep`: its buffers, a fixed span of the cache, masked)
        gives the eager step's codes and logits: the very step a CUDA graph captures and replays.

        torch.compile itself is replaced by the identity here (compiling takes about a minute on
        2 cores); `omnidesk bench talker --compile` runs the compiled step, `omnidesk bench gpu` the
        graphed one. Spans start at 16 slots, so the turn steps through four of them (16 to 128)."""
        monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
        monkeypatch.setattr(graph, "SMALLEST_SPAN", 16)
        static = Talker.load(
            tiny_bundle, lambda ids: thinker_embeddings[list(ids)].numpy(), max_positions=256, compile=True
        )
        prompt, reply = random_states(talker.model.config.embedding_size, seed=5)
        options = SpeechOptions(sampling=GREEDY, max_codes=STEPS, embeddable_only=False)
        eager = list(talker.steps([prompt, *reply], options))
        full = list(static.steps([prompt, *reply], options))
        error = (torch.stack([s.logits for s in eager]) - torch.stack([s.logits for s in full])).abs().max()
        print(f"\nstatic vs eager: max abs logit difference {error:.2e}")
        assert static._static_step is not None and static._static_step.spans == (16, 32, 64, 128, 256)
        assert [s.code for s in eager] == [s.code for s in full]
        assert error < 1e-5

    def test_a_step_that_cannot_be_captured_runs_eagerly_and_says_so(self, talker, caplog):
        """Capture fails here (no CUDA), as it would on a GPU with a kernel that cannot be captured."""
        with caplog.at_level(logging.WARNING, logger="model.talker.graph"):
            assert graph.static_step(talker.model, talker.max_positions, graphs=True) is None
        assert "runs eagerly" in caplog.text


class TestGenerationRules:
    def test_codes_stay_embeddable_and_stop_ids_end_the_reply(self, talker):
        """Hot sampling over all ids: unmasked, the tiny Talker emits ids the DiT cannot embed."""
        ids = talker.ids
        emitted = {True: set(), False: set()}
        for embeddable_only in (True, False):
            for seed in range(4):
                prompt, reply = random_states(talker.model.config.embedding_size, seed=seed)
                sampling = dataclasses.replace(
                    REFERENCE_SAMPLING, seed=seed, temperature=2.0, top_k=0, top_p=1.0
                )
                options = SpeechOptions(max_codes=80, sampling=sampling, embeddable_only=embeddable_only)
                steps = list(talker.steps([prompt, *reply], options))
                assert all(not s.stop for s in steps[:-1])
                assert steps[-1].stop or len(steps) == 80
                emitted[embeddable_only] |= {s.code for s in steps if not s.stop}
        assert ids.codec_bos not in emitted[True] | emitted[False]
        assert max(emitted[True]) < ids.embeddable
        assert max(emitted[False]) >= ids.embeddable

    def test_min_codes_holds_back_the_stop_ids(self, talker):
        """generate's min_new_tokens: no stop id among the first min_codes codes, the rest unchanged."""
        hot = dataclasses.replace(REFERENCE_SAMPLING, temperature=2.0, top_k=0, top_p=1.0)
        natural_stops = []
        for seed in range(4):
            prompt, reply = random_states(talker.model.config.embedding_size, seed=seed)
            sampling = dataclasses.replace(hot, seed=seed)
            free = list(talker.steps([prompt, *reply], SpeechOptions(max_codes=80, sampling=sampling)))
            forced = list(
                talker.steps([prompt, *reply], SpeechOptions(max_codes=80, min_codes=60, sampling=sampling))
            )
            if free[-1].stop:
                natural_stops.append(len(free))
            assert not any(s.stop for s in forced[:60])
            n = min(len(free), len(forced)) - 1  # the steps before a held-back stop are the same
            assert [s.code for s in forced[:n]] == [s.code for s in free[:n]]
            assert all(torch.equal(a.logits, b.logits) for a, b in zip(forced[:n], free[:n], strict=True))
        print("unforced runs stopped after", natural_stops, "codes")
        assert any(n <= 60 for n in natural_stops), "no run would have stopped early: nothing was held back"

    def test_seeded_sampling_repeats(self, talker):
        prompt, reply = random_states(talker.model.config.embedding_size, seed=1)
        options = SpeechOptions(sampling=dataclasses.replace(REFERENCE_SAMPLING, seed=11), max_codes=40)
        assert list(talker.speak([prompt, *reply], options)) == list(talker.speak([prompt, *reply], options))

    def test_text_only_positions_count_on_from_the_prompt(self):
        positions = talker_positions(np.tile(np.arange(5), (3, 1)), 8)
        assert positions.tolist() == [list(range(8))] * 3

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_precision_stays_close_to_float32(self, tiny_bundle, thinker_embeddings, talker, dtype):
        half = Talker.load(
            tiny_bundle, lambda ids: thinker_embeddings[list(ids)].numpy(), dtype=dtype, max_positions=256
        )
        prompt, reply = random_states(talker.model.config.embedding_size, seed=2)
        options = SpeechOptions(sampling=GREEDY, max_codes=1, embeddable_only=False)
        f32 = next(talker.steps([prompt, *reply], options)).logits
        ours = next(half.steps([prompt, *reply], options)).logits
        error = (ours - f32).abs().max() / f32.abs().max()
        print(f"\n{dtype}: prefill logits max abs error relative to the largest logit {error:.2e}")
        assert 0 < error < 0.02

    @pytest.mark.parametrize(
        ("dtype", "bound"),
        # Relative rounding per operation: float16 keeps 11 significant bits (2^-11 = 4.9e-4), bfloat16 8
        # (2^-8 = 3.9e-3). A logit is the end of ~10 chained roundings (the tiny Talker's 2 blocks of
        # norm, projection, attention and MLP, then the head), each relative to values of the logits'
        # order, so its error may reach ~10 units of the last place: 0.5% and 4% of the largest logit.
        [(torch.float16, 0.005), (torch.bfloat16, 0.04)],
    )
    def test_half_precision_over_200_greedy_steps(
        self, tiny_bundle, thinker_embeddings, talker, dtype, bound, monkeypatch
    ):
        """Each step of a half-precision Talker against float32's on the same inputs (the half Talker is
        fed float32's codes): logit error at every step, and how often its own greedy pick agrees. A
        pick can differ only where float32's top two scores are closer than twice the error (the
        repetition penalty scales scores by at most 1.05): every disagreement must be such a near tie."""
        half = Talker.load(
            tiny_bundle, lambda ids: thinker_embeddings[list(ids)].numpy(), dtype=dtype, max_positions=256
        )
        f32, ours, reference, forced = teacher_forced(talker, half, seed=6)

        assert ours.shape == f32.shape == (200, talker.model.config.vocab_size)
        errors = (ours - f32).abs().amax(dim=1)
        relative = errors.max() / f32.abs().max()
        agree = [a == b for a, b in zip(forced.picks, reference.picks, strict=True)]
        print(
            f"\n{dtype}: logits over 200 steps, max abs error {errors.max():.2e} = {relative:.2e} of the "
            f"largest logit (mean {errors.mean():.2e}); greedy codes agree at {sum(agree)}/200 steps"
        )
        assert 0 < relative < bound
        gaps = torch.tensor(reference.gaps)
        for step in (i for i, same in enumerate(agree) if not same):
            assert gaps[step] <= 2 * 1.05 * errors[step], f"step {step}: a clear choice changed"

    @pytest.mark.parametrize(
        "weights, prompt_copy, bound",
        # int8: a weight is off by at most half a step of its row's 255 levels (~0.4% of the row's
        # largest); int4: of its group's 16 levels (~3%), and bfloat16 activations add 2^-8 per op.
        # Through the tiny Talker's ~10 chained products: up to 5% and 30% of the largest logit.
        # With the bfloat16 copy for prompts, the prompt's keys and values carry only bfloat16's error.
        [("int8", False, 0.05), ("int4", False, 0.3), ("int4", True, 0.3)],
    )
    def test_quantized_weights_over_200_greedy_steps(
        self, tiny_bundle, thinker_embeddings, talker, weights, prompt_copy, bound
    ):
        """As the half-precision test: each step against float32's on the same inputs (fed float32's
        codes), the logit error and how often the quantized Talker's own greedy pick agrees."""
        quantized = Talker.load(
            tiny_bundle,
            lambda ids: thinker_embeddings[list(ids)].numpy(),
            max_positions=256,
            weights=weights,
            prompt_copy=prompt_copy,
        )
        f32, ours, reference, forced = teacher_forced(talker, quantized, seed=2)
        relative = (ours - f32).abs().max() / f32.abs().max()
        agree = sum(a == b for a, b in zip(forced.picks, reference.picks, strict=True))
        print(
            f"\n{weights}{' with the prompt copy' if prompt_copy else ''}: logits over 200 steps, max abs "
            f"error {relative:.2e} of the largest logit; "
            f"greedy codes agree at {agree}/200 steps"
        )
        assert 0 < relative < bound
        assert agree >= (190 if weights == "int8" else 150)


class TestStreaming:
    def test_states_arriving_one_by_one_give_the_batch_codes(self, talker):
        prompt, reply = random_states(talker.model.config.embedding_size, seed=4)
        options = SpeechOptions(sampling=dataclasses.replace(REFERENCE_SAMPLING, seed=3), max_codes=STEPS)
        batch = list(talker.speak([prompt, *reply], options))

        feed = ThinkerFeed(poll_s=0.01)
        delays = random.Random(0)

        def thinker_thread() -> None:
            feed.put(prompt)
            for state in reply:
                threading.Event().wait(delays.uniform(0, 0.01))
                feed.put(state)
            feed.close()

        producer = threading.Thread(target=thinker_thread)
        producer.start()
        streamed = list(talker.speak(feed, options))
        producer.join()
        print(f"\nstreaming: {len(streamed)} codes")
        assert len(batch) > REPLY_LEN
        assert streamed == batch

    def test_cancel_stops_a_talker_waiting_for_the_thinker(self, talker):
        prompt, reply = random_states(talker.model.config.embedding_size, seed=4)
        cancel = threading.Event()
        feed = ThinkerFeed(cancel, poll_s=0.01)
        for state in [prompt, *reply[:3]]:
            feed.put(state)  # then the Thinker stalls: no more states, no close
        codes: list[int] = []
        first_code = threading.Event()

        def talker_thread() -> None:
            for code in talker.speak(feed, SpeechOptions(sampling=GREEDY, max_codes=STEPS), cancel):
                codes.append(code)
                first_code.set()

        consumer = threading.Thread(target=talker_thread)
        consumer.start()
        assert first_code.wait(30)
        cancel.set()
        consumer.join(30)
        assert not consumer.is_alive()
        assert 1 <= len(codes) <= 3  # it could not go past the states it had


class TestBadInput:
    def test_unknown_voice_names_the_voices_there_are(self, talker):
        prompt, reply = random_states(talker.model.config.embedding_size)
        with pytest.raises(OmnideskError, match=r"unknown voice 'Nobody'.*Chelsie, Ethan"):
            list(talker.speak([prompt, *reply], SpeechOptions(voice="Nobody")))

    def test_talker_file_not_matching_the_manifest_names_the_tensor(self, tiny_bundle, tmp_path: Path):
        for entry in tiny_bundle.files.values():
            shutil.copy(tiny_bundle.root / entry.path, tmp_path / entry.path)
        config = json.loads((tiny_bundle.root / MANIFEST).read_text())["config"]
        config["talker_config"]["intermediate_size"] = 96
        files = {part: tmp_path / entry.path for part, entry in tiny_bundle.files.items()}
        bundle = write_manifest(
            tmp_path,
            files,
            config,
            tiny_bundle.tokens,
            tiny_bundle.codec,
            tiny_bundle.voices,
            tiny_bundle.thinker_dtype,
        )
        assert TalkerConfig.from_dict(bundle.config["talker_config"]).intermediate_size == 96
        with pytest.raises(
            ModelFileError, match=r"talker\.model\.layers\.0\.mlp\.\w+_proj\.weight has shape .* needs"
        ):
            Talker.load(bundle, lambda ids: np.zeros((len(ids), 64), dtype=np.float32))


class TestPromptCache:
    """A prompt that starts like the last one (every turn starts with the system prompt and the
    history) decodes only what follows, and speaks as a fresh Talker would."""

    def keyed(self, prompt: PositionStates, stop: int) -> PositionStates:
        return PositionStates(
            token_ids=prompt.token_ids[:stop],
            hidden=prompt.hidden[:stop],
            embeddings=prompt.embeddings[:stop],
            positions=prompt.positions[:, :stop],
            keys=tuple(int(i) for i in prompt.token_ids[:stop]),
        )

    def fresh(self, tiny_bundle, thinker_embeddings) -> Talker:
        return Talker.load(tiny_bundle, lambda ids: thinker_embeddings[list(ids)].numpy(), max_positions=256)

    def decoded_rows(self, talker: Talker, monkeypatch) -> list[int]:
        """Records how many positions each forward of the network decodes."""
        rows: list[int] = []
        forward = talker.model.forward
        monkeypatch.setattr(talker.model, "forward", lambda x, *a: rows.append(len(x)) or forward(x, *a))
        return rows

    def test_a_longer_prompt_reuses_the_cached_start(self, tiny_bundle, thinker_embeddings, monkeypatch):
        prompt, reply = random_states(thinker_embeddings.shape[1], seed=5)
        options = SpeechOptions(sampling=GREEDY, max_codes=12, embeddable_only=False)
        fresh = self.fresh(tiny_bundle, thinker_embeddings)
        expected = torch.stack(
            [s.logits for s in fresh.steps([self.keyed(prompt, PROMPT_LEN), *reply], options)]
        )

        talker = self.fresh(tiny_bundle, thinker_embeddings)
        list(talker.speak([self.keyed(prompt, 5), *reply], options))
        rows = self.decoded_rows(talker, monkeypatch)
        reused = torch.stack(
            [s.logits for s in talker.steps([self.keyed(prompt, PROMPT_LEN), *reply], options)]
        )
        error = (reused - expected).abs().max() / expected.abs().max()
        print(f"\nprompt cache: {rows[0]} of {PROMPT_LEN} prompt rows decoded; logit error {error:.1e}")
        assert rows[:2] == [PROMPT_LEN - 5, 2]  # the rest of the prompt, then its voice and reply rows
        assert error < 1e-5

    def test_a_primed_system_prompt_is_not_decoded_again(self, tiny_bundle, thinker_embeddings, monkeypatch):
        prompt, reply = random_states(thinker_embeddings.shape[1], seed=6)
        options = SpeechOptions(sampling=GREEDY, max_codes=8, embeddable_only=False)
        fresh = self.fresh(tiny_bundle, thinker_embeddings)
        expected = [s.code for s in fresh.steps([self.keyed(prompt, PROMPT_LEN), *reply], options)]
        talker = self.fresh(tiny_bundle, thinker_embeddings)
        talker.prime(self.keyed(prompt, 4))
        rows = self.decoded_rows(talker, monkeypatch)
        assert [s.code for s in talker.steps([self.keyed(prompt, PROMPT_LEN), *reply], options)] == expected
        assert rows[:2] == [PROMPT_LEN - 4, 2]

    def test_a_different_prompt_start_decodes_everything(self, tiny_bundle, thinker_embeddings, monkeypatch):
        prompt, reply = random_states(thinker_embeddings.shape[1], seed=7)
        other, _ = random_states(thinker_embeddings.shape[1], seed=8)
        talker = self.fresh(tiny_bundle, thinker_embeddings)
        talker.prime(self.keyed(other, PROMPT_LEN))
        rows = self.decoded_rows(talker, monkeypatch)
        list(
            talker.speak(
                [self.keyed(prompt, PROMPT_LEN), *reply], SpeechOptions(sampling=GREEDY, max_codes=2)
            )
        )
        assert rows[:2] == [PROMPT_LEN, 2]

    def test_a_feed_that_ends_before_any_state_says_nothing(self, talker):
        assert list(talker.speak([], SpeechOptions())) == []

"""The Talker with its decoder in llama.cpp (model/talker/llama_network.py, gguf_file.py) against the
torch Talker, which tests/model/test_talker.py holds to transformers', on the tiny checkpoint."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time

import llama_cpp
import numpy as np
import pytest
import torch

from model.errors import ModelFileError
from model.files.bundle import Bundle
from model.talker import SpeechOptions, Talker
from model.talker.gguf_file import DERIVED, LEFTOVER_AGE_S, talker_gguf
from model.talker.network import TalkerConfig
from tests.model.test_talker import GREEDY, PROMPT_LEN, random_states, teacher_forced


def load(bundle: Bundle, embeddings: torch.Tensor, weights: str | None) -> Talker:
    return Talker.load(bundle, lambda ids: embeddings[list(ids)].numpy(), max_positions=256, weights=weights)


@pytest.fixture(scope="module")
def thinker_embeddings(reference_model) -> torch.Tensor:
    return reference_model.thinker.get_input_embeddings().weight.detach().float()


@pytest.fixture(scope="module")
def torch_talker(tiny_bundle: Bundle, thinker_embeddings: torch.Tensor) -> Talker:
    return load(tiny_bundle, thinker_embeddings, None)


class TestParity:
    def test_float32_decoder_matches_the_torch_talker_over_200_greedy_steps(
        self, tiny_bundle, thinker_embeddings, torch_talker
    ):
        """The same weights in float32, KV cache in float32: llama.cpp's kernels sum in another order."""
        llama = load(tiny_bundle, thinker_embeddings, "f32")
        f32, ours, reference, forced = teacher_forced(torch_talker, llama, seed=3)
        error = (ours - f32).abs().max()
        largest = f32.abs().max()
        print(f"\nllama.cpp f32 Talker: 200 steps, max abs logit error {error:.2e} (largest {largest:.2f})")
        assert 0 < error < 1e-4
        assert forced.picks == reference.picks

    def test_iq4_nl_weights_over_200_greedy_steps(self, tiny_bundle, thinker_embeddings, torch_talker):
        """4 bits per weight in blocks of 32 with a scale each, on 16 non-uniform levels: a weight is off
        by up to half a step (~3% of its block's largest), and llama.cpp rounds each row of activations
        to 8 bits for the product; through the tiny Talker's ~10 chained products: measured 0.9% of the
        largest logit, bounded at 10% (torch's int4, with its zero points, at 30%: test_talker.py)."""
        llama = load(tiny_bundle, thinker_embeddings, "iq4_nl")
        f32, ours, reference, forced = teacher_forced(torch_talker, llama, seed=2)
        relative = (ours - f32).abs().max() / f32.abs().max()
        agree = sum(a == b for a, b in zip(forced.picks, reference.picks, strict=True))
        print(
            f"\nllama.cpp iq4_nl Talker: logit error {relative:.2e} of the largest; greedy agrees {agree}/200"
        )
        assert 0 < relative < 0.3
        assert agree >= 150

    def test_a_longer_prompt_reuses_the_cached_start(self, tiny_bundle, thinker_embeddings):
        """The context drops what follows the common start and decodes the rest, as a fresh one would."""
        prompt, reply = random_states(thinker_embeddings.shape[1], seed=5)
        options = SpeechOptions(sampling=GREEDY, max_codes=12, embeddable_only=False)
        keyed = dataclasses.replace(prompt, keys=tuple(int(i) for i in prompt.token_ids))
        fresh = load(tiny_bundle, thinker_embeddings, "f32")
        expected = torch.stack([s.logits for s in fresh.steps([keyed, *reply], options)])
        talker = load(tiny_bundle, thinker_embeddings, "f32")
        other, other_reply = random_states(thinker_embeddings.shape[1], seed=6)
        start = dataclasses.replace(
            other,
            token_ids=prompt.token_ids[:5],
            hidden=prompt.hidden[:5],
            embeddings=prompt.embeddings[:5],
            positions=prompt.positions[:, :5],
            keys=keyed.keys[:5],
        )
        list(talker.speak([start, *other_reply], options))  # its codes fill the slots after the start
        reused = torch.stack([s.logits for s in talker.steps([keyed, *reply], options)])
        error = (reused - expected).abs().max()
        print(f"\nllama.cpp Talker, cached prompt start of 5/{PROMPT_LEN}: logit error {error:.1e}")
        assert error < 1e-5

    def test_a_cut_inside_an_image_run_decodes_the_runs_start_again(self, tiny_bundle, thinker_embeddings):
        """llama.cpp drops cells by time position, and an image's rows share theirs: a prompt that
        leaves the cached one inside such a run (slots 3 to 7 at time 3 here) must still speak as a
        fresh Talker does (the run's cached rows before the cut are decoded again)."""
        prompt, reply = random_states(thinker_embeddings.shape[1], seed=9)
        positions = np.array(
            [[0, 1, 2, 3, 3, 3, 3, 3, 6], [0, 1, 2, 3, 3, 4, 4, 5, 6], [0, 1, 2, 3, 4, 3, 4, 5, 6]]
        )
        keyed = dataclasses.replace(prompt, positions=positions, keys=tuple(int(i) for i in prompt.token_ids))
        options = SpeechOptions(sampling=GREEDY, max_codes=8, embeddable_only=False)
        fresh = load(tiny_bundle, thinker_embeddings, "f32")
        expected = torch.stack([s.logits for s in fresh.steps([keyed, *reply], options)])
        talker = load(tiny_bundle, thinker_embeddings, "f32")
        other = dataclasses.replace(keyed, keys=(*keyed.keys[:5], *(-1 - i for i in range(4))))
        list(talker.speak([other, *reply], options))  # caches a prompt that differs from slot 5 on
        reused = torch.stack([s.logits for s in talker.steps([keyed, *reply], options)])
        error = (reused - expected).abs().max()
        print(f"\nllama.cpp Talker, a cut inside an image run: logit error {error:.1e}")
        assert error < 1e-5

    def test_its_threads_follow_the_calling_threads_torch_count(self, tiny_bundle, thinker_embeddings):
        talker = load(tiny_bundle, thinker_embeddings, "iq4_nl")
        prompt, reply = random_states(thinker_embeddings.shape[1], seed=7)
        before = torch.get_num_threads()
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                list(talker.speak([prompt, *reply], SpeechOptions(sampling=GREEDY, max_codes=2)))
                assert llama_cpp.llama_n_threads(talker.model._ctx) == threads
        finally:
            torch.set_num_threads(before)


class TestFile:
    @pytest.fixture
    def bundle(self, tiny_bundle: Bundle, tmp_path) -> Bundle:
        shutil.copytree(tiny_bundle.root, tmp_path / "bundle", ignore=shutil.ignore_patterns(DERIVED))
        return Bundle.open(tmp_path / "bundle", verify=False)

    def config(self, bundle: Bundle) -> TalkerConfig:
        return TalkerConfig.from_dict(bundle.config["talker_config"])

    def test_made_once_then_reused_and_replaced_for_a_new_talker_file(self, bundle):
        first = talker_gguf(bundle, self.config(bundle), "iq4_nl")
        made = first.stat().st_mtime_ns
        assert talker_gguf(bundle, self.config(bundle), "iq4_nl") == first
        assert first.stat().st_mtime_ns == made
        entry = dataclasses.replace(bundle.files["talker"], sha256="f" * 64)
        changed = dataclasses.replace(bundle, files={**bundle.files, "talker": entry})
        second = talker_gguf(changed, self.config(bundle), "iq4_nl")
        assert second != first and second.exists() and not first.exists()
        assert sorted(p.name for p in second.parent.iterdir()) == [second.name]  # no float file left

    def test_a_build_cut_short_long_ago_is_cleared_and_a_running_one_left(self, bundle):
        folder = bundle.root / DERIVED
        folder.mkdir()
        old, running = folder / "talker-0123-f16.4242.gguf", folder / "talker-0123-iq4_nl.gguf.4343.part"
        for leftover in (old, running):
            leftover.write_bytes(b"partial")
        long_ago = time.time() - LEFTOVER_AGE_S - 60
        os.utime(old, (long_ago, long_ago))
        made = talker_gguf(bundle, self.config(bundle), "iq4_nl")
        assert not old.exists() and running.exists() and made.exists()

    def test_a_folder_it_cannot_write_says_what_to_do(self, bundle):
        (bundle.root / DERIVED).write_text("not a folder")
        with pytest.raises(ModelFileError, match="could not write the Talker's llama.cpp file") as caught:
            talker_gguf(bundle, self.config(bundle), "iq4_nl")
        assert "writable" in str(caught.value)

"""Decoding rules and the sampler: each rule alone, then assembled as generate applies them."""

from __future__ import annotations

import pytest
import torch

from model.sampling import NeverSample, NoStopBefore, RepetitionPenalty, Sampler, SamplingOptions

NONE_SEEN = torch.tensor([], dtype=torch.long)


def test_repetition_penalty_shrinks_seen_logits_towards_unlikely():
    logits = torch.tensor([2.0, -2.0, 1.0])
    out = RepetitionPenalty(2.0).apply(logits, torch.tensor([0, 1]), generated=0)
    assert out.tolist() == [1.0, -4.0, 1.0]


def test_never_sample_masks_its_ids_only():
    out = NeverSample([2, 0, 2]).apply(torch.zeros(4), NONE_SEEN, generated=0)
    assert out.tolist() == [float("-inf"), 0.0, float("-inf"), 0.0]
    assert NeverSample([]).apply(torch.ones(3), NONE_SEEN, generated=0).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("generated, masked", [(0, True), (2, True), (3, False), (9, False)])
def test_no_stop_before_holds_stops_back_for_the_first_ids_only(generated, masked):
    out = NoStopBefore([1], count=3).apply(torch.zeros(3), NONE_SEEN, generated)
    assert bool(out[1] == float("-inf")) is masked and out[0] == 0 and out[2] == 0


def test_greedy_takes_the_best_id_the_rules_leave():
    logits = torch.tensor([5.0, 4.0, 3.0, 0.0])
    rules = [NeverSample([0]), NoStopBefore([1], count=1)]
    sampler = Sampler(SamplingOptions(greedy=True, repetition_penalty=1.0), rules)
    assert sampler(logits, NONE_SEEN, generated=0) == 2
    assert sampler(logits, NONE_SEEN, generated=1) == 1


def test_the_options_penalty_applies_before_the_choice():
    logits = torch.tensor([3.0, 2.0])
    sampler = Sampler(SamplingOptions(greedy=True, repetition_penalty=2.0))
    assert sampler(logits, torch.tensor([0])) == 1  # 3 / 2 < 2


def test_seeded_sampling_repeats_and_respects_the_rules():
    logits = torch.zeros(50)
    options = SamplingOptions(temperature=1.0, top_k=0, top_p=1.0, seed=5)
    first = [Sampler(options, [NeverSample(range(25))])(logits, NONE_SEEN) for _ in range(3)]
    again = [Sampler(options, [NeverSample(range(25))])(logits, NONE_SEEN) for _ in range(3)]
    assert first == again and all(i >= 25 for i in first)

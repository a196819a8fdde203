"""A live call's turns (model.pipeline.call) on the tiny bundle: frames taken by the sound's clock, every
complete 2 s chunk in the Thinker's cache before the turn ends, the result what encoding the turn at
its end gives, the positions the reference's `get_rope_index` gives, an idle turn discarded without a
trace, and the history's media forgotten first when a long call outgrows its share of the context."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from model.audio_features import log_mel
from model.files.bundle import Bundle
from model.pipeline import Conversation, TurnFinished, TurnOptions
from model.pipeline.call import Call, CallTurn
from model.sampling import SamplingOptions
from model.thinker_types import ThinkerOptions
from model.vision_plan import CallFrames
from tests.helpers import max_abs_error, photo_like, speech_like

PIECE = 320  # samples per microphone callback (20 ms)
TEXT = TurnOptions(max_tokens=6, sampling=SamplingOptions(greedy=True, repetition_penalty=1.0), speak=False)
LOGITS_TOLERANCE = 1e-4  # float32 sums in other batches (tests/model/test_listening.py)
CAMERA = (120, 160)  # height, width: encoded at 112 x 168 (4 x 6 embeddings a pair) under 128 embeddings
PAIR_TOKENS = 4 * 6


@pytest.fixture(scope="module")
def conversation(tiny_bundle: Bundle):
    return Conversation(tiny_bundle, ThinkerOptions(n_ctx=4096, kv_cache_type="f32"))


@pytest.fixture(autouse=True)
def fresh(conversation: Conversation):
    conversation.restore([])
    conversation.thinker.reset()
    conversation.prepare()


class Camera:
    """A scene that changes at every frame taken."""

    def __init__(self, seed: int = 0) -> None:
        self.taken = 0
        self.seed = seed

    def __call__(self) -> np.ndarray:
        self.taken += 1
        return photo_like(*CAMERA, seed=self.seed + self.taken)


def on_call(conversation: Conversation, samples: np.ndarray, fps: float = 2.0, seed: int = 0) -> CallTurn:
    """A call's turn as it happens: the microphone's 20 ms pieces, the camera's frames as they fall due."""
    conversation.plan = replace(
        conversation.plan, vision=replace(conversation.plan.vision, call=CallFrames(fps))
    )
    turn = conversation.call_turn(Camera(seed))
    for start in range(0, len(samples), PIECE):
        turn.hear(samples[start : start + PIECE])
    return turn


def answer(conversation: Conversation, turn: CallTurn) -> TurnFinished:
    finished = list(conversation.turn(turn.question(), TEXT, heard=turn))[-1]
    assert isinstance(finished, TurnFinished) and finished.reason in ("end", "length"), finished
    return finished


def assert_sound_as_heard(
    ours: np.ndarray, whole: np.ndarray, samples: np.ndarray, changed: bool = False
) -> None:
    """The call's sound (featurised as heard) against the whole recording's: bitwise in every block whose
    features the later peak left as they were (the last, partial one always), close in the others."""
    block = 16_000 * 2
    for b in range(len(samples) // block):  # the blocks encoded while heard
        heard = log_mel(samples[: (b + 1) * block + 200])[:, b * 200 : (b + 1) * 200]
        same = torch.equal(heard, log_mel(samples)[:, b * 200 : (b + 1) * 200])
        rows = slice(b * 50, (b + 1) * 50)
        assert same == np.array_equal(ours[rows], whole[rows]), f"block {b}"
    assert np.array_equal(ours[-25:], whole[-25:]), "the last block: from the whole recording"
    relative = max_abs_error("sound as heard vs the whole recording", ours, whole) / np.abs(whole).max()
    print(f"the sound as heard differs by {relative:.2e} of the largest value")
    assert relative < 0.1 and (relative > 0 or not changed)


def release_logits(conversation: Conversation, media) -> np.ndarray:
    ids, segments = conversation.prompt(conversation.layout.user("", media), media)
    return conversation.thinker.prefill(segments)[1]


class TestWhileItHappens:
    @pytest.mark.parametrize("fps", [2.0, 1.0], ids=["2 fps (a GPU)", "1 fps (a CPU)"])
    def test_equals_encoding_the_turn_at_its_end(self, conversation, fps):
        samples = speech_like(5.0, seed=7)
        before = conversation.thinker.n_cached
        turn = on_call(conversation, samples, fps)
        assert turn.frames_taken == int(5.0 * fps) + 1  # one at 0 s, then every 1 / fps
        assert turn.chunks_cached == 2 and turn.behind_s == pytest.approx(1.0)
        pairs = 2 * int(fps)  # frame pairs in the first two chunks
        assert conversation.thinker.n_cached >= before + pairs * PAIR_TOKENS + 2 * 50
        question = turn.question()
        media = turn.media(question)
        streamed = release_logits(conversation, media)

        conversation.thinker.reset()
        conversation.prepare()
        fresh = release_logits(conversation, media)
        error = max_abs_error("logits, prefilled during the call vs at once", streamed, fresh)
        assert error / np.abs(fresh).max() < LOGITS_TOLERANCE

        (ours,), (theirs,) = media, conversation.perception.encode(question)  # the turn encoded at its end
        assert ours.grid == theirs.grid and ours.sound.grid == theirs.sound.grid
        assert np.array_equal(ours.embeddings, theirs.embeddings), "frames: bitwise"
        assert_sound_as_heard(ours.sound.embeddings, theirs.sound.embeddings, samples)

    def test_the_end_decodes_only_the_last_partial_chunk(self, conversation):
        turn = on_call(conversation, speech_like(5.0, seed=8))
        finished = answer(conversation, turn)
        last_chunk = PAIR_TOKENS + 25  # the frames of 4 and 4.5 s (5 s is the sound's end), its last 1 s
        closing = 4 + len(conversation.layout.reply_header())  # <|audio_eos|><|vision_eos|><|im_end|>\n
        assert finished.prompt_decoded == last_chunk + closing

    def test_a_voice_louder_than_the_start_changes_the_start_little(self, conversation):
        """A quiet first block keeps its features as heard (floored at the peak heard by then), where the
        whole recording floors it at the later, louder peak."""
        samples = speech_like(5.0, seed=9)
        samples[: 2 * 16_000] *= 1e-3
        turn = on_call(conversation, samples)
        question = turn.question()
        (ours,), (theirs,) = turn.media(question), conversation.perception.encode(question)
        assert_sound_as_heard(ours.sound.embeddings, theirs.sound.embeddings, samples, changed=True)

    def test_positions_are_the_references_for_two_turns(self, conversation, reference_model):
        first = on_call(conversation, speech_like(3.0, seed=10), seed=0)
        answer(conversation, first)
        second = on_call(conversation, speech_like(4.2, seed=11), fps=2.0, seed=50)
        question = second.question()
        media = second.media(question)
        ids, _ = conversation.prompt(conversation.layout.user("", media), media)
        every = [m for exchange in conversation.history for m in exchange.media] + media
        _, ours = conversation.layout.segments(ids, every)
        videos = [m.grid for m in every]
        positions, _ = reference_model.thinker.get_rope_index(
            torch.tensor([ids]),
            video_grid_thw=torch.tensor([[g.t, g.h, g.w] for g in videos]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            use_audio_in_video=True,
            audio_seqlens=torch.tensor([m.sound.grid.mel_frames for m in every]),
            second_per_grids=torch.tensor([g.seconds_per_grid for g in videos]),
        )
        np.testing.assert_array_equal(ours, positions[:, 0].numpy())
        vision_bos = conversation.layout.tmrope.vision_bos
        starts = [i for i, t in enumerate(ids) if t == vision_bos]
        assert len(starts) == 2 and ours[0, starts[1]] > ours[0, starts[0] + 1 : starts[1]].max()


class TestEnded:
    def test_a_discarded_turn_leaves_the_cache_as_it_was(self, conversation):
        kept = conversation.thinker.states(0, conversation.thinker.n_cached).keys
        turn = on_call(conversation, speech_like(4.5, seed=12))
        assert conversation.thinker.n_cached > len(kept)
        turn.discard()
        assert conversation.thinker.states(0, conversation.thinker.n_cached).keys == kept

    def test_old_media_go_before_the_dialogue(self, conversation):
        for seed in range(3):
            answer(conversation, on_call(conversation, speech_like(2.5, seed=20 + seed), seed=10 * seed))
        replies = [exchange.reply_ids for exchange in conversation.history]
        full = len(conversation.prompt_ids([]))
        assert conversation.forget_old_media(full) == 0
        assert conversation.forget_old_media(full - 1) == 1
        assert not conversation.history[0].media and conversation.history[1].media
        assert [exchange.reply_ids for exchange in conversation.history] == replies, "the dialogue stays"
        assert len(conversation.prompt_ids([])) < full - 2.5 * 25, "the first turn's sound is gone"


class TestCall:
    def test_an_idle_turn_that_fills_its_share_starts_again_emptied(self, conversation):
        answer(conversation, on_call(conversation, speech_like(2.5, seed=30)))
        history = conversation.thinker.n_cached
        spare = conversation.thinker.n_ctx - max(len(conversation.prompt_ids([])), 2048)
        call = Call(conversation, Camera(), reply_tokens=spare - 300)  # a turn of 300 positions
        quiet = np.zeros(PIECE, np.float32) + 1e-4
        for _ in range(int(14 / 0.02)):  # 14 s: more than 2 turns' worth
            call.hear(quiet, speaking=False)
        assert call.restarts >= 2 and call.current is not None  # 49 positions a second: full in ~6 s
        assert (
            call.current.positions < 300 + 2 * PAIR_TOKENS and conversation.thinker.n_cached - history < 300
        )
        heard_before = call.current.heard_samples
        for _ in range(int(8 / 0.02)):  # the user speaks: no restart under them, however long
            call.hear(quiet, speaking=True)
        assert call.current.heard_samples == heard_before + int(8 / 0.02) * PIECE
        turn = call.turn()
        assert call.current is None and turn.full
        call.hear(quiet, speaking=False)  # between turns: dropped
        assert turn.heard_samples == heard_before + int(8 / 0.02) * PIECE
        turn.discard()
        call.next_turn()
        call.end()
        assert conversation.thinker.n_cached == history

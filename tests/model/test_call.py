"""A live call's turns (model.pipeline.call) on the tiny bundle: frames taken by the sound's clock, every
complete 2 s chunk in the Thinker's cache before the turn ends, the result what encoding the turn at
its end gives, the positions the reference's `get_rope_index` gives, an idle turn discarded without a
trace, and the history's media forgotten first when a long call outgrows its share of the context."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from model.audio_features import log_mel
from model.pipeline import Conversation, TurnFinished, TurnOptions
from model.pipeline.call import LEAD_S, STILL_MEAN_DIFFERENCE, Call, CallTurn, still
from model.sampling import SamplingOptions
from model.vision_plan import CallFrames
from tests.helpers import max_abs_error, photo_like, speech_like

PIECE = 320  # samples per microphone callback (20 ms)
TEXT = TurnOptions(max_tokens=6, sampling=SamplingOptions(greedy=True, repetition_penalty=1.0), speak=False)
LOGITS_TOLERANCE = 1e-4  # float32 sums in other batches (tests/model/test_listening.py)
CAMERA = (120, 160)  # height, width: encoded at 112 x 168 (4 x 6 embeddings a pair) under 128 embeddings
PAIR_TOKENS = 4 * 6


pytestmark = pytest.mark.usefixtures("fresh_conversation")


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


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def test_on_a_cpu_a_turn_begins_when_the_user_speaks(self, conversation):
        """Nothing is encoded while the user is silent; the turn begins with the LEAD_S before speech
        was told, then goes on as any."""
        on_call(conversation, np.zeros(0, np.float32), fps=1.0)
        plan = conversation.plan
        conversation.plan = replace(
            plan, vision=replace(plan.vision, call=CallFrames(1.0, 16, from_speech=True))
        )
        cached = conversation.thinker.n_cached
        call = Call(conversation, Camera(), reply_tokens=TEXT.max_tokens)
        quiet = (np.random.default_rng(1).standard_normal(10 * 16_000) * 1e-3).astype(np.float32)
        for start in range(0, len(quiet), PIECE):
            call.hear(quiet[start : start + PIECE], speaking=False)
        assert not call.heard and conversation.thinker.n_cached == cached and call.restarts == 0
        speech = speech_like(4.5, seed=31)
        for start in range(0, len(speech), PIECE):
            call.hear(speech[start : start + PIECE], speaking=True)
        turn = call.turn()
        lead = turn.heard_samples - len(speech)
        assert LEAD_S * 16_000 - PIECE <= lead <= LEAD_S * 16_000
        assert turn.frames_taken == int(turn.heard_s) + 1 and turn.chunks_cached == 2
        finished = answer(conversation, turn)
        assert finished.reply_ids
        conversation.plan = plan


class TestAnHourLongCall:
    """An hour of call fed faster than real time: a question of 3 s every 48 s, 3 s of room noise
    between (idle turns fill their share of the context and start again), a short reply to each."""

    MINUTES = 60
    RSS_GROWTH_BOUND = 64 * 2**20  # after the first 10 minutes, in bytes

    def test_it_stays_within_its_context_and_memory(self, conversation):
        on_call(conversation, np.zeros(0, np.float32))  # the plan's frames: 2 a second
        call = Call(conversation, Camera(seed=1000), reply_tokens=TEXT.max_tokens)
        rng = np.random.default_rng(0)
        piece = 16_000 // 2  # 0.5 s
        room = (rng.standard_normal(45 * 16_000) * 1e-3).astype(np.float32)
        speech = speech_like(3.0, seed=40)
        turns, most_cached, rss_at_10 = 0, 0, 0
        for minute_seconds in range(0, self.MINUTES * 60, 48):
            for start in range(0, len(room), piece):
                call.hear(room[start : start + piece], speaking=False)
                most_cached = max(most_cached, conversation.thinker.n_cached)
            for start in range(0, len(speech), piece):
                call.hear(speech[start : start + piece], speaking=True)
            answer(conversation, call.turn())
            call.next_turn()
            turns += 1
            most_cached = max(most_cached, conversation.thinker.n_cached)
            if minute_seconds < 600 <= minute_seconds + 48:
                rss_at_10 = rss_bytes()
        growth = rss_bytes() - rss_at_10
        history_media = sum(1 for exchange in conversation.history if exchange.media)
        print(
            f"{turns} turns, {call.restarts} idle turns started again; the cache held at most {most_cached} "
            f"of {conversation.thinker.n_ctx} positions; {len(conversation.history)} exchanges kept, "
            f"{history_media} with their media; RSS grew {growth / 2**20:.1f} MiB after the first 10 minutes"
        )
        assert turns == 75 and call.restarts >= turns
        assert most_cached < conversation.thinker.n_ctx
        assert len(conversation.prompt_ids([])) <= conversation.thinker.n_ctx // 2 + 64
        assert history_media < len(conversation.history), "the oldest media forgotten, the dialogue kept"
        assert growth < self.RSS_GROWTH_BOUND
        call.end()


class TestStillFrames:
    def test_a_screen_that_did_not_change_is_encoded_once_and_exactly(self, conversation, monkeypatch):
        screen = photo_like(*CAMERA, seed=5)
        encoded = []
        real = conversation.perception.encode_frame_pair
        monkeypatch.setattr(
            conversation.perception, "encode_frame_pair", lambda *a: encoded.append(1) or real(*a)
        )
        on_call(conversation, np.zeros(0, np.float32))
        turn = conversation.call_turn(lambda: screen)
        samples = speech_like(4.5, seed=50)
        for start in range(0, len(samples), PIECE):
            turn.hear(samples[start : start + PIECE])
        question = turn.question()
        (ours,) = turn.media(question)
        assert len(encoded) == 1 and turn.pairs_reused >= ours.grid.t - 1
        monkeypatch.undo()
        (theirs,) = conversation.perception.encode(question)
        assert np.array_equal(ours.embeddings, theirs.embeddings), "identical frames: bitwise"

    def test_frames_that_barely_differ_take_the_last_pairs_embeddings(self, conversation):
        """A camera on a still scene: noise of up to 1 grey level. The embeddings the pair takes
        differ from its own by the deviation printed (relative to the largest value)."""
        scene = photo_like(112, 168, seed=6).astype(np.int16)
        noisy = [
            np.clip(scene + np.random.default_rng(k).integers(-1, 2, scene.shape), 0, 255) for k in range(2)
        ]
        pair = [frame.astype(np.uint8) for frame in noisy]
        still_scene = [scene.astype(np.uint8)] * 2
        assert still(still_scene, pair)
        assert not still(still_scene, [photo_like(112, 168, seed=7)] * 2)
        size = (112, 168)
        own = conversation.perception.encode_frame_pair(pair, size)
        taken = conversation.perception.encode_frame_pair(still_scene, size)
        relative = max_abs_error("a still scene's pair vs its own", taken, own) / np.abs(own).max()
        print(
            f"frames {STILL_MEAN_DIFFERENCE} grey level apart on average: {relative:.2e} of the largest value"
        )
        assert relative < 0.05

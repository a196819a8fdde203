"""A question encoded while it is asked (model.pipeline.listening), on the tiny bundle: the pictures
and the finished 2 s blocks are in the Thinker's cache before the release, the result equals encoding
at release, an unchanged picture is not encoded twice, and a press with no question leaves nothing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from model.files.bundle import Bundle
from model.media import Audio, Image, Question
from model.pipeline import Conversation, Listening, TurnFinished, TurnOptions
from model.sampling import SamplingOptions
from model.thinker_types import ThinkerOptions
from tests.helpers import max_abs_error, photo_like, speech_like

PIECE = 320  # samples per microphone callback (20 ms)
BLOCK_TOKENS = 50  # audio embeddings per 2 s block
TEXT = TurnOptions(max_tokens=12, sampling=SamplingOptions(greedy=True, repetition_penalty=1.0), speak=False)
# llama.cpp decodes the prefilled start in other batches than one prefill at release does: its float32
# kernels then sum in another order. Measured: ~1e-7 of the logits' scale.
LOGITS_TOLERANCE = 1e-4


pytestmark = pytest.mark.usefixtures("fresh_conversation")


def heard(conversation: Conversation, samples: np.ndarray, picture: np.ndarray | None = None) -> Listening:
    """A question listened to as a microphone gives it: the picture at the press, then 20 ms pieces."""
    listening = conversation.listen()
    if picture is not None:
        listening.look(Image(picture))
    for start in range(0, len(samples), PIECE):
        listening.hear(samples[start : start + PIECE])
    return listening


def answer(
    conversation: Conversation, question: Question, listening: Listening | None = None
) -> TurnFinished:
    events = list(conversation.turn(question, TEXT, heard=listening))
    finished = events[-1]
    assert isinstance(finished, TurnFinished) and finished.reason in ("end", "length"), finished
    return finished


def release_logits(conversation: Conversation, media) -> np.ndarray:
    """The logits that choose the reply's first token, for the question with `media`."""
    ids, segments = conversation.prompt(conversation.layout.user("", media), media)
    return conversation.thinker.prefill(segments)[1]


class TestWhileSpeaking:
    @pytest.mark.parametrize("quiet_start", [False, True], ids=["speech", "loudest sound late"])
    def test_equals_encoding_at_release(self, conversation, quiet_start):
        """5 s with a picture: two blocks and the picture are in the cache before the release; the
        embeddings are bitwise those of encoding at release, the logits within float32 summation."""
        samples = speech_like(5.0, seed=7)
        if quiet_start:
            samples[: 3 * 16_000] *= 1e-3  # the first block is encoded again at release
        picture = photo_like(120, 200, seed=3)
        question = Question(images=(Image(picture),), audios=(Audio(samples),))
        before = conversation.thinker.n_cached

        listening = heard(conversation, samples, picture)
        assert listening.blocks_encoded == 2
        picture_tokens = 4 * 7  # 112 x 196 pixels: 4 x 7 merged patches
        assert conversation.thinker.n_cached >= before + picture_tokens + 2 * BLOCK_TOKENS
        media = listening.media(question)
        streamed = release_logits(conversation, media)

        conversation.thinker.reset()
        conversation.prepare()
        at_release = conversation.perception.encode(question)
        whole = release_logits(conversation, at_release)

        for ours, theirs in zip(media, at_release, strict=True):
            assert ours.grid == theirs.grid
            assert np.array_equal(ours.embeddings, theirs.embeddings)
        error = max_abs_error("logits, listening vs at release", streamed, whole) / np.abs(whole).max()
        print(f"relative error {error:.2e}")
        assert error < LOGITS_TOLERANCE
        assert int(streamed.argmax()) == int(whole.argmax())
        if quiet_start:
            assert media[-1].key == at_release[-1].key  # a new key: the early rows are not reused

    def test_release_decodes_only_the_last_block_and_the_closing(self, conversation):
        samples = speech_like(5.0, seed=8)
        listening = heard(conversation, samples)
        finished = answer(conversation, Question(audios=(Audio(samples),)), listening)
        last_block = 25  # the last 1 s
        closing = 3 + len(conversation.layout.reply_header())  # <|audio_eos|><|im_end|>\n, then the header
        print(f"{finished.prompt_decoded} prompt positions decoded at release")
        assert finished.prompt_decoded == last_block + closing

    def test_a_shorter_recording_sent_than_heard(self, conversation):
        """Hands-free sends the utterance without its trailing silence: still exact."""
        samples = speech_like(5.0, seed=9)
        listening = heard(conversation, np.concatenate([samples, np.zeros(16_000, np.float32)]))
        assert listening.blocks_encoded == 2
        sent = Question(audios=(Audio(samples[: int(3.5 * 16_000)]),))
        media = listening.media(sent)
        assert np.array_equal(media[0].embeddings, conversation.perception.encode(sent)[0].embeddings)

    def test_the_reply_is_the_one_encoding_at_release_gives(self, conversation):
        samples = speech_like(4.5, seed=10)
        question = Question(audios=(Audio(samples),))
        listened = answer(conversation, question, heard(conversation, samples))
        conversation.restore([])
        conversation.thinker.reset()
        conversation.prepare()
        assert answer(conversation, question).reply_ids == listened.reply_ids


class TestCancelled:
    def test_a_press_without_a_question_leaves_the_cache_as_it_was(self, conversation):
        answer(conversation, Question("Hello there"))
        kept = conversation.thinker.states(0, conversation.thinker.n_cached).keys
        listening = heard(conversation, speech_like(4.5, seed=11), photo_like(120, 200, seed=4))
        assert conversation.thinker.n_cached > len(kept)
        listening.discard()
        assert conversation.thinker.states(0, conversation.thinker.n_cached).keys == kept
        assert listening.blocks_encoded == 0
        assert listening.media(Question("typed after all")) == []


class TestSamePicture:
    def test_an_unchanged_screen_is_not_encoded_twice(self, conversation, monkeypatch):
        vision = conversation.perception._vision_encoder()
        encoded: list[tuple[int, ...]] = []
        original = vision.encode
        monkeypatch.setattr(
            vision, "encode", lambda image: encoded.append(image.pixels.shape) or original(image)
        )
        screen = photo_like(140, 250, seed=5)
        first = heard(conversation, speech_like(1.0, seed=12), screen)
        answer(
            conversation, Question(images=(Image(screen),), audios=(Audio(speech_like(1.0, seed=12)),)), first
        )
        again = heard(conversation, speech_like(1.0, seed=13), screen.copy())
        answer(
            conversation,
            Question(images=(Image(screen.copy()),), audios=(Audio(speech_like(1.0, seed=13)),)),
            again,
        )
        assert encoded == [screen.shape]
        changed = screen.copy()
        changed[0, 0] ^= 1
        conversation.perception.encode_image(Image(changed))
        assert len(encoded) == 2

    def test_another_conversation_encodes_it_again(self, conversation, monkeypatch):
        vision = conversation.perception._vision_encoder()
        calls = []
        original = vision.encode
        monkeypatch.setattr(vision, "encode", lambda image: calls.append(1) or original(image))
        screen = Image(photo_like(140, 250, seed=6))
        conversation.perception.encode_image(screen)
        conversation.restore([])
        conversation.perception.encode_image(screen)
        assert len(calls) == 2


@pytest.fixture(scope="module")
def speaking(tiny_bundle: Bundle):
    """A conversation that speaks: its Talker is loaded and holds the system prompt."""
    speaking = Conversation(tiny_bundle, ThinkerOptions(n_ctx=4096, kv_cache_type="f32"))
    speaking.prepare("Chelsie")
    return speaking


class TestTalkerWhileSpeaking:
    def test_the_talker_holds_the_question_so_far_and_decodes_only_its_end(self, speaking, monkeypatch):
        """While the question is asked the Talker's cache follows the Thinker's; at release the Talker
        decodes only the rows the Thinker added since, and its cache equals decoding the whole prompt
        at once (float32, other batches: within summation order)."""
        talker = speaking._talker
        samples = speech_like(5.0, seed=14)
        picture = photo_like(120, 200, seed=7)
        question = Question(images=(Image(picture),), audios=(Audio(samples),))
        listening = heard(speaking, samples, picture)
        held = speaking.thinker.n_cached
        assert len(talker._prompt_keys) == held
        assert talker._prompt_keys == speaking.thinker.states(0, held).keys

        media = listening.media(question)
        ids, segments = speaking.prompt(speaking.layout.user("", media), media)
        speaking.thinker.prefill(segments)
        prompt = speaking.thinker.states(0, speaking.thinker.n_cached)
        decoded: list[int] = []
        forward = talker.model.forward
        monkeypatch.setattr(talker.model, "forward", lambda x, *a: decoded.append(len(x)) or forward(x, *a))
        talker.prime(prompt)
        last_block, closing = 25, 3 + len(speaking.layout.reply_header())
        print(f"\nthe Talker held {held} rows at release and decoded {decoded} more")
        assert decoded == [len(ids) - held] == [last_block + closing]
        piecewise = [(layer.attention.cache.k[:, : len(ids)].clone()) for layer in talker.model.layers]

        talker._prompt_keys = ()  # decode the whole prompt again, in one batch
        talker.prime(prompt)
        whole = [layer.attention.cache.k[:, : len(ids)] for layer in talker.model.layers]
        scale = max(float(w.abs().max()) for w in whole)
        error = max(float((p - w).abs().max()) for p, w in zip(piecewise, whole, strict=True)) / scale
        print(f"the Talker's keys, decoded while asked vs at once: {error:.2e} of the largest")
        assert error < 1e-5

    def test_after_a_cancelled_press_the_talker_holds_the_next_prompt(self, speaking):
        talker = speaking._talker
        listening = heard(speaking, speech_like(3.0, seed=15))
        assert len(talker._prompt_keys) == speaking.thinker.n_cached  # the press's rows
        listening.discard()
        events = list(speaking.turn(Question("Hello"), replace(TEXT, speak=True, max_tokens=3)))
        assert isinstance(events[-1], TurnFinished) and events[-1].reason in ("end", "length")
        held = talker._prompt_keys
        assert held == speaking.thinker.states(0, len(held)).keys  # the typed question's prompt

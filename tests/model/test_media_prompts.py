"""Questions with images and recordings: our prompt (layout, embeddings, TMRoPE positions) through the
GGUF Thinker against transformers' Thinker given the same ids, pixels and features, float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.media import Audio, Image
from model.perception import EncodedMedia, RecordingCut, recording_cuts
from model.prompt_layout import SPEECH_SYSTEM_PROMPT, PromptLayout, prompt_segments
from model.thinker_types import Finished, Sampled
from tests.helpers import max_abs_error, photo_like, reference_inputs, speech_like
from tests.model.test_thinker import GREEDY

# The vision encoder (llama.cpp's ggml kernels) differs from transformers' by ~1e-3 of its output's
# scale; through two tiny layers that stays of the same order in the logits.
LOGITS_TOLERANCE = 1e-3
HIDDEN_TOLERANCE = 1e-3  # relative to the largest hidden value


def prompt_ids(thinker, tokens, tmrope, media: list[EncodedMedia], text: str) -> list[int]:
    layout = PromptLayout(thinker.tokenize, tokens, tmrope)
    return layout.message("system", SPEECH_SYSTEM_PROMPT) + layout.user(text, media) + layout.reply_header()


def reference_forward(
    reference_model, ids: list[int], inputs: dict[str, torch.Tensor]
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (n, V) and last hidden states (n, d) of the reference Thinker."""
    with torch.no_grad():
        out = reference_model.thinker(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            output_hidden_states=True,
            **inputs,
        )
    return out.logits[0].numpy(), out.hidden_states[-1][0].numpy()


CASES = {
    "image": ([(300, 451)], []),
    "audio": ([], [3.0]),
    "image-and-audio": ([(224, 336)], [2.5]),
    "two-images": ([(112, 168), (168, 112)], []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_the_reference(case, thinker, perception, tmrope, tiny_bundle, reference_model):
    sizes, seconds = CASES[case]
    images = [photo_like(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    audios = [speech_like(s, seed=i) for i, s in enumerate(seconds)]
    media = [perception.encode_image(Image(p)) for p in images]
    media += [perception.encode_audio(Audio(a)) for a in audios]
    ids = prompt_ids(thinker, tiny_bundle.tokens, tmrope, media, "What is this?")
    segments, positions = prompt_segments(ids, media, tmrope)

    thinker.reset()
    _, ours = thinker.prefill(segments, all_logits=True)
    reference, reference_hidden = reference_forward(reference_model, ids, reference_inputs(images, audios))
    error = max_abs_error(f"Thinker logits, {case} prompt of {len(ids)} positions", ours, reference)
    assert error <= LOGITS_TOLERANCE
    states = thinker.states(0, len(ids))
    hidden_error = max_abs_error(f"Thinker hidden states, {case}", states.hidden, reference_hidden)
    assert hidden_error <= HIDDEN_TOLERANCE * np.abs(reference_hidden).max()
    assert states.positions.tolist() == positions.tolist()


def test_greedy_reply_is_the_reference_reply(thinker, perception, tmrope, tiny_bundle, reference_model):
    pixels, audio = photo_like(224, 336, seed=3), speech_like(2.0, seed=3)
    media = [perception.encode_image(Image(pixels)), perception.encode_audio(Audio(audio))]
    ids = prompt_ids(thinker, tiny_bundle.tokens, tmrope, media, "Describe it.")
    segments, _ = prompt_segments(ids, media, tmrope)
    thinker.reset()
    events = list(thinker.generate(segments, GREEDY, max_tokens=24))
    finished = events[-1]
    assert isinstance(finished, Finished)
    tokens = tiny_bundle.tokens
    with torch.no_grad():
        out = reference_model.thinker.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=24,
            do_sample=False,
            repetition_penalty=1.0,
            eos_token_id=[tokens["im_end"], tokens["endoftext"]],
            pad_token_id=tokens["endoftext"],
            **reference_inputs([pixels], [audio]),
        )
    reference = out[0, len(ids) :].tolist()
    text = "".join(e.text for e in events if isinstance(e, Sampled))
    print(f"\ngreedy reply, {len(reference)} tokens: {text!r}")
    assert list(finished.reply_ids) == reference


def test_a_three_second_question_is_75_audio_tokens(perception):
    assert perception.encode_audio(Audio(speech_like(3.0))).embeddings.shape[0] == 75


class TestLongRecordings:
    """The bundle keeps the checkpoint's preprocessor config, which hears up to 300 s."""

    def test_a_minute_is_heard_whole_as_1500_audio_tokens(self, perception, tiny_checkpoint):
        from transformers import WhisperFeatureExtractor
        from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths

        audio = speech_like(60.0, seed=8)
        extractor = WhisperFeatureExtractor.from_pretrained(str(tiny_checkpoint.path))
        mask = extractor(audio, sampling_rate=16_000, padding="max_length", return_attention_mask=True)
        reference_count = int(_get_feat_extract_output_lengths(mask["attention_mask"].sum()))
        encoded = perception.encode_audio(Audio(audio))
        assert encoded.embeddings.shape[0] == encoded.grid.tokens == reference_count == 1500
        assert encoded.cut is None

    def test_past_the_limit_a_recording_is_cut_and_says_how_much_was_heard(self, perception):
        audio = speech_like(301.0, seed=9)
        encoded = perception.encode_audio(Audio(audio))
        heard = perception.encode_audio(Audio(audio[: 300 * 16_000]))
        assert encoded.embeddings.shape[0] == 7500
        assert np.array_equal(encoded.embeddings, heard.embeddings) and encoded.key == heard.key
        assert encoded.cut == RecordingCut(heard_s=300.0, length_s=301.0)
        print(encoded.cut.message)
        assert (
            encoded.cut.message == "Heard only the first 5:00 of a 5:01 recording: the most this model takes."
        )
        assert recording_cuts([encoded, heard]) == [encoded.cut]

    def test_a_file_decoded_in_part_says_its_whole_length(self, perception):
        """An hour-long file: load_recording decodes its first MAX_DECODED_SECONDS and keeps its length."""
        encoded = perception.encode_audio(Audio(speech_like(301.0, seed=9), length_s=3600.0))
        assert encoded.cut == RecordingCut(heard_s=300.0, length_s=3600.0)
        assert encoded.cut.message.startswith("Heard only the first 5:00 of a 60:00 recording")

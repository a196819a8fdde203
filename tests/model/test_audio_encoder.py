"""The native audio tower against transformers' Qwen2.5-Omni `audio_tower`, on the tiny checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from model.audio_encoder import (
    CHECKPOINT_PREFIX,
    AudioEncoder,
    AudioEncoderConfig,
    ListeningEncoder,
    StreamingAudioEncoder,
    audio_encoder_from_file,
    audio_token_count,
)
from model.audio_features import log_mel, mel_frame_count
from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import ModelFileError, OmnideskError
from tests.helpers import max_abs_error, speech_like

SECONDS = 7.0


@pytest.fixture(scope="module")
def encoder(tiny_bundle) -> AudioEncoder:
    audio_config = tiny_bundle.config["thinker_config"]["audio_config"]
    return audio_encoder_from_file(tiny_bundle.file("audio_encoder"), audio_config)


@pytest.fixture(scope="module")
def reference_thinker(reference_model):
    """The module holding `get_audio_features` and `audio_tower` (its place depends on the version)."""
    thinker = reference_model.thinker
    return thinker.model if hasattr(thinker, "model") and hasattr(thinker.model, "audio_tower") else thinker


class TestWeights:
    def test_file_holds_the_checkpoint_names(self, tiny_bundle, encoder):
        with safe_open(str(tiny_bundle.file("audio_encoder")), "pt") as f:
            names = set(f.keys())
        assert names and all(name.startswith(CHECKPOINT_PREFIX) for name in names)
        assert len(names) == len(encoder.state_dict()) + 1  # + audio_bos_eos_token, unused by the reference

    def test_wrong_file_is_a_clear_error(self, tmp_path, tiny_bundle):
        bad = tmp_path / "audio_encoder.safetensors"
        bad.write_bytes(b"not safetensors")
        with pytest.raises(ModelFileError, match="unreadable audio encoder"):
            audio_encoder_from_file(bad, tiny_bundle.config["thinker_config"]["audio_config"])

    def test_odd_window_is_refused(self):
        with pytest.raises(ValueError, match="odd"):
            AudioEncoderConfig.from_dict({"n_window": 25})


def reference_embeddings(reference_thinker, extractor, audio: np.ndarray) -> tuple[torch.Tensor, int]:
    """The reference's audio embeddings (tokens, output_dim) of a recording through `extractor` (a
    WhisperFeatureExtractor), and the mel frames its attention mask keeps."""
    inputs = extractor(
        audio,
        sampling_rate=INPUT_SAMPLE_RATE,
        padding="max_length",
        return_attention_mask=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        reference = reference_thinker.get_audio_features(
            inputs["input_features"], feature_attention_mask=inputs["attention_mask"]
        ).last_hidden_state
    return reference, int(inputs["attention_mask"].sum())


class TestParity:
    def test_matches_reference_audio_tower(self, encoder, reference_thinker):
        from transformers import WhisperFeatureExtractor

        audio = speech_like(SECONDS)
        reference, _ = reference_embeddings(
            reference_thinker, WhisperFeatureExtractor(feature_size=128), audio
        )
        ours = encoder.encode(log_mel(audio))
        assert ours.shape == (175, 64) == reference.shape  # 7 s -> 25 tokens per second
        error = max_abs_error("audio encoder, 7 s", ours.numpy(), reference.numpy())
        assert error < 1e-4

    @pytest.mark.parametrize("frames", [1, 2, 3, 4, 5, 199, 200, 201, 203, 399, 400, 401])
    def test_edge_lengths_match_reference(self, encoder, reference_thinker, frames):
        mel = torch.randn(128, frames, generator=torch.Generator().manual_seed(frames))
        with torch.no_grad():
            reference = reference_thinker.audio_tower(
                mel, feature_lens=torch.tensor([frames])
            ).last_hidden_state
        ours = encoder.encode(mel)
        assert ours.shape[0] == audio_token_count(frames) == reference.shape[0]
        if frames > 3:
            assert max_abs_error(f"audio encoder, {frames} frames", ours.numpy(), reference.numpy()) < 1e-4

    @pytest.mark.parametrize(
        ("dtype", "bound"),
        # Relative rounding per operation: float16 keeps 11 significant bits (2^-11 = 4.9e-4), bfloat16 8
        # (2^-8 = 3.9e-3). An embedding is the end of ~10 chained roundings (two convolutions, the tiny
        # tower's 2 layers of norm, attention and MLP, the pooling, the last norm and projection), each
        # relative to values of the output's order: up to ~10 units of the last place, 0.5% and 4%.
        [(torch.bfloat16, 0.04), (torch.float16, 0.005)],
    )
    def test_half_precision_stays_close(self, tiny_bundle, encoder, dtype, bound):
        """The GPU dtypes, run here on the CPU: same path, rounding error only (printed with `-s`)."""
        audio_config = tiny_bundle.config["thinker_config"]["audio_config"]
        half = audio_encoder_from_file(tiny_bundle.file("audio_encoder"), audio_config, dtype=dtype)
        mel = log_mel(speech_like(2.5))
        ours = half.encode(mel)
        assert ours.dtype == dtype
        reference = encoder.encode(mel)
        error = max_abs_error(f"audio encoder {dtype} vs float32", ours.float().numpy(), reference.numpy())
        assert 0 < error < bound * reference.abs().max().item()

    def test_empty_mel_gives_no_tokens(self, encoder):
        assert encoder.encode(torch.zeros(128, 0)).shape == (0, encoder.config.output_dim)

    def test_encodes_with_its_own_threads_and_gives_them_back(self, encoder, monkeypatch):
        # The plan gives it every core while nothing else computes; the others' threads are left as set.
        seen: list[int] = []
        hook = encoder.layers[0].register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
        before = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            monkeypatch.setattr(encoder, "threads", 3)
            encoder.encode(torch.zeros(128, 2 * encoder.config.block_frames))
        finally:
            hook.remove()
            after = torch.get_num_threads()
            torch.set_num_threads(before)
        assert seen == [3, 3] and after == 1


@pytest.fixture(scope="module", params=[torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def any_encoder(request, tiny_bundle, encoder) -> AudioEncoder:
    """The encoder in each dtype the plan runs it in on a CPU (bfloat16: Fast, where it has the kernels)."""
    if request.param == torch.float32:
        return encoder
    audio_config = tiny_bundle.config["thinker_config"]["audio_config"]
    return audio_encoder_from_file(tiny_bundle.file("audio_encoder"), audio_config, dtype=request.param)


class TestStreaming:
    def test_block_by_block_equals_whole_exactly(self, any_encoder):
        encoder = any_encoder
        mel = log_mel(speech_like(SECONDS, seed=1))
        whole = encoder.encode(mel)
        stream = StreamingAudioEncoder(encoder)
        pieces = []
        sizes = np.random.default_rng(2).integers(1, 90, size=200)  # frames as a microphone delivers them
        start = 0
        for size in sizes:
            if start >= mel.shape[1]:
                break
            out = stream.push(mel[:, start : start + int(size)])
            start += int(size)
            assert out.shape[0] % (encoder.config.n_window // 2) == 0  # only whole blocks before release
            pieces.append(out)
        before_release = sum(p.shape[0] for p in pieces)
        last = stream.finish()
        streamed = torch.cat([*pieces, last])
        print(f"streamed {before_release} tokens while listening, {last.shape[0]} at release")
        assert last.shape[0] < encoder.config.n_window // 2
        assert (
            max_abs_error("block by block vs whole", streamed.float().numpy(), whole.float().numpy()) == 0.0
        )
        assert torch.equal(streamed, whole)

    def test_finish_without_frames_is_empty(self, encoder):
        assert StreamingAudioEncoder(encoder).finish().shape == (0, encoder.config.output_dim)


class TestListening:
    """Samples in as a microphone gives them (20 ms pieces), exact embeddings out at release."""

    @staticmethod
    def _listen(encoder, audio: np.ndarray) -> tuple[torch.Tensor, ListeningEncoder, int]:
        listener = ListeningEncoder(encoder)
        for start in range(0, len(audio), 320):
            listener.push(audio[start : start + 320])
        early = listener.blocks_encoded
        return listener.finish(), listener, early

    @pytest.mark.parametrize("quiet_start", [False, True], ids=["speech", "quiet start, loud later"])
    def test_equals_whole_recording_exactly(self, any_encoder, quiet_start):
        encoder = any_encoder
        audio = speech_like(SECONDS, seed=4)
        if quiet_start:
            audio[: 3 * INPUT_SAMPLE_RATE] *= 1e-3  # the peak arrives only in the second block
        streamed, listener, early = self._listen(encoder, audio)
        whole = encoder.encode(log_mel(audio))
        print(f"{early} blocks encoded while listening, {listener.reencoded} encoded again at release")
        assert early == 3  # 7 s: three whole blocks before release, the last 1 s at release
        assert max_abs_error("listening vs whole", streamed.float().numpy(), whole.float().numpy()) == 0.0
        assert torch.equal(streamed, whole)
        if quiet_start:
            assert listener.reencoded >= 1

    def test_empty_recording_is_a_clear_error(self, encoder):
        with pytest.raises(OmnideskError, match="empty"):
            ListeningEncoder(encoder).finish()

    def test_what_is_past_the_limit_is_not_heard(self, encoder):
        """A bundle whose checkpoint hears 3 s: a 5 s recording is encoded as its first 3 s."""
        limit = 3 * INPUT_SAMPLE_RATE
        listener = ListeningEncoder(encoder, max_samples=limit)
        audio = speech_like(5.0, seed=5)
        for start in range(0, len(audio), 320):
            listener.push(audio[start : start + 320])
        streamed = listener.finish()
        assert streamed.shape[0] == 75
        assert torch.equal(streamed, encoder.encode(log_mel(audio[:limit], max_samples=limit)))


class TestTokenCount:
    def test_three_seconds_make_75_tokens(self, encoder):
        frames = mel_frame_count(3 * INPUT_SAMPLE_RATE)
        assert audio_token_count(frames) == 75
        assert encoder.encode(torch.zeros(128, frames)).shape[0] == 75

    def test_a_minute_is_1500_tokens_as_the_reference_hears_it(
        self, encoder, reference_thinker, tiny_checkpoint
    ):
        """60 s through the processor the checkpoint configures (up to 300 s) and the reference tower."""
        from transformers import WhisperFeatureExtractor

        audio = speech_like(60.0, seed=6)
        extractor = WhisperFeatureExtractor.from_pretrained(str(tiny_checkpoint.path))
        reference, frames = reference_embeddings(reference_thinker, extractor, audio)
        _, count = reference_thinker.audio_tower._get_feat_extract_output_lengths(torch.tensor(frames))
        ours = encoder.encode(log_mel(audio))
        assert ours.shape[0] == int(count) == reference.shape[0] == 1500
        assert max_abs_error("audio encoder, 60 s", ours.numpy(), reference.numpy()) < 1e-4

    def test_count_matches_reference_formula(self, reference_thinker):
        lengths = torch.arange(1, 3001)
        _, reference = reference_thinker.audio_tower._get_feat_extract_output_lengths(lengths)
        assert [audio_token_count(n) for n in lengths.tolist()] == reference.tolist()

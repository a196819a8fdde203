"""Token2Wav against transformers' Qwen2_5OmniToken2WavModel, and our streaming.

The tiny checkpoint's token2wav weights are at fan-in scale (tests/fixtures/tiny_checkpoint.py),
so velocity, mel and waveform are of order 0.1-1 and the parity errors below mean something.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
import subprocess
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.audio_rates import OUTPUT_SAMPLE_RATE
from model.errors import OmnideskError
from model.placement import EXACT_STREAM, FAST_STREAM
from model.token2wav.bigvgan import receptive_field_frames
from model.token2wav.dit import DiTConfig, block_attention
from model.token2wav.graph import WindowGraph, captured_window
from model.token2wav.int8_dit import DynamicInt8Linear, available, int8_projections
from model.token2wav.sampler import EULER_3, FAST, REFERENCE, UNGUIDED
from model.token2wav.streaming import (
    ChunkedVocoder,
    MelStream,
    StreamingSynthesizer,
    StreamOptions,
    warm_windows,
)
from model.token2wav.synthesizer import NoiseStream, Token2Wav
from model.voices import Voice, load_voices, pick_voice

SEED = 1234
N_CODES = 24  # 480 ms: short, as the reference takes ~0.3 s per DiT evaluation even when tiny
VOICE = "Chelsie"


def _report(what: str, ours: torch.Tensor, ref: torch.Tensor) -> float:
    err = (ours.float() - ref.float()).abs().max().item()
    scale = ref.float().abs().max().item()
    print(f"{what}: max abs error {err:.3g}, relative to max |ref| {scale:.3g}: {err / scale:.3g}")
    return err


@pytest.fixture(scope="module")
def t2w(tiny_bundle) -> Token2Wav:
    return Token2Wav.load(tiny_bundle)


@pytest.fixture(scope="module")
def voice(tiny_bundle) -> Voice:
    return pick_voice(load_voices(tiny_bundle), VOICE)


@pytest.fixture(scope="module")
def codes() -> torch.Tensor:
    return torch.randint(0, 100, (N_CODES,), generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def reference_run(reference_model, codes):
    """The reference's mel (1, mel_dim, frames) from DiT.sample and its waveform from the full forward."""
    speaker = reference_model.speaker_map[VOICE]
    cond, ref_mel = speaker["cond"].float(), speaker["ref_mel"].float()
    token2wav = reference_model.token2wav
    with torch.no_grad():
        torch.manual_seed(SEED)
        mel = token2wav.code2wav_dit_model.sample(cond, ref_mel, codes[None])
        torch.manual_seed(SEED)
        waveform = token2wav(codes[None], cond, ref_mel)
    return mel, waveform


class TestParity:
    def test_velocity_at_one_step(self, t2w, voice, reference_model, codes):
        dit = reference_model.token2wav.code2wav_dit_model
        speaker = reference_model.speaker_map[VOICE]
        frames = 2 * N_CODES
        x = torch.randn(frames, 80, generator=torch.Generator().manual_seed(1))
        t = torch.tensor(0.3)
        with torch.no_grad():
            out = dit(
                hidden_states=x[None],
                quantized_code=codes[None],
                speaker_embedding=speaker["cond"].float().unsqueeze(1).repeat(1, frames, 1),
                condition_vector=speaker["ref_mel"].float(),
                time_step=t,
                apply_cfg=True,
            )
        features = t2w.voice_features(voice)
        with torch.inference_mode():
            ours = t2w.dit(x, t, t2w.dit.conditioning(codes, features.speaker, features.cond, 0))
        assert out.abs().max() > 0.1
        assert _report("DiT velocity (cond and uncond rows)", ours, out) < 1e-4

    def test_full_mel(self, t2w, voice, codes, reference_run):
        ref_mel, _ = reference_run
        ours = t2w.mel(codes, voice, seed=SEED)
        assert ref_mel.abs().max() > 0.1
        assert _report("full mel (RK4, 10 steps)", ours, ref_mel[0]) < 1e-3

    def test_bigvgan_from_the_same_mel(self, t2w, reference_model, reference_run):
        ref_mel, _ = reference_run
        with torch.no_grad():
            ref_wave = reference_model.token2wav.code2wav_bigvgan_model(ref_mel)
        assert 0.05 < ref_wave.abs().max() < 1.0  # audible, not clipped
        assert _report("BigVGAN waveform from the reference mel", t2w.vocode(ref_mel[0]), ref_wave) < 1e-4

    def test_a_bfloat16_vocoders_activations_run_in_float32_on_the_cpu(self, t2w):
        """Its depthwise anti-aliasing filters are twice as fast in float32 there, and round less."""
        activation = copy.deepcopy(t2w.vocoder.resblocks[0].activations[0])
        x = torch.randn(1, activation.alpha.numel(), 1, 300, generator=torch.Generator().manual_seed(3))
        filt = t2w.vocoder.aa_filter
        in_float32 = activation(x.bfloat16().float(), filt).bfloat16()
        ours = activation.bfloat16()(x.bfloat16(), filt)
        assert ours.dtype == torch.bfloat16 and torch.equal(ours, in_float32)

    def test_full_utterance_waveform(self, t2w, voice, codes, reference_run):
        _, ref_wave = reference_run
        ours = t2w.synthesize(codes, voice, seed=SEED)
        assert ours.shape == ref_wave.shape == (N_CODES * 480,)
        assert _report("full-utterance waveform", ours, ref_wave) < 1e-3

    @pytest.mark.parametrize(
        ("dtype", "mel_bound", "min_snr_db"),
        # Relative rounding per operation: float16 2^-11 = 4.9e-4, bfloat16 2^-8 = 3.9e-3. The mel is 9 RK4
        # steps of the DiT (its 4 tiny blocks, each a chain of ~10 roundings); the steps' errors largely
        # average out, so ~20 units of the last place bound it: 1% (float16) and 3% (bfloat16, 8 units:
        # fewer bits, but the same chain). A waveform error of relative size e is an SNR of -20 log10(e):
        # 1% and 3% give 40 and 30 dB; the vocoder's own roundings take 5 dB of that: 35 and 25 dB.
        [(torch.float16, 0.01, 35.0), (torch.bfloat16, 0.03, 25.0)],
    )
    def test_half_precision_against_float32(
        self, tiny_bundle, t2w, voice, codes, dtype, mel_bound, min_snr_db
    ):
        """What a GPU would run; measured here on the CPU's half-precision kernels."""
        half = Token2Wav.load(tiny_bundle, dtype=dtype)
        mel, wave = t2w.mel(codes, voice, seed=SEED), t2w.synthesize(codes, voice, seed=SEED)
        mel_error = _report(f"{dtype} mel vs float32", half.mel(codes, voice, seed=SEED), mel)
        wave_error = half.synthesize(codes, voice, seed=SEED).float() - wave
        _report(f"{dtype} waveform vs float32", wave_error + wave, wave)
        snr_db = 10 * torch.log10(wave.pow(2).mean() / wave_error.pow(2).mean()).item()
        print(f"{dtype} waveform signal-to-error ratio: {snr_db:.1f} dB")
        assert mel_error < mel_bound * mel.abs().max().item()
        assert snr_db > min_snr_db

    def test_noise_drawn_in_pieces_is_the_reference_draw(self):
        torch.manual_seed(SEED)
        expected = torch.randn([1, 200, 80])[0]
        stream = NoiseStream(SEED, 80)
        pieces = [stream.frames(a, b) for a, b in ((0, 48), (24, 120), (96, 200))]
        assert torch.equal(torch.cat([pieces[0], pieces[1][24:], pieces[2][24:]]), expected)

    def test_fast_preset_cost(self, t2w, voice, codes):
        """The Fast profile's sampler (5 Euler steps, as MNN's default) against the reference's 36
        evaluations. The tiny random DiT's flow is much rougher than a trained one's, so this is a
        ceiling: 22% of the mean |mel| here (9 Euler steps gave 7%); docs/performance.md gives the real-size
        figure and the waveform's signal-to-error ratio."""
        reference = t2w.mel(codes, voice, seed=SEED)
        fast = t2w.mel(codes, voice, seed=SEED, options=FAST)
        distance = (fast - reference).abs().mean().item()
        level = reference.abs().mean().item()
        print(
            f"FAST ({FAST.evaluations} evaluations) vs REFERENCE ({REFERENCE.evaluations}): "
            f"mel L1 {distance:.4f} (mean |mel| {level:.3f})"
        )
        assert 0 < distance < 0.3 * level


@pytest.mark.skipif(not available(), reason="torch has no oneDNN quantized linear here")
class TestInt8DiT:
    """The Fast profile's int8 DiT projections (token2wav/int8_dit.py)."""

    def test_a_projection_errs_by_its_rounding(self):
        """Weights rounded to 1/254 of each row's largest, inputs to 1/255 of their range: a product
        of 64 terms errs by about 1% of the largest output."""
        generator = torch.Generator().manual_seed(5)
        linear = torch.nn.Linear(64, 48)
        x = torch.randn(3, 40, 64, generator=generator)
        ours = DynamicInt8Linear(linear)(x)
        with torch.no_grad():
            exact = linear(x)
        assert ours.shape == exact.shape and ours.dtype == x.dtype
        assert _report("int8 projection", ours, exact) < 0.03 * exact.abs().max().item()
        zeros = torch.zeros(2, 64)
        with torch.no_grad():
            assert torch.allclose(DynamicInt8Linear(linear)(zeros), linear(zeros), atol=1e-6)

    def test_products_of_one_input_made_as_one_give_the_same_numbers(self):
        """q, k and v as one product: each output row keeps its own scale, the input its quantization."""
        generator = torch.Generator().manual_seed(6)
        linears = [torch.nn.Linear(64, 48) for _ in range(3)]
        x = torch.randn(2, 30, 64, generator=generator).bfloat16()
        together = DynamicInt8Linear(*linears)(x)
        assert together.shape == (2, 30, 144)
        assert torch.equal(together, torch.cat([DynamicInt8Linear(linear)(x) for linear in linears], -1))
        linears[1] = torch.nn.Linear(64, 48, bias=False)  # one without a bias keeps the others' biases
        mixed = DynamicInt8Linear(*linears)(x)
        assert torch.equal(mixed, torch.cat([DynamicInt8Linear(linear)(x) for linear in linears], -1))

    def test_a_product_with_its_gelu_rounds_once(self):
        """The GELU on the float32 sums, then one rounding to bfloat16, against the product rounded
        to bfloat16 and the GELU on that: within the two roundings of the latter."""
        generator = torch.Generator().manual_seed(7)
        linear = torch.nn.Linear(64, 48)
        x = torch.randn(3, 40, 64, generator=generator).bfloat16()
        fused = DynamicInt8Linear(linear, gelu=True)(x).float()
        separate = F.gelu(DynamicInt8Linear(linear)(x).float(), approximate="tanh")
        assert (separate < -0.1).any()  # the GELU's bend is in play, not only its identity-like half
        assert (fused - separate).abs().max().item() <= 2 * 2**-8 * separate.abs().max().item()

    def test_its_mel_stays_near_the_fast_profiles(self, tiny_bundle, t2w, voice, codes):
        """Against the float DiT with the same sampler: the tiny random DiT rounds at every one of its
        blocks' projections, so this is a ceiling; `omnidesk bench token2wav` gives the real size."""
        int8 = Token2Wav(int8_projections(copy.deepcopy(t2w.dit)), t2w.speaker_encoder, t2w.vocoder)
        plain = t2w.mel(codes, voice, seed=SEED, options=FAST)
        ours = int8.mel(codes, voice, seed=SEED, options=FAST)
        distance = (ours - plain).abs().mean().item()
        level = plain.abs().mean().item()
        print(f"int8 DiT vs float32 DiT, FAST: mel L1 {distance:.4f} (mean |mel| {level:.3f})")
        assert 0 < distance < 0.03 * level
        loaded = Token2Wav.load(tiny_bundle, int8_dit=True)
        assert torch.equal(loaded.mel(codes, voice, seed=SEED, options=FAST), ours)


def _stream(t2w, voice, codes, options, piece=5):
    synth = StreamingSynthesizer(t2w, voice, seed=SEED, options=options)
    chunks = [synth.push(codes[i : i + piece]) for i in range(0, codes.numel(), piece)]
    return [*chunks, synth.finish()]


def _streamed_mel(t2w, voice, codes, options):
    stream = MelStream(t2w, voice, SEED, options)
    chunks = [*stream.chunks(codes), *stream.last_chunks()]
    return torch.cat([chunk.final for chunk in chunks], dim=1)


@pytest.fixture(scope="module")
def streamed(t2w, voice) -> tuple[list[torch.Tensor], torch.Tensor]:
    """100 codes (2 s, 3 DiT chunks) streamed 5 at a time: (audio chunks, the same codes' streamed mel
    made from all codes at once)."""
    codes = torch.randint(0, 100, (100,), generator=torch.Generator().manual_seed(3))
    options = StreamOptions(sampler=FAST)
    return _stream(t2w, voice, codes, options), _streamed_mel(t2w, voice, codes, options)


class TestStreaming:
    def test_chunks_join_to_the_unchunked_evaluation(self, t2w, streamed):
        chunks, mel = streamed
        whole = t2w.vocode(mel)
        assert whole.abs().max() > 0.05
        assert sum(c.numel() > 0 for c in chunks) >= 3
        joined = torch.cat(chunks)
        assert _report("streamed chunks joined vs one BigVGAN run on the streamed mel", joined, whole) < 1e-5

    def test_joins_are_continuous(self, streamed):
        chunks = [c for c in streamed[0] if c.numel()]
        joined = torch.cat(chunks)
        steps = joined.diff().abs()
        seams = np.cumsum([c.numel() for c in chunks])[:-1]
        seam_steps = steps[torch.as_tensor(seams - 1)]
        print(
            f"{len(seams)} seams: largest step {seam_steps.max():.4g}, "
            f"signal's largest step {steps.max():.4g}"
        )
        assert seam_steps.max() <= steps.max()

    @pytest.mark.parametrize("profile", ["exact", "fast"])
    def test_codes_that_come_faster_than_the_dit_give_the_same_sound(self, t2w, voice, profile):
        """Where the Talker is ahead, one push completes several chunks: each goes to the vocoder on
        its own, as made (no wide call over all of them at the end), and the sound is the very sound
        of codes pushed one by one."""
        options = FAST_STREAM if profile == "fast" else EXACT_STREAM
        codes = torch.randint(0, 100, (400,), generator=torch.Generator().manual_seed(8))
        one_by_one = StreamingSynthesizer(t2w, voice, seed=SEED, options=options)
        expected = torch.cat([*(one_by_one.push(codes[i : i + 1]) for i in range(400)), one_by_one.finish()])
        behind = StreamingSynthesizer(t2w, voice, seed=SEED, options=options)
        widest = 24 * max(options.first_chunk_blocks, options.chunk_blocks, options.max_chunk_blocks or 0)
        chunks = list(behind.mel_chunks(codes))
        assert len(chunks) > 2 and all(0 < chunk.frames <= widest for chunk in chunks)
        sound = [behind.vocode(chunk) for chunk in chunks]
        sound += [behind.vocode(chunk, last) for chunk, last in behind.last_mel_chunks()]
        assert torch.equal(torch.cat(sound), expected)

    def test_first_chunk_comes_with_the_36th_code(self, t2w, voice):
        synth = StreamingSynthesizer(t2w, voice, seed=SEED, options=StreamOptions(sampler=FAST))
        codes = torch.randint(0, 100, (36,), generator=torch.Generator().manual_seed(5))
        sizes = [synth.push(codes[i : i + 1]).numel() for i in range(36)]
        first_frames = 2 * 24 - receptive_field_frames(t2w.vocoder.cfg)  # 2 blocks minus the vocoder context
        assert sizes == [0] * 35 + [first_frames * 240]

    def test_ten_seconds_streamed_vs_whole(self, t2w, voice):
        codes = torch.randint(0, 100, (500,), generator=torch.Generator().manual_seed(6))
        options = StreamOptions(sampler=FAST)
        whole = t2w.mel(codes, voice, seed=SEED, options=FAST)
        streamed = _streamed_mel(t2w, voice, codes, options)
        distance = (streamed - whole).abs().mean().item()
        print(
            f"10 s, FAST sampler: streamed vs whole-utterance mel L1 {distance:.3g} (mean |mel| "
            f"{whole.abs().mean():.3g})"
        )
        assert streamed.shape == whole.shape
        assert distance < 1e-2 * whole.abs().mean().item()

    @pytest.mark.parametrize("n_codes", [30, 100, 113])
    def test_windows_at_a_fixed_shape_give_the_same_mel(self, t2w, voice, n_codes):
        """Every DiT window padded to the largest (72 codes): the first window (36 codes), a full
        one, and the last ones, partial blocks included (113 codes), give the unpadded mel."""
        codes = torch.randint(0, 100, (n_codes,), generator=torch.Generator().manual_seed(n_codes))
        options = StreamOptions(sampler=FAST)
        plain = _streamed_mel(t2w, voice, codes, options)
        padded = []
        original = t2w.mel_window

        def window(codes, *args):  # MelStream passes pad_to last
            padded.append((codes.numel(), args[-1]))
            return original(codes, *args)

        t2w.mel_window = window
        try:
            fixed = _streamed_mel(t2w, voice, codes, dataclasses.replace(options, fixed_windows=True))
        finally:
            del t2w.mel_window
        assert options.window_codes(t2w.block_codes) == 72 and all(pad == 72 for _, pad in padded)
        assert any(real < 72 for real, _ in padded)
        assert fixed.shape == plain.shape
        assert plain.abs().max() > 0.1
        assert _report(f"{n_codes} codes, fixed-shape windows vs plain", fixed, plain) < 1e-5

    def test_a_window_graphs_buffers_give_each_windows_own_mel(self, t2w, voice):
        """What a captured window replays (`WindowGraph` on its buffers, run here uncaptured), for two
        windows in turn (a full one, then a padded one at another place): each equals mel_window's."""
        features = t2w.voice_features(voice)
        window = WindowGraph(t2w.dit, 144, FAST)
        generator = torch.Generator().manual_seed(9)
        for n_codes, first_frame in ((72, 0), (40, 96)):
            codes = torch.randint(0, 100, (n_codes,), generator=generator)
            noise = torch.randn(2 * n_codes, 80, generator=generator)
            plain = t2w.mel_window(codes, features, noise, first_frame, FAST, None, 72)
            padded = torch.cat([codes, codes.new_zeros(72 - n_codes)])
            with torch.inference_mode():
                cond = t2w.dit.conditioning(padded, features.speaker, features.cond, first_frame, n_codes)
                noise = torch.cat([noise, noise.new_zeros(144 - 2 * n_codes, 80)])
                replayed = window(cond, noise)[: 2 * n_codes]
            assert torch.equal(replayed, plain)

    def test_a_window_that_cannot_be_captured_runs_eagerly_and_says_so(self, t2w, caplog):
        """Capture fails here (no CUDA), as it would on a GPU with a kernel that cannot be captured."""
        with caplog.at_level(logging.WARNING, logger="model.token2wav.graph"):
            assert captured_window(t2w.dit, 144, FAST) is None
        assert "runs eagerly" in caplog.text

    @pytest.mark.parametrize("fused", [False, True], ids=["torch's activations", "fused activations"])
    def test_vocoder_reads_no_further_than_its_receptive_field(self, t2w, tiny_bundle, fused):
        if fused:  # the Fast profile's kernel (token2wav/fused_snake.py) reads as far as torch's
            t2w = Token2Wav.load(tiny_bundle, fused_vocoder=True)
        field = receptive_field_frames(t2w.vocoder.cfg)
        mel = torch.randn(80, 2 * field + 5, generator=torch.Generator().manual_seed(8)) - 4
        moved = mel.clone()
        moved[:, field + 2] += 1.0
        changed = (t2w.vocode(mel) - t2w.vocode(moved)).reshape(-1, 240).abs().amax(dim=1) > 0
        frames = changed.nonzero().squeeze(1)
        assert frames.min() >= 2 and frames.max() <= 2 * field + 2

    def test_widening_a_window_over_vocoded_frames_changes_no_sample(self, t2w):
        """With the receptive field as context, whole-block windows (`width_step`) vocode the same."""
        mel = torch.randn(80, 197, generator=torch.Generator().manual_seed(9)) - 4
        field = receptive_field_frames(t2w.vocoder.cfg)
        runs = []
        for step in (1, 24):
            vocoder = ChunkedVocoder(t2w.vocoder, field, width_step=step)
            runs.append(
                torch.cat(
                    [
                        *(vocoder.push(mel[:, i : i + 50]) for i in range(0, 150, 50)),
                        vocoder.finish(mel[:, 150:]),
                    ]
                )
            )
        assert runs[0].shape == runs[1].shape == (197 * 240,)
        assert _report("whole-block windows vs exact-width windows", runs[1], runs[0]) < 1e-6


def _speech_mel(path: Path) -> torch.Tensor:
    """A 16-bit mono wav -> log-amplitude 80-bin mel at 24 kHz, 100 frames/s (mel_dim, frames)."""
    with wave.open(str(path)) as f:
        rate = f.getframerate()
        audio = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    spectrum = torch.fft.rfft(torch.from_numpy(audio))
    length = round(audio.size * OUTPUT_SAMPLE_RATE / rate)
    audio_24k = torch.fft.irfft(spectrum, n=length) * (length / audio.size)
    n_fft, hop, n_mels = 1024, 240, 80
    power = torch.stft(audio_24k, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    hz = torch.linspace(0, OUTPUT_SAMPLE_RATE / 2, n_fft // 2 + 1)
    mel_points = torch.linspace(0, 2595 * np.log10(1 + 12000 / 700), n_mels + 2)
    edges = 700 * (10 ** (mel_points / 2595) - 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bank = torch.clamp(torch.minimum((hz - lower) / (centre - lower), (upper - hz) / (upper - centre)), min=0)
    return torch.log(torch.clamp(bank @ power, min=1e-5))


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt install espeak-ng)"
)
def test_listening_check_chunked_vocoding_is_inaudible(t2w, tmp_path):
    """Criterion: the chunked-minus-whole difference stays under one 16-bit step (1/32768), so the
    two files are the same at CD resolution; its level relative to the signal is printed too."""
    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "The quick brown fox jumps."], check=True)
    mel = _speech_mel(path)
    whole = t2w.vocode(mel)
    assert whole.abs().max() > 0.05
    for context in (16, receptive_field_frames(t2w.vocoder.cfg)):
        vocoder = ChunkedVocoder(t2w.vocoder, context)
        chunks = [vocoder.push(mel[:, i : i + 72]) for i in range(0, mel.shape[1], 72)]
        chunked = torch.cat([*chunks, vocoder.finish()])
        diff = chunked - whole
        level = 20 * torch.log10(diff.pow(2).mean().sqrt() / whole.pow(2).mean().sqrt()).item()
        print(
            f"listening check, {mel.shape[1] / 100:.2f} s of espeak-ng speech, context {context} frames: "
            f"max |diff| {diff.abs().max():.3g} (16-bit step {1 / 32768:.3g}), "
            f"diff level {level:.1f} dB re signal"
        )
        if context >= receptive_field_frames(t2w.vocoder.cfg):  # the default; smaller ones shown for contrast
            assert diff.abs().max() < 1 / 32768


class TestBlockAttention:
    """`block_attention` gives what attention over the whole window with a (frames, frames) mask of the
    same blocks gives: the reference's way, which costs the square of the window's length."""

    @staticmethod
    def _full_mask(cfg: DiTConfig, layer: int, frames: int, real_frames: int) -> torch.Tensor:
        back, ahead = cfg.span(layer)
        block = torch.arange(frames) // cfg.block_size
        diff = block[None, :] - block[:, None]  # key block - query block
        real = torch.arange(frames) < real_frames
        return (diff >= -back) & (diff <= ahead) & (real[None, :] == real[:, None])

    @pytest.mark.parametrize(
        ("frames", "real_frames"), [(24, 24), (48, 48), (61, 61), (144, 144), (144, 80), (113, 60)]
    )
    def test_it_equals_attention_over_the_whole_window(self, t2w, frames, real_frames):
        cfg = t2w.dit.cfg
        heads, dim = cfg.num_attention_heads, cfg.head_dim
        generator = torch.Generator().manual_seed(frames)
        q, k, v = (torch.randn(2, heads, frames, dim, generator=generator) for _ in range(3))
        masks = t2w.dit.block_masks(0, frames, torch.device("cpu"), real_frames)
        spans = {cfg.span(layer): layer for layer in range(cfg.num_hidden_layers)}
        assert len(spans) == 3  # its own block only, one block back, one ahead
        for (back, ahead), layer in spans.items():
            ours = block_attention(q, k, v, masks[layer], cfg.block_size, back, ahead)
            whole = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=self._full_mask(cfg, layer, frames, real_frames)
            )
            assert v.abs().max() > 1
            assert _report(f"{frames} frames, span {back} back {ahead} ahead", ours, whole) < 1e-5

    def test_a_window_starts_on_a_block_boundary(self, t2w):
        with pytest.raises(ValueError, match="block boundary"):
            t2w.dit.block_masks(12, 48, torch.device("cpu"), 48)


class TestBadInput:
    def test_empty_codes(self, t2w, voice):
        with pytest.raises(OmnideskError, match="no speech codes"):
            t2w.synthesize([], voice, seed=0)
        with pytest.raises(OmnideskError, match="no speech codes"):
            StreamingSynthesizer(t2w, voice).finish()

    @pytest.mark.parametrize("bad", [-1, 100, 8296])
    def test_out_of_range_codes(self, t2w, voice, bad):
        with pytest.raises(
            OmnideskError, match=f"speech code {bad} is out of range: the DiT knows codes 0..99"
        ):
            t2w.synthesize([1, 2, bad], voice, seed=0)
        with pytest.raises(OmnideskError, match="out of range"):
            StreamingSynthesizer(t2w, voice).push([bad])

    def test_codes_of_the_wrong_shape(self, t2w, voice):
        with pytest.raises(OmnideskError, match="1-D integer"):
            t2w.synthesize(torch.zeros(2, 3, dtype=torch.int64), voice, seed=0)


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        StreamOptions().chunk_blocks = 2  # type: ignore[misc]


class TestFastStreaming:
    """The Fast profile's chunks: the first sound with the 24th code, each chunk vocoded to its end
    against the DiT's provisional look-ahead, measured against exact vocoding of the same mel."""

    def test_the_first_chunk_sounds_whole_with_the_24th_code(self, t2w, voice):
        codes = torch.randint(0, 100, (24,), generator=torch.Generator().manual_seed(4))
        synth = StreamingSynthesizer(t2w, voice, seed=SEED, options=FAST_STREAM)
        assert synth.push(codes[:23]).numel() == 0
        assert synth.push(codes[23:]).numel() == 12 * 2 * 240  # one block: 240 ms

    def test_look_ahead_vocoding_costs_little(self, t2w, voice):
        codes = torch.randint(0, 100, (200,), generator=torch.Generator().manual_seed(5))
        exact = replace(FAST_STREAM, vocoder_context_frames=None, vocoder_lookahead=False)
        ours = torch.cat(_stream(t2w, voice, codes, FAST_STREAM))
        reference = torch.cat(_stream(t2w, voice, codes, exact))  # = one BigVGAN run over the same mel
        error = ours - reference
        snr = 10 * torch.log10(reference.pow(2).mean() / error.pow(2).mean()).item()
        print(f"\nFast chunks vocoded against the look-ahead vs exact: signal-to-error {snr:.1f} dB")
        assert ours.shape == reference.shape and snr > 40

    def test_later_chunks_grow_with_the_sound_made_before_them(self, t2w, voice):
        codes = torch.randint(0, 100, (500,), generator=torch.Generator().manual_seed(7))
        synth = StreamingSynthesizer(t2w, voice, seed=SEED, options=FAST_STREAM)
        block_samples = 12 * 2 * 240
        pushed = [synth.push(codes[i : i + 1]).numel() for i in range(len(codes))]
        chunks = [(i + 1, n // block_samples) for i, n in enumerate(pushed) if n]
        # (codes in when it sounds, its blocks): 1 block, then 5, then as long as the sound before
        # it up to 12; each sounds once its window's look-ahead block is in too
        assert chunks == [(24, 1), (84, 5), (156, 6), (300, 12), (444, 12)]
        assert synth.finish().numel() == 500 * 2 * 240 - sum(pushed)

    def test_growing_chunks_stay_as_close_to_the_whole_utterance(self, t2w, voice):
        codes = torch.randint(0, 100, (500,), generator=torch.Generator().manual_seed(6))
        whole = t2w.mel(codes, voice, seed=SEED, options=FAST)
        distances = {}
        fixed = replace(FAST_STREAM, max_chunk_blocks=None)
        for name, options in (("fixed", fixed), ("growing", FAST_STREAM)):
            streamed = _streamed_mel(t2w, voice, codes, options)
            assert streamed.shape == whole.shape
            distances[name] = (streamed - whole).abs().mean().item()
        print(
            f"\n10 s, Fast: streamed vs whole-utterance mel L1, fixed 5-block chunks "
            f"{distances['fixed']:.3g}, growing {distances['growing']:.3g} "
            f"(mean |mel| {whole.abs().mean():.3g})"
        )
        assert distances["growing"] <= 1.1 * distances["fixed"]

    @pytest.mark.parametrize("n_codes", [113, 131])
    def test_every_vocoder_window_is_whole_blocks_wide(self, t2w, voice, monkeypatch, n_codes):
        """So that the widths a CPU builds kernels for recur from reply to reply, the last chunk's
        too, which is vocoded in one call; only the first window, with nothing before it, is not
        widened (it is two blocks: the chunk and its look-ahead)."""
        widths, forward = [], t2w.vocoder.forward

        def vocoder_width(mel):
            widths.append(mel.shape[-1])
            return forward(mel)

        monkeypatch.setattr(t2w.vocoder, "forward", vocoder_width)
        codes = torch.randint(0, 100, (n_codes,), generator=torch.Generator().manual_seed(n_codes))
        audio = torch.cat(_stream(t2w, voice, codes, FAST_STREAM, piece=1))
        block_frames = 2 * t2w.block_codes
        assert audio.numel() == n_codes * 2 * 240
        assert widths[0] == 2 * block_frames and all(width % block_frames == 0 for width in widths)
        assert len(widths) == 3  # the chunks of 1 and 5 blocks, then the rest at the end

    def test_a_first_chunk_without_look_ahead_sounds_with_the_12th_code(self, t2w, voice):
        codes = torch.randint(0, 100, (12,), generator=torch.Generator().manual_seed(4))
        options = replace(FAST_STREAM, first_future_blocks=0)
        synth = StreamingSynthesizer(t2w, voice, seed=SEED, options=options)
        assert options.first_sound_codes(t2w.block_codes) == 12 < FAST_STREAM.first_sound_codes(12) == 24
        assert synth.push(codes[:11]).numel() == 0
        assert synth.push(codes[11:]).numel() == 12 * 2 * 240  # one block: 240 ms

    def test_a_first_chunk_without_look_ahead_errs_at_its_end_only(self, t2w, voice):
        """Its window stops at its end, so only the frames near that end (the DiT's look-ahead layer,
        the vocoder's context) differ from Fast's; later chunks see the same codes as Fast's."""
        codes = torch.randint(0, 100, (200,), generator=torch.Generator().manual_seed(5))
        fast = torch.cat(_stream(t2w, voice, codes, FAST_STREAM, piece=1))
        ours = torch.cat(_stream(t2w, voice, codes, replace(FAST_STREAM, first_future_blocks=0), piece=1))
        samples = 2 * 240  # per code
        first_chunk = 12 * samples
        error = ours - fast
        whole = 10 * torch.log10(fast.pow(2).mean() / error.pow(2).mean()).item()
        head = 10 * torch.log10(fast[:first_chunk].pow(2).mean() / error[:first_chunk].pow(2).mean()).item()
        later = error[2 * first_chunk :].abs().max().item()
        print(
            f"\nfirst chunk without look-ahead vs Fast: signal-to-error {whole:.1f} dB over 4 s, "
            f"{head:.1f} dB over the first chunk; from the third block on, largest difference {later:.2e}"
        )
        assert ours.shape == fast.shape and whole > 10 and later < 1e-5


class TestTimeModulation:
    """What the DiT computes from the time alone (its blocks' AdaLN modulations, 139 M of the released
    334 M weights) is the same in every window: on the CPU it is computed once per time of the grid."""

    def test_each_time_of_the_grid_is_modulated_once_however_many_windows(self, tiny_bundle, voice):
        t2w = Token2Wav.load(tiny_bundle)
        calls = []
        t2w.dit.transformer_blocks[0].attn_norm.register_forward_hook(lambda *_: calls.append(1))
        codes = torch.randint(0, 100, (100,), generator=torch.Generator().manual_seed(3))
        _streamed_mel(t2w, voice, codes, FAST_STREAM)  # 3 windows of 5 Euler evaluations
        assert len(calls) == FAST.evaluations

    def test_kept_modulations_give_the_very_mel_computed_afresh(self, tiny_bundle, voice, monkeypatch):
        t2w = Token2Wav.load(tiny_bundle)
        codes = torch.randint(0, 100, (100,), generator=torch.Generator().manual_seed(3))
        kept = _streamed_mel(t2w, voice, codes, FAST_STREAM)
        monkeypatch.setattr(t2w.dit, "time_modulation", t2w.dit._time_modulation)
        assert torch.equal(kept, _streamed_mel(t2w, voice, codes, FAST_STREAM))

    def test_a_move_to_another_dtype_forgets_them(self, tiny_bundle, voice):
        t2w = Token2Wav.load(tiny_bundle)
        t = torch.tensor(0.5)
        assert t2w.dit.time_modulation(t).scale.dtype == torch.float32
        t2w.dit.to(torch.bfloat16)
        assert t2w.dit.time_modulation(t).scale.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("name", "sampler"),
    # The tiny random DiT's flow is rougher than a trained one's, so the bound is a ceiling: FAST's own
    # (0.3 of the mean |mel|; FAST gives 21%). EULER_3 gives 17% here (fewer, longer steps on the same
    # swayed grid happen to land nearer on this model) and UNGUIDED 25% (FAST without guidance's push
    # away from the null row, 0.5 times their difference at every step).
    [("EULER_3", EULER_3), ("UNGUIDED", UNGUIDED)],
)
def test_named_samplers_in_no_plan_cost(t2w, voice, codes, name, sampler):
    """The named samplers measured against the reference and FAST (docs/performance.md has the real
    size); mel L1 printed, bounded relative to the mean |mel|."""
    reference = t2w.mel(codes, voice, seed=SEED)
    fast, ours = (
        t2w.mel(codes, voice, seed=SEED, options=FAST),
        t2w.mel(codes, voice, seed=SEED, options=sampler),
    )
    level = reference.abs().mean().item()
    to_reference, to_fast = ((ours - other).abs().mean().item() for other in (reference, fast))
    print(
        f"\n{name} ({sampler.evaluations} evaluations): mel L1 vs REFERENCE {to_reference:.4f}, "
        f"vs FAST {to_fast:.4f} (mean |mel| {level:.3f})"
    )
    assert to_fast > 0 and to_reference < 0.3 * level


def test_warming_builds_the_widths_of_a_replys_first_chunks(t2w, voice, monkeypatch):
    """The window widths the DiT and the vocoder meet in a reply's first two chunks (Fast's stream,
    codes pushed one by one) are among those `warm_windows` ran: a CPU builds their kernels once."""
    widths: dict[str, list[int]] = {"dit": [], "vocoder": []}
    mel_window, vocoder = t2w.mel_window, t2w.vocoder.forward

    def dit_width(codes, *args, **kwargs):
        widths["dit"].append(len(codes))
        return mel_window(codes, *args, **kwargs)

    def vocoder_width(mel):
        widths["vocoder"].append(mel.shape[-1])
        return vocoder(mel)

    monkeypatch.setattr(t2w, "mel_window", dit_width)
    monkeypatch.setattr(t2w.vocoder, "forward", vocoder_width)
    assert warm_windows(t2w, voice, FAST_STREAM) > 0
    warmed = {part: set(seen) for part, seen in widths.items()}
    widths = {"dit": [], "vocoder": []}
    codes = torch.randint(0, 100, (10 * t2w.block_codes,), generator=torch.Generator().manual_seed(5))
    _stream(t2w, voice, codes, FAST_STREAM, piece=1)
    assert set(widths["dit"][:2]) <= warmed["dit"] and set(widths["vocoder"][:2]) <= warmed["vocoder"]
    assert len(set(widths["vocoder"][:2])) == 2  # the first chunk's and a later one's

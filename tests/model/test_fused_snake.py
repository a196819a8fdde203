"""The vocoder's fused activation (model/token2wav/fused_snake.c) against torch's, and the vocoder with it.

The kernel is built by this machine's C compiler into the session's cache folder (tests/conftest.py),
as on a user's first start.
"""

from __future__ import annotations

import copy

import pytest
import torch

from model.token2wav import fused_snake
from model.token2wav.bigvgan import AntiAliasedSnake, receptive_field_frames
from model.token2wav.streaming import ChunkedVocoder
from model.token2wav.synthesizer import Token2Wav


@pytest.fixture(scope="module")
def kernel() -> fused_snake.FusedSnake:
    return fused_snake.load()


@pytest.fixture(scope="module")
def filt(tiny_bundle) -> torch.Tensor:
    return Token2Wav.load(tiny_bundle).vocoder.aa_filter


def _activation(channels: int, seed: int) -> AntiAliasedSnake:
    """Trained-like parameters: alpha and beta spread around 1 (the checkpoint stores their logs)."""
    snake = AntiAliasedSnake(channels)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        snake.alpha.normal_(0.0, 0.5, generator=generator)
        snake.beta.normal_(0.0, 0.5, generator=generator)
    return snake


def _signal(batch: int, channels: int, samples: int, seed: int) -> torch.Tensor:
    """BigVGAN's channels-last layout, of the size its activations see (|x| up to about 10)."""
    x = 3 * torch.randn(batch, channels, 1, samples, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last)


# Shapes: one sample, fewer samples than the filter's taps, a channel count that fills no vector, the
# released vocoder's first and last channel counts, lengths that split unevenly between threads.
SHAPES = [(1, 1, 1), (1, 3, 5), (2, 24, 11), (1, 40, 300), (1, 768, 97), (2, 24, 1001)]


@pytest.mark.parametrize(("batch", "channels", "samples"), SHAPES)
def test_float32_agrees_with_torch_to_its_rounding(kernel, filt, batch, channels, samples):
    snake, x = _activation(channels, samples), _signal(batch, channels, samples, channels)
    with torch.inference_mode():
        exact = AntiAliasedSnake._snake(x.double(), filt.double(), snake.alpha.double(), snake.beta.double())
        torch_error = (snake(x, filt).double() - exact).abs().max().item()
        ours = kernel(x, filt, snake.alpha, snake.beta)
    error = (ours.double() - exact).abs().max().item()
    print(
        f"\n{batch}x{channels}x{samples}: max |error| vs float64: fused {error:.2g}, torch {torch_error:.2g} "
        f"(max |x| {x.abs().max():.3g})"
    )
    assert ours.shape == x.shape and ours.dtype == torch.float32
    assert error <= 2 * torch_error + 1e-6


@pytest.mark.parametrize(("batch", "channels", "samples"), SHAPES)
def test_bfloat16_rounds_the_same_float32_values(kernel, filt, batch, channels, samples):
    """torch computes a bfloat16 signal's activation in float32 and rounds the result once; so does the
    kernel, from float32 values that differ by float32's rounding (about 1e-5 at this signal's size, see
    above): a result may round to the neighbour, and a result near zero, where bfloat16's steps are
    finer than that, a few steps further."""
    snake, x = _activation(channels, samples), _signal(batch, channels, samples, channels).bfloat16()
    with torch.inference_mode():
        theirs = snake(x, filt)
        ours = kernel(x, filt, snake.alpha, snake.beta)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    ours, theirs = ours.float(), theirs.float()
    _, exponent = torch.frexp(torch.maximum(ours.abs(), theirs.abs()))
    step = torch.ldexp(torch.ones_like(ours), exponent - 8)  # bfloat16's spacing there (8 significant bits)
    print(f"\n{batch}x{channels}x{samples}: {(ours != theirs).float().mean():.2%} rounded otherwise")
    assert ((ours - theirs).abs() <= step + 1e-5).all()


def test_threads_split_the_samples_without_changing_one(kernel, filt):
    snake, x = _activation(48, 0), _signal(1, 48, 4000, 1)
    results = []
    for threads in (1, 2, 3):
        with torch.inference_mode():
            torch.set_num_threads(threads)
            results.append(kernel(x, filt, snake.alpha, snake.beta))
    torch.set_num_threads(1)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_a_signal_of_another_kind_is_left_to_torch(kernel):
    x = torch.zeros(1, 4, 1, 8)
    assert kernel.handles(x) and kernel.handles(x.bfloat16())
    assert not kernel.handles(x.requires_grad_()) and not kernel.handles(x.half())
    assert not kernel.handles(torch.zeros(1, 4, 2, 8)) and not kernel.handles(torch.zeros(4, 8))


@pytest.fixture(scope="module")
def vocoders(tiny_bundle, kernel) -> tuple[Token2Wav, Token2Wav]:
    """The tiny Token2Wav with torch's activations and with the fused ones."""
    plain = Token2Wav.load(tiny_bundle)
    fused = Token2Wav.load(tiny_bundle, fused_vocoder=True)
    assert fused.vocoder.fused and not plain.vocoder.fused
    return plain, fused


class TestVocoder:
    def test_its_waveform_agrees_with_torchs(self, vocoders):
        plain, fused = vocoders
        mel = torch.randn(80, 150, generator=torch.Generator().manual_seed(2)) - 4
        theirs, ours = plain.vocode(mel), fused.vocode(mel)
        snr = 10 * torch.log10(theirs.pow(2).mean() / (ours - theirs).pow(2).mean()).item()
        print(f"\ntiny vocoder, float32: fused activations vs torch's: signal-to-error {snr:.1f} dB")
        assert theirs.abs().max() > 0.05 and snr > 100

    def test_in_bfloat16_it_errs_as_much_as_torchs(self, vocoders):
        """Against the float32 vocoder, the bfloat16 one's error is its roundings, fused or not."""
        plain, fused = vocoders
        mel = torch.randn(80, 150, generator=torch.Generator().manual_seed(3)) - 4
        exact = plain.vocode(mel)
        snrs = []
        for model in (plain, fused):
            half = copy.deepcopy(model.vocoder).bfloat16()
            with torch.inference_mode():
                wave = half(mel.bfloat16().unsqueeze(0))[0].float()
            snrs.append(10 * torch.log10(exact.pow(2).mean() / (wave - exact).pow(2).mean()).item())
        print(f"\ntiny vocoder, bfloat16 vs float32: torch's {snrs[0]:.1f} dB, fused {snrs[1]:.1f} dB")
        assert snrs[1] > snrs[0] - 1.0

    def test_chunks_join_to_one_run_over_the_whole_mel(self, vocoders):
        _, fused = vocoders
        mel = torch.randn(80, 197, generator=torch.Generator().manual_seed(9)) - 4
        vocoder = ChunkedVocoder(fused.vocoder, receptive_field_frames(fused.vocoder.cfg), width_step=24)
        chunks = [vocoder.push(mel[:, i : i + 50]) for i in range(0, 150, 50)]
        joined = torch.cat([*chunks, vocoder.finish(mel[:, 150:])])
        whole = fused.vocode(mel)
        error = (joined - whole).abs().max().item()
        level = whole.abs().max().item()
        print(f"\nfused vocoder, chunked vs whole: max |error| {error:.2g} (max |whole| {level:.2g})")
        assert joined.shape == whole.shape and error < 1e-6

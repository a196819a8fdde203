"""Streaming Token2Wav timed as a turn drives it: codes pushed one at a time (the Token2Wav and GPU benches).

Times are wall-clock, `time.perf_counter`; each push returns audio on the CPU, so the device has
finished what the time covers.
"""

from __future__ import annotations

import time

import torch

from model.token2wav.streaming import StreamingSynthesizer, StreamOptions
from model.token2wav.synthesizer import Token2Wav
from model.voices import Voice


def stream_one_by_one(
    t2w: Token2Wav, voice: Voice, codes: torch.Tensor, options: StreamOptions, seed: int
) -> tuple[float, float, torch.Tensor]:
    """(first-chunk latency, whole run in seconds, the audio (samples,)). The latency runs from the
    push of the code that completes the first chunk's window to the return of its audio (nan if no
    chunk came before the end)."""
    synth = StreamingSynthesizer(t2w, voice, seed=seed, options=options)
    first = None
    chunks = []
    started = time.perf_counter()
    for code in codes.tolist():
        start = time.perf_counter()
        chunks.append(synth.push([code]))
        if first is None and chunks[-1].numel():
            first = time.perf_counter() - start
    chunks.append(synth.finish())
    seconds = time.perf_counter() - started
    return (first if first is not None else float("nan")), seconds, torch.cat(chunks)

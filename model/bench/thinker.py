"""`omnidesk bench thinker`: what keeping every position's hidden state costs the Thinker.

Our Thinker (embeddings on, pooling off: logits and final hidden states for every
position) against llama-cpp-python's own `Llama` on the same GGUF (logits for the
last position only), in one process: prefill of a random prompt, then greedy
decoding. The GGUF is a real-shape Qwen2.5-Omni Thinker with random weights,
built and cached on first use. Times are `time.perf_counter` wall-clock seconds.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from model.bench.parts.measure import peak_rss
from model.bench.parts.random_thinker import SHAPES, random_thinker, special_tokens
from model.hardware import llama_backend
from model.sampling import SamplingOptions
from model.thinker import Thinker
from model.thinker_types import Finished, ThinkerOptions, TokenRun


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnidesk bench thinker", description=__doc__)
    parser.add_argument("--size", choices=sorted(SHAPES), default="3b")
    parser.add_argument("--quant", default="Q4_K_M")
    parser.add_argument("--prompt", type=int, default=256, help="prompt tokens")
    parser.add_argument("--tokens", type=int, default=32, help="tokens to decode")
    parser.add_argument("--gpu-layers", type=int, default=-1)
    parser.add_argument("--threads", type=int, help="CPU threads for both (default: half the logical CPUs)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "omnidesk-bench")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    path = random_thinker(SHAPES[args.size], args.quant, args.cache)
    print(
        f"GGUF: {path} ({path.stat().st_size / 1e9:.2f} GB, ready in {time.perf_counter() - started:.0f} s)"
    )
    prompt = [int(i) for i in np.random.default_rng(1).integers(300, 150000, args.prompt)]
    n_ctx = args.prompt + args.tokens + 16

    threads = args.threads or max(1, (os.cpu_count() or 2) // 2)
    options = ThinkerOptions(n_ctx=n_ctx, n_gpu_layers=args.gpu_layers, n_threads=threads)
    ours = _ours(path, prompt, args.tokens, options)
    plain = _plain(path, prompt, args.tokens, n_ctx, args.gpu_layers, threads)
    print(
        f"backend: {llama_backend()}, {threads} threads, {args.size} {args.quant}, "
        f"prompt {args.prompt}, decode {args.tokens}"
    )
    print(f"{'':28}{'ours':>12}{'Llama':>12}{'ratio':>9}")
    for label, a, b in [
        ("prefill tokens/s", ours[0], plain[0]),
        ("decode tokens/s", ours[1], plain[1]),
    ]:
        print(f"{label:28}{a:12.1f}{b:12.1f}{a / b:9.2f}")
    print(f"peak RSS: {peak_rss() / 1e9:.2f} GB (whole process)")
    return 0


def _ours(path: Path, prompt: list[int], n: int, options: ThinkerOptions) -> tuple[float, float]:
    with Thinker(path, special_tokens(), options) as thinker:
        started = time.perf_counter()
        thinker.prefill([TokenRun(tuple(prompt))])
        prefill = len(prompt) / (time.perf_counter() - started)
        greedy = SamplingOptions(greedy=True, repetition_penalty=1.0)
        *_, finished = thinker.generate([TokenRun(tuple(prompt))], greedy, max_tokens=n + 1)
    assert isinstance(finished, Finished) and finished.tokens_per_s, "no tokens were decoded"
    return prefill, finished.tokens_per_s


def _plain(
    path: Path, prompt: list[int], n: int, n_ctx: int, gpu_layers: int, threads: int
) -> tuple[float, float]:
    from llama_cpp import Llama

    llm = Llama(
        str(path),
        n_ctx=n_ctx,
        n_batch=512,
        n_gpu_layers=gpu_layers,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    started = time.perf_counter()
    llm.eval(prompt)
    prefill = len(prompt) / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([token])
    decode = n / (time.perf_counter() - started)
    llm.close()
    return prefill, decode

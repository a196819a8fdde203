"""The plan's vision part: which encoder runs the vision tower, and how many embeddings an image gets.

Encoder, decided by measurement (`omnidesk bench vision`, docs/performance.md has the table):
- a GPU that torch can use runs the torch tower there, in the GPU's half precision (torch's fused
  attention kernels; the fastest there, not measured against mtmd's CUDA backend here);
- a GPU that only llama.cpp can use (a CPU build of torch) runs mtmd on it;
- on the CPU, the fastest variant measured that this CPU has the kernels for, among the torch
  tower in float32, bfloat16 and int8 weights and mtmd, each with its error against the reference
  tower written down in `CPU_SPEEDS`. Exact quality keeps float32 (the reference's arithmetic) and,
  under Automatic detail, Sharp's budget (the reference's default, what parity tests hold to).

Budget (`Detail`): Sharp gives an image up to 1280 embeddings (Qwen's advice for limited memory,
our default so far); Quick gives 256 (a 448x448 image); Automatic gives as many as the machine
encodes and puts in the prompt in about the time a question takes to say (`LOOK_SECONDS`), within
those two. Putting one in the prompt costs more than encoding it on a CPU: the Thinker's prefill of
it and the Talker's (`prompt_seconds`), so both count.
A picture that a budget below Sharp shrinks under `SMALL_TEXT_SCALE` of its width is said once
(`perception.PictureShrunk`), naming the setting.

A live call's frames (`CallFrames`): on a GPU 2 a second (the rate the model was trained on) at
`CALL_GPU_EMBEDDINGS` per frame pair; on a CPU one a second, each pair as large as the encoder and the
prefill can take in a 2 s chunk beside the chunk's sound (encoded, then 50 positions of prefill), in
`CALL_CPU_SHARE` of real time. Slower rates than one a second would put a frame pair more than one
chunk apart, where the reference's chunking becomes uneven (`tmrope._chunks`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch

from model.detail import Detail
from model.tmrope import DEFAULT_POSITION_ID_PER_SECONDS, DEFAULT_SECONDS_PER_CHUNK
from model.vision import DEFAULT_MAX_PIXELS, FACTOR, MIN_PIXELS, TowerPrecision, VisionOptions, smart_resize

PIXELS_PER_EMBEDDING = FACTOR * FACTOR  # 784: one merged 2x2 block of 14-pixel patches
SHARP_EMBEDDINGS = DEFAULT_MAX_PIXELS // PIXELS_PER_EMBEDDING  # 1280
QUICK_EMBEDDINGS = 256  # a 448x448 image
LOOK_SECONDS = 3.0  # about the time a spoken question takes: its picture is encoded meanwhile
SMALL_TEXT_SCALE = 2 / 3  # below it, 12-pixel text is drawn under 8 pixels high: may not be readable
CALL_GPU_FPS = 2.0  # qwen-omni-utils' FPS: the rate the model was trained on
CALL_GPU_EMBEDDINGS = 128  # per frame pair: qwen-omni-utils' smallest video frame (VIDEO_MIN_PIXELS)
CALL_CPU_FPS = 1.0  # one frame pair per 2 s chunk
CALL_CPU_SHARE = 0.8  # of real time a call's encoding and prefill may take on a CPU: the rest is slack
# One 2 s block through the audio encoder at the real size, 2 threads of an Intel Xeon (family 6 model
# 207): `omnidesk bench audio`, float32 and bfloat16 (docs/performance.md).
AUDIO_BLOCK_S = {"float32": 0.480, "bfloat16": 0.157}


@dataclass(frozen=True)
class EncoderSpeed:
    """One variant's measured time for an image of n embeddings, seconds = linear_s * n +
    quadratic_s * n^2 (the full-attention blocks are quadratic), at `threads` CPU threads, and
    its largest difference from the reference tower relative to the largest value."""

    linear_s: float
    quadratic_s: float
    error: float
    threads: int = 2

    def seconds(self, embeddings: int, threads: int, prompt_s: float = 0.0) -> float:
        """Estimated seconds for `embeddings` on `threads` threads (scaled as if threads were ideal);
        `prompt_s`: seconds per embedding besides encoding it (its prefill), at `self.threads`."""
        n = embeddings
        return ((self.linear_s + prompt_s) * n + self.quadratic_s * n * n) * self.threads / max(1, threads)

    def embeddings_within(self, seconds: float, threads: int, prompt_s: float = 0.0) -> int:
        """The most embeddings encoded (and prefilled, `prompt_s` each) in `seconds` on `threads` threads."""
        budget = seconds * max(1, threads) / self.threads
        a, b = self.linear_s + prompt_s, self.quadratic_s
        if b <= 0:
            return int(budget / a)
        return int((-a + math.sqrt(a * a + 4 * b * budget)) / (2 * b))


# `omnidesk bench vision --no-reference` (real size, 3B width, random weights; torch-float32, within
# 1e-6 of transformers' tower in tests/model/test_vision_tower.py, stands in for it), 2 threads of an
# Intel Xeon family 6 model 207 (AVX-512, AVX-512 BF16, AMX), other work sharing the machine: the
# fit through 448x448 (256 embeddings) and 1008x1008 (1296), `bench.vision.fit_seconds`. The torch
# float32 row from a run at load 3.6 to 4.0 (bfloat16 then took 14.0 s and 28.0 s); the bfloat16 row
# from a quiet run (load 1: `--variants torch-bfloat16`); int8 and mtmd from the full run at load 9 to
# 17 (where bfloat16 was fastest too, 60.2 s and 117.9 s). docs/performance.md has the tables.
CPU_SPEEDS: dict[str, EncoderSpeed] = {
    "torch-float32": EncoderSpeed(0.05516, 0.0, 1e-6),  # 21.4 s and 70.1 s; error: the tiny model's
    "torch-bfloat16": EncoderSpeed(0.00594, 1.2005e-6, 1.8e-2),  # 1.60 s and 9.71 s, quiet (load 1)
    "torch-int8": EncoderSpeed(0.2794, 1.879e-4, 3.7e-2),  # 83.9 s and 677.8 s: its kernel suits few rows
    "mtmd-f16": EncoderSpeed(0.5800, 0.0, 1.3e-3),  # 200.6 s and 741.4 s: its threads spin on busy cores
}
CPU_TOWERS: dict[str, TowerPrecision | None] = {
    "torch-float32": TowerPrecision(),
    "torch-bfloat16": TowerPrecision(dtype=torch.bfloat16),
    "torch-int8": TowerPrecision(weights="int8"),
    "mtmd-f16": None,
}
NEEDS_BF16 = ("torch-bfloat16", "torch-int8")  # their kernels take bfloat16 activations

# What one embedding costs in the prompt on the CPU, at 2 threads of the same Xeon, quiet: the
# Thinker's prefill per gigabyte of its GGUF (`omnidesk bench look --size 3b`: 10.31 s for the
# 570-position prompt, a 1.93 GB Q4_K_M file, llama-cpp-python's AVX2 wheel) and the Talker's
# prefill per row, as the Fast plan runs it: torch's bfloat16 prompt copy or its int4 kernel alone
# (`omnidesk bench talker --prompt 570`, the 7B layout: 1.46 s and 9.70 s, talker/quantize.py), or
# llama.cpp at iq4_nl (the 3B layout on 2 Zen 4 cores: 2.11 s, where the copy took 1.54 s).
THINKER_PROMPT_S_PER_GB = 10.31 / 570 / 1.93
TalkerPrompt = Literal["bfloat16 copy", "quantized", "llama.cpp"]
TALKER_PROMPT_S: dict[TalkerPrompt, float] = {
    "bfloat16 copy": 1.46 / 570,
    "quantized": 9.70 / 570,
    "llama.cpp": 2.11 / 570,
}


def prompt_seconds(thinker_bytes: int, thinker_on_cpu: bool, talker_prompt: TalkerPrompt | None) -> float:
    """Seconds one embedding costs the prompt on the CPU at 2 threads, besides encoding it: the Thinker's
    and the Talker's prefill, where they run on the CPU (`talker_prompt`: how the CPU Talker decodes a
    prompt; None: it runs on a GPU, whose share is left out, as the Thinker's: it is far less)."""
    thinker = THINKER_PROMPT_S_PER_GB * thinker_bytes / 1e9 if thinker_on_cpu else 0.0
    return thinker + (TALKER_PROMPT_S[talker_prompt] if talker_prompt is not None else 0.0)


@dataclass(frozen=True)
class CallFrames:
    """A live call's frames: how many a second, and the most embeddings a frame pair gets."""

    fps: float = CALL_GPU_FPS
    embeddings: int = CALL_GPU_EMBEDDINGS
    from_speech: bool = False  # turns begin when the user speaks, not at the end of the last reply (call.py)

    def frame_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) a camera's or screen's frames of this size are encoded at (multiples of 28)."""
        return smart_resize(
            height, width, MIN_PIXELS, max(MIN_PIXELS, self.embeddings * PIXELS_PER_EMBEDDING)
        )

    @property
    def label(self) -> str:
        """e.g. "2 frames a second, up to 128 embeddings each" (and, on a CPU, "from when you speak")."""
        frames = "1 frame" if self.fps == 1 else f"{self.fps:g} frames"
        speech = ", from when you speak" if self.from_speech else ""
        return f"{frames} a second, up to {self.embeddings} embeddings each{speech}"


def plan_call_frames(
    speed: EncoderSpeed | None, threads: int, prompt_s: float, audio_block_s: float
) -> CallFrames:
    """A call's frames (see the module): a GPU's (`speed` None), or on a CPU one pair per 2 s chunk as
    large as fits beside the chunk's sound (`audio_block_s` to encode it, 50 positions at `prompt_s`)."""
    if speed is None:
        return CallFrames()
    ids = int(DEFAULT_SECONDS_PER_CHUNK * DEFAULT_POSITION_ID_PER_SECONDS)  # the sound's positions per chunk
    sound = (audio_block_s + ids * prompt_s) * speed.threads / max(1, threads)
    left = DEFAULT_SECONDS_PER_CHUNK * CALL_CPU_SHARE - sound
    fits = speed.embeddings_within(left, threads, prompt_s) if left > 0 else 0
    return CallFrames(CALL_CPU_FPS, max(MIN_PIXELS // PIXELS_PER_EMBEDDING, fits), from_speech=True)


@dataclass(frozen=True)
class VisionPlan:
    """The vision encoder and the image budget."""

    tower: TowerPrecision | None = None  # None: llama.cpp's mtmd (on its GPU backend where it has one)
    embeddings: int = SHARP_EMBEDDINGS  # the most an image gets
    detail: Detail = "sharp"  # what was chosen
    variant: str = "mtmd"  # the name in CPU_SPEEDS, or where it runs
    error: float | None = None  # measured, relative to the reference's largest value; None: not here
    call: CallFrames = CallFrames()  # a live call's frames

    def options(self, options: VisionOptions, threads: int | None) -> VisionOptions:
        """`options` with this plan's encoder, budget and `threads` (None: as the options say)."""
        high = self.embeddings * PIXELS_PER_EMBEDDING
        return replace(
            options,
            tower=self.tower,
            max_pixels=high,
            min_pixels=min(options.min_pixels, high),
            n_threads=threads or options.n_threads,
        )

    @property
    def label(self) -> str:
        """e.g. "torch bfloat16 on the CPU, up to 812 embeddings per image (error 4.1e-03)"."""
        if self.tower is None:
            where = "llama.cpp's mtmd"
        else:
            device = {"cpu": "the CPU", "cuda": "CUDA", "mps": "MPS"}.get(
                self.tower.device, self.tower.device
            )
            where = f"{self.tower.label} on {device}"
        error = f" (error {self.error:.1e})" if self.error is not None else ""
        return f"{where}, up to {self.embeddings} embeddings per image{error}"


def plan_vision(
    detail: Detail,
    exact: bool,
    torch_gpu: tuple[str, torch.dtype] | None,
    llama_gpu: bool,
    cpu_bf16: bool,
    threads: int,
    prompt_s: float = 0.0,
    audio_block_s: float = 0.0,
) -> VisionPlan:
    """The vision part of the plan (see the module's docstring). `torch_gpu`: torch's GPU device and
    half precision, if any; `llama_gpu`: llama.cpp has a GPU backend; `threads`: the CPU threads
    the encoder gets; `prompt_s`: an embedding's prefill (`prompt_seconds`); `audio_block_s`: a 2 s
    block through the audio encoder (a call's sound, beside its frames)."""
    if exact and detail == "auto":  # the reference's path: its default budget too
        detail = "sharp"
    if torch_gpu is not None:
        device, dtype = torch_gpu
        return VisionPlan(TowerPrecision(device, dtype), _budget(detail, None, threads), detail, device)
    if llama_gpu:
        return VisionPlan(None, _budget(detail, None, threads), detail, "mtmd")
    usable = [v for v in CPU_SPEEDS if cpu_bf16 or v not in NEEDS_BF16]
    variant = (
        "torch-float32" if exact else min(usable, key=lambda v: CPU_SPEEDS[v].seconds(SHARP_EMBEDDINGS, 1))
    )
    speed = CPU_SPEEDS[variant]
    budget = _budget(detail, speed, threads, prompt_s)
    call = plan_call_frames(speed, threads, prompt_s, audio_block_s)
    return VisionPlan(CPU_TOWERS[variant], budget, detail, variant, speed.error, call)


def _budget(detail: Detail, speed: EncoderSpeed | None, threads: int, prompt_s: float = 0.0) -> int:
    """Embeddings per image: Sharp, Quick, or (Automatic) what `speed` encodes and the prompt takes
    in at `prompt_s` each in LOOK_SECONDS, within them (a GPU, `speed` None, takes Sharp)."""
    if detail == "quick":
        return QUICK_EMBEDDINGS
    if detail == "sharp" or speed is None:
        return SHARP_EMBEDDINGS
    fits = speed.embeddings_within(LOOK_SECONDS, threads, prompt_s)
    return max(QUICK_EMBEDDINGS, min(SHARP_EMBEDDINGS, fits))

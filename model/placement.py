"""Where each stage runs and how fast speech is made: one plan, made once from the hardware.

A `Plan` holds, for the native stages (the audio encoder, the Talker and Token2Wav), the device
and precision each runs in; the Thinker's GPU layers; the speech profile; and the CPU threads of
each stage. `make_plan` decides them from `hardware.probe()`, what the bundle needs in memory and
what the user chose (`PlanChoice`: settings, or the command line's flags):

- device: CUDA when torch sees an NVIDIA GPU, MPS on Apple silicon, else the CPU;
- precision: bfloat16 where the GPU computes it natively (CUDA compute capability 8.0 and newer),
  float16 on MPS and older CUDA cards, float32 on the CPU;
- memory: on a GPU the plan adds up what each part needs (the Thinker's layers, its KV cache and
  the vision projector first, then Token2Wav, the Talker and the audio encoder, in the order of
  what a GPU speeds up most per byte); what does not fit stays on the CPU, and the plan says so
  once, in a user's words (`notes`);
- profile: *Exact* is the reference's path (float weights, the RK4 sampler, exact chunk joins):
  every parity test holds to it. *Fast* trades a measured fidelity for latency where a stage runs
  on the CPU: quantized Talker weights, Euler in a few steps, a smaller first chunk, Token2Wav and the
  audio encoder in bfloat16 where the CPU has the kernels (docs/performance.md has the errors and the
  speed). Automatic means Exact when speech runs on a GPU and Fast when any of it runs on the CPU;
  Token2Wav still on a GPU then keeps the reference's sampler (only a Fast chosen by the user takes
  it to Euler there).

Every entry point (the window, `ask`, `chat`, the selftest, the benches) makes its plan here and
hands it to `Conversation`; `omnidesk doctor` prints it with `describe`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open

from model.detail import Detail
from model.errors import ModelFileError
from model.files.bundle import Bundle
from model.hardware import GIB, Hardware
from model.sizing import BITS_PER_WEIGHT, ModelSize
from model.speech_bound import SpeechBound
from model.talker import SpeechOptions
from model.talker.gguf_file import runs_in_llama
from model.talker.network import TalkerConfig
from model.thinker_types import DEFAULT_CONTEXT, ThinkerOptions
from model.token2wav.sampler import FAST, REFERENCE
from model.token2wav.streaming import StreamOptions
from model.vision import VisionOptions
from model.vision_plan import AUDIO_BLOCK_S, TalkerPrompt, VisionPlan, plan_vision, prompt_seconds

F16_BYTES = 2
F32_BYTES = 4


def talker_cache_positions(n_ctx: int) -> int:
    """Positions of the Talker's KV cache: a prompt as long as the Thinker's whole context, its two
    start rows, and the most codes one reply may speak (the reference's talker_max_new_tokens), so
    that whatever prompt the Thinker holds the Talker holds too."""
    return n_ctx + 2 + SpeechOptions().max_codes


Stage = Literal["audio_encoder", "talker", "token2wav"]
STAGES: tuple[Stage, ...] = ("token2wav", "talker", "audio_encoder")  # GPU priority: speed-up per byte
STAGE_NAMES = {"audio_encoder": "audio encoder", "talker": "Talker", "token2wav": "Token2Wav"}
IN_A_SENTENCE = {"audio_encoder": "the audio encoder", "talker": "the Talker", "token2wav": "Token2Wav"}

GPU_RESERVE_BYTES = GIB  # the CUDA/Metal context, allocator slack and llama.cpp's compute buffers
UNIFIED_MEMORY_SHARE = 0.7  # of the RAM a Mac's GPU may take (macOS keeps the rest)
WORKSPACE_SHARE = 0.25  # activations and buffers of a native stage, relative to its weights
# Speech's share of the CPU while the Thinker decodes a reply: per text token, a Talker step (int4,
# 26 ms on one thread) and a code's share of Token2Wav (35 ms) against the Thinker's 290 ms (3B
# Q4_K_M, one thread; 2 cores of an Intel Xeon, family 6 model 207).
SPEECH_SHARE = 0.2

# The Fast profile's Token2Wav (docs/performance.md has what each costs and saves): Euler in 5
# evaluations (sampler.FAST); a first chunk of one block, so the first sound needs 24 codes instead
# of 36, and later chunks of 5 blocks (MNN's 60 codes), so that a window's two blocks of look-back
# and one of look-ahead cost 1.6x the chunk instead of 2x; each chunk vocoded to its end against
# the DiT's provisional look-ahead mel, with 24 frames of context (the receptive field's bound is 34;
# no influence was measured past 26, and at 24 the chunked vocoder equals a whole run to 100 dB);
# from the third chunk on, chunks as long as the sound before them, up to 12 blocks (a window's
# look-back, look-ahead and vocoder context then cost less per block: Token2Wav 15% faster on a CPU).
FAST_STREAM = StreamOptions(
    first_chunk_blocks=1,
    chunk_blocks=5,
    max_chunk_blocks=12,
    vocoder_context_frames=24,
    vocoder_lookahead=True,
    sampler=FAST,
)
# "Start speaking sooner" (a setting, off unless chosen): Fast's first chunk without look-ahead, so
# its sound needs 12 codes instead of 24, which early in a reply wait for as many of the Thinker's
# tokens; its first 240 ms are made as an utterance's end is (docs/performance.md has the cost).
QUICK_START_STREAM = replace(FAST_STREAM, first_future_blocks=0)
EXACT_STREAM = StreamOptions(sampler=REFERENCE)


@dataclass(frozen=True)
class Placement:
    """Where one native stage runs."""

    device: str  # a torch device: "cpu", "cuda" or "mps"
    dtype: torch.dtype

    @property
    def label(self) -> str:
        """e.g. "CUDA bfloat16", "CPU float32"."""
        device = {"cuda": "CUDA", "mps": "MPS", "cpu": "CPU"}.get(self.device, self.device)
        return f"{device} {str(self.dtype).removeprefix('torch.')}"


CPU_FLOAT32 = Placement("cpu", torch.float32)


@dataclass(frozen=True)
class ThreadBudget:
    """CPU threads of each stage, so that the stages share the cores on purpose.

    thinker: llama.cpp's threads while decoding the reply (the Talker and Token2Wav run beside it);
    thinker_prompt: its threads while it decodes a prompt (nothing else runs yet);
    torch: the intra-op threads of the native stages (torch has one pool per process);
    downstream_first: where the stages' threads outnumber the cores, the speech stages' threads
    come before the Thinker's (`stages.stage_niceness`) (Linux only: threads have their own nice
    values there);
    speech_alone: the cores speech may take once the Thinker has finished the reply (the cores it
    held are free then, and speech usually has far to go), until the next turn; 0: `torch`;
    talker_first: once the reply is decoded, the Talker keeps `torch` and comes first, and Token2Wav
    takes the rest of the cores, all of them once the codes are made (`stages.SpeechThreads`): the
    Fast profile on a CPU, whose Talker costs about what Token2Wav does (measured: RTF 2.26 against
    2.31 to 2.39); where Token2Wav costs far more (Exact: 23.4 against 30.7), every speech stage
    takes `speech_alone` and the later stages come first;
    first_sound_first: from the code that completes the first sound's window until that sound is
    out, the Thinker waits between tokens and Token2Wav takes `speech_alone` (`stages.FirstSound`):
    the Fast profile where the stages' threads outnumber the cores."""

    thinker: int
    thinker_prompt: int
    torch: int
    downstream_first: bool = False
    speech_alone: int = 0
    talker_first: bool = False
    first_sound_first: bool = False


@dataclass(frozen=True)
class PlanChoice:
    """What the user chose: settings, or the command line's flags."""

    speech_device: Literal["auto", "gpu", "cpu"] = "auto"
    quality: Literal["auto", "exact", "fast"] = "auto"
    thinker_gpu_layers: int = -1  # -1: as many as fit
    thinker_threads: int | None = None  # None: the plan's
    detail: Detail = "auto"  # how many embeddings an image gets (model.vision_plan)
    quick_start: bool = False  # Fast speech's first chunk without look-ahead: its sound after 12 codes


@dataclass(frozen=True)
class MemoryNeeds:
    """Bytes and parameter counts of one bundle's parts."""

    thinker_bytes: int  # the GGUF
    thinker_layers: int
    kv_bytes: int  # the Thinker's KV cache at the chosen context (f16)
    mmproj_bytes: int
    params: dict[Stage, int]  # native stages: parameter counts
    talker_kv_elements: int  # the Talker's KV cache, in elements of its dtype
    talker_in_llama: bool = False  # the Talker's layout runs as llama.cpp's qwen2vl (talker/gguf_file.py)

    def stage_bytes(self, stage: Stage, dtype: torch.dtype) -> int:
        """Weights, KV cache (the Talker's) and working memory of a native stage in `dtype`."""
        size = torch.tensor([], dtype=dtype).element_size()
        weights = self.params[stage] * size
        cache = self.talker_kv_elements * size if stage == "talker" else 0
        return int(weights * (1 + WORKSPACE_SHARE)) + cache


@dataclass(frozen=True)
class Plan:
    audio_encoder: Placement = CPU_FLOAT32
    talker: Placement = CPU_FLOAT32
    token2wav: Placement = CPU_FLOAT32
    profile: Literal["exact", "fast"] = "exact"
    quality: Literal["auto", "exact", "fast"] = "exact"  # what was chosen (auto: by where speech runs)
    gpu: str = ""  # the GPU the stages placed on it use, e.g. "NVIDIA GeForce RTX 4070, 12 GB"
    cpu_bf16: bool = False  # the CPU has bfloat16 matrix instructions (the Fast profile uses them)
    cpu_int8: bool = False  # the CPU has int8 dot products (the Fast profile's DiT uses them)
    int8_dit: bool = False  # the DiT's block projections as int8 products (token2wav/int8_dit.py)
    fused_vocoder: bool = False  # the vocoder's activations by the native kernel (token2wav/fused_snake.py)
    # "int8", "int4": torch's weight-only quantization (talker/quantize.py); "iq4_nl": the decoder in
    # llama.cpp (talker/llama_network.py), where its layout allows (`talker_in_llama`)
    talker_weights: Literal["float", "int8", "int4", "iq4_nl"] = "float"
    talker_in_llama: bool = False  # the bundle's Talker runs in llama.cpp (MemoryNeeds.talker_in_llama)
    talker_copy_fits: bool = False  # the RAM holds a bfloat16 copy of the Talker's weights for prompts
    stream: StreamOptions = EXACT_STREAM
    compile_talker: bool = False  # the decode step at static shapes (a CUDA graph on CUDA)
    thinker_gpu_layers: int | None = None  # None: as the Thinker's options say; -1: all it can offload
    threads: ThreadBudget | None = None  # None: each library's own default
    vision: VisionPlan = VisionPlan()  # the vision encoder and the image budget
    speech_bound: SpeechBound | None = None  # where the Talker's weights are quantized (speech_bound.py)
    notes: tuple[str, ...] = field(default=())  # said once to the user

    def thinker_options(self, options: ThinkerOptions) -> ThinkerOptions:
        """`options` with this plan's GPU layers and threads."""
        if self.thinker_gpu_layers is not None:
            options = replace(options, n_gpu_layers=self.thinker_gpu_layers)
        if self.threads is not None:
            options = replace(
                options,
                n_threads=options.n_threads or self.threads.thinker,
                n_threads_batch=options.n_threads_batch or self.threads.thinker_prompt,
            )
        return options

    def vision_options(self, options: VisionOptions) -> VisionOptions:
        """`options` with this plan's vision encoder and image budget; the encoder gets every core
        (a picture is encoded before the prompt is decoded)."""
        return self.vision.options(options, self.prompt_threads)

    @property
    def prompt_threads(self) -> int | None:
        """CPU threads for work that runs while nothing else computes (a prompt, a picture, the
        Talker's prefill while the user speaks); None: each library's own default."""
        return self.threads.thinker_prompt if self.threads is not None else None

    def placement(self, stage: Stage) -> Placement:
        return {"audio_encoder": self.audio_encoder, "talker": self.talker, "token2wav": self.token2wav}[
            stage
        ]

    @property
    def on_gpu(self) -> bool:
        return any(self.placement(stage).device != "cpu" for stage in STAGES)

    def describe(self) -> list[str]:
        """The plan as lines for `omnidesk doctor`."""
        lines = []
        for stage in STAGES:
            placement = self.placement(stage)
            label = {"talker": self.talker_label, "token2wav": self.token2wav_label}.get(
                stage, placement.label
            )
            where = f" ({self.gpu})" if placement.device != "cpu" and self.gpu else ""
            lines.append(f"{_title(STAGE_NAMES[stage]) + ':':15}{label}{where}")
        lines.append(f"{'Vision:':15}{self.vision.label}")
        sampler = self.stream.sampler
        lines.append(
            f"{'Speech:':15}{self.profile.capitalize()} ({sampler.solver}, {sampler.evaluations} DiT "
            f"evaluations per window, first sound after {self.first_sound_codes} codes)"
        )
        if self.threads is not None:
            t = self.threads
            alone = ""
            if t.speech_alone > t.torch:
                first = f"{t.speech_alone} for the first sound, " if t.first_sound_first else ""
                alone = f" ({first}up to {t.speech_alone} once the reply is decoded)"
            lines.append(
                f"{'CPU threads:':15}Thinker {t.thinker} (prompt {t.thinker_prompt}), speech {t.torch}{alone}"
            )
        return lines

    @property
    def talker_prompt_copy(self) -> bool:
        """The quantized CPU Talker keeps a bfloat16 copy of its weights to decode prompts with, where
        the CPU has bfloat16 matrix instructions and the memory holds it (talker/quantize.py: a
        prompt several times faster, more exact than the quantized weights)."""
        return (
            self.talker_weights in ("int8", "int4")
            and self.talker.device == "cpu"
            and self.cpu_bf16
            and self.talker_copy_fits
        )

    @property
    def talker_label(self) -> str:
        """Where the Talker runs and its weights, e.g. "CUDA bfloat16", "CPU float32, int4 weights",
        "CPU llama.cpp, iq4_nl weights"."""
        if self.talker_weights == "iq4_nl":
            return "CPU llama.cpp, iq4_nl weights"
        weights = "" if self.talker_weights == "float" else f", {self.talker_weights} weights"
        prompts = " (bfloat16 for prompts)" if self.talker_prompt_copy else ""
        return self.talker.label + weights + prompts

    @property
    def token2wav_label(self) -> str:
        """Where Token2Wav runs, e.g. "CPU bfloat16, int8 DiT, fused activations"."""
        int8 = ", int8 DiT" if self.int8_dit else ""
        return self.token2wav.label + int8 + (", fused activations" if self.fused_vocoder else "")

    @property
    def speech_label(self) -> str:
        """Where speech is made, e.g. "Talker CUDA bfloat16, Token2Wav CUDA bfloat16 (Exact)" or
        "Talker CPU float32, int4 weights, Token2Wav CPU bfloat16 (Fast)"."""
        return f"Talker {self.talker_label}, Token2Wav {self.token2wav_label} ({self.profile.capitalize()})"

    @property
    def first_sound_codes(self) -> int:
        """Codes the Talker must make before Token2Wav can sound the first chunk (12 per block)."""
        return self.stream.first_sound_codes(12)

    def without_gpu(self, stage: Stage, why: str) -> Plan:
        """This plan with `stage` moved to the CPU (after the GPU ran out of memory), `why` noted."""
        placed = {s: CPU_FLOAT32 if s == stage else self.placement(s) for s in STAGES}
        moved = replace(
            self,
            audio_encoder=placed["audio_encoder"],
            talker=placed["talker"],
            token2wav=placed["token2wav"],
            compile_talker=self.compile_talker and stage != "talker",
            stream=replace(self.stream, fixed_windows=self.stream.fixed_windows and stage != "token2wav"),
            notes=(*self.notes, why),
        )
        fast = moved.quality == "fast" or (moved.quality == "auto" and _speaks_on_cpu(moved))
        return _fast_on_cpu(moved) if fast else moved


EXACT = Plan()  # the reference's path on the CPU: what parity tests and a bare Conversation use


def make_plan(hardware: Hardware, needs: MemoryNeeds, choice: PlanChoice = PlanChoice()) -> Plan:
    """The plan for this machine, bundle and choice (see the module's docstring)."""
    notes: list[str] = []
    gpu_device, gpu_dtype = _torch_gpu(hardware)
    if choice.speech_device == "gpu" and gpu_device is None:
        notes.append("Speech runs on the CPU: torch can use no GPU on this machine.")
    want_gpu = gpu_device is not None and choice.speech_device != "cpu"
    budget = _gpu_budget(hardware)
    layers = choice.thinker_gpu_layers
    if hardware.llama_backend != "CPU" and hardware.gpu_memory_bytes:
        thinker = needs.thinker_bytes + needs.kv_bytes + needs.mmproj_bytes
        if layers < 0 and thinker > budget:
            per_layer = needs.thinker_bytes / max(1, needs.thinker_layers)
            layers = max(0, int((budget - needs.kv_bytes - needs.mmproj_bytes) / per_layer))
            notes.append(
                f"The GPU's {budget / GIB:.1f} GB free hold {layers} of the language model's "
                f"{needs.thinker_layers} layers; the rest runs on the CPU."
            )
        share = 1.0 if layers < 0 else min(1.0, layers / max(1, needs.thinker_layers))
        budget -= int(needs.thinker_bytes * share) + needs.kv_bytes + needs.mmproj_bytes
    placements: dict[Stage, Placement] = {stage: CPU_FLOAT32 for stage in STAGES}
    if want_gpu:
        assert gpu_device is not None and gpu_dtype is not None
        left_out = []
        for stage in STAGES:
            need = needs.stage_bytes(stage, gpu_dtype)
            if need <= budget:
                placements[stage] = Placement(gpu_device, gpu_dtype)
                budget -= need
            else:
                left_out.append(IN_A_SENTENCE[stage])
        if left_out:
            names = ", ".join(left_out[:-1]) + " and " + left_out[-1] if len(left_out) > 1 else left_out[0]
            verb = "runs" if len(left_out) == 1 else "run"
            notes.append(
                f"Not everything fits in the GPU's memory: {names} {verb} on the CPU, so speech may "
                "start later. A smaller model would fit."
            )
    elif gpu_device is None and hardware.gpus and hardware.llama_backend != "CPU":
        notes.append(
            "Speech runs on the CPU because torch cannot use the GPU (a CPU build of torch): "
            "run packaging/install.sh again, or install a CUDA build of torch (docs/install.md)."
        )
    threads = _threads(hardware, choice)
    copy_fits = _talker_copy_fits(hardware, needs)
    talker_prompt: TalkerPrompt = "quantized"
    if needs.talker_in_llama:
        talker_prompt = "llama.cpp"
    elif hardware.cpu_bf16 and copy_fits:
        talker_prompt = "bfloat16 copy"
    prompt_s = prompt_seconds(
        needs.thinker_bytes,
        thinker_on_cpu=hardware.llama_backend == "CPU" or layers == 0,
        talker_prompt=talker_prompt if placements["talker"].device == "cpu" else None,
    )
    vision = plan_vision(
        choice.detail,
        exact=choice.quality == "exact",
        torch_gpu=(gpu_device, gpu_dtype) if want_gpu and gpu_device and gpu_dtype else None,
        llama_gpu=hardware.llama_backend != "CPU" and bool(hardware.gpu_memory_bytes),
        cpu_bf16=hardware.cpu_bf16,
        threads=threads.thinker_prompt,
        prompt_s=prompt_s,
        audio_block_s=_audio_block_seconds(hardware, choice, placements["audio_encoder"]),
    )
    gpu = hardware.torch_gpu
    plan = Plan(
        audio_encoder=placements["audio_encoder"],
        talker=placements["talker"],
        token2wav=placements["token2wav"],
        quality=choice.quality,
        gpu=f"{gpu.name}, {gpu.memory_bytes / GIB:.0f} GB" if gpu else "",
        cpu_bf16=hardware.cpu_bf16,
        cpu_int8=hardware.cpu_int8,
        talker_in_llama=needs.talker_in_llama,
        talker_copy_fits=copy_fits,
        compile_talker=placements["talker"].device == "cuda",
        stream=replace(EXACT_STREAM, fixed_windows=placements["token2wav"].device == "cuda"),
        thinker_gpu_layers=layers,
        threads=threads,
        vision=vision,
        notes=tuple(notes),
    )
    fast = choice.quality == "fast" or (choice.quality == "auto" and _speaks_on_cpu(plan))
    return _fast_on_cpu(plan, choice.quick_start) if fast else plan


def _audio_block_seconds(hardware: Hardware, choice: PlanChoice, placement: Placement) -> float:
    """A 2 s block through the audio encoder on the CPU, in the precision the plan will give it (a
    GPU's share is left out: it is far less)."""
    if placement.device != "cpu":
        return 0.0
    return AUDIO_BLOCK_S["bfloat16" if hardware.cpu_bf16 and choice.quality != "exact" else "float32"]


def _speaks_on_cpu(plan: Plan) -> bool:
    return "cpu" in (plan.talker.device, plan.token2wav.device)


def _fast_on_cpu(plan: Plan, quick_start: bool = False) -> Plan:
    """The Fast profile: its sampler and chunks, and the CPU stages' faster weights; with
    `quick_start`, its first chunk without look-ahead (`QUICK_START_STREAM`)."""
    token2wav, audio_encoder = plan.token2wav, plan.audio_encoder
    if plan.cpu_bf16:  # bfloat16 kernels: Token2Wav 2.6x, the audio encoder 3.0x (docs/performance.md)
        token2wav, audio_encoder = (
            Placement("cpu", torch.bfloat16) if p.device == "cpu" else p for p in (token2wav, audio_encoder)
        )
    # Token2Wav left on a GPU (only the Talker moved) keeps the reference's sampler unless Fast was chosen.
    sampler = FAST if token2wav.device == "cpu" or plan.quality == "fast" else REFERENCE
    talker_weights = plan.talker_weights
    if plan.talker.device == "cpu":
        talker_weights = _cpu_talker_weights(plan.cpu_bf16, plan.talker_in_llama)
    stream = replace(QUICK_START_STREAM if quick_start else FAST_STREAM, sampler=sampler)
    if token2wav.device == "cuda":  # one CUDA graph for every window: each padded to the largest
        stream = replace(stream, fixed_windows=True, max_chunk_blocks=None)
    threads = plan.threads
    if threads is not None:
        threads = replace(threads, talker_first=True, first_sound_first=threads.downstream_first)
    return replace(
        plan,
        profile="fast",
        stream=stream,
        threads=threads,
        talker_weights=talker_weights,
        speech_bound=SpeechBound() if talker_weights != "float" else None,
        token2wav=token2wav,
        # int8 products: the DiT's windows 1.2x to 1.3x faster on 2 Zen 4 cores (docs/performance.md)
        int8_dit=token2wav.device == "cpu" and plan.cpu_int8,
        # the vocoder's anti-aliased activations in one native pass: the vocoder 1.3x (fused_snake.py)
        fused_vocoder=token2wav.device == "cpu",
        audio_encoder=audio_encoder,
    )


def _cpu_talker_weights(cpu_bf16: bool, in_llama: bool) -> Literal["int8", "int4", "iq4_nl"]:
    """The fastest quantized Talker for this CPU and layout (docs/performance.md): llama.cpp's where
    the layout runs there (the 3B Talker's step on one Zen 4 core: 14 ms against torch int4's 32, and
    16 ms against 57 with AVX2 kernels only); else torch's weight-only kernels (the 7B layout, one
    thread: int4 is 5.3x float32 and int8 3.0x where the CPU has bfloat16 instructions; with AVX2
    alone int8 is 2.3x and int4 only 2.0x)."""
    if in_llama:
        return "iq4_nl"
    return "int4" if cpu_bf16 else "int8"


def _talker_copy_fits(hardware: Hardware, needs: MemoryNeeds) -> bool:
    """Whether the RAM available now holds every part on the CPU (the Thinker's file, KV cache and
    vision projector; the audio encoder and Token2Wav in float32; the Talker at one byte per
    weight, more than int4 or int8 take) and the Talker's bfloat16 prompt copy besides."""
    parts = needs.thinker_bytes + needs.kv_bytes + needs.mmproj_bytes
    parts += needs.stage_bytes("audio_encoder", torch.float32) + needs.stage_bytes("token2wav", torch.float32)
    parts += needs.params["talker"] + needs.talker_kv_elements * F32_BYTES
    copy = needs.params["talker"] * F16_BYTES
    return parts + copy <= hardware.ram_available_bytes


def _torch_gpu(hardware: Hardware) -> tuple[str | None, torch.dtype | None]:
    if hardware.torch_device == "cuda":
        return "cuda", torch.bfloat16 if hardware.torch_bf16 else torch.float16
    if hardware.torch_device == "mps":
        return "mps", torch.float16
    return None, None


def _gpu_budget(hardware: Hardware) -> int:
    """Bytes the parts may take on the GPU: what it has free now (the desktop, a browser and other
    programs hold the rest), or, where that is unknown, its total; on a Mac, macOS's share of RAM."""
    if hardware.unified_memory:
        available = int(hardware.gpu_memory_bytes * UNIFIED_MEMORY_SHARE)
    else:
        free = hardware.gpu_free_bytes
        available = hardware.gpu_memory_bytes if free is None else free
    return max(0, available - GPU_RESERVE_BYTES)


def _threads(hardware: Hardware, choice: PlanChoice) -> ThreadBudget:
    """The Thinker decodes beside the Talker and Token2Wav, but until the reply is decoded speech
    has little to do: the Talker reads the reply a text token per step, and each step's code costs
    Token2Wav a code's share, so speech waits on the Thinker and needs about SPEECH_SHARE of the
    cores. The Thinker gets the rest, all of them where that share is under half a core (on two
    cores one Thinker thread left the other mostly idle: docs/performance.md); speech then runs
    ahead of it (`downstream_first`). A prompt is decoded before the others start, so it may take
    every core, and once the reply is decoded the speech stages may."""
    cores = max(1, hardware.cpu_count)
    thinker = choice.thinker_threads or max(1, cores - round(cores * SPEECH_SHARE))
    torch_threads = max(1, cores - thinker)
    return ThreadBudget(
        thinker=thinker,
        thinker_prompt=max(thinker, cores),
        torch=torch_threads,
        downstream_first=thinker + 3 * torch_threads > cores,  # Talker, DiT and vocoder at once
        speech_alone=cores,
    )


def bundle_needs(bundle: Bundle, n_ctx: int) -> MemoryNeeds:
    """What `bundle`'s parts need, from its manifest and its files' headers (nothing is loaded)."""
    text = bundle.config["thinker_config"].get("text_config", {})
    layers = int(text.get("num_hidden_layers", 28))
    heads = int(text.get("num_attention_heads", 28))
    head_dim = int(text.get("hidden_size", 3584)) // max(1, heads)
    kv_heads = int(text.get("num_key_value_heads", 4))
    talker = TalkerConfig.from_dict(bundle.config.get("talker_config") or {})
    return MemoryNeeds(
        thinker_bytes=bundle.files["thinker"].size,
        thinker_layers=layers,
        kv_bytes=2 * layers * kv_heads * head_dim * F16_BYTES * n_ctx,
        mmproj_bytes=bundle.files["mmproj"].size if "mmproj" in bundle.files else 0,
        params={
            stage: _parameter_count(bundle.file(stage)) if stage in bundle.files else 0 for stage in STAGES
        },
        talker_kv_elements=2
        * talker.num_hidden_layers
        * talker.num_key_value_heads
        * talker.head_dim
        * talker_cache_positions(n_ctx),
        talker_in_llama=runs_in_llama(talker),
    )


def estimated_needs(size: ModelSize, quant: str, n_ctx: int = DEFAULT_CONTEXT) -> MemoryNeeds:
    """What a model size would need, from published parameter counts (doctor, before a download)."""
    audio_encoder, talker, token2wav = (int(p) for p in size.native)
    return MemoryNeeds(
        thinker_bytes=int(size.thinker_params * BITS_PER_WEIGHT[quant] / 8),
        thinker_layers=size.thinker_layers,
        kv_bytes=size.kv_bytes_per_token * n_ctx,
        mmproj_bytes=int(size.vision_params * BITS_PER_WEIGHT["Q8_0"] / 8),
        params={"audio_encoder": audio_encoder, "talker": talker, "token2wav": token2wav},
        talker_kv_elements=2 * 24 * 4 * 128 * talker_cache_positions(n_ctx),  # the 7B Talker's layout
    )


def _parameter_count(path: Path) -> int:
    """Parameters in a safetensors file, from its header."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            return sum(math.prod(file.get_slice(name).get_shape()) for name in file.keys())  # noqa: SIM118
    except (OSError, SafetensorError) as exc:
        raise ModelFileError(path, f"unreadable ({exc})", "Build or download the bundle again") from None


def _title(name: str) -> str:
    return name[:1].upper() + name[1:]

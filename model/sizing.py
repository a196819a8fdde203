"""Which Qwen2.5-Omni size and quantization fit a machine, and which one to use.

Memory needs are estimated from parameter counts, not from file lists: the
Thinker's GGUF at the quantization's bits per weight, the vision projector at
Q8_0, the native parts (audio encoder, Talker, Token2Wav) at 2 bytes per weight
on a GPU and 4 on a CPU, the KV cache of the default context in f16, plus a
fixed allowance for buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.hardware import GIB, Hardware
from model.thinker_types import DEFAULT_CONTEXT

OVERHEAD_BYTES = 1 * GIB
HEADROOM = 1.1  # keep 10% free

# Effective bits per weight of llama.cpp's quantizations (token embeddings included).
BITS_PER_WEIGHT = {"Q4_K_M": 4.89, "Q5_K_M": 5.69, "Q6_K": 6.56, "Q8_0": 8.5, "F16": 16.0}
PREFERRED_QUANT = "Q4_K_M"


@dataclass(frozen=True)
class ModelSize:
    name: str
    thinker_params: float  # the language model
    thinker_layers: int
    vision_params: float
    native: tuple[float, float, float]  # audio encoder, Talker, Token2Wav parameters
    kv_bytes_per_token: int  # f16 K and V over all layers
    source: str

    @property
    def native_params(self) -> float:
        return sum(self.native)


# 7B: REFERENCE.md's counts (Talker shape from a third-party config.json, unverified).
# 3B: the Thinker's text config quoted by third parties (36 layers, 2 KV heads of 128);
# its Talker size is not public, so the 7B Talker stands in as an upper bound.
SIZES = {
    "7b": ModelSize(
        "7b", 7.62e9, 28, 0.68e9, (0.64e9, 1.35e9, 0.45e9), 2 * 28 * 4 * 128 * 2, "Qwen/Qwen2.5-Omni-7B"
    ),
    "3b": ModelSize(
        "3b", 3.09e9, 36, 0.68e9, (0.64e9, 1.35e9, 0.45e9), 2 * 36 * 2 * 128 * 2, "Qwen/Qwen2.5-Omni-3B"
    ),
}


@dataclass(frozen=True)
class Option:
    size: str
    quant: str
    gguf_bytes: int
    gpu_bytes: int  # everything on the GPU (native parts in 16-bit)
    cpu_bytes: int  # everything in system memory (native parts in float32)
    fits_gpu: bool
    fits_ram: bool


@dataclass(frozen=True)
class Recommendation:
    option: Option | None
    reason: str


def options(hardware: Hardware) -> list[Option]:
    result = []
    for size in SIZES.values():
        for quant, bits in BITS_PER_WEIGHT.items():
            gguf_bytes = int(size.thinker_params * bits / 8)
            shared = gguf_bytes + int(size.vision_params * BITS_PER_WEIGHT["Q8_0"] / 8)
            shared += size.kv_bytes_per_token * DEFAULT_CONTEXT + OVERHEAD_BYTES
            gpu_bytes = shared + int(size.native_params * 2)
            cpu_bytes = shared + int(size.native_params * 4)
            result.append(
                Option(
                    size=size.name,
                    quant=quant,
                    gguf_bytes=gguf_bytes,
                    gpu_bytes=gpu_bytes,
                    cpu_bytes=cpu_bytes,
                    fits_gpu=_gpu_usable(hardware) and gpu_bytes * HEADROOM <= hardware.gpu_memory_bytes,
                    fits_ram=cpu_bytes * HEADROOM <= hardware.ram_total_bytes,
                )
            )
    return result


def recommend(hardware: Hardware) -> Recommendation:
    choices = {(o.size, o.quant): o for o in options(hardware)}
    for size in ("7b", "3b"):
        option = choices[(size, PREFERRED_QUANT)]
        if option.fits_gpu:
            return Recommendation(
                option,
                f"{size.upper()} {PREFERRED_QUANT} fits the GPU's {hardware.gpu_memory_bytes / GIB:.0f} GiB "
                f"with everything on it (about {option.gpu_bytes / GIB:.1f} GiB): "
                "fast text and real-time speech.",
            )
    option = choices[("3b", PREFERRED_QUANT)]
    if option.fits_ram:
        why = (
            "no GPU that both llama.cpp and torch can use"
            if not _gpu_usable(hardware)
            else "too little GPU memory"
        )
        return Recommendation(
            option,
            f"{why}: 3B {PREFERRED_QUANT} runs on the CPU in about {option.cpu_bytes / GIB:.1f} GiB of RAM. "
            "Speech starts within seconds (the Fast profile) but on a CPU it is made slower than it "
            "plays, so it comes a sentence at a time; a GPU speaks in real time.",
        )
    return Recommendation(
        None,
        f"even 3B {PREFERRED_QUANT} needs about {option.cpu_bytes / GIB:.1f} GiB, "
        f"more than this machine's {hardware.ram_total_bytes / GIB:.1f} GiB of RAM.",
    )


def _gpu_usable(hardware: Hardware) -> bool:
    return bool(hardware.gpus) and hardware.llama_backend != "CPU" and hardware.torch_device != "cpu"

"""What this machine offers the model: memory, GPUs, and what llama.cpp and torch can use.

Probing never raises: a missing tool (nvidia-smi) or an unreadable file leaves
the corresponding field empty, and the reason is kept for `omnidesk doctor`.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

GIB = 1024**3


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_bytes: int  # the card's total
    api: str  # "CUDA" or "Metal"
    free_bytes: int | None = None  # free when probed (the desktop and other programs hold the rest)


@dataclass(frozen=True)
class Hardware:
    system: str  # e.g. "Linux x86_64"
    cpu_count: int
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: tuple[Gpu, ...]
    llama_backend: str  # what llama.cpp was built to offload to ("CUDA", "Metal", ..., or "CPU")
    torch_device: str  # "cuda", "mps" or "cpu"
    torch_version: str
    notes: tuple[str, ...] = field(default=())  # why something is missing
    torch_gpu: Gpu | None = None  # the GPU torch computes on, as torch sees it
    torch_bf16: bool = False  # torch's GPU computes bfloat16 natively (CUDA compute capability >= 8.0)
    cpu_bf16: bool = False  # the CPU has bfloat16 matrix instructions (AVX-512 BF16 or AMX)
    cpu_int8: bool = False  # the CPU has int8 dot products (VNNI or AMX) that torch's oneDNN uses

    @property
    def unified_memory(self) -> bool:
        """Apple silicon: the GPU uses system memory."""
        return any(g.api == "Metal" for g in self.gpus)

    @property
    def gpu_memory_bytes(self) -> int:
        gpus = (*self.gpus, *((self.torch_gpu,) if self.torch_gpu else ()))
        return max((g.memory_bytes for g in gpus), default=0)

    @property
    def gpu_free_bytes(self) -> int | None:
        """What the GPU had free when probed (torch's own view first), or None where unknown."""
        gpus = (*((self.torch_gpu,) if self.torch_gpu else ()), *self.gpus)
        return next((g.free_bytes for g in gpus if g.free_bytes is not None), None)


def probe() -> Hardware:
    notes: list[str] = []
    total, available = _memory(notes)
    gpus = _nvidia_gpus(notes) + _apple_gpu(total)
    torch_device, torch_version = _torch_device(notes, gpus)
    torch_gpu = _torch_gpu(torch_device, total)
    torch_bf16, cpu_bf16 = _bfloat16_support(torch_device)
    backend = llama_backend()
    if gpus and backend == "CPU":
        notes.append(
            "llama-cpp-python was built for the CPU only: "
            "run packaging/install.sh --rebuild-llama to use the GPU"
        )
    return Hardware(
        system=f"{platform.system()} {platform.machine()}",
        cpu_count=os.cpu_count() or 1,
        ram_total_bytes=total,
        ram_available_bytes=available,
        gpus=tuple(gpus),
        llama_backend=backend,
        torch_device=torch_device,
        torch_version=torch_version,
        notes=tuple(notes),
        torch_gpu=torch_gpu,
        torch_bf16=torch_bf16,
        cpu_bf16=cpu_bf16,
        cpu_int8=_int8_support(),
    )


def cpu_name() -> str:
    """The processor's model name, for benchmark reports ("Intel(R) Xeon(R) Processor"); Linux reads
    /proc/cpuinfo, elsewhere what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def default_threads() -> int:
    """Half the logical CPUs (about the physical cores): see model.thinker.ThinkerOptions.n_threads."""
    return max(1, (os.cpu_count() or 2) // 2)


def llama_backend() -> str:
    """The accelerator this llama.cpp build offloads to: "CUDA", "Metal", "Vulkan" or "CPU"."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").upper()
    for name in ("CUDA", "Metal", "Vulkan"):
        if f"{name.upper()} :" in info or f"{name.upper()} =" in info:
            return name
    return "GPU" if llama_cpp.llama_supports_gpu_offload() else "CPU"


def _memory(notes: list[str]) -> tuple[int, int]:
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        fields = {}
        for line in meminfo.read_text().splitlines():
            name, _, value = line.partition(":")
            parts = value.split()
            if parts:
                fields[name] = int(parts[0]) * 1024
        return fields.get("MemTotal", 0), fields.get("MemAvailable", fields.get("MemFree", 0))
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return total, total // 2
    except (ValueError, OSError, AttributeError):
        notes.append("the amount of memory could not be read")
        return 0, 0


def _nvidia_gpus(notes: list[str]) -> list[Gpu]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        notes.append(f"nvidia-smi is installed but did not answer ({type(exc).__name__}): check the driver")
        return []
    gpus = []
    for line in out.strip().splitlines():
        rest, _, free = line.rpartition(",")
        name, _, total = rest.rpartition(",")
        if name and total.strip().isdigit() and free.strip().isdigit():
            gpus.append(Gpu(name.strip(), int(total) * 1024**2, "CUDA", free_bytes=int(free) * 1024**2))
    return gpus


def _apple_gpu(ram_total: int) -> list[Gpu]:
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return [Gpu(name="Apple silicon GPU", memory_bytes=ram_total, api="Metal")]
    return []


def _torch_device(notes: list[str], gpus: list[Gpu]) -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.__version__
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps", torch.__version__
    if any(g.api == "CUDA" for g in gpus):
        notes.append(
            f"torch {torch.__version__} cannot use the NVIDIA GPU (a CPU build?): "
            "run packaging/install.sh again, or install a CUDA build of torch"
        )
    return "cpu", torch.__version__


def _torch_gpu(torch_device: str, ram_total: int) -> Gpu | None:
    import torch

    if torch_device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        free, _ = torch.cuda.mem_get_info(0)
        return Gpu(properties.name, int(properties.total_memory), "CUDA", free_bytes=int(free))
    if torch_device == "mps":
        return Gpu(name="Apple silicon GPU", memory_bytes=ram_total, api="Metal")
    return None


def _int8_support() -> bool:
    """The CPU has int8 dot-product instructions and torch has oneDNN's quantized linear for them."""
    import torch

    from model.token2wav.int8_dit import available

    return available() and _torch_cpu_has(torch, "_is_vnni_supported", "_is_amx_tile_supported")


def _bfloat16_support(torch_device: str) -> tuple[bool, bool]:
    """(the torch GPU computes bfloat16 natively, the CPU has bfloat16 matrix instructions)."""
    import torch

    gpu = torch_device == "cuda" and torch.cuda.get_device_capability(0) >= (8, 0)
    return gpu, _torch_cpu_has(torch, "_is_avx512_bf16_supported", "_is_amx_tile_supported")


def _torch_cpu_has(torch: ModuleType, *checks: str) -> bool:
    """Any of torch.cpu's instruction-set `checks` is true (a torch without one reads as false)."""
    return any(bool(getattr(torch.cpu, check, lambda: False)()) for check in checks)

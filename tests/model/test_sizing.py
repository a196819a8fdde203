"""Which model the doctor recommends, for machines we do not have."""

from __future__ import annotations

import pytest

from model.hardware import GIB, Gpu, Hardware
from model.sizing import options, recommend


def machine(
    ram_gib: float, gpu_gib: float = 0, api: str = "CUDA", llama: str = "", torch: str = ""
) -> Hardware:
    gpus = (Gpu("test GPU", int(gpu_gib * GIB), api),) if gpu_gib else ()
    default_llama = {"CUDA": "CUDA", "Metal": "Metal"}[api] if gpus else "CPU"
    default_torch = {"CUDA": "cuda", "Metal": "mps"}[api] if gpus else "cpu"
    return Hardware(
        system="Test",
        cpu_count=8,
        ram_total_bytes=int(ram_gib * GIB),
        ram_available_bytes=int(ram_gib * GIB / 2),
        gpus=gpus,
        llama_backend=llama or default_llama,
        torch_device=torch or default_torch,
        torch_version="2.13.0",
    )


@pytest.mark.parametrize(
    "hardware, expected",
    [
        (machine(32, gpu_gib=24), ("7b", "Q4_K_M")),
        (machine(32, gpu_gib=12), ("3b", "Q4_K_M")),
        (machine(32, gpu_gib=36, api="Metal"), ("7b", "Q4_K_M")),
        (machine(16), ("3b", "Q4_K_M")),
        (machine(32, gpu_gib=24, llama="CPU"), ("3b", "Q4_K_M")),
    ],
    ids=["cuda-24g", "cuda-12g", "apple-36g", "cpu-16g", "gpu-but-cpu-llama"],
)
def test_recommendation(hardware: Hardware, expected: tuple[str, str]):
    advice = recommend(hardware)
    print(advice.reason)
    assert advice.option is not None
    assert (advice.option.size, advice.option.quant) == expected


def test_too_little_memory_is_said_plainly():
    advice = recommend(machine(4))
    assert advice.option is None
    assert "more than this machine's 4.0 GiB" in advice.reason


def test_larger_quantizations_need_more_memory():
    by_quant = {o.quant: o for o in options(machine(64)) if o.size == "7b"}
    assert by_quant["Q4_K_M"].gguf_bytes < by_quant["Q8_0"].gguf_bytes < by_quant["F16"].gguf_bytes
    assert all(o.gpu_bytes < o.cpu_bytes for o in by_quant.values())

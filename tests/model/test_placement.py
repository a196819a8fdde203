"""The placement plan: where each stage runs, in which precision and profile, on this machine and on
faked CUDA and MPS machines (hardware made up, nothing loaded)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from model import hardware as hardware_module
from model.bench.parts.random_bundle import talker_config
from model.files.bundle import Bundle
from model.hardware import GIB, Gpu, Hardware, probe
from model.placement import (
    CPU_FLOAT32,
    EXACT_STREAM,
    FAST_STREAM,
    QUICK_START_STREAM,
    STAGES,
    Placement,
    PlanChoice,
    bundle_needs,
    estimated_needs,
    make_plan,
)
from model.sizing import SIZES
from model.speech_bound import SpeechBound
from model.talker.gguf_file import runs_in_llama
from model.talker.network import TalkerConfig
from model.token2wav.sampler import REFERENCE

CPU_ONLY = Hardware(
    system="Linux x86_64",
    cpu_count=8,
    ram_total_bytes=32 * GIB,
    ram_available_bytes=24 * GIB,
    gpus=(),
    llama_backend="CPU",
    torch_device="cpu",
    torch_version="2.13.0",
)


def cuda_machine(gib: int, name: str = "NVIDIA GeForce RTX 4070", bf16: bool = True) -> Hardware:
    gpu = Gpu(name, gib * GIB, "CUDA")
    return replace(
        CPU_ONLY, gpus=(gpu,), llama_backend="CUDA", torch_device="cuda", torch_gpu=gpu, torch_bf16=bf16
    )


def apple_machine(gib: int) -> Hardware:
    gpu = Gpu("Apple silicon GPU", gib * GIB, "Metal")
    return replace(
        CPU_ONLY,
        system="Darwin arm64",
        ram_total_bytes=gib * GIB,
        gpus=(gpu,),
        llama_backend="Metal",
        torch_device="mps",
        torch_gpu=gpu,
    )


NEEDS_7B = estimated_needs(SIZES["7b"], "Q4_K_M")
NEEDS_3B = estimated_needs(SIZES["3b"], "Q4_K_M")


def show(plan) -> None:
    print("\n" + "\n".join(plan.describe() + [f"Note: {n}" for n in plan.notes]))


class TestTalkerPromptCopy:
    """The quantized CPU Talker's bfloat16 copy for prompts: where the CPU has the kernels and the RAM
    available holds it beside every part."""

    def test_a_bf16_cpu_with_room_keeps_the_copy(self):
        plan = make_plan(replace(CPU_ONLY, cpu_bf16=True), NEEDS_3B)
        show(plan)
        assert plan.talker_weights == "int4" and plan.talker_prompt_copy
        assert "(bfloat16 for prompts)" in plan.talker_label

    def test_too_little_ram_or_no_bf16_kernels_keep_none(self):
        # The 3B's parts on the CPU take about 10 GiB (the Talker at a byte per weight), the copy 2.5.
        tight = replace(CPU_ONLY, cpu_bf16=True, ram_available_bytes=10 * GIB)
        assert make_plan(tight, NEEDS_3B).talker_weights == "int4"
        assert not make_plan(tight, NEEDS_3B).talker_prompt_copy
        assert not make_plan(replace(CPU_ONLY, cpu_bf16=False), NEEDS_3B).talker_prompt_copy

    def test_the_exact_profile_and_a_gpu_talker_keep_none(self):
        machine = replace(CPU_ONLY, cpu_bf16=True)
        assert not make_plan(machine, NEEDS_3B, PlanChoice(quality="exact")).talker_prompt_copy
        on_gpu = make_plan(replace(cuda_machine(24), cpu_bf16=True), NEEDS_3B)
        assert on_gpu.talker.device == "cuda" and not on_gpu.talker_prompt_copy


class TestTalkerInLlama:
    """A Talker whose layout llama.cpp's qwen2vl takes (the 3B's) decodes there on a CPU, at iq4_nl."""

    NEEDS = replace(NEEDS_3B, talker_in_llama=True)

    def test_the_fast_cpu_talker_decodes_in_llama_cpp_without_a_prompt_copy(self):
        for machine in (replace(CPU_ONLY, cpu_bf16=True), replace(CPU_ONLY, cpu_bf16=False)):
            plan = make_plan(machine, self.NEEDS)
            show(plan)
            assert plan.talker_weights == "iq4_nl" and not plan.talker_prompt_copy
            assert plan.talker_label == "CPU llama.cpp, iq4_nl weights"
            assert "Talker:        CPU llama.cpp, iq4_nl weights" in plan.describe()
            assert plan.speech_bound == SpeechBound()  # its weights are quantized

    def test_exact_speech_and_a_gpu_talker_keep_torchs_float_talker(self):
        assert make_plan(CPU_ONLY, self.NEEDS, PlanChoice(quality="exact")).talker_weights == "float"
        assert make_plan(cuda_machine(24), self.NEEDS).talker_weights == "float"

    def test_a_talker_moved_off_the_gpu_decodes_in_llama_cpp(self):
        moved = make_plan(cuda_machine(24), self.NEEDS).without_gpu("talker", "full")
        assert moved.talker.device == "cpu" and moved.talker_weights == "iq4_nl"

    def test_the_layouts_llama_cpp_takes_come_from_the_talker_config(self, tiny_bundle: Bundle):
        assert bundle_needs(tiny_bundle, 4096).talker_in_llama  # 2 heads of 16 in 32
        assert runs_in_llama(TalkerConfig.from_dict(talker_config("3b", 2048)))
        assert not runs_in_llama(TalkerConfig.from_dict(talker_config("7b", 3584)))  # 12 heads of 128 in 896
        assert make_plan(CPU_ONLY, NEEDS_7B).talker_weights == "int8"  # torch's kernels, as before


class TestDevicesAndPrecision:
    def test_this_machine_speaks_on_the_cpu_in_the_fast_profile(self):
        hardware = probe()
        plan = make_plan(hardware, NEEDS_3B)
        show(plan)
        if hardware.torch_device != "cpu":
            pytest.skip("torch sees a GPU here")
        assert all(plan.placement(stage).device == "cpu" for stage in STAGES)
        assert plan.profile == "fast" and plan.stream == FAST_STREAM
        assert plan.talker_weights == ("int4" if hardware.cpu_bf16 else "int8")
        copy = " (bfloat16 for prompts)" if plan.talker_prompt_copy else ""
        assert plan.talker_label == f"CPU float32, {plan.talker_weights} weights{copy}"
        assert f"Talker:        CPU float32, {plan.talker_weights} weights{copy}" in plan.describe()
        fast_dtype = torch.bfloat16 if hardware.cpu_bf16 else torch.float32
        assert plan.token2wav.dtype == plan.audio_encoder.dtype == fast_dtype
        assert "Audio encoder: CPU " + ("bfloat16" if hardware.cpu_bf16 else "float32") in plan.describe()
        assert plan.talker.dtype == torch.float32
        assert not plan.compile_talker

    def test_fast_encodes_sound_in_bfloat16_where_the_cpu_has_the_kernels(self):
        """3.0x faster at the real size, 1.1e-2 of the largest value (docs/performance.md); the tiny
        model's bound is tests/model/test_audio_encoder.py's half precision test."""
        bf16_cpu = replace(CPU_ONLY, cpu_bf16=True)
        assert make_plan(bf16_cpu, NEEDS_3B).audio_encoder == Placement("cpu", torch.bfloat16)
        assert make_plan(bf16_cpu, NEEDS_3B, PlanChoice(quality="exact")).audio_encoder == CPU_FLOAT32
        assert make_plan(replace(CPU_ONLY, cpu_bf16=False), NEEDS_3B).audio_encoder == CPU_FLOAT32
        on_gpu = make_plan(replace(cuda_machine(24), cpu_bf16=True), NEEDS_7B, PlanChoice(quality="fast"))
        assert on_gpu.audio_encoder == Placement("cuda", torch.bfloat16)

    def test_fast_makes_the_dits_projections_int8_where_the_cpu_has_int8_dot_products(self):
        """1.2x to 1.3x faster windows on 2 Zen 4 cores (docs/performance.md); the tiny model's bound is
        tests/model/test_token2wav.py's int8 test."""
        int8_cpu = replace(CPU_ONLY, cpu_bf16=True, cpu_int8=True)
        fast = make_plan(int8_cpu, NEEDS_3B)
        assert fast.int8_dit and "Token2Wav:     CPU bfloat16, int8 DiT, fused activations" in fast.describe()
        assert fast.speech_label.endswith("Token2Wav CPU bfloat16, int8 DiT, fused activations (Fast)")
        assert not make_plan(int8_cpu, NEEDS_3B, PlanChoice(quality="exact")).int8_dit
        assert not make_plan(replace(CPU_ONLY, cpu_int8=False), NEEDS_3B).int8_dit
        on_gpu = make_plan(replace(cuda_machine(24), cpu_int8=True), NEEDS_7B, PlanChoice(quality="fast"))
        assert on_gpu.token2wav.device == "cuda" and not on_gpu.int8_dit
        moved = on_gpu.without_gpu("token2wav", "out of GPU memory")
        assert moved.token2wav.device == "cpu" and moved.int8_dit

    def test_fast_fuses_the_vocoders_activations_where_token2wav_runs_on_the_cpu(self):
        """The vocoder 1.3x on one Zen 4 core (token2wav/fused_snake.py); its bound against torch's
        activation is tests/model/test_fused_snake.py's."""
        assert make_plan(CPU_ONLY, NEEDS_3B).fused_vocoder
        assert make_plan(replace(CPU_ONLY, cpu_bf16=False), NEEDS_3B).fused_vocoder  # float32 too
        assert not make_plan(CPU_ONLY, NEEDS_3B, PlanChoice(quality="exact")).fused_vocoder
        on_gpu = make_plan(cuda_machine(24), NEEDS_7B, PlanChoice(quality="fast"))
        assert on_gpu.token2wav.device == "cuda" and not on_gpu.fused_vocoder
        assert on_gpu.without_gpu("token2wav", "out of GPU memory").fused_vocoder

    def test_starting_sooner_is_chosen_for_fast_speech_only(self):
        quick = PlanChoice(quick_start=True)
        cpu = make_plan(CPU_ONLY, NEEDS_3B, quick)
        assert cpu.profile == "fast" and cpu.stream == QUICK_START_STREAM
        assert cpu.first_sound_codes == 12 < make_plan(CPU_ONLY, NEEDS_3B).first_sound_codes == 24
        assert "first sound after 12 codes" in "\n".join(cpu.describe())
        exact = make_plan(CPU_ONLY, NEEDS_3B, replace(quick, quality="exact"))
        assert exact.stream == EXACT_STREAM and exact.first_sound_codes == 36
        on_gpu = make_plan(cuda_machine(24), NEEDS_7B, quick)  # Automatic is Exact there
        assert on_gpu.profile == "exact" and on_gpu.stream.first_future_blocks is None

    def test_an_ampere_gpu_runs_every_stage_in_bfloat16_exactly(self):
        plan = make_plan(cuda_machine(24), NEEDS_7B)
        show(plan)
        assert all(plan.placement(stage).device == "cuda" for stage in STAGES)
        assert all(plan.placement(stage).dtype == torch.bfloat16 for stage in STAGES)
        assert plan.profile == "exact" and plan.talker_weights == "float"
        assert plan.stream == replace(EXACT_STREAM, fixed_windows=True)  # DiT windows at one shape
        assert plan.compile_talker and plan.thinker_gpu_layers == -1 and not plan.notes
        assert "Talker:        CUDA bfloat16 (NVIDIA GeForce RTX 4070, 24 GB)" in plan.describe()

    def test_an_older_cuda_card_runs_in_float16(self):
        plan = make_plan(cuda_machine(16, "Tesla T4", bf16=False), NEEDS_3B)
        assert all(plan.placement(stage).dtype == torch.float16 for stage in STAGES)

    def test_apple_silicon_runs_on_mps_in_float16_and_keeps_room_for_the_system(self):
        plan = make_plan(apple_machine(32), NEEDS_7B)
        show(plan)
        assert all(plan.placement(stage) == replace(plan.talker, device="mps") for stage in STAGES)
        assert plan.talker.dtype == torch.float16 and not plan.compile_talker
        assert not plan.stream.fixed_windows  # nothing replays windows on MPS
        small = make_plan(apple_machine(8), NEEDS_7B)
        show(small)
        assert small.notes and small.profile == "fast"


class TestMemory:
    def test_what_does_not_fit_stays_on_the_cpu_and_the_user_is_told(self):
        plan = make_plan(cuda_machine(12), NEEDS_7B)
        show(plan)
        assert plan.token2wav.device == plan.talker.device == "cuda"
        assert plan.audio_encoder == CPU_FLOAT32
        assert any("audio encoder runs on the CPU" in note for note in plan.notes)
        assert plan.profile == "exact"  # speech itself is on the GPU

    def test_a_small_gpu_holds_part_of_the_thinker_and_speech_runs_on_the_cpu(self):
        plan = make_plan(cuda_machine(6), NEEDS_7B)
        show(plan)
        assert 0 < plan.thinker_gpu_layers < NEEDS_7B.thinker_layers
        assert all(plan.placement(stage).device == "cpu" for stage in STAGES)
        assert plan.profile == "fast"
        assert any(f"{plan.thinker_gpu_layers} of the language model's 28 layers" in n for n in plan.notes)

    def test_the_budget_counts_what_the_gpu_has_free_now(self, monkeypatch):
        """probe() on a faked 12 GB CUDA card of which other programs hold 7 GB: torch's mem_get_info
        says what is free, and the plan fits the parts into that, not into the card's total."""
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        card = SimpleNamespace(name="NVIDIA GeForce RTX 4070", total_memory=12 * GIB)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: card)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (8, 9))
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (5 * GIB, 12 * GIB))
        monkeypatch.setattr(hardware_module.shutil, "which", lambda name: None)
        monkeypatch.setattr(hardware_module, "llama_backend", lambda: "CUDA")
        hardware = probe()
        assert hardware.gpu_memory_bytes == 12 * GIB and hardware.gpu_free_bytes == 5 * GIB
        plan = make_plan(hardware, NEEDS_7B)
        show(plan)
        assert 0 < plan.thinker_gpu_layers < NEEDS_7B.thinker_layers
        assert all(plan.placement(stage).device == "cpu" for stage in STAGES)
        assert any("4.0 GB free hold" in note for note in plan.notes)
        all_free = make_plan(cuda_machine(12), NEEDS_7B)
        assert all_free.thinker_gpu_layers == -1 and all_free.token2wav.device == "cuda"

    def test_a_bundles_needs_come_from_its_files(self, tiny_bundle: Bundle):
        needs = bundle_needs(tiny_bundle, 4096)
        assert needs.thinker_bytes == tiny_bundle.files["thinker"].size
        assert all(0 < needs.params[stage] < 10_000_000 for stage in STAGES)
        assert needs.stage_bytes("talker", torch.float16) < needs.stage_bytes("talker", torch.float32)

    def test_running_out_of_gpu_memory_moves_a_stage_to_the_cpu_and_speeds_it_up(self):
        plan = make_plan(cuda_machine(24), NEEDS_7B, PlanChoice(quality="auto"))
        smaller = plan.without_gpu("talker", "The GPU ran out of memory: the Talker now runs on the CPU.")
        show(smaller)
        assert smaller.talker == CPU_FLOAT32 and smaller.token2wav.device == "cuda"
        assert smaller.profile == "fast" and smaller.talker_weights == "int8" and not smaller.compile_talker
        with_bf16 = replace(cuda_machine(24), cpu_bf16=True)
        faster = make_plan(with_bf16, NEEDS_7B).without_gpu("talker", "full")
        assert faster.talker_weights == "int4"  # the kernels this CPU runs fastest
        assert smaller.notes[-1].startswith("The GPU ran out of memory")
        # Token2Wav stays on CUDA, with the reference's sampler: only the Talker is slower now
        assert smaller.stream == replace(
            FAST_STREAM, fixed_windows=True, max_chunk_blocks=None, sampler=REFERENCE
        )
        chosen = make_plan(cuda_machine(24), NEEDS_7B, PlanChoice(quality="fast")).without_gpu("talker", "x")
        assert chosen.stream == replace(
            FAST_STREAM, fixed_windows=True, max_chunk_blocks=None
        )  # Euler: asked
        assert not plan.without_gpu("token2wav", "full").stream.fixed_windows
        exact = make_plan(cuda_machine(24), NEEDS_7B, PlanChoice(quality="exact"))
        assert exact.without_gpu("talker", "full").profile == "exact"


class TestChoices:
    def test_torch_without_cuda_beside_a_cuda_llama_cpp_says_how_to_fix_it(self):
        hardware = replace(cuda_machine(24), torch_device="cpu", torch_gpu=None, torch_bf16=False)
        plan = make_plan(hardware, NEEDS_7B)
        show(plan)
        assert all(plan.placement(stage).device == "cpu" for stage in STAGES)
        assert plan.thinker_gpu_layers == -1  # the language model still uses the GPU
        assert any("CUDA build of torch" in note for note in plan.notes)

    def test_the_user_may_keep_speech_on_the_cpu_or_ask_for_exact_speech(self):
        on_cpu = make_plan(cuda_machine(24), NEEDS_7B, PlanChoice(speech_device="cpu"))
        assert all(on_cpu.placement(stage).device == "cpu" for stage in STAGES)
        assert on_cpu.profile == "fast"
        exact = make_plan(CPU_ONLY, NEEDS_3B, PlanChoice(quality="exact"))
        assert exact.profile == "exact" and exact.talker_weights == "float"
        assert all(exact.placement(stage) == CPU_FLOAT32 for stage in STAGES)
        fast_gpu = make_plan(cuda_machine(24), NEEDS_7B, PlanChoice(quality="fast"))
        # one CUDA graph for every window: no growing chunks, whose largest window all would be padded to
        assert fast_gpu.stream == replace(FAST_STREAM, fixed_windows=True, max_chunk_blocks=None)
        assert fast_gpu.talker_weights == "float"  # int8 is for CPUs

    def test_asking_for_a_gpu_torch_cannot_use_is_said(self):
        plan = make_plan(CPU_ONLY, NEEDS_3B, PlanChoice(speech_device="gpu"))
        assert plan.talker.device == "cpu" and any("torch can use no GPU" in n for n in plan.notes)

    def test_the_thinker_decodes_beside_speech_on_most_of_the_cores(self):
        plan = make_plan(CPU_ONLY, NEEDS_3B)
        assert plan.threads is not None
        assert (plan.threads.thinker, plan.threads.torch) == (6, 2)
        assert plan.threads.thinker_prompt == CPU_ONLY.cpu_count
        assert plan.threads.downstream_first  # the speech stages' threads come before the Thinker's
        two_cores = make_plan(replace(CPU_ONLY, cpu_count=2), NEEDS_3B).threads
        assert two_cores is not None and (two_cores.thinker, two_cores.torch) == (2, 1)
        assert two_cores.downstream_first
        one_core = make_plan(replace(CPU_ONLY, cpu_count=1), NEEDS_3B).threads
        assert one_core is not None and (one_core.thinker, one_core.torch) == (1, 1)
        mine = make_plan(CPU_ONLY, NEEDS_3B, PlanChoice(thinker_threads=2))
        assert mine.threads is not None and mine.threads.thinker == 2

    def test_speech_takes_every_core_once_the_reply_is_decoded(self):
        plan = make_plan(CPU_ONLY, NEEDS_3B)
        assert plan.threads is not None and plan.threads.speech_alone == CPU_ONLY.cpu_count
        assert plan.profile == "fast" and plan.threads.talker_first  # its Talker costs what Token2Wav does
        exact_plan = make_plan(CPU_ONLY, NEEDS_3B, PlanChoice(quality="exact"))
        exact = exact_plan.threads
        assert exact is not None and not exact.talker_first  # Token2Wav costs far more there
        assert plan.threads.first_sound_first and not exact.first_sound_first  # Exact's first window is long
        described = "\n".join(plan.describe())
        assert (
            "Thinker 6 (prompt 8), speech 2 (8 for the first sound, up to 8 once the reply is decoded)"
            in described
        )
        assert "speech 2 (up to 8 once the reply is decoded)" in "\n".join(exact_plan.describe())

    def test_speech_is_bounded_by_its_text_where_the_talkers_weights_are_quantized(self):
        fast = make_plan(CPU_ONLY, NEEDS_3B, PlanChoice(quality="fast"))
        assert fast.talker_weights != "float" and fast.speech_bound == SpeechBound()
        assert make_plan(CPU_ONLY, NEEDS_3B, PlanChoice(quality="exact")).speech_bound is None
        gpu = make_plan(cuda_machine(24), NEEDS_7B, PlanChoice(quality="fast"))
        assert gpu.talker_weights == "float" and gpu.speech_bound is None

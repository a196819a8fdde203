"""`omnidesk doctor` on this machine."""

from __future__ import annotations

from dataclasses import replace

from starlette.applications import Starlette

from app.cli.doctor import report, where_the_model_runs
from model.hardware import probe
from tests.app.cli.test_main import omnidesk
from tests.app.serve.live import serving
from tests.model.test_placement import apple_machine, cuda_machine


def test_report_names_the_backends_and_a_choice():
    hardware = probe()
    text = report(hardware)
    print(text)
    assert f"llama.cpp:     built for {hardware.llama_backend}" in text
    assert f"computing on {hardware.torch_device}" in text
    assert "Recommended:" in text and "Why:" in text


def test_the_plan_on_faked_cuda_and_mps_machines():
    cuda, mps = report(cuda_machine(12)), report(apple_machine(32))
    print(cuda, mps, sep="\n\n")
    assert "Talker:        CUDA bfloat16 (NVIDIA GeForce RTX 4070, 12 GB)" in cuda
    assert "Speech:        Exact" in cuda
    assert "Talker:        MPS float16 (Apple silicon GPU, 32 GB)" in mps


def test_a_torch_that_cannot_use_the_gpu_is_said_with_how_to_fix_it():
    hardware = replace(cuda_machine(12), torch_device="cpu", torch_gpu=None, torch_bf16=False)
    text = report(hardware)
    assert "Talker:        CPU float32, int8 weights" in text
    assert "Note: Speech runs on the CPU because torch cannot use the GPU" in text
    assert "install a CUDA build of torch" in text


def test_doctor_says_where_the_model_runs(url):
    result = omnidesk("doctor", "--server", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"Model:         server {url}/v1 (tiny), voices: Chelsie, Ethan"
    with serving(Starlette()) as gone:  # nothing listens there once it has stopped
        pass
    line = where_the_model_runs(gone, "", "")
    assert line.startswith(f"Model:         server {gone}/v1, not usable: cannot reach") and "\n" not in line
    assert where_the_model_runs("", "", "/models/3b") == "Model:         this computer (/models/3b)"

"""install.sh's llama.cpp step on an NVIDIA machine (packaging/llama_build.sh), with a stand-in
Python whose pip records what it is asked and fails where the test says: a machine without the CUDA
compiler falls back to the CPU build with one line that says what is lost and what to install, and
the install goes on."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PATH_WITHOUT_NVCC = "/usr/bin:/bin"

FAKE_PYTHON = """#!/bin/bash
echo "$* | CMAKE_ARGS=${CMAKE_ARGS:-}" >> "$FAKE_LOG"
case "$*" in
    *pip*nvidia-cuda-nvcc*) exit "$FAKE_NVIDIA_RC" ;;
    *pip*llama-cpp-python*)
        case "${CMAKE_ARGS:-}" in *GGML_CUDA=on*) exit "$FAKE_CUDA_BUILD_RC" ;; esac
        exit 0 ;;
    "-c "*sysconfig*) echo "$FAKE_SITE" ;;
    "-c "*llama_cpp*) echo "$FAKE_SITE/llama_cpp/lib" ;;
    -) cat > /dev/null; echo 13.0 ;;
    *) exit 1 ;;
esac
"""

SCRIPT = """
set -euo pipefail
py="$FAKE_PY"; pip=("$py" -m pip); venv="$FAKE_VENV"
LLAMA_CPP_VERSION=0.3.36; rebuild_llama=0; find_links=""
say() { echo "==> $*"; }
source packaging/llama_build.sh
install_llama cuda 89
echo "the install goes on"
"""


def install_llama(
    tmp_path: Path, nvidia_rc: int, cuda_build_rc: int
) -> tuple[subprocess.CompletedProcess, list[str]]:
    if shutil.which("nvcc", path=PATH_WITHOUT_NVCC):
        pytest.skip("a CUDA Toolkit is installed in /usr/bin")
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    site = tmp_path / "site"
    nvcc = site / "nvidia" / "cu13" / "bin" / "nvcc"  # what nvidia-cuda-nvcc installs
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text("#!/bin/sh\n")
    nvcc.chmod(0o755)
    (site / "nvidia" / "cu13" / "lib").mkdir()
    (site / "nvidia" / "cu13" / "lib" / "libcudart.so.13").write_bytes(b"")
    log = tmp_path / "log"
    env = {
        "PATH": PATH_WITHOUT_NVCC,
        "HOME": str(tmp_path),
        "FAKE_PY": str(python),
        "FAKE_VENV": str(tmp_path / "venv"),
        "FAKE_LOG": str(log),
        "FAKE_SITE": str(site),
        "FAKE_NVIDIA_RC": str(nvidia_rc),
        "FAKE_CUDA_BUILD_RC": str(cuda_build_rc),
    }
    result = subprocess.run(
        ["bash", "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    return result, [line for line in log.read_text().splitlines() if "llama-cpp-python" in line]


def test_without_the_compiler_the_cpu_build_is_installed_and_the_user_told_why(tmp_path):
    result, builds = install_llama(tmp_path, nvidia_rc=1, cuda_build_rc=0)
    print(result.stderr)
    assert result.returncode == 0 and "the install goes on" in result.stdout
    said = result.stderr.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("install.sh: NVIDIA's CUDA compiler packages")
    assert "will not use the GPU" in said[0] and "install the CUDA Toolkit" in said[0]
    assert len(builds) == 1 and "GGML_CUDA" not in builds[0]


def test_the_pip_compiler_builds_for_this_gpus_architecture(tmp_path):
    result, builds = install_llama(tmp_path, nvidia_rc=0, cuda_build_rc=0)
    assert result.returncode == 0 and result.stderr == ""
    toolkit = tmp_path / "venv" / "cuda-toolkit"
    assert len(builds) == 1
    for arg in ("-DGGML_CUDA=on", f"-DCUDAToolkit_ROOT={toolkit}", "-DCMAKE_CUDA_ARCHITECTURES=89"):
        assert arg in builds[0]
    assert os.readlink(toolkit / "lib" / "libcudart.so") == "libcudart.so.13"  # what CMake looks for
    assert (toolkit / "lib64").resolve() == (toolkit / "lib").resolve()  # where nvcc.profile links from


def test_a_failing_cuda_build_falls_back_to_the_cpu(tmp_path):
    result, builds = install_llama(tmp_path, nvidia_rc=0, cuda_build_rc=1)
    assert result.returncode == 0 and "the install goes on" in result.stdout
    assert result.stderr.startswith("install.sh: llama.cpp's CUDA build failed (see above), so llama.cpp")
    assert len(builds) == 2 and "GGML_CUDA=on" in builds[0] and "GGML_CUDA" not in builds[1]

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
    "-c import llama_cpp") exit "$FAKE_IMPORT_RC" ;;
    "-c "*sysconfig*) echo "$FAKE_SITE" ;;
    "-c "*llama_cpp*) echo "$FAKE_SITE/llama_cpp/lib" ;;
    -) cat > /dev/null; echo 13.0 ;;
    *) exit 1 ;;
esac
"""

SCRIPT = """
set -euo pipefail
py="$FAKE_PY"; pip=("$py" -m pip); venv="$FAKE_VENV"
LLAMA_CPP_VERSION=0.3.36; rebuild_llama=0; find_links=""; cpuinfo="$FAKE_CPUINFO"
say() { echo "==> $*"; }
source packaging/llama_build.sh
install_llama "$FAKE_ACCEL" 89
echo "the install goes on"
"""
# ldd on llama.cpp's CUDA backend: each CUDA library is found once it is linked beside it, and
# cuBLAS's own dependency, cuBLASLt, shows only once cuBLAS is found (as ldd lists them).
FAKE_LDD = """#!/bin/bash
dir=$(dirname "$1")
shown="libcudart.so.13 libcublas.so.13"
[ -e "$dir/libcublas.so.13" ] && shown="$shown libcublasLt.so.13"
for lib in $shown; do
    if [ -e "$dir/$lib" ]; then echo "	$lib => $dir/$lib (0x0)"; else echo "	$lib => not found"; fi
done
"""
CUDA_LIBRARIES = ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13")
# /proc/cpuinfo's flags line of this project's Xeon (family 6 model 207: AMX) and of a Zen 4 (none).
XEON_FLAGS = (  # as this Xeon's kernel spells them: avx512vbmi without its underscore, avx512_vnni with
    "fpu sse sse2 ssse3 sse4_1 sse4_2 fma avx f16c avx2 bmi2 avx512f avx512dq avx512ifma avx512cd avx512bw "
    "avx512vl avx_vnni avx512_bf16 avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq "
    "amx_bf16 avx512_fp16 amx_tile amx_int8"
)
ZEN4_FLAGS = "fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 avx512f avx512_bf16 avx512_vnni"


def install_llama(
    tmp_path: Path,
    nvidia_rc: int,
    cuda_build_rc: int,
    accel: str = "cuda",
    cpu_flags: str = ZEN4_FLAGS,
    import_rc: int = 0,
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
    for library in CUDA_LIBRARIES:
        (site / "nvidia" / "cu13" / "lib" / library).write_bytes(b"")
    (site / "llama_cpp" / "lib").mkdir(parents=True)
    (site / "llama_cpp" / "lib" / "libggml-cuda.so").write_bytes(b"")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "ldd").write_text(FAKE_LDD)
    (tools / "ldd").chmod(0o755)
    log = tmp_path / "log"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {cpu_flags}\n\nprocessor\t: 1\nflags\t\t: {cpu_flags}\n")
    env = {
        "FAKE_ACCEL": accel,
        "FAKE_CPUINFO": str(cpuinfo),
        "PATH": f"{tools}:{PATH_WITHOUT_NVCC}",
        "HOME": str(tmp_path),
        "FAKE_PY": str(python),
        "FAKE_VENV": str(tmp_path / "venv"),
        "FAKE_LOG": str(log),
        "FAKE_SITE": str(site),
        "FAKE_NVIDIA_RC": str(nvidia_rc),
        "FAKE_CUDA_BUILD_RC": str(cuda_build_rc),
        "FAKE_IMPORT_RC": str(import_rc),
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
    asked = next(line for line in (tmp_path / "log").read_text().splitlines() if "nvidia-cuda-nvcc" in line)
    # the runtime's headers at the compiler's version, or CCCL stops every .cu file
    assert "nvidia-cuda-nvcc==13.0.*" in asked and "nvidia-cuda-runtime==13.0.*" in asked


def test_the_cuda_libraries_are_linked_beside_llama_cpps_own(tmp_path):
    """llama.cpp's libraries find their dependencies beside themselves only; cuBLASLt, needed by
    cuBLAS, is linked too (on this machine's real build, `libcublas.so.13: cannot open shared object
    file` stopped `import llama_cpp` before)."""
    result, _ = install_llama(tmp_path, nvidia_rc=0, cuda_build_rc=0)
    assert result.returncode == 0 and result.stderr == ""
    lib = tmp_path / "site" / "llama_cpp" / "lib"
    for library in CUDA_LIBRARIES:
        assert (lib / library).resolve() == tmp_path / "site" / "nvidia" / "cu13" / "lib" / library


def test_a_cuda_build_that_does_not_load_is_replaced_by_the_cpu_build(tmp_path):
    result, builds = install_llama(tmp_path, nvidia_rc=0, cuda_build_rc=0, import_rc=1)
    assert result.returncode == 0 and "the install goes on" in result.stdout
    assert result.stderr.startswith("install.sh: llama.cpp's CUDA build does not load (a CUDA library")
    assert len(builds) == 2 and "GGML_CUDA=on" in builds[0]
    assert "GGML_CUDA" not in builds[1] and "--force-reinstall" in builds[1]


def test_a_failing_cuda_build_falls_back_to_the_cpu(tmp_path):
    result, builds = install_llama(tmp_path, nvidia_rc=0, cuda_build_rc=1)
    assert result.returncode == 0 and "the install goes on" in result.stdout
    assert result.stderr.startswith("install.sh: llama.cpp's CUDA build failed (see above), so llama.cpp")
    assert len(builds) == 2 and "GGML_CUDA=on" in builds[0] and "GGML_CUDA" not in builds[1]


class TestAmx:
    """A Xeon with AMX builds llama.cpp for its instruction sets one by one, leaving out AMX, whose
    kernels die with SIGILL on Linux (packaging/cpu_isa.sh); other CPUs keep -march=native."""

    @pytest.mark.parametrize("accel", ["cpu", "cuda"])
    def test_a_xeon_with_amx_builds_without_it(self, tmp_path, accel):
        result, builds = install_llama(
            tmp_path, nvidia_rc=0, cuda_build_rc=0, accel=accel, cpu_flags=XEON_FLAGS
        )
        assert result.returncode == 0 and len(builds) == 1, result.stderr
        args = builds[0].split("CMAKE_ARGS=")[1].split()
        print(f"\n{accel}: {' '.join(args)}")
        assert "-DGGML_NATIVE=OFF" in args
        for option in (
            "AVX2",
            "FMA",
            "F16C",
            "AVX512",
            "AVX512_VNNI",
            "AVX512_BF16",
            "AVX512_VBMI",
            "AVX_VNNI",
        ):
            assert f"-DGGML_{option}=ON" in args
        assert not any("AMX" in arg for arg in args)
        assert ("-DGGML_CUDA=on" in args) == (accel == "cuda")

    @pytest.mark.parametrize("accel", ["cpu", "cuda"])
    def test_other_cpus_build_for_the_native_cpu(self, tmp_path, accel):
        result, builds = install_llama(tmp_path, nvidia_rc=0, cuda_build_rc=0, accel=accel)
        assert result.returncode == 0 and len(builds) == 1
        assert "GGML_NATIVE" not in builds[0] and "GGML_AVX" not in builds[0]

    def test_no_cpuinfo_as_on_a_mac_adds_nothing(self, tmp_path):
        result = subprocess.run(
            ["bash", "-c", f"source packaging/cpu_isa.sh; cpu_isa_args {tmp_path / 'none'}; echo rc=$?"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert result.stdout == "rc=0\n" and result.stderr == ""

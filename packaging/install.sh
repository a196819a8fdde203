#!/usr/bin/env bash
# Install Omnidesk from this source tree into a virtual environment.
#
#   bash packaging/install.sh [--dev] [--venv DIR] [--find-links DIR] [--rebuild-llama]
#
#   --dev             also install the test and reference tools (pytest, transformers, ...)
#   --venv DIR        where the environment goes (default: .venv in the source tree)
#   --find-links DIR  look for a prebuilt llama-cpp-python wheel in DIR first
#   --rebuild-llama   build llama-cpp-python again even if a matching build is installed
#
# It picks llama.cpp's backend and torch's build from the hardware (CUDA when an NVIDIA
# GPU answers, Metal on Apple silicon, else CPU), installs torch before the project (a
# bare "torch" requirement would pull a multi-GB CUDA build onto CPU-only Linux), and
# can be run again safely: what is already right is kept, and a CPU build of torch on
# an NVIDIA machine is replaced by a CUDA build.
set -euo pipefail

LLAMA_CPP_VERSION="0.3.36"
TORCH_VERSION="2.13.0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
dev=0
find_links=""
rebuild_llama=0
cpuinfo=/proc/cpuinfo  # the CPU's instruction sets (packaging/cpu_isa.sh)

while [ $# -gt 0 ]; do
    case "$1" in
        --dev) dev=1 ;;
        --venv) venv="$2"; shift ;;
        --find-links) find_links="$2"; shift ;;
        --rebuild-llama) rebuild_llama=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "install.sh: Omnidesk needs Python 3.10 or newer as '$python' (set PYTHON=/path/to/python3)." >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    say "creating the virtual environment in $venv"
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip

accel=cpu
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    accel=cuda
elif [ "$(uname -s)" = Darwin ] && [ "$(uname -m)" = arm64 ]; then
    accel=metal
fi
say "accelerator: $accel"

# torch: the Talker and Token2Wav run where torch computes, so an NVIDIA machine needs a CUDA build.
# PyTorch publishes torch 2.13 for CUDA 12.6 and 13.0 (13.2 experimental) on its own wheel index,
# one folder per CUDA version. CUDA 13.0 (cu130, also what PyPI's Linux wheel is) needs driver 580
# or newer and a Turing or newer GPU (compute capability 7.5: CUDA 13 dropped Maxwell, Pascal and
# Volta); cu126 runs on drivers from 525 and on those older GPUs. The build is named exactly
# (2.13.0+cu130), so a CPU build installed before is replaced. CPU-only Linux takes the "+cpu"
# build from PyTorch's CPU index (a bare "torch" would pull the multi-GB CUDA build); macOS's
# wheel from PyPI computes on Metal (MPS).
torch_build=""
if [ "$accel" = cuda ]; then
    gpu_info="$(nvidia-smi --query-gpu=driver_version,compute_cap --format=csv,noheader 2>/dev/null | head -n 1 || true)"
    driver_major="${gpu_info%%.*}"
    capability="$(printf '%s' "${gpu_info##*,}" | tr -d ' .')"  # 8.9 -> 89
    torch_build=cu126
    if [[ "$driver_major" =~ ^[0-9]+$ && "$capability" =~ ^[0-9]+$ ]] \
        && [ "$driver_major" -ge 580 ] && [ "$capability" -ge 75 ]; then
        torch_build=cu130
    elif [[ "$capability" =~ ^[0-9]+$ ]] && [ "$capability" -ge 100 ]; then
        echo "install.sh: this GPU (compute capability ${gpu_info##*,}) needs NVIDIA driver 580 or newer for" \
            "PyTorch's CUDA 13 build; update the driver, then run install.sh again." >&2
    fi
elif [ "$accel" = cpu ] && [ "$(uname -s)" = Linux ]; then
    torch_build=cpu
fi
want_cuda=$([ "$accel" = cuda ] && echo 1 || echo 0)
if "$py" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION' or ($want_cuda and torch.version.cuda is None))" 2>/dev/null; then
    say "torch $TORCH_VERSION already installed"
elif [ -n "$torch_build" ]; then
    say "installing torch $TORCH_VERSION ($torch_build build)"
    "${pip[@]}" install "torch==$TORCH_VERSION+$torch_build" --extra-index-url "https://download.pytorch.org/whl/$torch_build"
else
    say "installing torch $TORCH_VERSION"
    "${pip[@]}" install "torch==$TORCH_VERSION"
fi

# llama-cpp-python: compiled from source for the chosen backend (about 15 minutes on 2 cores; CUDA
# for this GPU's architecture only, with NVIDIA's compiler from PyPI where no CUDA Toolkit is
# installed: packaging/llama_build.sh).
have_llama=0
"$py" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_VERSION')" 2>/dev/null && have_llama=1
if [ "$have_llama" = 1 ] && [ "$accel" != cpu ] \
    && ! "$py" -c "import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_gpu_offload())" 2>/dev/null; then
    say "the installed llama-cpp-python cannot use the $accel GPU: building it again"
    rebuild_llama=1
fi
if [ "$have_llama" = 1 ] && [ "$rebuild_llama" = 0 ]; then
    say "llama-cpp-python $LLAMA_CPP_VERSION ($accel) already installed"
else
    source "$root/packaging/llama_build.sh"
    install_llama "$accel" "${capability:-}"
fi

if [ "$dev" = 1 ]; then
    say "installing Omnidesk with the dev tools"
    "${pip[@]}" install --quiet -e "$root[dev]"
else
    say "installing Omnidesk"
    "${pip[@]}" install --quiet -e "$root"
fi

say "done: run $venv/bin/omnidesk"

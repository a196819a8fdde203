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
# It picks llama.cpp's backend from the hardware (CUDA when an NVIDIA GPU answers,
# Metal on Apple silicon, else CPU), installs torch before the project (a bare
# "torch" requirement would pull a multi-GB CUDA build onto CPU-only Linux), and
# can be run again safely: what is already right is kept.
set -euo pipefail

LLAMA_CPP_VERSION="0.3.36"
TORCH_VERSION="2.13.0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
dev=0
find_links=""
rebuild_llama=0

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

# torch: PyPI's Linux wheel is the CUDA build; CPU-only Linux takes the "+cpu" build, which
# pip prefers (a local version label sorts higher) from PyTorch's CPU index or a local wheel.
if "$py" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    say "torch $TORCH_VERSION already installed"
elif [ "$accel" = cpu ] && [ "$(uname -s)" = Linux ]; then
    say "installing torch $TORCH_VERSION (CPU build)"
    "${pip[@]}" install "torch==$TORCH_VERSION" --extra-index-url https://download.pytorch.org/whl/cpu
else
    say "installing torch $TORCH_VERSION"
    "${pip[@]}" install "torch==$TORCH_VERSION"
fi

# llama-cpp-python: compiled from source for the chosen backend (about 15 minutes on 2 cores).
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
    case "$accel" in
        cuda) export CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_CUDA=on" ;;
        metal) export CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_METAL=on" ;;
    esac
    llama_args=(install "llama-cpp-python==$LLAMA_CPP_VERSION")
    [ "$rebuild_llama" = 1 ] && llama_args+=(--force-reinstall --no-cache-dir --no-deps)
    # A prebuilt wheel only fits the CPU backend; GPU builds always compile.
    if [ -n "$find_links" ] && [ "$accel" = cpu ]; then
        llama_args+=(--find-links "$find_links")
    fi
    say "installing llama-cpp-python $LLAMA_CPP_VERSION for $accel ${CMAKE_ARGS:+(CMAKE_ARGS=$CMAKE_ARGS)}"
    "${pip[@]}" "${llama_args[@]}"
fi

if [ "$dev" = 1 ]; then
    say "installing Omnidesk with the dev tools"
    "${pip[@]}" install --quiet -e "$root[dev]"
else
    say "installing Omnidesk"
    "${pip[@]}" install --quiet -e "$root"
fi

say "done: run $venv/bin/omnidesk"

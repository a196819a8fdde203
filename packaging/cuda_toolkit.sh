# The CUDA compiler and headers for building llama.cpp's CUDA backend, from NVIDIA's Python
# packages: an NVIDIA driver alone (what most desktops have) lacks nvcc and the headers, and
# the CUDA Toolkit is a separate multi-GB install. Sourced by install.sh; bash only.
#
# NVIDIA publishes nvcc, its device compiler parts, the runtime, cuBLAS and CCCL on PyPI. Their
# folders (nvidia/cu13/ for CUDA 13; nvidia/cuda_nvcc/, nvidia/cuda_runtime/, ... for CUDA 12)
# are merged here, as links, into one prefix with a toolkit's layout (bin, include, lib, nvvm),
# and the unversioned library names the linker and CMake's FindCUDAToolkit look for
# (libcudart.so, libcublas.so, libcuda.so) are added there. The compiler's version follows the
# CUDA runtime torch installed, so llama.cpp and torch share one libcudart and one cuBLAS.

# The CUDA major version (12 or 13) of the runtime installed in the venv, or nothing.
# Usage: cuda_runtime_version PYTHON -> prints e.g. "13.0" (major.minor)
cuda_runtime_version() {
    "$1" - <<'EOF' 2>/dev/null
from importlib import metadata
for name in ("nvidia-cuda-runtime", "nvidia-cuda-runtime-cu12"):
    try:
        print(".".join(metadata.version(name).split(".")[:2]))
        break
    except metadata.PackageNotFoundError:
        continue
EOF
}

# Installs the compiler packages that match the venv's CUDA runtime (13.0 if none is there yet)
# and builds the toolkit prefix. Prints the prefix; returns non-zero when a package is missing.
# Usage: cuda_toolkit_prefix PYTHON PREFIX
cuda_toolkit_prefix() {
    local py="$1" prefix="$2" version suffix="" packages=()
    version="$(cuda_runtime_version "$py")"
    [ -n "$version" ] || version="13.0"
    [ "${version%%.*}" = 12 ] && suffix="-cu12"
    # The runtime's headers must match the compiler: CCCL stops the build when CUDART_VERSION is newer
    # than nvcc (an unpinned runtime came as 13.5 beside nvcc 13.0, and every .cu file failed).
    packages=("nvidia-cuda-nvcc$suffix==$version.*" "nvidia-cuda-runtime$suffix==$version.*"
        "nvidia-cublas$suffix" "nvidia-cuda-cccl$suffix==$version.*")
    # CUDA 13 split nvcc's front end and NVVM into packages of their own.
    [ -z "$suffix" ] && packages+=("nvidia-cuda-crt==$version.*" "nvidia-nvvm==$version.*")
    "$py" -m pip --disable-pip-version-check install --quiet "${packages[@]}" >&2 || return 1
    local site
    site="$("$py" -c 'import sysconfig; print(sysconfig.get_path("platlib"))')" || return 1
    rm -rf "$prefix" && mkdir -p "$prefix" || return 1
    local part
    for part in "$site"/nvidia/*/; do
        local kind
        for kind in bin include lib nvvm; do
            [ -d "$part$kind" ] && cp -rs --remove-destination "$part$kind" "$prefix/" 2>/dev/null
        done
    done
    [ -x "$prefix/bin/nvcc" ] || return 1
    # nvcc.profile links from lib64, a toolkit's name for lib on Linux.
    ln -s lib "$prefix/lib64"
    local library
    for library in "$prefix"/lib/lib*.so.*; do
        [ -e "$library" ] && ln -sf "$(basename "$library")" "${library%%.so.*}.so"
    done
    # The driver's libcuda.so.1 (llama.cpp links it for its virtual-memory pool).
    local driver
    driver="$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 .*x86-64|libcuda\.so\.1 .*AArch64/ {print $NF; exit}')"
    [ -n "$driver" ] && ln -sf "$driver" "$prefix/lib/libcuda.so"
    printf '%s\n' "$prefix"
}

# The CMake arguments that build llama.cpp's CUDA backend with the prefix's compiler.
# ARCHITECTURES is CMake's list (e.g. "89" from nvidia-smi's compute capability 8.9); without
# it, llama.cpp's default list compiles every kernel for many GPUs (hours on 2 cores).
# Usage: cuda_cmake_args PREFIX [ARCHITECTURES]
cuda_cmake_args() {
    local prefix="$1" architectures="${2:-}" args
    args="-DGGML_CUDA=on -DCUDAToolkit_ROOT=$prefix -DCMAKE_CUDA_COMPILER=$prefix/bin/nvcc"
    [ -n "$architectures" ] && args+=" -DCMAKE_CUDA_ARCHITECTURES=$architectures"
    # Without the driver's library the pool of virtual memory cannot be linked; the legacy pool works.
    [ -e "$prefix/lib/libcuda.so" ] || args+=" -DGGML_CUDA_NO_VMM=on"
    printf '%s\n' "$args"
}

# llama-cpp-python's libraries look for their dependencies beside themselves ($ORIGIN) only:
# link the CUDA libraries they need there, from the prefix (so from the venv's nvidia packages),
# and those libraries' own (cuBLAS needs cuBLASLt, found beside it the same way). The folder is
# found without importing llama_cpp: the import loads these very libraries. Returns non-zero when
# one is still missing.
# Usage: cuda_link_runtime PYTHON PREFIX
cuda_link_runtime() {
    local py="$1" prefix="$2" lib_dir
    lib_dir="$("$py" -c 'import importlib.util, os
spec = importlib.util.find_spec("llama_cpp")
print(os.path.join(spec.submodule_search_locations[0], "lib"))')" || return 1
    local needed linked=1
    while [ "$linked" = 1 ]; do
        linked=0
        for needed in $(ldd "$lib_dir"/libggml-cuda.so 2>/dev/null | awk '/not found/ {print $1}'); do
            if [ -e "$prefix/lib/$needed" ] && [ ! -e "$lib_dir/$needed" ]; then
                ln -sf "$(readlink -f "$prefix/lib/$needed")" "$lib_dir/$needed" && linked=1
            fi
        done
    done
    ! ldd "$lib_dir"/libggml-cuda.so 2>/dev/null | grep -q "not found"
}

# Installs llama-cpp-python for the machine's accelerator; sourced by install.sh (bash only).
# A CUDA build compiles with NVIDIA's compiler packages (cuda_toolkit.sh) or a CUDA Toolkit on PATH;
# where neither can build it, llama.cpp is built for the CPU, the user is told in one line what that
# costs and what to install, and the install goes on.

source "$(dirname "${BASH_SOURCE[0]}")/cuda_toolkit.sh"
source "$(dirname "${BASH_SOURCE[0]}")/cpu_isa.sh"

# Usage: install_llama ACCEL CAPABILITY   (ACCEL: cuda, metal or cpu; CAPABILITY: e.g. 89, or empty)
# Reads from install.sh: py, pip (array), venv, LLAMA_CPP_VERSION, rebuild_llama, find_links, cpuinfo, say.
install_llama() {
    local accel="$1" capability="$2" args=(install "llama-cpp-python==$LLAMA_CPP_VERSION")
    local reinstall=(--force-reinstall --no-cache-dir --no-deps)  # over a build already there
    local isa
    isa="$(cpu_isa_args "$cpuinfo")"
    [ "$rebuild_llama" = 1 ] && args+=("${reinstall[@]}")
    case "$accel" in
        cuda)
            local toolkit cuda_args why=""
            [[ "$capability" =~ ^[0-9]+$ ]] || capability=""
            if command -v nvcc >/dev/null 2>&1; then
                cuda_args="-DGGML_CUDA=on${capability:+ -DCMAKE_CUDA_ARCHITECTURES=$capability}"
            elif toolkit="$(cuda_toolkit_prefix "$py" "$venv/cuda-toolkit")"; then
                cuda_args="$(cuda_cmake_args "$toolkit" "$capability")"
            else
                why="NVIDIA's CUDA compiler packages (nvidia-cuda-nvcc) could not be installed"
            fi
            if [ -z "$why" ]; then
                say "installing llama-cpp-python $LLAMA_CPP_VERSION for CUDA (CMAKE_ARGS=$cuda_args)"
                if CMAKE_ARGS="${CMAKE_ARGS:-} $isa $cuda_args" "${pip[@]}" "${args[@]}"; then
                    if [ -n "${toolkit:-}" ]; then
                        cuda_link_runtime "$py" "$toolkit" || true  # the import says whether all is there
                    fi
                    "$py" -c "import llama_cpp" 2>/dev/null && return 0
                    why="llama.cpp's CUDA build does not load (a CUDA library it needs is missing)"
                    [ "$rebuild_llama" = 1 ] || args+=("${reinstall[@]}")  # the CPU build replaces it
                else
                    why="llama.cpp's CUDA build failed (see above)"
                fi
            fi
            echo "install.sh: $why, so llama.cpp is built for the CPU: the language model will not use" \
                "the GPU and answers several times slower; install the CUDA Toolkit" \
                "(https://developer.nvidia.com/cuda-downloads), then run install.sh --rebuild-llama." >&2
            ;;
        metal)
            say "installing llama-cpp-python $LLAMA_CPP_VERSION for Metal"
            CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_METAL=on" "${pip[@]}" "${args[@]}"
            return
            ;;
    esac
    # A prebuilt wheel only fits the CPU backend; GPU builds always compile.
    [ -n "$find_links" ] && args+=(--find-links "$find_links")
    say "installing llama-cpp-python $LLAMA_CPP_VERSION for the CPU${isa:+ (CMAKE_ARGS=$isa)}"
    CMAKE_ARGS="${CMAKE_ARGS:-} $isa" "${pip[@]}" "${args[@]}"
}

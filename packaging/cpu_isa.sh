# llama.cpp's CPU kernels for this machine without its AMX ones. Sourced by llama_build.sh; bash only.
#
# A build from source compiles for the building CPU (GGML_NATIVE: -march=native). On an Intel Xeon
# with AMX (Sapphire Rapids and newer) that includes llama.cpp's AMX matrix kernels, whose worker
# threads run tile instructions without the per-thread permission Linux requires (llama.cpp pull
# request 26954, open): the first prompt dies with SIGILL (exit 132). Seen on this project's Xeon
# (family 6 model 207) with llama-cpp-python 0.3.36: `tilezero` in ggml_backend_amx_mul_mat.
# There, the build names the CPU's instruction sets one by one instead, all but AMX.

# Usage: cpu_isa_args CPUINFO -> prints CMake arguments (nothing where -march=native is safe)
cpu_isa_args() {
    local flags
    flags=" $(grep -m1 '^flags' "$1" 2>/dev/null | cut -d: -f2) "
    [[ "$flags" == *" amx_tile "* ]] || return 0
    local args="-DGGML_NATIVE=OFF" flag option
    # /proc/cpuinfo's flag -> llama.cpp's option
    for flag in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI avx512f:AVX512 \
        avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
        option="${flag#*:}"
        flag="${flag%%:*}"
        [[ "$flags" == *" $flag "* ]] && args+=" -DGGML_$option=ON"
    done
    echo "$args"
}

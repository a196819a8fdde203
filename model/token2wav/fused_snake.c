/* The vocoder's anti-aliased SnakeBeta in one pass (model/token2wav/fused_snake.py builds and calls it).
 *
 * torch makes the activation of a (channels, samples) signal in seven passes over a signal twice its
 * length: a depthwise transposed convolution up-samples (12 Kaiser-sinc taps, replicate padding), then
 * x + sin^2(alpha x) / beta in four elementwise operations, then a depthwise strided convolution
 * down-samples. Here each tile of output samples is made from the input in the cache: the up-sampled
 * tile, its activation and the down-sampled outputs, in float32 whatever the signal's dtype (as
 * bigvgan.AntiAliasedSnake computes a bfloat16 signal). Same arithmetic as torch's, in another order:
 * the results agree to float32 rounding (tests/model/test_fused_snake.py).
 *
 * Layout: BigVGAN's channels-last (batch, samples, channels), so the inner loops run over contiguous
 * channels and vectorise. The samples are split between `threads` POSIX threads.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TAPS 12          /* the Kaiser-sinc filter's taps (bigvgan.AA_TAPS; ratio 2) */
#define LANES 16         /* rows of the working buffers are padded to a multiple of this many floats */
#define TILE_BYTES 49152 /* the up-sampled tile of one thread: about what a core's L1 and L2 keep close */
#define MAX_THREADS 64
#define MIN_SAMPLES_PER_THREAD 256

typedef struct {
    const void *x;
    void *out;
    int bf16;
    int64_t channels, samples, first, last; /* this job makes outputs [first, last) */
    const float *alpha, *inv_beta, *filt;
    int failed;
} Job;

static inline float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Round to nearest even, as torch's float -> bfloat16 conversion; NaN stays NaN. */
static inline uint16_t float_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    uint32_t nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
    return (uint16_t)(nan ? 0x7FC0u : rounded);
}

/* sin(x)^2 = sin(r)^2 for x = r + n pi, |r| <= pi / 2 (pi in three parts: r is exact to float32 for
 * |x| up to about 1e5); sin(r) by its Taylor series to r^13, which errs by under 1e-9 there. */
static inline float sin_squared(float x) {
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds a float to an integer */
    float n = (x * 0.318309886183790671f + round_magic) - round_magic;
    float r = x - n * 3.140625f;
    r = r - n * 9.67502593994140625e-4f;
    r = r - n * 1.509957990978376432e-7f;
    float r2 = r * r;
    float p = 1.0f / 6227020800.0f;
    p = p * r2 - 1.0f / 39916800.0f;
    p = p * r2 + 1.0f / 362880.0f;
    p = p * r2 - 1.0f / 5040.0f;
    p = p * r2 + 1.0f / 120.0f;
    p = p * r2 - 1.0f / 6.0f;
    float s = r + r * r2 * p;
    s = s * s;
    return s > 1.0f ? 1.0f : s;
}

static inline int64_t clamp_index(int64_t i, int64_t last) { return i < 0 ? 0 : (i > last ? last : i); }

/* Input rows [first, first + count), clamped to the signal (replicate padding), as float rows. */
static void load_rows(const Job *job, int64_t first, int64_t count, int64_t stride, float *restrict rows) {
    const int64_t channels = job->channels;
    for (int64_t i = 0; i < count; i++) {
        int64_t m = clamp_index(first + i, job->samples - 1);
        float *restrict row = rows + i * stride;
        if (job->bf16) {
            const uint16_t *restrict src = (const uint16_t *)job->x + m * channels;
            for (int64_t c = 0; c < channels; c++) row[c] = bf16_to_float(src[c]);
        } else {
            memcpy(row, (const float *)job->x + m * channels, (size_t)channels * sizeof(float));
        }
    }
}

/* The up-sampled samples 2q and 2q + 1, activated, from input rows q - 3 .. q + 3 (r0 .. r6).
 * torch's transposed convolution (stride 2, taps w = 2 * filter, crop 15 after 5 samples of padding)
 * gives sample j the taps k = j + 15 - 2 m of padded rows m: odd taps for j even, even taps for j odd. */
static void up_and_activate(const float *restrict r0, const float *restrict r1, const float *restrict r2,
                            const float *restrict r3, const float *restrict r4, const float *restrict r5,
                            const float *restrict r6, const float *restrict w, const float *restrict alpha,
                            const float *restrict inv_beta, float *restrict even, float *restrict odd,
                            int64_t count) {
    for (int64_t c = 0; c < count; c++) {
        float ue = w[1] * r5[c] + w[3] * r4[c] + w[5] * r3[c] + w[7] * r2[c] + w[9] * r1[c] + w[11] * r0[c];
        float uo = w[0] * r6[c] + w[2] * r5[c] + w[4] * r4[c] + w[6] * r3[c] + w[8] * r2[c] + w[10] * r1[c];
        even[c] = ue + sin_squared(ue * alpha[c]) * inv_beta[c];
        odd[c] = uo + sin_squared(uo * alpha[c]) * inv_beta[c];
    }
}

/* One output sample: the filter over 12 up-sampled rows (torch's strided convolution). */
static void down(const float *const *z, const float *restrict f, float *restrict out, int64_t count) {
    const float *restrict z0 = z[0], *restrict z1 = z[1], *restrict z2 = z[2], *restrict z3 = z[3];
    const float *restrict z4 = z[4], *restrict z5 = z[5], *restrict z6 = z[6], *restrict z7 = z[7];
    const float *restrict z8 = z[8], *restrict z9 = z[9], *restrict z10 = z[10], *restrict z11 = z[11];
    for (int64_t c = 0; c < count; c++)
        out[c] = f[0] * z0[c] + f[1] * z1[c] + f[2] * z2[c] + f[3] * z3[c] + f[4] * z4[c] + f[5] * z5[c] +
                 f[6] * z6[c] + f[7] * z7[c] + f[8] * z8[c] + f[9] * z9[c] + f[10] * z10[c] + f[11] * z11[c];
}

static void *run_job(void *arg) {
    Job *job = (Job *)arg;
    const int64_t channels = job->channels, samples = job->samples;
    const int64_t stride = (channels + LANES - 1) / LANES * LANES;
    int64_t tile = TILE_BYTES / (int64_t)(2 * sizeof(float) * stride);
    if (tile < 4) tile = 4;
    /* Outputs [a, b) read up-sampled samples 2a - 5 .. 2b + 4: pairs q in [a - 3, b + 2], which read
     * input rows q - 3 .. q + 3. */
    const size_t up_rows = (size_t)(2 * (tile + 6)), in_rows = (size_t)(tile + 12);
    float *up = calloc((size_t)stride * (up_rows + in_rows + 3), sizeof(float));
    if (!up) {
        job->failed = 1;
        return NULL;
    }
    float *in = up + stride * up_rows, *alpha = in + stride * in_rows, *inv_beta = alpha + stride;
    float *out = inv_beta + stride;
    memcpy(alpha, job->alpha, (size_t)channels * sizeof(float)); /* padding lanes stay 0 */
    memcpy(inv_beta, job->inv_beta, (size_t)channels * sizeof(float));
    float w[TAPS];
    for (int k = 0; k < TAPS; k++) w[k] = 2.0f * job->filt[k]; /* bigvgan: AA_RATIO * kernel */
    for (int64_t a = job->first; a < job->last; a += tile) {
        const int64_t b = a + tile < job->last ? a + tile : job->last;
        const int64_t q_lo = a - 3 < 0 ? 0 : a - 3, q_hi = b + 2 > samples - 1 ? samples - 1 : b + 2;
        load_rows(job, q_lo - 3, q_hi - q_lo + 7, stride, in);
        for (int64_t q = q_lo; q <= q_hi; q++) {
            const float *r = in + (q - q_lo) * stride;
            float *even = up + 2 * (q - q_lo) * stride;
            up_and_activate(r, r + stride, r + 2 * stride, r + 3 * stride, r + 4 * stride, r + 5 * stride,
                            r + 6 * stride, w, alpha, inv_beta, even, even + stride, stride);
        }
        for (int64_t n = a; n < b; n++) {
            const float *rows[TAPS]; /* the down-sampler's replicate padding: 5 before, 6 after */
            for (int k = 0; k < TAPS; k++)
                rows[k] = up + (clamp_index(2 * n + k - 5, 2 * samples - 1) - 2 * q_lo) * stride;
            down(rows, job->filt, out, stride);
            if (job->bf16) {
                uint16_t *restrict dst = (uint16_t *)job->out + n * channels;
                for (int64_t c = 0; c < channels; c++) dst[c] = float_to_bf16(out[c]);
            } else {
                memcpy((float *)job->out + n * channels, out, (size_t)channels * sizeof(float));
            }
        }
    }
    free(up);
    return NULL;
}

/* x, out: (batch, samples, channels), float32 or (bf16 != 0) bfloat16; alpha, inv_beta: (channels,)
 * float32, exp(log alpha) and 1 / (exp(log beta) + eps); filt: the 12 taps. Returns 0, or 1 where
 * memory ran out (out is then incomplete). */
int omnidesk_fused_snake(const void *x, void *out, int bf16, int64_t batch, int64_t channels,
                         int64_t samples, const float *alpha, const float *inv_beta, const float *filt,
                         int threads) {
    const size_t element = bf16 ? 2 : 4;
    int64_t most = samples / MIN_SAMPLES_PER_THREAD;
    if (threads > most) threads = (int)(most > 1 ? most : 1);
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads < 1) threads = 1;
    int failed = 0;
    for (int64_t item = 0; item < batch && samples > 0 && channels > 0; item++) {
        Job jobs[MAX_THREADS];
        pthread_t ids[MAX_THREADS];
        int started[MAX_THREADS] = {0};
        const int64_t share = (samples + threads - 1) / threads;
        int used = 0;
        for (int t = 0; t < threads && t * share < samples; t++) {
            int64_t first = t * share, last = first + share < samples ? first + share : samples;
            const size_t offset = (size_t)(item * samples * channels) * element;
            jobs[t] = (Job){(const char *)x + offset, (char *)out + offset, bf16, channels, samples, first, last,
                            alpha, inv_beta, filt, 0};
            used = t + 1;
        }
        for (int t = 1; t < used; t++) started[t] = pthread_create(&ids[t], NULL, run_job, &jobs[t]) == 0;
        run_job(&jobs[0]);
        for (int t = 1; t < used; t++) {
            if (started[t])
                pthread_join(ids[t], NULL);
            else
                run_job(&jobs[t]); /* no thread to be had: this one does its share */
        }
        for (int t = 0; t < used; t++) failed |= jobs[t].failed;
    }
    return failed;
}

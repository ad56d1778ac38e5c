/* SPDX-License-Identifier: Apache-2.0
 *
 * CPU decoding kernels (model/cpu_build.py builds this file on first use, model/cpu_kernels.py calls it;
 * optional).
 *
 * 1. ne_few_rows_f32, a few-rows matrix product:
 *
 *   y[m, n] = bias[rows[n]] + sum over segments s, j < len[s] of x[m, xoff[s] + j] * w[rows[n], woff[s] + j]
 *
 * for m < M (a few decoding rows), n < N: a linear layer restricted to kept weight rows (`rows`, NULL for
 * 0..N-1) and kept column segments (runs of kept input units), read in place from the parent's weight: no
 * gathered copy, one call for every run of a sliced layer. Float32 in, float32 accumulation.
 * Why: with 4 to 16 rows, the BLAS GEMMs on this kind of CPU run far below the memory bandwidth that one
 * row reaches (benchmarks/decode_budgets.py `few_rows`), while decoding is meant to be bound by reading the
 * weights once per step. Each pair of weight rows is read once and dotted with up to 8 input rows held in
 * L1 (16 accumulators in AVX-512 registers).
 *
 * 2. ne_ssm_step_f32, one recurrent Mamba2 step with the state updated in one pass;
 * 3. ne_rms_norm_f32, the RMSNorms of a few rows, plain or gated per group;
 * 4. ne_conv_step_f32, Mamba2's causal conv for one token per row, its state shifted in place (below);
 * 5. ne_tiled_f32, the few-rows product on a weight stored in tiles, for serving (below);
 * 6. ne_mamba_step_f32, a Mamba2 mixer's whole step between its projections: 4, 2 and 3 in one call.
 *
 * All split their work across the OpenMP threads of the process: torch's own runtime (the same libgomp
 * is already loaded when this library is), so torch.set_num_threads applies. The products and the SSM step
 * hand out their work in small chunks (schedule(dynamic)): in a server, HTTP threads and clients take a core
 * now and then, and a static split would make every step wait for its preempted half (serve_load,
 * budget 0.5 at 8 rows: about 3% more tokens/s; the same speed in process).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

/* Weight floats read ahead of use: 1 KB, about 10-15% faster than the hardware prefetcher alone at 8 rows
 * (prefetches never fault, so reading past a row's end is harmless). */
#define PREFETCH 256

#define SEGMENT_LOOP(MB)                                                                            \
    for (int64_t s = 0; s < S; s++) {                                                               \
        const float* p0 = w0 + woff[s];                                                             \
        const float* p1 = w1 + woff[s];                                                             \
        const float* xs = x + xoff[s];                                                              \
        const int64_t K = len[s];                                                                   \
        int64_t k = 0;                                                                              \
        for (; k + 16 <= K; k += 16) { /* plain loads: the FMAs take x straight from memory */      \
            _mm_prefetch((const char*)(p0 + k + PREFETCH), _MM_HINT_T0);                            \
            _mm_prefetch((const char*)(p1 + k + PREFETCH), _MM_HINT_T0);                            \
            const __m512 v0 = _mm512_loadu_ps(p0 + k);                                              \
            const __m512 v1 = _mm512_loadu_ps(p1 + k);                                              \
            for (int m = 0; m < MB; m++) {                                                          \
                const __m512 xv = _mm512_loadu_ps(xs + m * ldx + k);                                \
                a0[m] = _mm512_fmadd_ps(xv, v0, a0[m]);                                             \
                a1[m] = _mm512_fmadd_ps(xv, v1, a1[m]);                                             \
            }                                                                                       \
        }                                                                                           \
        if (k < K) { /* the segment's last K % 16 columns, masked */                                \
            const __mmask16 t = (__mmask16)((1u << (K - k)) - 1);                                   \
            const __m512 v0 = _mm512_maskz_loadu_ps(t, p0 + k);                                     \
            const __m512 v1 = _mm512_maskz_loadu_ps(t, p1 + k);                                     \
            for (int m = 0; m < MB; m++) {                                                          \
                const __m512 xv = _mm512_maskz_loadu_ps(t, xs + m * ldx + k);                       \
                a0[m] = _mm512_fmadd_ps(xv, v0, a0[m]);                                             \
                a1[m] = _mm512_fmadd_ps(xv, v1, a1[m]);                                             \
            }                                                                                       \
        }                                                                                           \
    }

/* Two weight rows (w0, w1) against MB input rows -> out0[m * ldy], out1[m * ldy]. */
#define DEF_BLOCK(MB)                                                                               \
    static void block_##MB(const float* x, int64_t ldx, const float* w0, const float* w1,          \
                           const int64_t* woff, const int64_t* xoff, const int64_t* len, int64_t S, \
                           float* out0, float* out1, int64_t ldy, float b0, float b1) {             \
        __m512 a0[MB], a1[MB];                                                                      \
        for (int m = 0; m < MB; m++) {                                                              \
            a0[m] = _mm512_setzero_ps();                                                            \
            a1[m] = _mm512_setzero_ps();                                                            \
        }                                                                                           \
        SEGMENT_LOOP(MB)                                                                            \
        for (int m = 0; m < MB; m++) {                                                              \
            out0[m * ldy] = b0 + _mm512_reduce_add_ps(a0[m]);                                       \
            out1[m * ldy] = b1 + _mm512_reduce_add_ps(a1[m]);                                       \
        }                                                                                           \
    }

/* One block per row count, so that any count up to 8 takes one pass over the weight rows (7 rows as
 * 4 + 2 + 1 read each pair three times: a 7-row step measured 1.3x slower than an 8-row one). */
DEF_BLOCK(1)
DEF_BLOCK(2)
DEF_BLOCK(3)
DEF_BLOCK(4)
DEF_BLOCK(5)
DEF_BLOCK(6)
DEF_BLOCK(7)
DEF_BLOCK(8)

typedef void (*block_fn)(const float*, int64_t, const float*, const float*, const int64_t*, const int64_t*,
                         const int64_t*, int64_t, float*, float*, int64_t, float, float);
static const block_fn BLOCKS[9] = {0, block_1, block_2, block_3, block_4, block_5, block_6, block_7, block_8};

#define DISPATCH(MB, O0, O1, LD) BLOCKS[MB](xm, ldx, w0, w1, woff, xoff, len, S, O0, O1, LD, b0, b1)

/* 1 when this CPU runs the AVX-512 code above (built with -march=native, so a CPU without AVX-512 fails at
 * the compile already; the caller checks this too before the first product). */
int ne_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
}

void ne_few_rows_f32(const float* x, int64_t ldx, const float* w, int64_t ldw, const int64_t* rows,
                     const float* bias, const int64_t* woff, const int64_t* xoff, const int64_t* len,
                     int64_t S, float* y, int64_t ldy, int64_t M, int64_t N) {
    int64_t width = 0;
    for (int64_t s = 0; s < S; s++) width += len[s];
    const int64_t pairs = (N + 1) / 2;
    /* threads only where the work pays for waking them (a few microseconds) */
    #pragma omp parallel for schedule(static) if (M * N * width >= (1 << 16))
    for (int64_t p = 0; p < pairs; p++) {
        const int64_t n = 2 * p;
        const int two = n + 1 < N;
        const int64_t r0 = rows ? rows[n] : n;
        const int64_t r1 = two ? (rows ? rows[n + 1] : n + 1) : r0;
        const float* w0 = w + r0 * ldw;
        const float* w1 = w + r1 * ldw;
        const float b0 = bias ? bias[r0] : 0.0f;
        const float b1 = bias ? bias[r1] : 0.0f;
        for (int64_t m0 = 0; m0 < M;) {
            const int64_t left = M - m0;
            const int mb = left >= 8 ? 8 : (int)left;
            const float* xm = x + m0 * ldx;
            float* out = y + m0 * ldy + n;
            if (two) {
                DISPATCH(mb, out, out + 1, ldy);
            } else { /* an odd last row: its partner's results are computed and dropped */
                float lone[8], spill[8];
                DISPATCH(mb, lone, spill, 1);
                for (int m = 0; m < mb; m++) out[m * ldy] = lone[m];
            }
            m0 += mb;
        }
    }
}

/* 5. ne_tiled_f32, the few-rows product on a weight stored in tiles (model/tiles.py):
 *
 *   tiles[p, k, t] = W[p * TILE + t, k]      (P, C, TILE) contiguous: TILE output rows, column-major
 *
 * so the kept columns of any sub-model are, within every kept tile, contiguous TILE-float lines: a budget
 * reads exactly its own bytes, one stream per tile, where a row-major weight gives a column prefix as
 * strided pieces of rows that the hardware prefetcher overruns. Units say which tiles to read and where
 * their kept outputs go: unit u = (tile, first slot, slots, output column), so
 *
 *   y[m, out + j] = bias[tile * TILE + t0 + j] + sum over segments s, i < len[s] of
 *                   x[m, xoff[s] + i] * tiles[tile, woff[s] + i, t0 + j]          for j < slots.
 *
 * Each unit keeps its TILE outputs of up to 16 rows in registers (one AVX-512 vector per row), so no
 * horizontal sums; units are split across the OpenMP threads. */
#define TILE 16
#define TILE_PREFETCH 512 /* floats ahead within the tile's stream: 2 KB */

/* G tiles' TILE outputs of MB rows (acc: G x MB x TILE), one accumulator per (tile, row), each summed over
 * the segments and k in one fixed order. G = 1 for most counts; 1-4 rows take four tiles at a time and 5-8
 * rows two, as independent accumulator chains, so a step of a few rows is not bound by the FMA latency (12
 * weights of 3264 x 1088, one row: 5.6 ms against 7.1). Every (tile, row) sum has the same order whatever G
 * and MB, so a row's outputs are the same bits whether it is decoded alone or in a batch. */
#define DEF_TILEG(G, MB)                                                                               \
    static void tile##G##_##MB(const float* x, int64_t ldx, const float* const* w, const int64_t* woff,  \
                           const int64_t* xoff, const int64_t* len, int64_t S, float* acc) {         \
        __m512 a[G][MB];                                                                            \
        for (int j = 0; j < G; j++)                                                                 \
            for (int m = 0; m < MB; m++) a[j][m] = _mm512_setzero_ps();                             \
        for (int64_t s = 0; s < S; s++) {                                                           \
            const float* xs = x + xoff[s];                                                          \
            const int64_t end = len[s] * TILE;                                                      \
            const float* ws[G];                                                                     \
            for (int j = 0; j < G; j++) ws[j] = w[j] + woff[s] * TILE;                              \
            for (int64_t k = 0; k < len[s]; k++) {                                                  \
                const int64_t ahead = k * TILE + TILE_PREFETCH;                                     \
                const int64_t at = ahead < end ? ahead : end - TILE;                                \
                __m512 v[G];                                                                        \
                for (int j = 0; j < G; j++) {                                                       \
                    _mm_prefetch((const char*)(ws[j] + at), _MM_HINT_T0);                           \
                    v[j] = _mm512_loadu_ps(ws[j] + k * TILE);                                       \
                }                                                                                   \
                for (int m = 0; m < MB; m++) {                                                      \
                    const __m512 xv = _mm512_set1_ps(xs[m * ldx + k]);                              \
                    for (int j = 0; j < G; j++) a[j][m] = _mm512_fmadd_ps(xv, v[j], a[j][m]);       \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
        for (int j = 0; j < G; j++)                                                                 \
            for (int m = 0; m < MB; m++) _mm512_storeu_ps(acc + (j * MB + m) * TILE, a[j][m]);      \
    }

DEF_TILEG(4, 1)
DEF_TILEG(4, 2)
DEF_TILEG(4, 3)
DEF_TILEG(4, 4)
DEF_TILEG(2, 5)
DEF_TILEG(2, 6)
DEF_TILEG(2, 7)
DEF_TILEG(2, 8)
DEF_TILEG(1, 1)
DEF_TILEG(1, 2)
DEF_TILEG(1, 3)
DEF_TILEG(1, 4)
DEF_TILEG(1, 5)
DEF_TILEG(1, 6)
DEF_TILEG(1, 7)
DEF_TILEG(1, 8)
DEF_TILEG(1, 9)
DEF_TILEG(1, 10)
DEF_TILEG(1, 11)
DEF_TILEG(1, 12)
DEF_TILEG(1, 13)
DEF_TILEG(1, 14)
DEF_TILEG(1, 15)
DEF_TILEG(1, 16)

typedef void (*tile_fn)(const float*, int64_t, const float* const*, const int64_t*, const int64_t*,
                        const int64_t*, int64_t, float*);
static const tile_fn GROUPED[9] = {0, tile4_1, tile4_2, tile4_3, tile4_4, tile2_5, tile2_6, tile2_7, tile2_8};
static const tile_fn SINGLE[17] = {0,       tile1_1,  tile1_2,  tile1_3,  tile1_4,  tile1_5,
                                   tile1_6, tile1_7,  tile1_8,  tile1_9,  tile1_10, tile1_11,
                                   tile1_12, tile1_13, tile1_14, tile1_15, tile1_16};

/* Unit u's kept outputs of rows m0 .. m0 + mb - 1, from acc (mb x TILE), plus their bias. */
static void store_unit(const int64_t* units, int64_t u, const float* acc, int64_t mb, int64_t m0, const float* bias,
                       float* y, int64_t ldy) {
    const int64_t tile = units[4 * u], t0 = units[4 * u + 1], slots = units[4 * u + 2], out = units[4 * u + 3];
    for (int64_t m = 0; m < mb; m++)
        for (int64_t j = 0; j < slots; j++)
            y[(m0 + m) * ldy + out + j] = acc[m * TILE + t0 + j] + (bias ? bias[tile * TILE + t0 + j] : 0.0f);
}

void ne_tiled_f32(const float* x, int64_t ldx, const float* tiles, int64_t C, const int64_t* units, int64_t U,
                  const float* bias, const int64_t* woff, const int64_t* xoff, const int64_t* len, int64_t S,
                  float* y, int64_t ldy, int64_t M) {
    int64_t width = 0;
    for (int64_t s = 0; s < S; s++) width += len[s];
    if (M <= 8) { /* groups of G units; a short last group repeats its first tile (computed, dropped) */
        const int64_t G = M <= 4 ? 4 : 2, groups = (U + G - 1) / G;
        #pragma omp parallel for schedule(dynamic, 2) if (M * U * TILE * width >= (1 << 16))
        for (int64_t g = 0; g < groups; g++) {
            const int64_t u0 = G * g, n = U - u0 < G ? U - u0 : G;
            const float* w[4];
            for (int64_t j = 0; j < G; j++) w[j] = tiles + units[4 * (u0 + (j < n ? j : 0))] * C * TILE;
            float acc[4 * 4 * TILE];
            GROUPED[M](x, ldx, w, woff, xoff, len, S, acc);
            for (int64_t j = 0; j < n; j++) store_unit(units, u0 + j, acc + j * M * TILE, M, 0, bias, y, ldy);
        }
        return;
    }
    #pragma omp parallel for schedule(dynamic, 4) if (M * U * TILE * width >= (1 << 16))
    for (int64_t u = 0; u < U; u++) {
        const float* w[1] = {tiles + units[4 * u] * C * TILE};
        float acc[16 * TILE];
        for (int64_t m0 = 0; m0 < M;) {
            const int64_t left = M - m0;
            const int mb = left >= 16 ? 16 : (int)left; /* any count in one pass over the tile */
            SINGLE[mb](x + m0 * ldx, ldx, w, woff, xoff, len, S, acc);
            store_unit(units, u, acc, mb, m0, bias, y, ldy);
            m0 += mb;
        }
    }
}

/* One recurrent Mamba2 step for a batch of rows, the state updated in place in one pass over it
 * (model/ssd.py `ssd_step` does the same in three: decay, add the input, read out):
 *
 *   state[b, h] = exp(dt[b, h] * A[h]) * state[b, h] + dt[b, h] * x[b, h] B[b, h / r]^T   (p x n)
 *   y[b, h]     = state[b, h] C[b, h / r] + D[h] * x[b, h]                                (p)
 *
 * with r = heads / groups heads per B/C group. state: (rows, heads, p, n) contiguous float32; x rows at
 * stride ldx (heads * p contiguous), B / C rows at stride ldbc (groups * n contiguous), dt rows at stride
 * lddt; D may be NULL. y: (rows, heads, p) contiguous. Rows x heads are split across the OpenMP threads. */
void ne_ssm_step_f32(float* state, const float* x, int64_t ldx, const float* dt, int64_t lddt, const float* A,
                     const float* B, const float* C, int64_t ldbc, const float* D, float* y, int64_t rows,
                     int64_t heads, int64_t p, int64_t n, int64_t groups) {
    const int64_t r = heads / groups;
    #pragma omp parallel for schedule(dynamic, 4) if (rows * heads * p * n >= (1 << 15))
    for (int64_t bh = 0; bh < rows * heads; bh++) {
        const int64_t b = bh / heads, hh = bh % heads, gg = hh / r;
        const float step = dt[b * lddt + hh];
        const float decay = expf(step * A[hh]);
        const float skip = D ? D[hh] : 0.0f;
        const float* bv = B + b * ldbc + gg * n;
        const float* cv = C + b * ldbc + gg * n;
        const float* xv = x + b * ldx + hh * p;
        float* s = state + bh * p * n;
        float* out = y + bh * p;
        for (int64_t i = 0; i < p; i++) {
            const float u = step * xv[i];
            float acc = 0.0f;
            float* row = s + i * n;
            #pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < n; j++) {
                const float v = row[j] * decay + u * bv[j];
                row[j] = v;
                acc += v * cv[j];
            }
            out[i] = acc + skip * xv[i];
        }
    }
}

/* RMSNorm of a few rows, optionally gated (Mamba2's output norm) and per group of channels:
 *
 *   v = x[r] * silu(z[r])  (or x[r] when z is NULL)
 *   y[r, group] = w[group] * v[group] / sqrt(mean(v[group]^2) + eps)
 *
 * over `groups` contiguous groups of dim / groups channels (1 group: model/norm.py `rms_norm`; the gated
 * form: `gated_group_rms_norm`). x and z rows at strides ldx and ldz; y: (rows, dim) contiguous. One call
 * where torch runs about ten ops per norm. */
void ne_rms_norm_f32(const float* x, int64_t ldx, const float* z, int64_t ldz, const float* w, float* y,
                     int64_t rows, int64_t dim, int64_t groups, float eps) {
    const int64_t width = dim / groups;
    #pragma omp parallel for schedule(static) if (rows * dim >= (1 << 16))
    for (int64_t rg = 0; rg < rows * groups; rg++) {
        const int64_t r = rg / groups, g = rg % groups;
        const float* xr = x + r * ldx + g * width;
        float* yr = y + r * dim + g * width;
        const float* wr = w + g * width;
        float squares = 0.0f;
        if (z) {
            const float* zr = z + r * ldz + g * width;
            for (int64_t j = 0; j < width; j++) {
                const float v = xr[j] * (zr[j] / (1.0f + expf(-zr[j])));
                yr[j] = v;
                squares += v * v;
            }
        } else {
            #pragma omp simd reduction(+ : squares)
            for (int64_t j = 0; j < width; j++) {
                yr[j] = xr[j];
                squares += xr[j] * xr[j];
            }
        }
        const float inv = 1.0f / sqrtf(squares / (float)width + eps);
        #pragma omp simd
        for (int64_t j = 0; j < width; j++) yr[j] = wr[j] * (yr[j] * inv);
    }
}

/* One step of Mamba2's depthwise causal conv over [x | B | C] for a batch of rows, with SiLU:
 *
 *   out[b, c] = silu(bias[ch] + sum_k<K-1 state[b, c, k] w[ch, k] + x[b, c] w[ch, K-1]),  ch = channels[c]
 *
 * and each row's conv state (its last K-1 inputs) shifted in place to end with x[b] when the row is fed a
 * token (counts[b] == 1; counts NULL: every row), left as it was otherwise (model/mamba2.py `_mix`, where
 * torch concatenates, gathers, multiplies and sums). state: (rows, C, K-1) contiguous; x rows at stride
 * ldx; w: (C_full, K) contiguous, its rows picked by `channels` (NULL: c); bias NULL or (C_full,). */
void ne_conv_step_f32(float* state, const float* x, int64_t ldx, const float* w, const int64_t* channels,
                      const float* bias, const int64_t* counts, float* out, int64_t rows, int64_t C, int64_t K) {
    #pragma omp parallel for schedule(static) if (rows * C >= (1 << 12))
    for (int64_t b = 0; b < rows; b++) {
        const int shift = counts ? counts[b] == 1 : 1;
        for (int64_t c = 0; c < C; c++) {
            const int64_t ch = channels ? channels[c] : c;
            const float* wc = w + ch * K;
            float* s = state + (b * C + c) * (K - 1);
            const float xv = x[b * ldx + c];
            float acc = 0.0f; /* the inputs in time order, the new one last */
            for (int64_t k = 0; k < K - 1; k++) acc += s[k] * wc[k];
            acc += xv * wc[K - 1];
            if (bias) acc += bias[ch];
            out[b * C + c] = acc / (1.0f + expf(-acc));
            if (shift) {
                for (int64_t k = 0; k + 1 < K - 1; k++) s[k] = s[k + 1];
                if (K > 1) s[K - 2] = xv;
            }
        }
    }
}

/* 6. ne_mamba_step_f32: a Mamba2 mixer's step between its two projections for one token per row, in one
 * call where torch's glue between kernels 2-4 ran about 50 small ops (model/mamba2.py `_fused_step`):
 *
 *   xbc = silu(conv(x B C))                       (4, the conv state shifted in place)
 *   dt  = max(softplus(dt_raw + dt_bias), dt_min) * fed[b]   (torch's softplus: x above 20 is kept as is)
 *   ys  = SSM step(x, dt, A, B, C, D)             (2, the SSM state updated in place)
 *   y   = gated group RMSNorm(ys, z, norm_w)      (3)
 *
 * proj rows at stride ldp hold the in-projection [z (I) | x B C (conv_dim) | dt_raw (heads)], I = heads * p,
 * conv_dim = I + 2 * groups * n; fed[b] = (counts[b] == 1), all rows when counts is NULL. scratch:
 * rows * (conv_dim + heads + I) floats; y: (rows, I) contiguous. */
void ne_mamba_step_f32(const float* proj, int64_t ldp, float* conv_state, const float* conv_w,
                       const int64_t* channels, const float* conv_b, const int64_t* counts, int64_t K,
                       const float* dt_bias, float dt_min, const float* A, const float* D, float* ssm_state,
                       int64_t heads, int64_t p, int64_t n, int64_t groups, const float* norm_w, float eps,
                       float* scratch, float* y, int64_t rows) {
    const int64_t I = heads * p, conv_dim = I + 2 * groups * n;
    float* xbc = scratch;                   /* (rows, conv_dim) */
    float* dt = scratch + rows * conv_dim;  /* (rows, heads) */
    float* ys = dt + rows * heads;          /* (rows, I) */
    ne_conv_step_f32(conv_state, proj + I, ldp, conv_w, channels, conv_b, counts, xbc, rows, conv_dim, K);
    for (int64_t b = 0; b < rows; b++) {
        const float fed = counts ? (counts[b] == 1 ? 1.0f : 0.0f) : 1.0f;
        for (int64_t h = 0; h < heads; h++) {
            const float v = proj[b * ldp + I + conv_dim + h] + dt_bias[h];
            float step = v > 20.0f ? v : log1pf(expf(v));
            if (step < dt_min) step = dt_min;
            dt[b * heads + h] = step * fed;
        }
    }
    ne_ssm_step_f32(ssm_state, xbc, conv_dim, dt, heads, A, xbc + I, xbc + I + groups * n, conv_dim, D, ys, rows,
                    heads, p, n, groups);
    ne_rms_norm_f32(ys, I, proj, ldp, norm_w, y, rows, I, groups, eps);
}

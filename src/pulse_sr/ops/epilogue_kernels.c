/* Fused CPU kernels for the synthesis-layer epilogue (see epilogue.py).
 *
 * Layout: x, y, g and du are channels-last, (B, P, C) with P = H * W pixels;
 * noise is (NB, P) with NB = 1 or B, or NULL; s (noise strength) and bias are
 * (C,); per-(b, c) vectors are (B, C). Each function handles pixels [p0, p1)
 * of every sample, so callers split the pixels between threads. Sums are
 * accumulated (+=) in double into per-thread buffers the caller adds up.
 *
 * u = leaky_relu(x + noise * s + bias, 0.2) is recomputed in every pass
 * instead of being stored: at 512 and 1024 px memory traffic, not arithmetic,
 * is the cost.
 */
#include <stddef.h>
#include <stdint.h>

#define SLOPE 0.2f

static inline float pre_act(const float *xr, float nv, const float *s, const float *bias, int64_t c) {
    return xr[c] + nv * s[c] + bias[c];
}

/* sum[b, c] += u, sumsq[b, c] += u * u */
void epi_stats(const float *x, const float *noise, int64_t noise_b, const float *s, const float *bias,
               int64_t B, int64_t P, int64_t C, int64_t p0, int64_t p1, double *sum, double *sumsq) {
    for (int64_t b = 0; b < B; ++b) {
        const float *nb = noise ? noise + (noise_b == 1 ? 0 : b) * P : NULL;
        double *s1 = sum + b * C, *s2 = sumsq + b * C;
        for (int64_t p = p0; p < p1; ++p) {
            const float *xr = x + (b * P + p) * C;
            const float nv = nb ? nb[p] : 0.0f;
            for (int64_t c = 0; c < C; ++c) {
                float v = pre_act(xr, nv, s, bias, c);
                v = v > 0.0f ? v : v * SLOPE;
                s1[c] += v;
                s2[c] += (double)v * v;
            }
        }
    }
}

/* y = (u - mean) * a + beta, with a = rsqrt(var + eps) * gamma */
void epi_forward(const float *x, const float *noise, int64_t noise_b, const float *s, const float *bias,
                 int64_t B, int64_t P, int64_t C, int64_t p0, int64_t p1,
                 const float *mean, const float *a, const float *beta, float *y) {
    for (int64_t b = 0; b < B; ++b) {
        const float *nb = noise ? noise + (noise_b == 1 ? 0 : b) * P : NULL;
        const float *m = mean + b * C, *ab = a + b * C, *be = beta + b * C;
        for (int64_t p = p0; p < p1; ++p) {
            const float *xr = x + (b * P + p) * C;
            float *yr = y + (b * P + p) * C;
            const float nv = nb ? nb[p] : 0.0f;
            for (int64_t c = 0; c < C; ++c) {
                float v = pre_act(xr, nv, s, bias, c);
                v = v > 0.0f ? v : v * SLOPE;
                yr[c] = (v - m[c]) * ab[c] + be[c];
            }
        }
    }
}

/* sg[b, c] += g, sgx[b, c] += g * xhat, with xhat = (u - mean) * r */
void epi_backward_sums(const float *g, const float *x, const float *noise, int64_t noise_b, const float *s,
                       const float *bias, int64_t B, int64_t P, int64_t C, int64_t p0, int64_t p1,
                       const float *mean, const float *r, double *sg, double *sgx) {
    for (int64_t b = 0; b < B; ++b) {
        const float *nb = noise ? noise + (noise_b == 1 ? 0 : b) * P : NULL;
        const float *m = mean + b * C, *rb = r + b * C;
        double *a1 = sg + b * C, *a2 = sgx + b * C;
        for (int64_t p = p0; p < p1; ++p) {
            const float *xr = x + (b * P + p) * C, *gr = g + (b * P + p) * C;
            const float nv = nb ? nb[p] : 0.0f;
            for (int64_t c = 0; c < C; ++c) {
                float v = pre_act(xr, nv, s, bias, c);
                v = v > 0.0f ? v : v * SLOPE;
                a1[c] += gr[c];
                a2[c] += (double)gr[c] * ((v - m[c]) * rb[c]);
            }
        }
    }
}

/* du = a * (g - k1 - xhat * k2) * leaky_relu'(pre), with a = r * gamma, k1 = mean(g),
 * k2 = mean(g * xhat). Optionally: gnoise[b, p] = sum_c du * s (written),
 * gs[b, c] += du * noise, gb[b, c] += du. */
void epi_backward(const float *g, const float *x, const float *noise, int64_t noise_b, const float *s,
                  const float *bias, int64_t B, int64_t P, int64_t C, int64_t p0, int64_t p1,
                  const float *mean, const float *r, const float *a, const float *k1, const float *k2,
                  float *du, float *gnoise, double *gs, double *gb) {
    for (int64_t b = 0; b < B; ++b) {
        const float *nb = noise ? noise + (noise_b == 1 ? 0 : b) * P : NULL;
        const float *m = mean + b * C, *rb = r + b * C, *ab = a + b * C, *k1b = k1 + b * C, *k2b = k2 + b * C;
        double *gsb = gs ? gs + b * C : NULL, *gbb = gb ? gb + b * C : NULL;
        for (int64_t p = p0; p < p1; ++p) {
            const float *xr = x + (b * P + p) * C, *gr = g + (b * P + p) * C;
            float *dr = du + (b * P + p) * C;
            const float nv = nb ? nb[p] : 0.0f;
            for (int64_t c = 0; c < C; ++c) {
                const float pre = pre_act(xr, nv, s, bias, c);
                const float slope = pre > 0.0f ? 1.0f : SLOPE;
                const float xh = (pre * slope - m[c]) * rb[c];
                dr[c] = ab[c] * (gr[c] - k1b[c] - xh * k2b[c]) * slope;
            }
            if (gnoise) {  /* the row is still in L1; a separate loop keeps the one above vectorised */
                float acc = 0.0f;
                for (int64_t c = 0; c < C; ++c) acc += dr[c] * s[c];
                gnoise[b * P + p] = acc;
            }
            if (gsb) for (int64_t c = 0; c < C; ++c) gsb[c] += (double)dr[c] * nv;
            if (gbb) for (int64_t c = 0; c < C; ++c) gbb[c] += dr[c];
        }
    }
}

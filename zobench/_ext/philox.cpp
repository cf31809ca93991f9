// Counter-based random directions for zobench: Philox4x32-R and a Gaussian transform, in three variants (streams):
//   philox       (optimizer.direction_stream=philox)       Philox4x32-10, Box–Muller: Cephes' logf, sin/cos of 4 terms;
//   philox_fast  (optimizer.direction_stream=philox_fast)  Philox4x32-7, Box–Muller: a degree-4 log, sin/cos of 3 terms;
//   philox_icdf  (optimizer.direction_stream=philox_icdf)  Philox4x32-7, z = Phi^-1(u) of each word: a degree-6
//                polynomial per binade of u, looked up by a count of leading zeros (zobench/optim/philox_icdf.py).
// The same layout, counters and keys; other numbers (see zobench/optim/philox.py for the definitions).
//
// The numbers are defined in zobench/optim/philox.py, which also holds a pure-torch implementation of the same
// arithmetic; the two must agree bit for bit (tests/test_directions_fast.py). Every floating-point operation
// here is one correctly rounded IEEE-754 binary32 operation (+, -, *, sqrt, int -> float of an exact integer),
// written in the order the torch code performs it: the file MUST be compiled with -ffp-contract=off (no fused
// multiply-add) and without -ffast-math. No libm call is made: log, sin and cos are polynomials evaluated here.
// SIMD: Philox rounds hand-written for AVX-512 and AVX2 (vpmuludq), the rest vectorized by the compiler in
// one copy of the tile loop per instruction set, chosen at run time (the numbers are the same in each).
//
// Layout (Gaussian): element k of tensor `index` comes from Philox block b = 16*(k/64) + k%16, word
// w = (k/16)%4, with counter (b mod 2^32, b / 2^32, index, tag) and key (seed mod 2^32, seed / 2^32); tag 0
// (philox, philox_fast) or 2 (philox_icdf, whose element k is icdf of word w alone).
// Words (x0, x1) give elements w = 0, 1 (radius from x0, angle from x1); (x2, x3) give w = 2, 3.
// Rademacher: element k is bit k%32 of word (k/32)%4 of block b = k/128, counter (b lo, b hi, index, 1).
//
// Entry point: zb_philox (C ABI, loaded with ctypes). Threads: OpenMP over tiles of 1024 elements; each
// element depends only on (seed, index, k), so the thread count never changes a number.
#include <cstdint>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(ZB_NO_SIMD)
#include <immintrin.h>
#define ZB_X86 1  // hand-written Philox rounds for AVX-512 and AVX2, picked at run time
#define ZB_TARGET(isa) __attribute__((target(isa)))
#define ZB_AVX512 "avx512f,avx512cd"  // every AVX-512 CPU has CD (vplzcntd, for philox_icdf)
#endif

#if defined(__FLT16_MAX__)
#define ZB_HAVE_F16 1  // float16 tensors handled here (GCC >= 12, clang >= 15 on x86-64 and arm64)
#endif

#define ZB_INLINE inline __attribute__((always_inline))

namespace {

constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;  // Philox4x32 multipliers (Salmon et al. 2011)
constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;  // Weyl key increments
constexpr int TILE = 1024;                               // elements per tile (one thread's unit of work)
constexpr int TILE_BLOCKS = 256;                         // Philox blocks per Gaussian tile

// log: Cephes logf (S. Moshier), coefficients as binary32.
constexpr float LP0 = 7.0376836292E-2f, LP1 = -1.1514610310E-1f, LP2 = 1.1676998740E-1f,
                LP3 = -1.2420140846E-1f, LP4 = 1.4249322787E-1f, LP5 = -1.6668057665E-1f,
                LP6 = 2.0000714765E-1f, LP7 = -2.4999993993E-1f, LP8 = 3.3333331174E-1f;
constexpr float SQRTHF = 0.707106769084930419921875f, LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
// sin(pi/2 t) = t (S1 + t^2 (S3 + t^2 (S5 + t^2 S7))), cos(pi/2 t) = 1 + t^2 (C2 + ...), t in [0, 1/2]
// (minimax fits, max error 1.7 ulp (sin) and 1.2 ulp (cos) over every t the generator uses).
constexpr float S1 = 1.5707963705062866f, S3 = -0.6459634900093079f, S5 = 0.07968003302812576f,
                S7 = -0.004601661115884781f;
constexpr float C2 = -1.2337005138397217f, C4 = 0.25366923213005066f, C6 = -0.02086016535758972f,
                C8 = 0.0009037667186930776f;

// The polynomials of each variant, highest degree first (Horner). philox: the constants above. philox_fast:
// near-minimax fits rounded to binary32 (zobench/optim/philox.py says how): ln(1 + f) = f - f^2/2 + f^3 P(f) with
// P of degree 4 (|error| <= 3.8e-7 on [sqrt(1/2) - 1, sqrt(2) - 1]), sin(pi/2 t) = t (T1 + t^2 (T3 + t^2 T5))
// (5.7e-7), cos(pi/2 t) = 1 + t^2 (D2 + t^2 (D4 + t^2 D6)) (4.7e-8), t in [0, 1/2].
struct Accurate {
  static constexpr int ROUNDS = 10;
  static constexpr bool ICDF = false;
  static constexpr uint32_t GAUSSIAN_TAG = 0;  // the counter's last word for Gaussian blocks (Rademacher: 1)
  static constexpr float LOG[9] = {LP0, LP1, LP2, LP3, LP4, LP5, LP6, LP7, LP8};
  static constexpr float SIN[3] = {S7, S5, S3};  // then + S1, * t
  static constexpr float SIN1 = S1;
  static constexpr float COS[4] = {C8, C6, C4, C2};  // then + 1
};
struct Fast {
  static constexpr int ROUNDS = 7;
  static constexpr bool ICDF = false;
  static constexpr uint32_t GAUSSIAN_TAG = 0;
  static constexpr float LOG[5] = {0.11708072572946548f, -0.18496902287006378f, 0.20493799448013306f,
                                   -0.24936868250370026f, 0.33317431807518005f};
  static constexpr float SIN[2] = {0.07766739279031754f, -0.6457120180130005f};
  static constexpr float SIN1 = 1.5707885026931763f;
  static constexpr float COS[3] = {-0.020426249131560326f, 0.2536063492298126f, -1.2336980104446411f};
};

// philox_icdf: Philox4x32-7 and the inverse-CDF transform (icdf below).
struct Icdf {
  static constexpr int ROUNDS = 7;
  static constexpr bool ICDF = true;
  static constexpr uint32_t GAUSSIAN_TAG = 2;  // not philox_fast's words: the two streams' z are independent
};
constexpr int ICDF_DEGREE = 6;
// ICDF[i][k]: the coefficient of t^i in Q_k, binade k's polynomial (zobench/optim/philox_icdf.py: fit_table,
// TABLE_BITS; printed by python -m zobench.optim.philox_icdf).
alignas(64) constexpr float ICDF[ICDF_DEGREE + 1][32] = {
    {-0x1.4649640000000p-2f, -0x1.c638120000000p-1f, -0x1.51692a0000000p+0f, -0x1.ad0a620000000p+0f, -0x1.fcc8120000000p+0f, -0x1.2213b80000000p+1f, -0x1.429fd00000000p+1f, -0x1.60b5d40000000p+1f, -0x1.7ccd7a0000000p+1f, -0x1.973d580000000p+1f, -0x1.b046520000000p+1f, -0x1.c81a780000000p+1f, -0x1.dee15c0000000p+1f, -0x1.f4bae00000000p+1f, -0x1.04e0920000000p+2f, -0x1.0f04ec0000000p+2f, -0x1.18d3a60000000p+2f, -0x1.2254820000000p+2f, -0x1.2b8e2e0000000p+2f, -0x1.3486720000000p+2f, -0x1.3d425a0000000p+2f, -0x1.45c6580000000p+2f, -0x1.4e16560000000p+2f, -0x1.5635d00000000p+2f, -0x1.5e27e80000000p+2f, -0x1.65ef680000000p+2f, -0x1.6d8ed80000000p+2f, -0x1.7508840000000p+2f, -0x1.7c5e7c0000000p+2f, -0x1.8392aa0000000p+2f, -0x1.8aa6c80000000p+2f, -0x1.919c6e0000000p+2f},
    {0x1.518f820000000p-1f, 0x1.db8fd40000000p-2f, 0x1.7e61280000000p-2f, 0x1.46b63a0000000p-2f, 0x1.2103f60000000p-2f, 0x1.05766a0000000p-2f, 0x1.e084b40000000p-3f, 0x1.bea6b40000000p-3f, 0x1.a2d6240000000p-3f, 0x1.8b7cec0000000p-3f, 0x1.778ab80000000p-3f, 0x1.6641720000000p-3f, 0x1.5718040000000p-3f, 0x1.49a8ce0000000p-3f, 0x1.3da6c40000000p-3f, 0x1.32d6480000000p-3f, 0x1.29086c0000000p-3f, 0x1.2017b80000000p-3f, 0x1.17e5d40000000p-3f, 0x1.1059e40000000p-3f, 0x1.095f580000000p-3f, 0x1.02e4fc0000000p-3f, 0x1.f9b8a80000000p-4f, 0x1.ee72200000000p-4f, 0x1.e3e1520000000p-4f, 0x1.d9f4180000000p-4f, 0x1.d09abc0000000p-4f, 0x1.c7c78c0000000p-4f, 0x1.bf6e8e0000000p-4f, 0x1.b785320000000p-4f, 0x1.b002280000000p-4f, 0x1.a8dd2a0000000p-4f},
    {-0x1.1baa9c0000000p-4f, -0x1.87df320000000p-4f, -0x1.78646a0000000p-4f, -0x1.5d65ac0000000p-4f, -0x1.443cfa0000000p-4f, -0x1.2e96aa0000000p-4f, -0x1.1c2b480000000p-4f, -0x1.0c6b780000000p-4f, -0x1.fda8440000000p-5f, -0x1.e5f73e0000000p-5f, -0x1.d11ed80000000p-5f, -0x1.be9ebc0000000p-5f, -0x1.ae12800000000p-5f, -0x1.9f2ad60000000p-5f, -0x1.91a86e0000000p-5f, -0x1.8558360000000p-5f, -0x1.7a108a0000000p-5f, -0x1.6faf1e0000000p-5f, -0x1.66177c0000000p-5f, -0x1.5d31c40000000p-5f, -0x1.54e9d20000000p-5f, -0x1.4d2e860000000p-5f, -0x1.45f1320000000p-5f, -0x1.3f25340000000p-5f, -0x1.38bf9a0000000p-5f, -0x1.32b6d80000000p-5f, -0x1.2d02940000000p-5f, -0x1.279b780000000p-5f, -0x1.227b040000000p-5f, -0x1.1d9b760000000p-5f, -0x1.18f7b00000000p-5f, -0x1.148b1e0000000p-5f},
    {0x1.d4e2d60000000p-5f, 0x1.5e60800000000p-5f, 0x1.3c8e220000000p-5f, 0x1.2403660000000p-5f, 0x1.0fd9660000000p-5f, 0x1.fdcff00000000p-6f, 0x1.e0fac60000000p-6f, 0x1.c82a8e0000000p-6f, 0x1.b2953a0000000p-6f, 0x1.9f9fd80000000p-6f, 0x1.8ed2d40000000p-6f, 0x1.7fd0f60000000p-6f, 0x1.7250cc0000000p-6f, 0x1.6617ce0000000p-6f, 0x1.5af6d60000000p-6f, 0x1.50c77c0000000p-6f, 0x1.476a300000000p-6f, 0x1.3ec4c40000000p-6f, 0x1.36c14c0000000p-6f, 0x1.2f4d4c0000000p-6f, 0x1.2859120000000p-6f, 0x1.21d72e0000000p-6f, 0x1.1bbc120000000p-6f, 0x1.15fdbe0000000p-6f, 0x1.10937c0000000p-6f, 0x1.0b75ac0000000p-6f, 0x1.069da00000000p-6f, 0x1.02056e0000000p-6f, 0x1.fb4fae0000000p-7f, 0x1.f3006a0000000p-7f, 0x1.eb14bc0000000p-7f, 0x1.e3852c0000000p-7f},
    {-0x1.36b43c0000000p-6f, -0x1.4857b00000000p-6f, -0x1.2f09300000000p-6f, -0x1.1921000000000p-6f, -0x1.06be720000000p-6f, -0x1.ee5c220000000p-7f, -0x1.d3b63c0000000p-7f, -0x1.bca5980000000p-7f, -0x1.a87a5c0000000p-7f, -0x1.96ad4e0000000p-7f, -0x1.86d5920000000p-7f, -0x1.78a0f60000000p-7f, -0x1.6bce500000000p-7f, -0x1.60295e0000000p-7f, -0x1.5587cc0000000p-7f, -0x1.4bc6f20000000p-7f, -0x1.42ca2e0000000p-7f, -0x1.3a79a00000000p-7f, -0x1.32c13a0000000p-7f, -0x1.2b8ffe0000000p-7f, -0x1.24d7720000000p-7f, -0x1.1e8b280000000p-7f, -0x1.18a0640000000p-7f, -0x1.130dd60000000p-7f, -0x1.0dcb5e0000000p-7f, -0x1.08d1da0000000p-7f, -0x1.041b040000000p-7f, -0x1.ff42940000000p-8f, -0x1.f6bf840000000p-8f, -0x1.eea4060000000p-8f, -0x1.e6e83c0000000p-8f, -0x1.df85160000000p-8f},
    {0x1.ce16260000000p-7f, 0x1.894a260000000p-7f, 0x1.6aee780000000p-7f, 0x1.51d9700000000p-7f, 0x1.3cbf9a0000000p-7f, 0x1.2acb600000000p-7f, 0x1.1b58340000000p-7f, 0x1.0de81a0000000p-7f, 0x1.021a8e0000000p-7f, 0x1.ef4a1e0000000p-8f, 0x1.dc9b2c0000000p-8f, 0x1.cbccce0000000p-8f, 0x1.bc961a0000000p-8f, 0x1.aebc520000000p-8f, 0x1.a20f9a0000000p-8f, 0x1.9668a00000000p-8f, 0x1.8ba6bc0000000p-8f, 0x1.81ae9e0000000p-8f, 0x1.78693c0000000p-8f, 0x1.6fc3020000000p-8f, 0x1.67ab340000000p-8f, 0x1.6013680000000p-8f, 0x1.58ef260000000p-8f, 0x1.5233960000000p-8f, 0x1.4bd7360000000p-8f, 0x1.45d1ae0000000p-8f, 0x1.401ba40000000p-8f, 0x1.3aae900000000p-8f, 0x1.3584a40000000p-8f, 0x1.3098b00000000p-8f, 0x1.2be60e0000000p-8f, 0x1.2768900000000p-8f},
    {-0x1.bea5ee0000000p-8f, -0x1.ad63fa0000000p-8f, -0x1.8d8b6c0000000p-8f, -0x1.72e23e0000000p-8f, -0x1.5c61140000000p-8f, -0x1.492a9a0000000p-8f, -0x1.3894540000000p-8f, -0x1.2a1be80000000p-8f, -0x1.1d5d520000000p-8f, -0x1.120b2e0000000p-8f, -0x1.07e8fe0000000p-8f, -0x1.fd8ddc0000000p-9f, -0x1.ecfd720000000p-9f, -0x1.dde2e60000000p-9f, -0x1.d00bb00000000p-9f, -0x1.c34e280000000p-9f, -0x1.b787a60000000p-9f, -0x1.ac9b140000000p-9f, -0x1.a26fe20000000p-9f, -0x1.98f11e0000000p-9f, -0x1.900ce00000000p-9f, -0x1.87b3b00000000p-9f, -0x1.7fd8260000000p-9f, -0x1.786e960000000p-9f, -0x1.716cc40000000p-9f, -0x1.6ac9ae0000000p-9f, -0x1.647d600000000p-9f, -0x1.5e80cc0000000p-9f, -0x1.58cda40000000p-9f, -0x1.535e4e0000000p-9f, -0x1.4e2dbc0000000p-9f, -0x1.4937660000000p-9f},
};

// c[0] x, then (y + c[i]) x for i = 1 .. N-1: one binary32 multiply and add per step, in this order.
template <int N>
ZB_INLINE float horner(const float (&c)[N], float x) {
  float y = c[0] * x;
#pragma GCC unroll 16
  for (int i = 1; i < N; ++i) {
    y = y + c[i];
    y = y * x;
  }
  return y;
}

ZB_INLINE float bits_to_float(uint32_t b) { float f; std::memcpy(&f, &b, 4); return f; }
ZB_INLINE uint32_t float_to_bits(float f) { uint32_t b; std::memcpy(&b, &f, 4); return b; }

// Philox4x32-R of counters (c0[j], c1[j], index, tag), j in [0, nb): the reference code (any CPU).
template <int R>
void philox_scalar(const uint32_t* __restrict c0in, const uint32_t* __restrict c1in, int nb, uint32_t index,
                   uint32_t tag, uint32_t k0, uint32_t k1, uint32_t* __restrict x0, uint32_t* __restrict x1,
                   uint32_t* __restrict x2, uint32_t* __restrict x3) {
  for (int j = 0; j < nb; ++j) {
    uint32_t c0 = c0in[j], c1 = c1in[j], c2 = index, c3 = tag, kk0 = k0, kk1 = k1;
    for (int r = 0; r < R; ++r) {
      const uint64_t p0 = (uint64_t)M0 * c0, p1 = (uint64_t)M1 * c2;
      const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ kk0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ kk1;
      c1 = (uint32_t)p1;
      c3 = (uint32_t)p0;
      c0 = n0;
      c2 = n2;
      kk0 += W0;
      kk1 += W1;
    }
    x0[j] = c0; x1[j] = c1; x2[j] = c2; x3[j] = c3;
  }
}

#ifdef ZB_X86
// The same rounds, SIMD: each 64-bit lane holds one counter word in its low half. vpmuludq multiplies the low
// halves only, so a product's high half needs no masking (the low half of a product is the next c1 / c3
// as it stands); V independent vectors per step keep the multiplier busy.
template <int V, int R>
ZB_TARGET(ZB_AVX512) inline int philox_avx512_v(const uint32_t* __restrict c0in, const uint32_t* __restrict c1in,
                                                int j, int nb, uint32_t index, uint32_t tag, uint32_t k0,
                                                uint32_t k1, uint32_t* __restrict x0, uint32_t* __restrict x1,
                                                uint32_t* __restrict x2, uint32_t* __restrict x3) {
  const __m512i m0 = _mm512_set1_epi64(M0), m1 = _mm512_set1_epi64(M1);
  for (; j + 8 * V <= nb; j += 8 * V) {
    __m512i c0[V], c1[V], c2[V], c3[V];
    for (int v = 0; v < V; ++v) {
      c0[v] = _mm512_cvtepu32_epi64(_mm256_loadu_si256((const __m256i*)(c0in + j + 8 * v)));
      c1[v] = _mm512_cvtepu32_epi64(_mm256_loadu_si256((const __m256i*)(c1in + j + 8 * v)));
      c2[v] = _mm512_set1_epi64(index);
      c3[v] = _mm512_set1_epi64(tag);
    }
    uint32_t kk0 = k0, kk1 = k1;
    for (int r = 0; r < R; ++r) {
      const __m512i K0 = _mm512_set1_epi64(kk0), K1 = _mm512_set1_epi64(kk1);
      for (int v = 0; v < V; ++v) {
        const __m512i p0 = _mm512_mul_epu32(c0[v], m0), p1 = _mm512_mul_epu32(c2[v], m1);
        c0[v] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p1, 32), c1[v], K0, 0x96);  // hi1 ^ c1 ^ k0
        c2[v] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p0, 32), c3[v], K1, 0x96);  // hi0 ^ c3 ^ k1
        c1[v] = p1;  // lo1 (and hi1 above it)
        c3[v] = p0;  // lo0
      }
      kk0 += W0;
      kk1 += W1;
    }
    for (int v = 0; v < V; ++v) {
      _mm256_storeu_si256((__m256i*)(x0 + j + 8 * v), _mm512_cvtepi64_epi32(c0[v]));
      _mm256_storeu_si256((__m256i*)(x1 + j + 8 * v), _mm512_cvtepi64_epi32(c1[v]));
      _mm256_storeu_si256((__m256i*)(x2 + j + 8 * v), _mm512_cvtepi64_epi32(c2[v]));
      _mm256_storeu_si256((__m256i*)(x3 + j + 8 * v), _mm512_cvtepi64_epi32(c3[v]));
    }
  }
  return j;
}

template <int R>
ZB_TARGET(ZB_AVX512) void philox_avx512(const uint32_t* __restrict c0in, const uint32_t* __restrict c1in, int nb,
                                        uint32_t index, uint32_t tag, uint32_t k0, uint32_t k1,
                                        uint32_t* __restrict x0, uint32_t* __restrict x1, uint32_t* __restrict x2,
                                        uint32_t* __restrict x3) {
  int j = philox_avx512_v<4, R>(c0in, c1in, 0, nb, index, tag, k0, k1, x0, x1, x2, x3);
  j = philox_avx512_v<1, R>(c0in, c1in, j, nb, index, tag, k0, k1, x0, x1, x2, x3);
  philox_scalar<R>(c0in + j, c1in + j, nb - j, index, tag, k0, k1, x0 + j, x1 + j, x2 + j, x3 + j);
}

template <int V, int R>
ZB_TARGET("avx2") inline int philox_avx2_v(const uint32_t* __restrict c0in, const uint32_t* __restrict c1in, int j,
                                           int nb, uint32_t index, uint32_t tag, uint32_t k0, uint32_t k1,
                                           uint32_t* __restrict x0, uint32_t* __restrict x1, uint32_t* __restrict x2,
                                           uint32_t* __restrict x3) {
  const __m256i m0 = _mm256_set1_epi64x(M0), m1 = _mm256_set1_epi64x(M1);
  const __m256i low = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);  // the low halves of four 64-bit lanes
  for (; j + 4 * V <= nb; j += 4 * V) {
    __m256i c0[V], c1[V], c2[V], c3[V];
    for (int v = 0; v < V; ++v) {
      c0[v] = _mm256_cvtepu32_epi64(_mm_loadu_si128((const __m128i*)(c0in + j + 4 * v)));
      c1[v] = _mm256_cvtepu32_epi64(_mm_loadu_si128((const __m128i*)(c1in + j + 4 * v)));
      c2[v] = _mm256_set1_epi64x(index);
      c3[v] = _mm256_set1_epi64x(tag);
    }
    uint32_t kk0 = k0, kk1 = k1;
    for (int r = 0; r < R; ++r) {
      const __m256i K0 = _mm256_set1_epi64x(kk0), K1 = _mm256_set1_epi64x(kk1);
      for (int v = 0; v < V; ++v) {
        const __m256i p0 = _mm256_mul_epu32(c0[v], m0), p1 = _mm256_mul_epu32(c2[v], m1);
        c0[v] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), c1[v]), K0);
        c2[v] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), c3[v]), K1);
        c1[v] = p1;
        c3[v] = p0;
      }
      kk0 += W0;
      kk1 += W1;
    }
    for (int v = 0; v < V; ++v) {
      _mm_storeu_si128((__m128i*)(x0 + j + 4 * v), _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(c0[v], low)));
      _mm_storeu_si128((__m128i*)(x1 + j + 4 * v), _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(c1[v], low)));
      _mm_storeu_si128((__m128i*)(x2 + j + 4 * v), _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(c2[v], low)));
      _mm_storeu_si128((__m128i*)(x3 + j + 4 * v), _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(c3[v], low)));
    }
  }
  return j;
}

template <int R>
ZB_TARGET("avx2") void philox_avx2(const uint32_t* __restrict c0in, const uint32_t* __restrict c1in, int nb,
                                   uint32_t index, uint32_t tag, uint32_t k0, uint32_t k1, uint32_t* __restrict x0,
                                   uint32_t* __restrict x1, uint32_t* __restrict x2, uint32_t* __restrict x3) {
  int j = philox_avx2_v<4, R>(c0in, c1in, 0, nb, index, tag, k0, k1, x0, x1, x2, x3);
  j = philox_avx2_v<1, R>(c0in, c1in, j, nb, index, tag, k0, k1, x0, x1, x2, x3);
  philox_scalar<R>(c0in + j, c1in + j, nb - j, index, tag, k0, k1, x0 + j, x1 + j, x2 + j, x3 + j);
}
#endif

// sqrt(-2 ln u), u = (2^24 - (x >> 8)) 2^-24 in (0, 1]: at most 5.77. Selections are written on bits
// (branch-free) so that the compiler vectorizes the loops that call this.
template <class P>
ZB_INLINE float radius(uint32_t x) {
  const float u = (float)(int32_t)(0x1000000u - (x >> 8)) * 5.9604644775390625e-08f;  // exact
  const uint32_t bits = float_to_bits(u);
  const float m = bits_to_float((bits & 0x7FFFFFu) | 0x3F000000u);  // u = m 2^e, m in [1/2, 1)
  const uint32_t small = m < SQRTHF ? 1u : 0u;                        // then u = (2m) 2^(e-1)
  const int32_t e = (int32_t)(bits >> 23) - 126 - (int32_t)small;
  const float m2 = m + m;
  const uint32_t sel = 0u - small;
  const float f = bits_to_float((float_to_bits(m2) & sel) | (float_to_bits(m) & ~sel)) - 1.0f;
  const float z = f * f;
  float y = horner(P::LOG, f);  // f P(f)
  y = y * z;
  const float fe = (float)e;
  y = y + LN2_LO * fe;
  y = y + (-0.5f) * z;
  float l = f + y;
  l = l + LN2_HI * fe;  // ln u
  return __builtin_sqrtf(l * -2.0f);
}

// (sin, cos) of 2 pi (x >> 8) 2^-24, the quadrant and the reflection taken exactly on the integer.
template <class P>
ZB_INLINE void sincos_turn(uint32_t x, float& s, float& c) {
  const uint32_t k = x >> 8, q = k >> 22, f = k & 0x3FFFFFu;
  const uint32_t refl = f > 0x200000u ? 1u : 0u;
  const uint32_t fr = refl ? 0x400000u - f : f;
  const float t = (float)(int32_t)fr * 2.384185791015625e-07f;  // exact, in [0, 1/2]
  const float t2 = t * t;
  float sp = horner(P::SIN, t2);
  sp = sp + P::SIN1; sp = sp * t;
  float cp = horner(P::COS, t2);
  cp = cp + 1.0f;
  const uint32_t swap = 0u - ((refl ^ q) & 1u);  // all ones: sin <- cp, cos <- sp
  const uint32_t sb = float_to_bits(sp), cb = float_to_bits(cp);
  const uint32_t ab = (cb & swap) | (sb & ~swap), bb = (sb & swap) | (cb & ~swap);
  s = bits_to_float(ab ^ ((q & 2u) << 30));          // negated in quadrants 2, 3
  c = bits_to_float(bb ^ (((q + 1u) & 2u) << 30));   // negated in quadrants 1, 2
}

// z of word w (philox_icdf): x = 2 (w mod 2^31) + 1, k = clz(x), y = x 2^k, t = 1.(bits 30..8 of y) - 3/2 (exact),
// z = Q_k(t) = c0 + t (c1 + ... + t c6) in binary32, one operation at a time (< 0), negated when bit 31 of w is set.
ZB_INLINE float icdf(uint32_t w) {
  const uint32_t x = (w << 1) | 1u;
  const int k = __builtin_clz(x);
  const uint32_t y = x << k;
  const float t = bits_to_float(0x3F800000u | ((y >> 8) & 0x7FFFFFu)) - 1.5f;
  float p = ICDF[ICDF_DEGREE][k] * t;
#pragma GCC unroll 8
  for (int i = ICDF_DEGREE - 1; i >= 1; --i) {
    p = p + ICDF[i][k];
    p = p * t;
  }
  p = p + ICDF[0][k];
  return bits_to_float(float_to_bits(p) ^ (w & 0x80000000u));
}

#ifdef ZB_X86
// icdf on 16 words: the same operations; each coefficient looked up from the 32-entry table in two registers.
struct IcdfTable16 {
  __m512 lo[ICDF_DEGREE + 1], hi[ICDF_DEGREE + 1];
};
ZB_TARGET(ZB_AVX512) ZB_INLINE void load_icdf16(IcdfTable16& tb) {
  for (int i = 0; i <= ICDF_DEGREE; ++i) {
    tb.lo[i] = _mm512_load_ps(ICDF[i]);
    tb.hi[i] = _mm512_load_ps(ICDF[i] + 16);
  }
}
ZB_TARGET(ZB_AVX512) ZB_INLINE __m512 icdf16(__m512i w, const IcdfTable16& tb) {
  const __m512i x = _mm512_or_si512(_mm512_slli_epi32(w, 1), _mm512_set1_epi32(1));
  const __m512i k = _mm512_lzcnt_epi32(x);
  const __m512i y = _mm512_sllv_epi32(x, k);
  const __m512i m = _mm512_ternarylogic_epi32(_mm512_srli_epi32(y, 8), _mm512_set1_epi32(0x7FFFFF),
                                              _mm512_set1_epi32(0x3F800000), 0xEA);  // (a & b) | c
  const __m512 t = _mm512_sub_ps(_mm512_castsi512_ps(m), _mm512_set1_ps(1.5f));
  __m512 p = _mm512_mul_ps(_mm512_permutex2var_ps(tb.lo[ICDF_DEGREE], k, tb.hi[ICDF_DEGREE]), t);
  for (int i = ICDF_DEGREE - 1; i >= 1; --i) {
    p = _mm512_add_ps(p, _mm512_permutex2var_ps(tb.lo[i], k, tb.hi[i]));
    p = _mm512_mul_ps(p, t);
  }
  p = _mm512_add_ps(p, _mm512_permutex2var_ps(tb.lo[0], k, tb.hi[0]));
  return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(p), w, _mm512_set1_epi32(0x80000000),
                                                       0x78));  // a ^ (b & c)
}
#endif

ZB_INLINE uint16_t to_bf16(float f) {  // round to nearest even, as c10::BFloat16
  const uint32_t b = float_to_bits(f);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
  return (uint16_t)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}
ZB_INLINE float from_bf16(uint16_t h) { return bits_to_float((uint32_t)h << 16); }

using PhiloxFn = void (*)(const uint32_t*, const uint32_t*, int, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t*,
                          uint32_t*, uint32_t*, uint32_t*);

struct Job {
  void* out;
  int dtype;  // 0 float32, 1 float64, 2 bfloat16, 3 float16
  int mode;   // 0: out = z (cast to dtype), 1: out += (float)(z * scale)
  int64_t n, first;
  uint32_t k0, k1, index;
  int dist;   // 0 Gaussian, 1 Rademacher
  float scale;
  int64_t unit0;  // first group (Gaussian) / block (Rademacher) of the range
  int variant;    // 0 philox (Accurate), 1 philox_fast (Fast), 2 philox_icdf (Icdf)
};

// Philox words of blocks [b0, b0 + nb) (the counter's low word may wrap into the high one).
ZB_INLINE void blocks(PhiloxFn philox, uint64_t b0, int nb, uint32_t index, uint32_t tag, uint32_t k0, uint32_t k1,
                      uint32_t* x0, uint32_t* x1, uint32_t* x2, uint32_t* x3) {
  alignas(64) uint32_t c0[TILE_BLOCKS], c1[TILE_BLOCKS];
  for (int j = 0; j < nb; ++j) {
    const uint64_t b = b0 + (uint64_t)j;
    c0[j] = (uint32_t)b;
    c1[j] = (uint32_t)(b >> 32);
  }
  philox(c0, c1, nb, index, tag, k0, k1, x0, x1, x2, x3);
}

#ifdef ZB_X86
// philox_icdf's values of ng groups: element 64 g + 16 w + l from word w of block 16 g + l.
ZB_TARGET(ZB_AVX512) void icdf_groups_avx512(const uint32_t* const xs[4], int ng, float* __restrict z) {
  IcdfTable16 tb;
  load_icdf16(tb);
  for (int g = 0; g < ng; ++g)
    for (int w = 0; w < 4; ++w)
      _mm512_store_ps(z + 64 * g + 16 * w, icdf16(_mm512_load_si512((const void*)(xs[w] + 16 * g)), tb));
}
#endif

// The Gaussian values of elements [64 g0, 64 (g0 + ng)) into z (ng <= 16): group g holds the 16 values of
// word 0 of its blocks, then those of words 1, 2, 3 (16 lanes: one AVX-512 vector, two AVX2 ones). philox_icdf:
// element 64 g + 16 w + l is icdf of word w of block 16 g + l; the others: Box–Muller on words (0, 1) and (2, 3).
template <class P, int ISA>
ZB_INLINE void gaussian_tile(PhiloxFn philox, uint64_t g0, int ng, uint32_t index, uint32_t k0, uint32_t k1,
                             float* __restrict z) {
  alignas(64) uint32_t x0[TILE_BLOCKS], x1[TILE_BLOCKS], x2[TILE_BLOCKS], x3[TILE_BLOCKS];
  blocks(philox, 16 * g0, 16 * ng, index, P::GAUSSIAN_TAG, k0, k1, x0, x1, x2, x3);
  if constexpr (P::ICDF) {
    const uint32_t* xs[4] = {x0, x1, x2, x3};
#ifdef ZB_X86
    if constexpr (ISA == 2) {
      icdf_groups_avx512(xs, ng, z);
      return;
    }
#endif
    for (int g = 0; g < ng; ++g)
      for (int w = 0; w < 4; ++w)
        for (int l = 0; l < 16; ++l) z[64 * g + 16 * w + l] = icdf(xs[w][16 * g + l]);
  } else {
    for (int g = 0; g < ng; ++g) {
      float* __restrict zg = z + 64 * g;
      const int o = 16 * g;
      for (int l = 0; l < 16; ++l) {
        float s, c;
        const float r0 = radius<P>(x0[o + l]);
        sincos_turn<P>(x1[o + l], s, c);
        zg[l] = r0 * c;
        zg[16 + l] = r0 * s;
        const float r2 = radius<P>(x2[o + l]);
        sincos_turn<P>(x3[o + l], s, c);
        zg[32 + l] = r2 * c;
        zg[48 + l] = r2 * s;
      }
    }
  }
}

// The +-1 values of elements [128 b0, 128 (b0 + nb)) into z (nb <= 8).
ZB_INLINE void rademacher_tile(PhiloxFn philox, uint64_t b0, int nb, uint32_t index, uint32_t k0, uint32_t k1,
                               float* __restrict z) {
  alignas(64) uint32_t x[4][TILE_BLOCKS];
  blocks(philox, b0, nb, index, 1u, k0, k1, x[0], x[1], x[2], x[3]);
  for (int j = 0; j < nb; ++j)
    for (int w = 0; w < 4; ++w) {
      const uint32_t word = x[w][j];
      float* zw = z + 128 * j + 32 * w;
      for (int i = 0; i < 32; ++i) zw[i] = bits_to_float(0x3F800000u | ((~(word >> i) & 1u) << 31));  // +-1
    }
}

template <typename Store>
ZB_INLINE void apply(const float* __restrict z, int64_t n, Store store) {
  for (int64_t i = 0; i < n; ++i) store(i, z[i]);
}

// Tiles [t0, t1) of the job: draw each tile's values, then write or add them.
template <class P, int ISA>
ZB_INLINE void run_tiles(PhiloxFn philox, const Job& a, int64_t t0, int64_t t1) {
  alignas(64) float z[TILE];
  const int64_t upt = a.dist == 0 ? 16 : 8, usize = a.dist == 0 ? 64 : 128;  // units per tile, unit size
  const int64_t end = a.first + a.n;
  const int64_t unit_end = (end + usize - 1) / usize;
  const float s = a.scale;
  const int64_t esize = a.dtype == 1 ? 8 : (a.dtype == 0 ? 4 : 2);  // bytes per output element
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t u0 = a.unit0 + t * upt;
    const int nu = (int)((unit_end - u0) < upt ? (unit_end - u0) : upt);
    const int64_t tf = u0 * usize;
    const int64_t lo = tf > a.first ? tf : a.first, hi = tf + nu * usize < end ? tf + nu * usize : end;
    // The tile's outputs are fetched (for writing) while its numbers are computed: the generator is
    // compute-bound and the add memory-bound, and without this the two phases of a tile run one after the other.
    const char* line = (const char*)a.out + (lo - a.first) * esize;
    for (int64_t off = 0; off < (hi - lo) * esize; off += 64) __builtin_prefetch(line + off, 1, 3);
    if (a.dist == 0) gaussian_tile<P, ISA>(philox, (uint64_t)u0, nu, a.index, a.k0, a.k1, z);
    else rademacher_tile(philox, (uint64_t)u0, nu, a.index, a.k0, a.k1, z);
    const float* zs = z + (lo - tf);
    const int64_t m = hi - lo, o0 = lo - a.first;
    if (a.mode == 0) {
      switch (a.dtype) {
        case 0: { float* o = (float*)a.out + o0; apply(zs, m, [o](int64_t i, float v) { o[i] = v; }); break; }
        case 1: { double* o = (double*)a.out + o0; apply(zs, m, [o](int64_t i, float v) { o[i] = (double)v; }); break; }
        case 2: { uint16_t* o = (uint16_t*)a.out + o0; apply(zs, m, [o](int64_t i, float v) { o[i] = to_bf16(v); }); break; }
#ifdef ZB_HAVE_F16
        case 3: { _Float16* o = (_Float16*)a.out + o0; apply(zs, m, [o](int64_t i, float v) { o[i] = (_Float16)v; }); break; }
#endif
      }
    } else {
      switch (a.dtype) {
        case 0: { float* o = (float*)a.out + o0; apply(zs, m, [o, s](int64_t i, float v) { const float d = v * s; o[i] = o[i] + d; }); break; }
        case 1: { double* o = (double*)a.out + o0; apply(zs, m, [o, s](int64_t i, float v) { const float d = v * s; o[i] = o[i] + (double)d; }); break; }
        case 2: { uint16_t* o = (uint16_t*)a.out + o0; apply(zs, m, [o, s](int64_t i, float v) { const float d = v * s; o[i] = to_bf16(from_bf16(o[i]) + d); }); break; }
#ifdef ZB_HAVE_F16
        case 3: { _Float16* o = (_Float16*)a.out + o0; apply(zs, m, [o, s](int64_t i, float v) { const float d = v * s; o[i] = (_Float16)((float)o[i] + d); }); break; }
#endif
      }
    }
  }
}

// One copy of the tile loop per instruction set (the transform and the stores are vectorized by the compiler).
using TilesFn = void (*)(const Job*, int64_t, int64_t);
void tiles_base(const Job* a, int64_t t0, int64_t t1) {
  if (a->variant == 2) run_tiles<Icdf, 0>(philox_scalar<Icdf::ROUNDS>, *a, t0, t1);
  else if (a->variant) run_tiles<Fast, 0>(philox_scalar<Fast::ROUNDS>, *a, t0, t1);
  else run_tiles<Accurate, 0>(philox_scalar<Accurate::ROUNDS>, *a, t0, t1);
}
#ifdef ZB_X86
ZB_TARGET("avx2") void tiles_avx2(const Job* a, int64_t t0, int64_t t1) {
  if (a->variant == 2) run_tiles<Icdf, 1>(philox_avx2<Icdf::ROUNDS>, *a, t0, t1);
  else if (a->variant) run_tiles<Fast, 1>(philox_avx2<Fast::ROUNDS>, *a, t0, t1);
  else run_tiles<Accurate, 1>(philox_avx2<Accurate::ROUNDS>, *a, t0, t1);
}
ZB_TARGET(ZB_AVX512) void tiles_avx512(const Job* a, int64_t t0, int64_t t1) {
  if (a->variant == 2) run_tiles<Icdf, 2>(philox_avx512<Icdf::ROUNDS>, *a, t0, t1);
  else if (a->variant) run_tiles<Fast, 2>(philox_avx512<Fast::ROUNDS>, *a, t0, t1);
  else run_tiles<Accurate, 2>(philox_avx512<Accurate::ROUNDS>, *a, t0, t1);
}
#endif

// Test hooks: the transform alone, compiled as in each tile loop.
template <class P>
ZB_INLINE void transform_arrays(const uint32_t* x, int64_t n, float* r, float* s, float* c) {
  for (int64_t i = 0; i < n; ++i) {
    float si, ci;
    r[i] = radius<P>(x[i]);
    sincos_turn<P>(x[i], si, ci);
    s[i] = si;
    c[i] = ci;
  }
}
using TransformFn = void (*)(const uint32_t*, int64_t, float*, float*, float*);
template <class P>
void transform_base(const uint32_t* x, int64_t n, float* r, float* s, float* c) { transform_arrays<P>(x, n, r, s, c); }
#ifdef ZB_X86
template <class P>
ZB_TARGET("avx2") void transform_avx2(const uint32_t* x, int64_t n, float* r, float* s, float* c) {
  transform_arrays<P>(x, n, r, s, c);
}
template <class P>
ZB_TARGET(ZB_AVX512) void transform_avx512(const uint32_t* x, int64_t n, float* r, float* s, float* c) {
  transform_arrays<P>(x, n, r, s, c);
}
#endif

#ifdef ZB_X86
ZB_TARGET(ZB_AVX512) int64_t icdf_avx512(const uint32_t* x, int64_t n, float* z) {
  IcdfTable16 tb;
  load_icdf16(tb);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(z + i, icdf16(_mm512_loadu_si512((const void*)(x + i)), tb));
  return i;
}
ZB_TARGET("avx2") int64_t icdf_avx2(const uint32_t* x, int64_t n, float* z) {  // the tile loop's code
  for (int64_t i = 0; i < n; ++i) z[i] = icdf(x[i]);
  return n;
}
#endif

int g_isa = -1;  // 0 baseline, 1 AVX2, 2 AVX-512; -1: not chosen yet

int best_isa() {
#ifdef ZB_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd")) return 2;
  if (__builtin_cpu_supports("avx2")) return 1;
#endif
  return 0;
}

TilesFn tiles_fn() {
  if (g_isa < 0) g_isa = best_isa();
#ifdef ZB_X86
  if (g_isa == 2) return tiles_avx512;
  if (g_isa == 1) return tiles_avx2;
#endif
  return tiles_base;
}

}  // namespace

extern "C" {

int zb_philox_abi(void) { return 4; }

// Bit d set: dtype code d is handled (0 float32, 1 float64, 2 bfloat16, 3 float16).
int zb_philox_dtypes(void) {
#ifdef ZB_HAVE_F16
  return 15;
#else
  return 7;
#endif
}

int zb_philox_openmp(void) {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}

// The instruction set used: 0 baseline, 1 AVX2, 2 AVX-512. isa >= 0 asks for one (capped at what the CPU has;
// the tests run every level the machine can); isa < 0 only reports.
int zb_philox_isa(int isa) {
  const int best = best_isa();
  if (isa >= 0) g_isa = isa < best ? isa : best;
  else if (g_isa < 0) g_isa = best;
  return g_isa;
}

// Test hooks. Philox4x32-R of counters (c0[j], c1[j], index, tag), key (k0, k1), with the current ISA's code;
// R = 10 (variant 0, philox) or 7 (variants 1 and 2, philox_fast and philox_icdf).
void zb_philox_blocks(const uint32_t* c0, const uint32_t* c1, int nb, uint32_t index, uint32_t tag, uint32_t k0,
                      uint32_t k1, uint32_t* x0, uint32_t* x1, uint32_t* x2, uint32_t* x3, int variant) {
  PhiloxFn fn = variant ? philox_scalar<Fast::ROUNDS> : philox_scalar<Accurate::ROUNDS>;
  if (g_isa < 0) g_isa = best_isa();
#ifdef ZB_X86
  if (g_isa == 2) fn = variant ? philox_avx512<Fast::ROUNDS> : philox_avx512<Accurate::ROUNDS>;
  if (g_isa == 1) fn = variant ? philox_avx2<Fast::ROUNDS> : philox_avx2<Accurate::ROUNDS>;
#endif
  fn(c0, c1, nb, index, tag, k0, k1, x0, x1, x2, x3);
}

// radius(x), sin and cos of the angle of x (the Box-Muller factors of one word) of the variant, with the current
// ISA's code.
void zb_philox_transform(const uint32_t* x, int64_t n, float* r, float* s, float* c, int variant) {
  TransformFn fn = variant ? transform_base<Fast> : transform_base<Accurate>;
  if (g_isa < 0) g_isa = best_isa();
#ifdef ZB_X86
  if (g_isa == 2) fn = variant ? transform_avx512<Fast> : transform_avx512<Accurate>;
  if (g_isa == 1) fn = variant ? transform_avx2<Fast> : transform_avx2<Accurate>;
#endif
  fn(x, n, r, s, c);
}

// icdf(x[i]) (philox_icdf's z of one word) with the current ISA's code.
void zb_philox_icdf(const uint32_t* x, int64_t n, float* z) {
  if (g_isa < 0) g_isa = best_isa();
  int64_t i = 0;
#ifdef ZB_X86
  if (g_isa == 2) i = icdf_avx512(x, n, z);
  else if (g_isa == 1) i = icdf_avx2(x, n, z);
#endif
  for (; i < n; ++i) z[i] = icdf(x[i]);
}

// out: n elements (contiguous, dtype as above) holding elements [first, first + n) of z(seed, index).
// mode 0 writes z; mode 1 adds (float)(z * scale) to them. nthreads <= 1: the calling thread only.
// variant 0: the philox stream; 1: philox_fast; 2: philox_icdf.
void zb_philox(void* out, int dtype, int mode, int64_t n, int64_t first, uint32_t k0, uint32_t k1, uint32_t index,
               int dist, float scale, int nthreads, int variant) {
  if (n <= 0) return;
  Job a{out, dtype, mode, n, first, k0, k1, index, dist, scale, 0, variant == 2 ? 2 : (variant ? 1 : 0)};
  const int64_t usize = dist == 0 ? 64 : 128, upt = dist == 0 ? 16 : 8;
  a.unit0 = first / usize;
  const int64_t units = (first + n + usize - 1) / usize - a.unit0;
  const int64_t tiles = (units + upt - 1) / upt;
  const TilesFn fn = tiles_fn();
  int nt = nthreads;
  if (nt > tiles / 16) nt = (int)(tiles / 16);  // at least 16 tiles (16 Ki elements) per thread
  if (nt <= 1) {
    fn(&a, 0, tiles);
    return;
  }
#pragma omp parallel for num_threads(nt) schedule(static, 1)
  for (int th = 0; th < nt; ++th) {
    const int64_t t0 = tiles * th / nt, t1 = tiles * (th + 1) / nt;
    fn(&a, t0, t1);
  }
}

}  // extern "C"

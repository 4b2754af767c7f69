// The design measurements behind src/model/gemv.cpp, outside the library: a decoding step's 73
// distinct GPT-2-small weight matrices (12 layers of q/k/v-sized 2304x768, 768x768, 3072x768,
// 768x3072, and the 50257x768 vocabulary matrix) times R rows, with OpenMP threads each taking a
// contiguous block of output rows, in three access patterns:
//   rows    one matrix row at a time, one accumulator per row of x (the library's kernel)
//   four    four matrix rows interleaved (four streams per thread)
//   sum     a plain sum over as many bytes (what the memory delivers)
// Prints the median milliseconds of a whole step over 20 repetitions, per pattern, dtype and R.
// Compare with benches/onednn_step_products.py (oneDNN on the same shapes) in the same session.
//
//   g++ -O3 -march=native -fopenmp benches/gemv_design.cpp -o target/gemv_design
//   OMP_NUM_THREADS=2 target/gemv_design
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

struct Mat {
  int out, in;
  void *w;
};

// What differs between the dtypes: elements per 64-byte load, the load, the multiply-add.
struct Bf16 {
  using T = uint16_t;
  using V = __m512bh;
  static constexpr int width = 32;
  static V load(const T *p) { return (V)_mm512_loadu_si512(p); }
  static __m512 madd(__m512 acc, V w, V x) { return _mm512_dpbf16_ps(acc, w, x); }
};
struct F32 {
  using T = float;
  using V = __m512;
  static constexpr int width = 16;
  static V load(const T *p) { return _mm512_loadu_ps(p); }
  static __m512 madd(__m512 acc, V w, V x) { return _mm512_fmadd_ps(w, x, acc); }
};

// One matrix row at a time, R rows of x, one accumulator each (the library's kernel).
template <class D, int R>
void rows(const Mat &m, const typename D::T *x, float *y) {
#pragma omp parallel
  {
    int nt = omp_get_num_threads(), t = omp_get_thread_num(), per = (m.out + nt - 1) / nt;
    int j0 = t * per, j1 = std::min(m.out, j0 + per);
    for (int j = j0; j < j1; j++) {
      const typename D::T *w = (const typename D::T *)m.w + (size_t)j * m.in;
      __m512 a[R];
      for (int r = 0; r < R; r++) a[r] = _mm512_setzero_ps();
      for (int k = 0; k < m.in; k += D::width) {
        typename D::V wv = D::load(w + k);
        for (int r = 0; r < R; r++) a[r] = D::madd(a[r], wv, D::load(x + r * m.in + k));
      }
      for (int r = 0; r < R; r++) y[r * m.out + j] = _mm512_reduce_add_ps(a[r]);
    }
  }
}

// One row of x, four matrix rows interleaved.
void four_bf16(const Mat &m, const uint16_t *x, float *y) {
#pragma omp parallel
  {
    int nt = omp_get_num_threads(), t = omp_get_thread_num(), per = (m.out + nt - 1) / nt;
    per = (per + 3) / 4 * 4;
    int j0 = t * per, j1 = std::min(m.out, j0 + per);
    for (int j = j0; j + 4 <= j1; j += 4) {
      const uint16_t *w = (const uint16_t *)m.w + (size_t)j * m.in;
      __m512 a[4];
      for (int p = 0; p < 4; p++) a[p] = _mm512_setzero_ps();
      for (int k = 0; k < m.in; k += 32) {
        __m512bh xv = (__m512bh)_mm512_loadu_si512(x + k);
        for (int p = 0; p < 4; p++)
          a[p] = _mm512_dpbf16_ps(a[p], (__m512bh)_mm512_loadu_si512(w + p * m.in + k), xv);
      }
      for (int p = 0; p < 4; p++) y[j + p] = _mm512_reduce_add_ps(a[p]);
    }
  }
}

double sum(const float *p, size_t n) {
  double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
  for (size_t b = 0; b < n; b += 4096) {
    __m512 a = _mm512_setzero_ps();
    for (size_t i = b; i < b + 4096 && i < n; i += 16) a = _mm512_add_ps(a, _mm512_loadu_ps(p + i));
    s += _mm512_reduce_add_ps(a);
  }
  return s;
}

template <class F>
double ms(F f) {
  std::vector<double> t;
  for (int r = 0; r < 20; r++) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[10] * 1e3;
}

std::vector<Mat> step(size_t bytes_per, size_t &total) {
  const int d = 768, vocab = 50260;  // a multiple of four, for `four`
  std::vector<Mat> ms;
  for (int l = 0; l < 12; l++)
    for (auto [o, i] : {std::pair{3 * d, d}, {d, d}, {4 * d, d}, {d, 4 * d}}) ms.push_back({o, i, nullptr});
  ms.push_back({vocab, d, nullptr});
  total = 0;
  for (auto &m : ms) {
    size_t n = (size_t)m.out * m.in * bytes_per;
    m.w = aligned_alloc(64, (n + 63) / 64 * 64);
    memset(m.w, 0x3c, n);  // about 0.01 in both dtypes: no denormals
    total += n;
  }
  return ms;
}

int main() {
  size_t bf_bytes, f_bytes;
  auto bf = step(2, bf_bytes), f32 = step(4, f_bytes);
  std::vector<uint16_t> xb(8 * 3072, 0x3c00);
  std::vector<float> x(8 * 3072, 0.01f), y(8 * 50260);
  float *big = (float *)aligned_alloc(64, bf_bytes);
  memset(big, 0x3c, bf_bytes);
  volatile double sink = 0;
  printf("threads %d; bfloat16 step %.0f MB, float32 %.0f MB\n", omp_get_max_threads(), bf_bytes / 1e6,
         f_bytes / 1e6);
  for (int round = 0; round < 2; round++) {
    printf("sum over the bfloat16 step's bytes: %.2f ms\n", ms([&] { sink = sink + sum(big, bf_bytes / 4); }));
    printf("bf16 four rows interleaved, R=1: %.2f ms\n", ms([&] { for (auto &m : bf) four_bf16(m, xb.data(), y.data()); }));
#define ROWS(R)                                                                                \
  printf("rows R=%d: bf16 %.2f ms, f32 %.2f ms\n", R,                                          \
         ms([&] { for (auto &m : bf) rows<Bf16, R>(m, xb.data(), y.data()); }),               \
         ms([&] { for (auto &m : f32) rows<F32, R>(m, x.data(), y.data()); }));
    ROWS(1) ROWS(2) ROWS(4) ROWS(8)
  }
  return 0;
}

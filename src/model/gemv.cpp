// Products of a weight matrix `w` [out, in] with one or two rows `x` [rows, in] on the CPU, at the
// memory's speed: such a product reads every weight once and does two flops per weight, so it is
// bound by how fast the matrix streams in. Each thread takes a contiguous block of output rows
// and reads it front to back, one matrix row at a time (one stream per thread: on this
// project's machine interleaving four rows ran 1.4x slower), with AVX-512 (float32) or
// AVX-512 BF16 (bfloat16, `vdpbf16ps`) and float32 sums. Threads come from libtorch's OpenMP
// pool (`at::parallel_for`), the one its own kernels use, so none compete for the cores.
// Where the CPU lacks those instructions, or the build lacks OpenMP, `mc_gemv_supported` says so
// and the caller keeps libtorch.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "guarded.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define MC_GEMV_X86 1
#endif

namespace {

// Bounded by the kernels below (one accumulator per row of `x`).
constexpr int64_t MAX_ROWS = 2;

// Fewest output rows a thread takes, so small products stay on one thread.
int64_t grain(int64_t in) { return std::max<int64_t>(16, 32768 / std::max<int64_t>(in, 1)); }

#ifdef MC_GEMV_X86

// Output row `j` of each of the `R` rows, bias added in float32, rounded once to `T`.
template <int R, class T>
__attribute__((target("avx512f"))) inline void finish(const __m512 *acc, const T *bias, int64_t j, int64_t out, T *y) {
  float b = bias ? static_cast<float>(bias[j]) : 0.0f;
  for (int r = 0; r < R; r++) y[r * out + j] = static_cast<T>(_mm512_reduce_add_ps(acc[r]) + b);
}

template <int R>
__attribute__((target("avx512f"))) void rows_f32(const float *w, const float *x, const float *bias,
                                                  int64_t in, int64_t out, int64_t j0, int64_t j1,
                                                  float *y) {
  const int64_t body = in - in % 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (in % 16)) - 1);
  for (int64_t j = j0; j < j1; j++) {
    const float *row = w + j * in;
    __m512 acc[R];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < body; k += 16) {
      const __m512 wv = _mm512_loadu_ps(row + k);
      for (int r = 0; r < R; r++)
        acc[r] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + r * in + k), acc[r]);
    }
    if (tail) {
      const __m512 wv = _mm512_maskz_loadu_ps(tail, row + body);
      for (int r = 0; r < R; r++)
        acc[r] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(tail, x + r * in + body), acc[r]);
    }
    finish<R>(acc, bias, j, out, y);
  }
}

template <int R>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void rows_bf16(
    const c10::BFloat16 *w, const c10::BFloat16 *x, const c10::BFloat16 *bias, int64_t in,
    int64_t out, int64_t j0, int64_t j1, c10::BFloat16 *y) {
  const int64_t body = in - in % 32;
  const __mmask32 tail = static_cast<__mmask32>((uint64_t{1} << (in % 32)) - 1);
  for (int64_t j = j0; j < j1; j++) {
    const c10::BFloat16 *row = w + j * in;
    __m512 acc[R];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < body; k += 32) {
      const __m512bh wv = (__m512bh)_mm512_loadu_si512(row + k);
      for (int r = 0; r < R; r++)
        acc[r] = _mm512_dpbf16_ps(acc[r], wv, (__m512bh)_mm512_loadu_si512(x + r * in + k));
    }
    if (tail) {
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(tail, row + body);
      for (int r = 0; r < R; r++) {
        const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(tail, x + r * in + body);
        acc[r] = _mm512_dpbf16_ps(acc[r], wv, xv);
      }
    }
    finish<R>(acc, bias, j, out, y);
  }
}

// Without OpenMP (a libtorch that ships no libgomp) `at::parallel_for` would run the kernels on
// one thread, slower than libtorch's own multi-threaded products: then they are not used.
bool supported(bool bf16) {
#ifndef _OPENMP
  return false;
#endif
  static const bool f32 = __builtin_cpu_supports("avx512f");
  static const bool bf = f32 && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512bf16");
  return bf16 ? bf : f32;
}

// A kernel over output rows [j0, j1): (w, x, bias, in, out, j0, j1, y).
template <class T>
using Kernel = void (*)(const T *, const T *, const T *, int64_t, int64_t, int64_t, int64_t, T *);

// Every row of x times w on libtorch's threads, each a block of output rows, by row count.
template <class T>
void run(Kernel<T> one, Kernel<T> two, const at::Tensor &x, const at::Tensor &w, const T *bias,
         at::Tensor &y) {
  const int64_t rows = x.size(0), in = x.size(1), out = w.size(0);
  const T *wp = w.const_data_ptr<T>(), *xp = x.const_data_ptr<T>();
  T *yp = y.mutable_data_ptr<T>();
  at::parallel_for(0, out, grain(in), [&](int64_t j0, int64_t j1) {
    (rows == 1 ? one : two)(wp, xp, bias, in, out, j0, j1, yp);
  });
}

#else

bool supported(bool) { return false; }

#endif

at::Tensor gemv(const at::Tensor &x, const at::Tensor &w, const at::Tensor *bias) {
  const auto kind = w.scalar_type();
  TORCH_CHECK(supported(kind == at::kBFloat16) &&
                  (kind == at::kFloat || kind == at::kBFloat16),
              "gemv: no kernel for ", kind, " on this CPU");
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "gemv: tensors must be on the CPU");
  TORCH_CHECK(w.dim() == 2 && w.is_contiguous(), "gemv: w must be a contiguous matrix");
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == kind,
              "gemv: x must be contiguous [rows, in] of w's dtype");
  TORCH_CHECK(x.size(0) >= 1 && x.size(0) <= MAX_ROWS, "gemv: x has ", x.size(0),
              " rows, expected 1 to ", MAX_ROWS);
  TORCH_CHECK(x.size(1) == w.size(1), "gemv: x has ", x.size(1), " columns, w ", w.size(1));
  if (bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->is_contiguous() && bias->size(0) == w.size(0) &&
                    bias->scalar_type() == kind && bias->device().is_cpu(),
                "gemv: bias must be contiguous [out] of w's dtype");
  }
  at::Tensor y = at::empty({x.size(0), w.size(0)}, x.options());
#ifdef MC_GEMV_X86
  if (kind == at::kFloat) {
    run<float>(rows_f32<1>, rows_f32<2>, x, w, bias ? bias->const_data_ptr<float>() : nullptr, y);
  } else {
    using B = c10::BFloat16;
    run<B>(rows_bf16<1>, rows_bf16<2>, x, w, bias ? bias->const_data_ptr<B>() : nullptr, y);
  }
#endif
  return y;
}

}  // namespace

extern "C" {

// The message of this thread's last failed C++ call (`guarded.h`), for `cpp.rs`.
const char *mc_cpp_last_error() { return mc::last_error.c_str(); }

// The most rows of `x` `mc_gemv` takes.
int64_t mc_gemv_max_rows() { return MAX_ROWS; }

// Whether this CPU has the kernels for float32 (`bf16` 0) or bfloat16 (`bf16` 1) matrices.
int mc_gemv_supported(int bf16) { return supported(bf16 != 0) ? 1 : 0; }

// x [rows, in] (1 or 2 rows, contiguous) times w^T, w [out, in] contiguous, plus `bias` [out]
// when not null; all of one dtype, float32 or bfloat16. [rows, out] of that dtype.
at::Tensor *mc_gemv(const at::Tensor *x, const at::Tensor *w, const at::Tensor *bias) {
  return mc::guarded([&] { return gemv(*x, *w, bias); });
}

}  // extern "C"

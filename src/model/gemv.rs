//! Products of a weight matrix with one or two rows (a decoding step) at the memory's speed
//! (`gemv.cpp`: AVX-512 float32, AVX-512 BF16 bfloat16, libtorch's thread pool), where oneDNN
//! and MKL read the matrix slower (measured here, 2 threads, a step's 73 GPT-2-small matrices
//! alone: bfloat16 about 8 ms against oneDNN's 11.5 ms on its reordered copy).
use crate::model::packed::{owned, raw};
use tch::{Device, Kind, Tensor};

type TchResult<T> = std::result::Result<T, tch::TchError>;

/// Rows of `x` the kernels take (one accumulator register per row; measured here, more rows
/// per pass of the matrix ran slower than oneDNN from four rows on).
const MAX_ROWS: i64 = 2;

extern "C" {
    fn mc_gemv_supported(bf16: i32) -> i32;
    fn mc_gemv(
        x: *const std::ffi::c_void,
        w: *const std::ffi::c_void,
        bias: *const std::ffi::c_void,
    ) -> *mut std::ffi::c_void;
}

/// Whether `x` times the matrix `w` `[out, in]` goes through the kernels: on a CPU that has
/// them, float32 or bfloat16 alike, `w` contiguous, 1 to `MAX_ROWS` rows of `x`.
pub fn takes(x: &Tensor, w: &Tensor) -> bool {
    let bf16 = match w.kind() {
        Kind::Float => 0,
        Kind::BFloat16 => 1,
        _ => return false,
    };
    let inner = x.size().last().copied().unwrap_or(0);
    x.device() == Device::Cpu
        && w.device() == Device::Cpu
        && x.kind() == w.kind()
        && w.dim() == 2
        && w.is_contiguous()
        && inner == w.size()[1]
        && inner > 0
        && (1..=MAX_ROWS).contains(&(x.numel() as i64 / inner))
        // SAFETY: a pure query of the CPU's features.
        && unsafe { mc_gemv_supported(bf16) } == 1
}

/// `x @ w^T + bias` over the last axis of `x` where `takes(x, w)`; no gradient flows through it.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> TchResult<Tensor> {
    let mut shape = x.size();
    let inner = shape.last().copied().unwrap_or(0);
    let rows = x.f_reshape([-1, inner])?.f_contiguous()?;
    let bias = bias.map(Tensor::f_contiguous).transpose()?;
    let b = bias.as_ref().map_or(std::ptr::null(), raw);
    // SAFETY: live tensors borrowed for the call; the C++ side checks shapes and dtypes.
    let y = owned(unsafe { mc_gemv(raw(&rows), raw(w), b) })?;
    if let Some(last) = shape.last_mut() {
        *last = w.size()[0];
    }
    y.f_view(shape.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every dtype, row count, tail length (`in` not a multiple of the vector width) and
    /// leading axes equal libtorch's `linear` to float32 rounding (bfloat16: one rounding of the
    /// float32 sum, where libtorch may round differently).
    #[test]
    fn the_kernels_equal_linear_for_every_shape_they_take() {
        tch::manual_seed(11);
        for (kind, tolerance) in [(Kind::Float, 1e-5), (Kind::BFloat16, 1e-2)] {
            let bf16 = kind == Kind::BFloat16;
            let supported = unsafe { mc_gemv_supported(bf16.into()) } == 1;
            assert_eq!(
                supported,
                cpu_has_kernel(bf16),
                "{kind:?}: the C++ side's CPU check"
            );
            if !supported {
                eprintln!("{kind:?}: this CPU has no kernel; libtorch multiplies");
                continue;
            }
            for inner in [16, 32, 37, 70, 768] {
                let w = Tensor::randn([45, inner], (kind, Device::Cpu));
                let b = Tensor::randn([45], (kind, Device::Cpu));
                for shape in [
                    vec![1, inner],
                    vec![2, inner],
                    vec![1, 1, inner],
                    vec![2, 1, inner],
                ] {
                    let x = Tensor::randn(shape.as_slice(), (kind, Device::Cpu));
                    assert!(takes(&x, &w), "{kind:?} {shape:?}");
                    for bias in [None, Some(&b)] {
                        let got = linear(&x, &w, bias).unwrap().to_kind(Kind::Float);
                        let want = x.linear(&w, bias).to_kind(Kind::Float);
                        assert_eq!(got.size(), want.size());
                        let scale = want.abs().max().double_value(&[]).max(1.0);
                        let d = (got - want).abs().max().double_value(&[]);
                        assert!(d <= tolerance * scale, "{kind:?} {shape:?}: {d} of {scale}");
                    }
                }
            }
        }
    }

    /// Rust's own reading of the CPU's features.
    fn cpu_has_kernel(bf16: bool) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let f32 = std::arch::is_x86_feature_detected!("avx512f");
            let bf = std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512bf16");
            f32 && (bf || !bf16)
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// What the kernels do not take keeps libtorch, and a call that slips past `takes` is an
    /// error naming the cause, not a crash.
    #[test]
    fn other_inputs_are_refused() {
        let w = Tensor::ones([8, 16], (Kind::Float, Device::Cpu));
        let x = |rows: i64, kind| Tensor::ones([rows, 16], (kind, Device::Cpu));
        assert!(!takes(&x(MAX_ROWS + 1, Kind::Float), &w), "too many rows");
        assert!(!takes(&x(1, Kind::Half), &w.to_kind(Kind::Half)), "float16");
        assert!(!takes(&x(1, Kind::BFloat16), &w), "mixed dtypes");
        assert!(
            !takes(&x(1, Kind::Float), &w.tr().contiguous().tr()),
            "strided matrix"
        );
        assert!(
            !takes(&Tensor::ones([1, 8], (Kind::Float, Device::Cpu)), &w),
            "wrong width"
        );
        if unsafe { mc_gemv_supported(0) } == 1 {
            let e = linear(&x(MAX_ROWS + 1, Kind::Float), &w, None).unwrap_err();
            assert!(e.to_string().contains("rows"), "{e}");
            let bias = Tensor::ones([7], (Kind::Float, Device::Cpu));
            let e = linear(&x(1, Kind::Float), &w, Some(&bias)).unwrap_err();
            assert!(e.to_string().contains("bias"), "{e}");
        }
    }
}

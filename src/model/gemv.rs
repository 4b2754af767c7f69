//! Products of a weight matrix with one or two rows (a decoding step) at the memory's speed
//! (`gemv.cpp`: AVX-512 float32, AVX-512 BF16 bfloat16, libtorch's thread pool), where oneDNN
//! and MKL read the matrix slower (measured here, 2 threads, a step's 73 GPT-2-small matrices
//! alone: bfloat16 about 8 ms against oneDNN's 11.5 ms on its reordered copy).
use crate::model::cpp::{over_rows, raw};
use std::ffi::c_void;
use tch::{Device, Kind, Tensor};

type TchResult<T> = std::result::Result<T, tch::TchError>;

extern "C" {
    fn mc_gemv_max_rows() -> i64;
    fn mc_gemv_supported(bf16: i32) -> i32;
    fn mc_gemv(x: *const c_void, w: *const c_void, bias: *const c_void) -> *mut c_void;
}

/// Whether `x` (`rows` rows: all axes but the last) times the matrix `w` `[out, in]` plus
/// `bias` goes through the kernels: on a CPU that has them, float32 or bfloat16 alike, `w`
/// contiguous, `bias` `[out]` of `w`'s dtype, 1 to `mc_gemv_max_rows` rows (one accumulator
/// register per row: three or more rows a pass ran no faster than oneDNN here).
pub fn takes(x: &Tensor, rows: i64, w: &Tensor, bias: Option<&Tensor>) -> bool {
    let on_cpu = |t: &Tensor| t.device() == Device::Cpu && t.kind() == w.kind();
    let bias_fits = bias.is_none_or(|b| on_cpu(b) && b.size() == [w.size()[0]]);
    on_cpu(x)
        && on_cpu(w)
        && bias_fits
        && w.dim() == 2
        && w.is_contiguous()
        && x.size().last() == Some(&w.size()[1])
        && (1..=max_rows()).contains(&rows)
        && available(w.kind())
}

/// Whether this CPU and build have a kernel for `kind` matrices (AVX-512; bfloat16 also
/// AVX-512 BF16; OpenMP).
pub fn available(kind: Kind) -> bool {
    let bf16 = match kind {
        Kind::Float => 0,
        Kind::BFloat16 => 1,
        _ => return false,
    };
    // SAFETY: a pure query of the CPU's features.
    unsafe { mc_gemv_supported(bf16) == 1 }
}

/// The most rows of `x` the kernels take.
fn max_rows() -> i64 {
    // SAFETY: returns a constant.
    unsafe { mc_gemv_max_rows() }
}

/// `x @ w^T + bias` over the last axis of `x` where `takes`; no gradient flows through it.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> TchResult<Tensor> {
    let bias = bias.map(Tensor::f_contiguous).transpose()?;
    let b = bias.as_ref().map_or(std::ptr::null(), raw);
    // SAFETY: live tensors borrowed for the call; the C++ side checks shapes and dtypes and
    // catches its exceptions.
    over_rows(x, w.size()[0], |rows| unsafe { mc_gemv(rows, raw(w), b) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(x: &Tensor) -> i64 {
        x.numel() as i64 / x.size().last().copied().unwrap_or(1)
    }

    /// Every dtype, row count, tail length (`in` not a multiple of the vector width, or all
    /// tail), a split over threads, a strided `x` and leading axes equal libtorch's `linear` to
    /// float32 rounding (bfloat16: one rounding of the float32 sum, where libtorch may round
    /// differently).
    #[test]
    fn the_kernels_equal_linear_for_every_shape_they_take() {
        tch::manual_seed(11);
        for (kind, tolerance) in [(Kind::Float, 1e-5), (Kind::BFloat16, 1e-2)] {
            assert_eq!(
                available(kind),
                cpu_has_kernel(kind == Kind::BFloat16),
                "{kind:?}: the C++ side's CPU check"
            );
            if !available(kind) {
                eprintln!("{kind:?}: this CPU or build has no kernel; libtorch multiplies");
                continue;
            }
            // (out, in): in=768 and the 2100 x 16 matrix split over two threads.
            for (out, inner) in [
                (45, 1),
                (45, 5),
                (45, 16),
                (45, 37),
                (45, 70),
                (45, 768),
                (2100, 16),
            ] {
                let w = Tensor::randn([out, inner], (kind, Device::Cpu));
                let b = Tensor::randn([out], (kind, Device::Cpu));
                let strided = Tensor::randn([inner, 2], (kind, Device::Cpu)).tr();
                let shapes = [
                    vec![1, inner],
                    vec![2, inner],
                    vec![1, 1, inner],
                    vec![2, 1, inner],
                ];
                let inputs = shapes
                    .iter()
                    .map(|s| Tensor::randn(s.as_slice(), (kind, Device::Cpu)))
                    .chain([strided]);
                for x in inputs {
                    assert!(takes(&x, rows(&x), &w, Some(&b)), "{kind:?} {:?}", x.size());
                    for bias in [None, Some(&b)] {
                        let got = linear(&x, &w, bias).unwrap().to_kind(Kind::Float);
                        let want = x.linear(&w, bias).to_kind(Kind::Float);
                        assert_eq!(got.size(), want.size());
                        let scale = want.abs().max().double_value(&[]).max(1.0);
                        let d = (got - want).abs().max().double_value(&[]);
                        assert!(
                            d <= tolerance * scale,
                            "{kind:?} {:?}: {d} of {scale}",
                            x.size()
                        );
                    }
                }
            }
        }
    }

    /// Rust's own reading of the CPU's features (the build has OpenMP where libtorch ships
    /// libgomp, as the pip wheels this project uses do).
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
        let bias = |n: i64, kind| Tensor::ones([n], (kind, Device::Cpu));
        let over = max_rows() + 1;
        assert!(
            !takes(&x(over, Kind::Float), over, &w, None),
            "too many rows"
        );
        assert!(!takes(&x(1, Kind::Float), 0, &w, None), "no rows");
        let half = w.to_kind(Kind::Half);
        assert!(!takes(&x(1, Kind::Half), 1, &half, None), "float16");
        assert!(!takes(&x(1, Kind::BFloat16), 1, &w, None), "mixed dtypes");
        assert!(
            !takes(&x(1, Kind::Float), 1, &w.tr().contiguous().tr(), None),
            "strided matrix"
        );
        let narrow = Tensor::ones([1, 8], (Kind::Float, Device::Cpu));
        assert!(!takes(&narrow, 1, &w, None), "wrong width");
        assert!(
            !takes(&x(1, Kind::Float), 1, &w, Some(&bias(1, Kind::Float))),
            "broadcast bias"
        );
        let bf16_bias = bias(8, Kind::BFloat16);
        assert!(
            !takes(&x(1, Kind::Float), 1, &w, Some(&bf16_bias)),
            "bias dtype"
        );
        if available(Kind::Float) {
            let e = linear(&x(over, Kind::Float), &w, None).unwrap_err();
            assert!(e.to_string().contains("rows"), "{e}");
            let e = linear(&x(1, Kind::Float), &w, Some(&bias(7, Kind::Float))).unwrap_err();
            assert!(e.to_string().contains("bias"), "{e}");
        }
    }
}

//! The one way the model multiplies activations by a weight matrix `[out, in]` (a linear layer
//! or the unembedding), choosing the kernel by device, dtype and rows.
//!
//! On the CPU, one or two rows (a decoding step) go through this crate's own kernels (`gemv`)
//! where the CPU has them (AVX-512; bfloat16 also AVX-512 BF16). Otherwise bfloat16, and
//! float32 from `ONEDNN_MIN_ROWS_F32` rows, go through oneDNN (`packed`). Below that, float32
//! takes the matrix path, measured on this project's CPU machines (MKL, 2 threads): `x @ W^T`
//! as libtorch's `linear` runs a matrix-vector product on one core at about half the memory
//! bandwidth, and a few rows at once no faster; `W @ x^T` with at least two columns runs the
//! matrix path on every core at the bandwidth. Without oneDNN, from about 256 rows on,
//! `linear` is as fast or faster (a true matrix product, and no transposed copy of the
//! result), so larger inputs keep it, as do float16 and CUDA.
use crate::model::gemv;
use tch::{Device, Kind, Tensor};

type TchResult<T> = std::result::Result<T, tch::TchError>;

/// The most rows `W @ x^T` takes (measured here: faster up to 128 rows, slower from 512).
const MATRIX_PATH_MAX_ROWS: i64 = 128;

/// Whether `w` is multiplied as `W @ x^T` (float32 on the CPU, `w` contiguous `[out, in]`, at
/// most `MATRIX_PATH_MAX_ROWS` rows of `x`).
pub fn takes_matrix_path(x: &Tensor, w: &Tensor) -> bool {
    let rows = rows(x);
    x.device() == Device::Cpu
        && x.kind() == Kind::Float
        && w.dim() == 2
        && w.is_contiguous()
        && (1..=MATRIX_PATH_MAX_ROWS).contains(&rows)
}

/// Rows of `x` (all axes but the last).
fn rows(x: &Tensor) -> i64 {
    match x.size().last() {
        Some(&inner) if inner > 0 => x.numel() as i64 / inner,
        _ => 0,
    }
}

/// The fewest float32 rows oneDNN multiplies; fewer take the few-row kernels or, without
/// them, the matrix path, which decodes faster there than oneDNN (measured, GPT-2 small, 2 threads: 128 tokens at batch 1 in 2.6 s against 3.2
/// s, batch 2 81-88 tokens/s against 69-75; batch 4 even; batch 8 oneDNN 1.3x faster).
const ONEDNN_MIN_ROWS_F32: i64 = 3;

/// Whether oneDNN multiplies `x` by a matrix `packed::pack` took: on the CPU, in float32 from
/// `ONEDNN_MIN_ROWS_F32` rows.
fn takes_onednn(x: &Tensor) -> bool {
    x.device() == Device::Cpu && (x.kind() != Kind::Float || rows(x) >= ONEDNN_MIN_ROWS_F32)
}

/// `x @ w^T + bias` over the last axis of `x` (any leading axes), as `linear` defines it:
/// through the few-row kernels (`gemv::takes`), else through oneDNN on `packed` (`w` readied by
/// `packed::pack`) when given and `takes_onednn`, else libtorch. Those two kernels have no
/// backward: where a gradient flows through `x`, the value is still theirs (so a request gives
/// the same logits with or without an objective) plus an exact zero carrying the dense
/// product's gradient, which costs that product a second time.
pub fn linear(
    x: &Tensor,
    w: &Tensor,
    packed: Option<&Tensor>,
    bias: Option<&Tensor>,
) -> TchResult<Tensor> {
    let fast = |x: &Tensor| {
        if gemv::takes(x, rows(x), w, bias) {
            return Some(gemv::linear(x, w, bias));
        }
        let p = packed.filter(|_| takes_onednn(x))?;
        Some(crate::model::packed::linear(x, p, w.size()[0], bias))
    };
    if !x.requires_grad() {
        return fast(x).unwrap_or_else(|| dense(x, w, bias));
    }
    // Detached: libtorch's autograd kernel for the reordered product computes it another way,
    // which rounds differently.
    match fast(&x.f_detach()?) {
        None => dense(x, w, bias),
        Some(value) => {
            let graph = dense(x, w, bias)?;
            value?.f_add(&graph.f_sub(&graph.f_detach()?)?)
        }
    }
}

/// `linear` on the matrix as it is (no reordered copy).
fn dense(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> TchResult<Tensor> {
    if !takes_matrix_path(x, w) {
        return x.f_linear(w, bias);
    }
    let mut shape = x.size();
    let inner = shape.last().copied().unwrap_or(0);
    let rows = x.f_reshape([-1, inner])?;
    let n = rows.size()[0];
    // One row alone would take the matrix-vector kernel: a second copy keeps the matrix path.
    let cols = match n {
        1 => Tensor::f_cat(&[&rows, &rows], 0)?,
        _ => rows,
    }
    .f_tr()?;
    let y = match bias {
        Some(b) => Tensor::f_addmm(&b.f_unsqueeze(1)?, w, &cols)?,
        None => w.f_mm(&cols)?,
    };
    if let Some(last) = shape.last_mut() {
        *last = w.size()[0];
    }
    y.f_narrow(1, 0, n)?
        .f_tr()?
        .f_contiguous()?
        .f_view(shape.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_path_equals_linear_for_any_rows_and_leading_axes() {
        tch::manual_seed(3);
        let w = Tensor::randn([7, 5], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([7], (Kind::Float, Device::Cpu));
        for shape in [vec![1, 5], vec![2, 5], vec![1, 1, 5], vec![3, 4, 5]] {
            let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
            assert!(takes_matrix_path(&x, &w));
            for bias in [None, Some(&b)] {
                let got = dense(&x, &w, bias).unwrap();
                let want = x.linear(&w, bias);
                assert_eq!(got.size(), want.size());
                let d = (got - want).abs().max().double_value(&[]);
                assert!(d < 1e-5, "{shape:?}: {d}");
            }
        }
        // Many rows, a transposed matrix and other dtypes keep libtorch's linear.
        let many = Tensor::zeros([MATRIX_PATH_MAX_ROWS + 1, 5], (Kind::Float, Device::Cpu));
        assert!(!takes_matrix_path(&many, &w));
        assert!(!takes_matrix_path(
            &Tensor::zeros([1, 7], (Kind::Float, Device::Cpu)),
            &w.tr()
        ));
        let half = Tensor::zeros([1, 5], (Kind::BFloat16, Device::Cpu));
        assert!(!takes_matrix_path(&half, &w.to_kind(Kind::BFloat16)));
    }

    /// One row needing a gradient (an objective at a decoding-sized request): the value is the
    /// fast kernel's, bit for bit, and the gradient is `linear`'s.
    #[test]
    fn a_gradient_through_one_row_keeps_the_value_and_gets_linears_gradient() {
        tch::manual_seed(4);
        for kind in [Kind::Float, Kind::BFloat16] {
            let w = Tensor::randn([9, 40], (kind, Device::Cpu));
            let b = Tensor::randn([9], (kind, Device::Cpu));
            let x = Tensor::randn([1, 1, 40], (kind, Device::Cpu));
            let fast = gemv::takes(&x, 1, &w, Some(&b));
            assert_eq!(fast, gemv::available(kind), "{kind:?}: the few-row kernel");
            let plain = linear(&x, &w, None, Some(&b)).unwrap();
            let xg = x.copy().set_requires_grad(true);
            let y = linear(&xg, &w, None, Some(&b)).unwrap();
            assert!(y.equal(&plain), "{kind:?}: a gradient changed the value");
            y.sum(Kind::Float).backward();
            let want =
                w.to_kind(Kind::Float)
                    .sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
            let d = (xg.grad().to_kind(Kind::Float).view([40]) - want)
                .abs()
                .max()
                .double_value(&[]);
            assert!(d <= 0.1, "{kind:?}: gradient off by {d}");
        }
    }
}

//! Weight products through oneDNN (`packed.cpp` calls the two operators, which libtorch
//! registers but tch does not wrap): bfloat16 matrices reordered once, at model creation, into
//! oneDNN's own layout (libtorch's `linear` reorders a bfloat16 weight on every call; measured
//! here, 2 threads, AMX: a GPT-2-small MLP matrix times one row 0.056 ms instead of 0.12 ms,
//! the unembedding 2.1 ms instead of 4.0 ms), float32 matrices as they are.
use crate::model::cpp::{over_rows, owned, raw};
use std::ffi::c_void;
use tch::{Device, Kind, TchError, Tensor};

type TchResult<T> = std::result::Result<T, TchError>;

extern "C" {
    fn mc_packed_reorder(w: *const c_void, rows: i64) -> *mut c_void;
    fn mc_packed_linear(x: *const c_void, w: *const c_void, bias: *const c_void) -> *mut c_void;
}

/// How oneDNN multiplies a weight matrix, where it does.
pub enum Packed {
    /// bfloat16: a copy reordered into oneDNN's blocked layout (what AMX kernels read).
    Reordered(Tensor),
    /// float32: the matrix as it is. oneDNN's float32 product beats MKL's `linear` by
    /// 1.1-2.7x at 1-8 rows (GPT-2 small's shapes, 2 threads; `product` takes it from three
    /// rows), and reorders all of those matrices but the vocabulary
    /// one into the plain layout they already have, so a copy would gain little (the
    /// vocabulary matrix 1.1-1.4x at 1-8 rows) for its memory.
    Plain,
}

/// How `w` `[out, in]` is multiplied through oneDNN: float32 and bfloat16 on the CPU (float16
/// has no fast CPU kernels here; bfloat16 only when a `reorder`ed copy is allowed). None
/// elsewhere, or when oneDNN refuses it or its product disagrees with `linear` (a check on
/// three rows at creation), so the model keeps `linear`.
pub fn pack(w: &Tensor, reorder: bool) -> Option<Packed> {
    if w.device() != Device::Cpu || w.dim() != 2 {
        return None;
    }
    let packed = match w.kind() {
        Kind::BFloat16 if reorder => {
            Packed::Reordered(owned(unsafe { mc_packed_reorder(raw(w), 1) }).ok()?)
        }
        // A strided view (a converted transposed checkpoint matrix) would be copied per call.
        Kind::Float if w.is_contiguous() => Packed::Plain,
        _ => return None,
    };
    let by = match &packed {
        Packed::Reordered(p) => p,
        Packed::Plain => w,
    };
    let check = || -> TchResult<bool> {
        let x = Tensor::f_arange(3 * w.size()[1], (Kind::Float, Device::Cpu))?
            .f_sin()?
            .f_view([3, w.size()[1]])?
            .f_to_kind(w.kind())?;
        let want = x.f_linear::<&Tensor>(w, None)?.f_to_kind(Kind::Float)?;
        let got = linear(&x, by, w.size()[0], None)?.f_to_kind(Kind::Float)?;
        let scale = want.f_abs()?.f_max()?.double_value(&[]).max(1.0);
        let d = got.f_sub(&want)?.f_abs()?.f_max()?.double_value(&[]);
        Ok(d <= 1e-2 * scale)
    };
    check().ok()?.then_some(packed)
}

/// `x @ w^T + bias` over the last axis of `x` through oneDNN, with `packed` the reordered copy
/// or the plain matrix (`pack`; `out` rows of `w`).
pub fn linear(x: &Tensor, packed: &Tensor, out: i64, bias: Option<&Tensor>) -> TchResult<Tensor> {
    let b = bias.map_or(std::ptr::null(), raw);
    // SAFETY: live tensors borrowed for the call; the C++ side catches its exceptions.
    over_rows(x, out, |rows| unsafe {
        mc_packed_linear(rows, raw(packed), b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a.to_kind(Kind::Float) - b.to_kind(Kind::Float))
            .abs()
            .max()
            .double_value(&[])
    }

    #[test]
    fn a_packed_product_equals_linear_and_a_gradient_changes_no_value() {
        tch::manual_seed(5);
        let w = Tensor::randn([37, 24], (Kind::Float, Device::Cpu));
        assert!(
            pack(&w.to_kind(Kind::Half), true).is_none(),
            "float16 keeps linear"
        );
        let bf16 = w.to_kind(Kind::BFloat16);
        assert!(
            pack(&bf16, false).is_none(),
            "no copy allowed: bfloat16 keeps linear"
        );
        for (kind, tolerance) in [(Kind::BFloat16, 1e-2), (Kind::Float, 1e-5)] {
            let (w, b) = (w.to_kind(kind), Tensor::randn([37], (kind, Device::Cpu)));
            match pack(&w, true) {
                Some(Packed::Reordered(p)) => check_packed(&w, &b, &p, tolerance),
                Some(Packed::Plain) => check_packed(&w, &b, &w, tolerance),
                // libtorch's x86-64 builds carry oneDNN, which takes both dtypes.
                None if cfg!(target_arch = "x86_64") => panic!("oneDNN refused {kind:?}"),
                None => eprintln!("oneDNN does not take {kind:?} on this CPU: packing is off"),
            }
        }
    }

    fn check_packed(w: &Tensor, b: &Tensor, p: &Tensor, tolerance: f64) {
        let kind = w.kind();
        for shape in [vec![1, 24], vec![2, 24], vec![3, 24], vec![2, 65, 24]] {
            let x = Tensor::randn(shape.as_slice(), (kind, Device::Cpu));
            for bias in [None, Some(b)] {
                let got = crate::model::product::linear(&x, w, Some(p), bias).unwrap();
                let want = x.linear(w, bias);
                assert_eq!(got.size(), want.size());
                let scale = max_diff(&want, &want.zeros_like()).max(1.0);
                let d = max_diff(&got, &want);
                assert!(d <= tolerance * scale, "{kind:?} {shape:?}: {d} of {scale}");
            }
        }
        // An input that needs a gradient gets the same value, and linear's gradient.
        let x = Tensor::randn([3, 24], (kind, Device::Cpu)).set_requires_grad(true);
        let plain = crate::model::product::linear(&x.detach(), w, Some(p), Some(b));
        let y = crate::model::product::linear(&x, w, Some(p), Some(b)).unwrap();
        assert!(
            y.equal(&plain.unwrap()),
            "{kind:?}: a gradient changed the value"
        );
        y.sum(Kind::Float).backward();
        let want = w.sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
        let grad = x.grad();
        assert!(grad.defined(), "{kind:?}: no gradient reached the input");
        assert!(max_diff(&grad.get(0), &want) <= 0.1);
    }
}

//! Edits of activations during a forward pass (ablate, scale, steer, patch), checked against
//! the request before any work and applied where each activation is produced, in list order.
use crate::error::{err, ErrorKind, Result};
use crate::schema::activations::Activation;
use crate::schema::dims::broadcasts;
use tch::{Kind, Tensor};

type TchResult<T> = std::result::Result<T, tch::TchError>;

/// Which elements of one axis an edit touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AxisSelection {
    All,
    /// Indices into the axis, each in range (no negatives), in any order.
    Indices(Vec<i64>),
}

/// What an edit does to the selected elements.
#[derive(Debug)]
pub enum EditOp {
    /// Set to a constant (zero-ablation with 0).
    Set(f64),
    /// Multiply by a factor.
    Scale(f64),
    /// Add an operand that broadcasts to the selection's shape (steering).
    Add(Tensor),
    /// Replace with an operand that broadcasts to the selection's shape (patching).
    Replace(Tensor),
}

impl EditOp {
    fn operand(&self) -> Option<&Tensor> {
        match self {
            EditOp::Add(t) | EditOp::Replace(t) => Some(t),
            EditOp::Set(_) | EditOp::Scale(_) => None,
        }
    }
}

/// One edit: a location and layer, a selection per axis of `[batch, ...per-sequence shape]`
/// (axes past the list are whole) and an operation.
#[derive(Debug)]
pub struct Edit {
    pub location: Activation,
    pub layer: Option<i64>,
    pub selection: Vec<AxisSelection>,
    pub op: EditOp,
}

/// Why a location cannot be edited, or None where an edit is meaningful.
pub fn refusal(location: Activation) -> Option<&'static str> {
    match location {
        Activation::Logits => Some(
            "the logits are the output: nothing downstream would see the edit (change the \
             returned tensor instead)",
        ),
        _ => None,
    }
}

impl Edit {
    /// Checks the selection against the activation's full shape `[batch, ...]` and the
    /// operand against the selection's shape; `which` names the edit in messages.
    pub fn check(&self, shape: &[i64], which: &str) -> Result<()> {
        let bad = |m: String| Err(err(ErrorKind::InvalidArgument, format!("{which}: {m}")));
        if let Some(why) = refusal(self.location) {
            return bad(format!("{} cannot be edited: {why}", self.location.name()));
        }
        if self.selection.len() > shape.len() {
            return bad(format!(
                "{} axes selected but {} has {} ([batch, ...] = {shape:?})",
                self.selection.len(),
                self.location.name(),
                shape.len()
            ));
        }
        for (axis, sel) in self.selection.iter().enumerate() {
            if let AxisSelection::Indices(ix) = sel {
                if ix.is_empty() {
                    return bad(format!("axis {axis}: an empty index list"));
                }
                if let Some(&i) = ix.iter().find(|&&i| i < 0 || i >= shape[axis]) {
                    return bad(format!(
                        "axis {axis}: index {i} out of range 0..{} ({} is {shape:?})",
                        shape[axis],
                        self.location.name()
                    ));
                }
            }
        }
        if let Some(t) = self.op.operand() {
            let selected = self.selected_shape(shape);
            let operand = t.size();
            if !broadcasts(&operand, &selected) {
                return Err(err(
                    ErrorKind::Shape,
                    format!(
                        "{which}: operand of shape {operand:?} does not broadcast to the \
                         selection's shape {selected:?}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The shape of the selected sub-tensor: each listed axis has its list's length.
    pub fn selected_shape(&self, shape: &[i64]) -> Vec<i64> {
        shape
            .iter()
            .enumerate()
            .map(|(axis, &n)| match self.selection.get(axis) {
                Some(AxisSelection::Indices(ix)) => ix.len() as i64,
                _ => n,
            })
            .collect()
    }

    /// Applies the edit to `x` (the activation in its exposed layout), returning a new tensor.
    pub fn apply(&self, x: &Tensor) -> TchResult<Tensor> {
        let kind = x.kind();
        let whole = self
            .selection
            .iter()
            .all(|s| matches!(s, AxisSelection::All));
        if whole {
            return self.value(x, kind);
        }
        let index = self.index(x)?;
        let selected = x.f_index(&index)?;
        let values = self.value(&selected, kind)?;
        x.f_index_put(&index, &values, false)
    }

    /// The new values of `selected` under the operation, in `kind`.
    fn value(&self, selected: &Tensor, kind: Kind) -> TchResult<Tensor> {
        match &self.op {
            EditOp::Set(v) => selected.f_full_like(*v),
            EditOp::Scale(f) => selected.f_mul_scalar(*f),
            EditOp::Add(t) => selected.f_add(&t.f_to_dtype(kind, false, false)?),
            EditOp::Replace(t) => t
                .f_to_dtype(kind, false, false)?
                .f_expand(selected.size(), false)?
                .f_contiguous(),
        }
    }

    /// One index tensor per axis, shaped to broadcast as numpy's `ix_` (an outer product).
    fn index(&self, x: &Tensor) -> TchResult<Vec<Option<Tensor>>> {
        let shape = x.size();
        let dev = x.device();
        (0..shape.len())
            .map(|axis| {
                let ix = match self.selection.get(axis) {
                    Some(AxisSelection::Indices(ix)) => Tensor::f_from_slice(ix)?.f_to(dev)?,
                    _ => Tensor::f_arange(shape[axis], (Kind::Int64, dev))?,
                };
                let mut view = vec![1i64; shape.len()];
                view[axis] = -1;
                Ok(Some(ix.f_view(view.as_slice())?))
            })
            .collect()
    }
}

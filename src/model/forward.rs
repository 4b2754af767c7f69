//! The transformer of spec section 6 (GPT-2 style, pre-LayerNorm, TDB's conventions), built
//! on libtorch from a context's pieces, with the activations of a forward pass exposed and
//! editable, a run that may start and stop at a layer, a choice of which logits to compute and
//! a backward pass from an objective to chosen activations.
use crate::config::Config;
use crate::device::Device;
use crate::error::{err, ErrorKind, Result};
use crate::model::edits::{Edit, EditOp};
use crate::model::objective::{self, Backward, Objective};
use crate::model::packed::{self, Packed};
use crate::model::product::linear;
use crate::schema::activations::Activation;
use crate::schema::dims::broadcasts;
use crate::schema::dims::Dimension;
use crate::schema::layout::{self, Piece, Piece::*, PieceKey, PieceMap};
use crate::tensor::OwnedTensor;
use tch::{Kind, Tensor};

type TchResult<T> = std::result::Result<T, tch::TchError>;

/// The floating-point type the model computes in (layer norms and softmax always in float32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ModelDType {
    #[default]
    Float32,
    Float16,
    BFloat16,
}

impl ModelDType {
    pub fn kind(self) -> Kind {
        match self {
            ModelDType::Float32 => Kind::Float,
            ModelDType::Float16 => Kind::Half,
            ModelDType::BFloat16 => Kind::BFloat16,
        }
    }
}

/// How the model is created; the first creation on a context fixes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ModelOptions {
    /// Fold each block's layer norms into the following weights (spec section 6).
    pub simplify: bool,
    pub dtype: ModelDType,
    /// Keep no reordered copy of the weight matrices (`packed`): in bfloat16 on the CPU that
    /// copy costs the matrices' size in memory again and makes their products 1.3-2x faster.
    pub skip_reorder: bool,
}

/// One forward pass's input: `batch` sequences of `seq_len` ids, right-padded where `pad`.
#[derive(Clone, Debug, Default)]
pub struct ForwardInput {
    pub tokens: Vec<i64>,
    pub batch: i64,
    pub seq_len: i64,
    /// True where a position is padding (the inverse of Hugging Face's attention_mask).
    pub pad: Option<Vec<bool>>,
}

/// An activation request: a location and, for per-layer ones, the layer.
pub type ActivationKey = (Activation, Option<i64>);

/// Which positions get logits (the unembedding runs only there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogitsChoice {
    /// Every position: `[batch, seq_len, vocab]`.
    #[default]
    All,
    /// Each row's last non-padding position: `[batch, 1, vocab]`.
    Last,
    /// No logits (nor the unembedding).
    None,
}

/// A residual stream given by the caller at a layer's input, instead of the embeddings.
#[derive(Debug)]
pub struct Start {
    pub layer: i64,
    /// `[batch, seq_len, d_model]`, on the CPU or the model's device, any float dtype.
    pub resid: Tensor,
}

/// Keys and values of earlier positions, per row, for incremental decoding (`crate::model::decode`):
/// the new tokens are positions `lengths[row]..` of their rows. The pass writes each row's new
/// keys and values into its buffers in place, after the cached ones, and attends over them
/// there, so a step never copies the cache.
#[derive(Debug)]
pub struct Past {
    /// Cached positions per row.
    pub lengths: Vec<i64>,
    /// New (non-padding) tokens per row, at most the pass's `seq_len`.
    pub new: Vec<i64>,
    /// Per layer, per row: key buffer `[capacity, heads, d_head_qk]` and value buffer
    /// `[capacity, heads, d_head_v]`, `capacity >= lengths[row] + new[row]`, in the model's
    /// `cache_kind`.
    pub layers: Vec<Vec<(Tensor, Tensor)>>,
    /// Set when the rows' buffers are, in order, the rows of one allocation: per layer
    /// `[rows, capacity, heads, d_head]`, so a layer writes and attends in one call.
    joint: Option<Joint>,
}

/// Per layer, the rows' buffers as one tensor each, and where the new positions go in them.
#[derive(Debug)]
struct Joint {
    layers: Vec<(Tensor, Tensor)>,
    /// `(row, position)` of each new (non-padding) token, in row-major order.
    at: (Tensor, Tensor),
    /// Those tokens' indices among the pass's `[rows * T]` positions; None when all are new.
    take: Option<Tensor>,
}

impl Past {
    /// A past over rows' buffers; `joint`, when given, holds the same buffers as one
    /// `[rows, capacity, ...]` tensor per layer (row `r` the `r`th row's buffers).
    pub fn new(
        lengths: Vec<i64>,
        new: Vec<i64>,
        layers: Vec<Vec<(Tensor, Tensor)>>,
        joint: Option<Vec<(Tensor, Tensor)>>,
        dev: tch::Device,
    ) -> TchResult<Past> {
        let t = new.iter().copied().max().unwrap_or(0);
        let joint = match joint {
            None => None,
            Some(layers) => {
                let mut at: (Vec<i64>, Vec<i64>, Vec<i64>) = Default::default();
                for (r, (&p, &n)) in lengths.iter().zip(&new).enumerate() {
                    for j in 0..n {
                        at.0.push(r as i64);
                        at.1.push(p + j);
                        at.2.push(r as i64 * t + j);
                    }
                }
                let index = |v: &[i64]| Tensor::f_from_slice(v)?.f_to(dev);
                let all = at.2.len() as i64 == t * new.len() as i64;
                Some(Joint {
                    layers,
                    at: (index(&at.0)?, index(&at.1)?),
                    take: (!all).then(|| index(&at.2)).transpose()?,
                })
            }
        };
        Ok(Past {
            lengths,
            new,
            layers,
            joint,
        })
    }

    /// Keys per row (cached and new) a pass over `t` new positions attends to, padded.
    pub fn attended(&self, t: i64) -> i64 {
        self.lengths.iter().copied().max().unwrap_or(0) + t
    }

    /// Each row's cached keys and values at a layer in `kind` (views of the buffers' filled
    /// part where the cache holds that kind, converted copies otherwise).
    fn cached(&self, layer: i64, kind: Kind) -> TchResult<Vec<(Tensor, Tensor)>> {
        let to = |t: Tensor| t.f_to_kind(kind);
        self.rows(layer, |_| 0)?
            .into_iter()
            .map(|(k, v)| Ok((to(k)?, to(v)?)))
            .collect()
    }

    /// Views of each row's buffers over its cached positions plus `extra(row)` more.
    fn rows(&self, layer: i64, extra: impl Fn(usize) -> i64) -> TchResult<Vec<(Tensor, Tensor)>> {
        let at = |r: usize, t: &Tensor| t.f_narrow(0, 0, self.lengths[r] + extra(r));
        self.layers[layer as usize]
            .iter()
            .enumerate()
            .map(|(r, (k, v))| Ok((at(r, k)?, at(r, v)?)))
            .collect()
    }

    /// Writes the new positions' keys and values `[B, T, H, d]` of a layer after each row's
    /// cached ones (padding positions are not written).
    fn write(&self, layer: i64, k: &Tensor, v: &Tensor) -> TchResult<()> {
        if let Some(j) = &self.joint {
            let (kb, vb) = &j.layers[layer as usize];
            let put = |buf: &Tensor, x: &Tensor| {
                let s = x.size();
                let flat = x.f_reshape([s[0] * s[1], s[2], s[3]])?;
                let new = match &j.take {
                    Some(i) => flat.f_index_select(0, i)?,
                    None => flat,
                };
                let index = [Some(j.at.0.shallow_clone()), Some(j.at.1.shallow_clone())];
                buf.shallow_clone()
                    .f_index_put_(&index, &new.f_to_kind(buf.kind())?, false)
                    .map(|_| ())
            };
            return put(kb, k).and_then(|_| put(vb, v));
        }
        for (r, (kb, vb)) in self.layers[layer as usize].iter().enumerate() {
            let (at, n) = (self.lengths[r], self.new[r]);
            let row = |t: &Tensor| t.f_get(r as i64)?.f_narrow(0, 0, n);
            kb.f_narrow(0, at, n)?.f_copy_(&row(k)?)?;
            vb.f_narrow(0, at, n)?.f_copy_(&row(v)?)?;
        }
        Ok(())
    }
}

/// What an experiment adds to a forward pass; the default is a plain pass.
#[derive(Debug, Default)]
pub struct Experiment {
    /// Applied where each activation is produced, in list order.
    pub edits: Vec<Edit>,
    pub start: Option<Start>,
    /// Run only the layers before this one: no later layer, final norm or unembedding.
    pub end_layer: Option<i64>,
    pub logits: LogitsChoice,
    /// A backward pass from an objective; None records nothing for autograd.
    pub backward: Option<Backward>,
}

impl Experiment {
    /// The activation a start residual stands for: `resid.post_mlp` of the layer before the
    /// start (`resid.post_emb` at layer 0). It can be captured and differentiated at.
    pub fn start_key(&self) -> Option<ActivationKey> {
        self.start.as_ref().map(|s| match s.layer {
            0 => (Activation::ResidPostEmb, None),
            l => (Activation::ResidPostMlp, Some(l - 1)),
        })
    }
}

/// The logits (unless the request skipped them) and the requested activations, each
/// `[batch, ...per-sequence shape]`; with a backward pass, each row's objective `[batch]`
/// (float32) and the gradients, each with its activation's shape.
pub struct ForwardOutput {
    pub logits: Option<OwnedTensor>,
    pub activations: Vec<(ActivationKey, OwnedTensor)>,
    pub objective: Option<OwnedTensor>,
    pub grads: Vec<(ActivationKey, OwnedTensor)>,
}

impl ForwardOutput {
    pub fn get(&self, key: ActivationKey) -> Option<&OwnedTensor> {
        if key == (Activation::Logits, None) {
            return self.logits.as_ref();
        }
        self.activations
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| t)
    }

    /// The gradient of the objective at an activation the request named.
    pub fn grad(&self, key: ActivationKey) -> Option<&OwnedTensor> {
        self.grads.iter().find(|(k, _)| *k == key).map(|(_, t)| t)
    }
}

/// A created model: parameters by state-dict key, immutable, shared by every thread.
pub struct Model {
    config: Config,
    n_vocab: i64,
    device: Device,
    options: ModelOptions,
    params: PieceMap<OwnedTensor>,
    /// Weight matrices oneDNN multiplies (`packed::pack`): reordered copies, or float32
    /// matrices shared as they are.
    packed: PieceMap<OwnedTensor>,
    /// Bytes of the reordered copies in `packed` (the memory they add).
    reordered_bytes: usize,
}

/// The weight matrices the forward pass multiplies activations by (per layer and model-wide).
const PRODUCT_WEIGHTS: [Piece; 7] = [
    QWeight,
    KWeight,
    VWeight,
    OutWeight,
    MlpInWeight,
    MlpOutWeight,
    Unembed,
];

impl Model {
    /// Builds the model from pieces served by `load` (the context's cache). On CPU in
    /// float32 without simplify the parameters are the mapped pieces themselves (no copy),
    /// but for matrices stored transposed, which are copied once into `[out, in]`.
    pub fn create(
        config: &Config,
        n_vocab: i64,
        device: Device,
        options: ModelOptions,
        load: impl Fn(&str) -> Result<OwnedTensor>,
    ) -> Result<Model> {
        device.check_available()?;
        let mut params = PieceMap::default();
        for piece_key in layout::piece_keys(config) {
            let key = piece_key.0.key(piece_key.1);
            let piece = load(&key).map_err(|e| missing_layer(e, &key, config))?;
            layout::check(config, n_vocab, &key, &piece.shape(), "model creation")?;
            let t = &piece.tensor;
            let param = match (t.kind() == Kind::Float && device == Device::Cpu, t.dim()) {
                // A matrix stored transposed (HF's Conv1D) is copied once into the `[out, in]`
                // layout `product` multiplies fastest.
                (true, 2) if !t.is_contiguous() => piece.computed(|t| t.f_contiguous())?,
                (true, _) => piece,
                _ => piece
                    .computed(|t| t.f_to_device_(device.to_tch(), Kind::Float, false, false))?,
            };
            params.insert(piece_key, param)?;
        }
        let mut model = Model {
            config: config.clone(),
            n_vocab,
            device,
            options,
            params,
            packed: PieceMap::default(),
            reordered_bytes: 0,
        };
        if options.simplify {
            model.fold_layer_norms()?;
        }
        if options.dtype != ModelDType::Float32 {
            let kind = options.dtype.kind();
            for p in model.params.values_mut() {
                *p = p.computed(|t| t.f_to_dtype(kind, false, false))?;
            }
        }
        model.pack()?;
        for p in model.params.values_mut() {
            p.read_only = true;
        }
        Ok(model)
    }

    pub fn options(&self) -> ModelOptions {
        self.options
    }

    /// Readies every product weight for oneDNN where `packed::pack` takes it (a second,
    /// reordered copy of those matrices in bfloat16 on the CPU; float32 shares the matrix).
    fn pack(&mut self) -> Result<()> {
        let keys: Vec<PieceKey> = layout::piece_keys(&self.config)
            .filter(|(p, _)| PRODUCT_WEIGHTS.contains(p))
            .collect();
        for key in keys {
            let w = self.owned_at(key)?;
            let packed = match packed::pack(&w.tensor, !self.options.skip_reorder) {
                Some(Packed::Reordered(p)) => {
                    self.reordered_bytes += w.tensor.numel() * w.tensor.kind().elt_size_in_bytes();
                    OwnedTensor::owned(p, true)
                }
                Some(Packed::Plain) => w.share(),
                None => continue,
            };
            self.packed.insert(key, packed)?;
        }
        Ok(())
    }

    /// About the memory the reordered copies of the weight matrices take (their own size;
    /// oneDNN's layout may pad a little), 0 with `skip_reorder`, in float32 or off the CPU.
    pub fn reordered_bytes(&self) -> usize {
        self.reordered_bytes
    }

    /// `x @ W^T (+ bias)` for a product weight, through the kernel `product::linear` picks.
    fn product(&self, x: &Tensor, key: PieceKey, bias: Option<&Tensor>) -> TchResult<Tensor> {
        let packed = self.packed.get(key).map(|p| &p.tensor);
        linear(x, self.param_at(key)?, packed, bias)
    }

    /// The dtype a decoding cache holds keys and values in: float32 on the CPU whatever the
    /// model's dtype (a bfloat16 or float16 value converts exactly, and libtorch's CPU
    /// attention over one reduced-precision query runs a matrix-vector product per head and
    /// key block, while oneDNN's products build a kernel for every new key count), the model's
    /// dtype elsewhere.
    pub fn cache_kind(&self) -> Kind {
        match self.device {
            Device::Cpu => Kind::Float,
            _ => self.options.dtype.kind(),
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A parameter by state-dict key (after simplify, the folded value).
    pub fn param(&self, key: &str) -> Result<&OwnedTensor> {
        match Piece::parse(key) {
            Some(k) => self.owned_at(k),
            None => Err(err(
                ErrorKind::NotFound,
                format!("model has no parameter `{key}`"),
            )),
        }
    }

    /// A parameter by piece and layer.
    fn owned_at(&self, key: PieceKey) -> Result<&OwnedTensor> {
        self.params.get(key).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!("model has no parameter `{}`", key.0.key(key.1)),
            )
        })
    }

    /// A model-wide parameter (every one exists once `create` succeeded).
    fn p(&self, piece: Piece) -> TchResult<&Tensor> {
        self.param_at((piece, None))
    }

    /// A parameter of a layer.
    fn lp(&self, layer: i64, piece: Piece) -> TchResult<&Tensor> {
        self.param_at((piece, Some(layer)))
    }

    fn param_at(&self, key: PieceKey) -> TchResult<&Tensor> {
        self.params
            .get(key)
            .map(|t| &t.tensor)
            .ok_or_else(|| tch::TchError::Kind(format!("missing parameter {}", key.0.key(key.1))))
    }

    /// `simplify`: each block's ln_1 goes into q/k/v and ln_2 into mlp.in_layer
    /// (`W' = W * g[None, :]`, `b' = b + W @ beta`), then those gains become 1 and biases 0.
    fn fold_layer_norms(&mut self) -> Result<()> {
        for layer in 0..self.config.n_layers {
            for (ln, targets) in [
                (
                    (Ln1Weight, Ln1Bias),
                    &[(QWeight, QBias), (KWeight, KBias), (VWeight, VBias)][..],
                ),
                ((Ln2Weight, Ln2Bias), &[(MlpInWeight, MlpInBias)][..]),
            ] {
                let at = |p: Piece| (p, Some(layer));
                let g = self.lp(layer, ln.0)?.shallow_clone();
                let beta = self.lp(layer, ln.1)?.shallow_clone();
                for &(weight, bias) in targets {
                    let w = self.owned_at(at(weight))?;
                    let b = self.owned_at(at(bias))?;
                    let folded_b = b.computed(|b| b.f_add(&w.tensor.f_mv(&beta)?))?;
                    let folded_w = w.computed(|w| w.f_mul(&g.f_unsqueeze(0)?))?;
                    self.params.insert(at(weight), folded_w)?;
                    self.params.insert(at(bias), folded_b)?;
                }
                let ones = OwnedTensor::owned(g.f_ones_like()?, false);
                let zeros = OwnedTensor::owned(beta.f_zeros_like()?, false);
                self.params.insert(at(ln.0), ones)?;
                self.params.insert(at(ln.1), zeros)?;
            }
        }
        Ok(())
    }

    /// Checks a request against the config before any work: a clear error per bad field.
    pub fn check_input(&self, input: &ForwardInput, wanted: &[ActivationKey]) -> Result<()> {
        self.check_request(input, wanted, &Experiment::default())
    }

    /// `check_input` for a request with edits, a start, an end and a logits choice.
    pub fn check_request(
        &self,
        input: &ForwardInput,
        wanted: &[ActivationKey],
        x: &Experiment,
    ) -> Result<()> {
        self.check_with_past(input, wanted, x, None)
    }

    /// `check_request` for new positions after a past (which refuses what needs the whole
    /// sequence: gradients, a start residual, an early stop).
    fn check_with_past(
        &self,
        input: &ForwardInput,
        wanted: &[ActivationKey],
        x: &Experiment,
        past: Option<&Past>,
    ) -> Result<()> {
        if let Some(p) = past {
            let refused = [
                (x.backward.is_some(), "gradients"),
                (x.start.is_some(), "a start residual"),
                (
                    x.end_layer.is_some(),
                    "an end layer (every layer's keys and values are kept)",
                ),
            ];
            if let Some((_, what)) = refused.iter().find(|(on, _)| *on) {
                return Err(err(
                    ErrorKind::Unsupported,
                    format!("a decoding state does not take {what}"),
                ));
            }
            let fits = |(r, (k, v)): (usize, &(Tensor, Tensor))| {
                let need = p.lengths[r] + p.new[r];
                p.new[r] <= input.seq_len && k.size()[0] >= need && v.size()[0] >= need
            };
            let rows_fit = p.layers.len() as i64 == self.config.n_layers
                && p.layers.iter().all(|rows| {
                    rows.len() as i64 == input.batch && rows.iter().enumerate().all(fits)
                });
            let counts = [p.lengths.len(), p.new.len()];
            if counts.iter().any(|&n| n as i64 != input.batch) || !rows_fit {
                return Err(err(
                    ErrorKind::Internal,
                    format!(
                        "a past of {counts:?} rows (lengths, new) with buffers too small or \
                         miscounted for {} rows",
                        input.batch
                    ),
                ));
            }
        }
        let bad = |m: String| Err(err(ErrorKind::InvalidArgument, m));
        let (b, t) = (input.batch, input.seq_len);
        if b <= 0 || t <= 0 {
            return bad(format!("empty batch: {b} sequences of {t} tokens"));
        }
        if t > self.config.ctx_window {
            return bad(format!(
                "sequence length {t} exceeds ctx_window {}",
                self.config.ctx_window
            ));
        }
        // With a start residual the tokens are optional; given, they are checked all the same.
        if x.start.is_none() || !input.tokens.is_empty() {
            self.check_tokens(input)?;
        }
        if let Some(pad) = &input.pad {
            if pad.len() as i64 != b * t {
                return bad(format!(
                    "pad mask has {} entries for a {b}x{t} batch",
                    pad.len()
                ));
            }
            for (row, r) in pad.chunks(t as usize).enumerate() {
                if let Some(p) = r.windows(2).position(|w| w[0] && !w[1]) {
                    return bad(format!(
                        "pad mask row {row} is not right-padded (padding at {p} before a token at {})",
                        p + 1
                    ));
                }
            }
        }
        let layers = self.layer_range(x)?;
        for &(act, layer) in wanted {
            self.check_key(act, layer, layers, x, act.name())?;
        }
        for (i, e) in x.edits.iter().enumerate() {
            let which = format!("edit {i} ({})", e.location.name());
            self.check_key(e.location, e.layer, layers, x, &which)?;
            e.check(&self.shape_after(e.location, b, t, past), &which)?;
            if let EditOp::Add(op) | EditOp::Replace(op) = &e.op {
                self.check_device(op, &format!("{which}: the operand"))?;
            }
        }
        if let Some(s) = &x.start {
            let want = [b, t, self.config.d_model];
            if s.resid.size() != want {
                return Err(err(
                    ErrorKind::Shape,
                    format!(
                        "the start residual has shape {:?} but layer {}'s input is {want:?} \
                         ([batch, seq_len, d_model])",
                        s.resid.size(),
                        s.layer
                    ),
                ));
            }
            self.check_device(&s.resid, "the start residual")?;
        }
        if let Some(bw) = &x.backward {
            self.resolve(input, bw)?;
            self.check_backward(bw, layers, x, b, t)?;
        }
        Ok(())
    }

    /// The objective's location, direction and logits needs, and the gradient locations.
    fn check_backward(
        &self,
        bw: &Backward,
        layers: (i64, i64),
        x: &Experiment,
        b: i64,
        t: i64,
    ) -> Result<()> {
        if bw.objective.needs_logits() && x.end_layer.is_some() {
            return Err(err(
                ErrorKind::InvalidArgument,
                "objective: it reads the logits but the request stops before them (end_layer)",
            ));
        }
        if let Objective::Direction {
            location,
            layer,
            direction,
            ..
        } = &bw.objective
        {
            self.check_key(*location, *layer, layers, x, "objective")?;
            let mut want = self.full_shape(*location, b, t);
            want.remove(1); // one position per row
            if !broadcasts(&direction.size(), &want) {
                return Err(err(
                    ErrorKind::Shape,
                    format!(
                        "objective: direction of shape {:?} does not broadcast to {want:?} \
                         ([batch, ...] of {} at one position)",
                        direction.size(),
                        location.name()
                    ),
                ));
            }
            self.check_device(direction, "objective: the direction")?;
        }
        for &(act, layer) in &bw.at {
            let what = format!("gradient at {}", act.name());
            if act == Activation::Logits {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    format!(
                        "{what}: not offered (ask at resid.post_ln_f, the unembedding's input)"
                    ),
                ));
            }
            self.check_key(act, layer, layers, x, &what)?;
        }
        Ok(())
    }

    /// The objective's positions with -1 resolved, and the log-probability terms.
    fn resolve(&self, input: &ForwardInput, bw: &Backward) -> Result<Resolved> {
        let (b, t) = (input.batch, input.seq_len);
        let lengths = objective::row_lengths(input.pad.as_deref(), b, t);
        let positions = bw.objective.check(&lengths, t, self.n_vocab)?;
        let log_prob = match &bw.objective {
            Objective::LogProb { targets } => {
                if targets.is_none() && input.tokens.is_empty() {
                    return Err(err(
                        ErrorKind::InvalidArgument,
                        "objective: next-token targets need the tokens (the request gives a \
                         start residual only): pass targets",
                    ));
                }
                let tokens = &input.tokens;
                Some(objective::log_prob_targets(
                    targets.as_deref(),
                    tokens,
                    &lengths,
                    t,
                )?)
            }
            _ => None,
        };
        Ok(Resolved {
            positions,
            log_prob,
        })
    }

    fn check_tokens(&self, input: &ForwardInput) -> Result<()> {
        let (b, t) = (input.batch, input.seq_len);
        if input.tokens.len() as i64 != b * t {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("{} token ids given for a {b}x{t} batch", input.tokens.len()),
            ));
        }
        match input
            .tokens
            .iter()
            .enumerate()
            .find(|(_, &id)| id < 0 || id >= self.n_vocab)
        {
            Some((i, id)) => Err(err(
                ErrorKind::Token,
                format!(
                    "token id {id} at position {i} is outside the vocabulary (0..{})",
                    self.n_vocab
                ),
            )),
            None => Ok(()),
        }
    }

    /// The layers a request runs, `first..end`: checked against each other and the model.
    pub fn layer_range(&self, x: &Experiment) -> Result<(i64, i64)> {
        let n = self.config.n_layers;
        let first = x.start.as_ref().map_or(0, |s| s.layer);
        let end = x.end_layer.unwrap_or(n);
        if !(0..n).contains(&first) || end <= first || end > n {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!(
                    "start layer {first} and end layer {end} are out of order or out of range: \
                     the request runs layers start..end, 0 <= start < end <= {n}"
                ),
            ));
        }
        Ok((first, end))
    }

    /// A location and layer that this request computes (for an activation or an edit).
    fn check_key(
        &self,
        act: Activation,
        layer: Option<i64>,
        (first, end): (i64, i64),
        x: &Experiment,
        what: &str,
    ) -> Result<()> {
        let bad = |m: String| Err(err(ErrorKind::InvalidArgument, format!("{what}: {m}")));
        let n = self.config.n_layers;
        if x.start_key() == Some((act, layer)) {
            return Ok(()); // the start residual itself
        }
        match (act.per_layer(), layer) {
            (true, Some(l)) if !(0..n).contains(&l) => bad(format!(
                "layer {l} out of range for {} (model has {n} layers)",
                act.name()
            )),
            (true, Some(l)) if !(first..end).contains(&l) => bad(format!(
                "layer {l} is not run by this request (it runs layers {first}..{end})"
            )),
            (true, None) => bad(format!("{} is per-layer: a layer is required", act.name())),
            (false, Some(l)) => bad(format!(
                "{} is model-wide: no layer may be given (got {l})",
                act.name()
            )),
            (false, None) if act == Activation::ResidPostEmb && x.start.is_some() => bad(
                "resid.post_emb is not computed: the request starts from a residual stream".into(),
            ),
            (false, None) if act != Activation::ResidPostEmb && x.end_layer.is_some() => {
                bad(format!(
                    "{} is not computed: the request stops after layer {}",
                    act.name(),
                    end - 1
                ))
            }
            _ => Ok(()),
        }
    }

    /// A caller tensor must be on the CPU (it is copied over) or on the model's device.
    fn check_device(&self, t: &Tensor, what: &str) -> Result<()> {
        let d = Device::from_tch(t.device());
        match d == Device::Cpu || d == self.device {
            true => Ok(()),
            false => Err(err(
                ErrorKind::Device,
                format!("{what} is on {d:?} but the model is on {:?}", self.device),
            )),
        }
    }

    /// `full_shape` for `t` new positions after a past: the attention pattern's key axis
    /// covers the cached positions too.
    pub fn shape_after(
        &self,
        act: Activation,
        batch: i64,
        t: i64,
        past: Option<&Past>,
    ) -> Vec<i64> {
        let mut shape = self.full_shape(act, batch, t);
        if let (Some(p), Activation::AttnQkLogits | Activation::AttnQkProbs) = (past, act) {
            shape[2] = p.attended(t);
        }
        shape
    }

    /// An activation's shape `[batch, ...per-sequence shape]` for `t` positions.
    pub fn full_shape(&self, act: Activation, batch: i64, t: i64) -> Vec<i64> {
        let size = |d: Dimension| d.size_in(&self.config, self.n_vocab).unwrap_or(t);
        std::iter::once(batch)
            .chain(act.shape().iter().map(|&d| size(d)))
            .collect()
    }

    /// Runs the model without recording gradients; keeps only the requested activations.
    pub fn forward(&self, input: &ForwardInput, wanted: &[ActivationKey]) -> Result<ForwardOutput> {
        self.forward_with(input, wanted, &Experiment::default())
    }

    /// `forward` with edits, a start, an end, a logits choice and a backward pass.
    pub fn forward_with(
        &self,
        input: &ForwardInput,
        wanted: &[ActivationKey],
        x: &Experiment,
    ) -> Result<ForwardOutput> {
        self.forward_inner(input, wanted, x, None)
    }

    /// A pass over new positions after `past`, which also receives the new positions' keys
    /// and values (written into its buffers after the cached ones).
    pub fn forward_after(
        &self,
        input: &ForwardInput,
        wanted: &[ActivationKey],
        x: &Experiment,
        past: &Past,
    ) -> Result<ForwardOutput> {
        self.forward_inner(input, wanted, x, Some(past))
    }

    fn forward_inner(
        &self,
        input: &ForwardInput,
        wanted: &[ActivationKey],
        x: &Experiment,
        past: Option<&Past>,
    ) -> Result<ForwardOutput> {
        self.check_with_past(input, wanted, x, past)?;
        let edits = x
            .edits
            .iter()
            .map(|e| self.on_device(e))
            .collect::<TchResult<Vec<_>>>()?;
        let bw = x.backward.as_ref();
        let mut hooks = Hooks {
            wanted: KeySet::new(wanted.iter().copied(), self.config.n_layers),
            edits: &edits,
            got: Vec::new(),
            grad_at: KeySet::new(
                bw.iter().flat_map(|b| b.at.iter().copied()),
                self.config.n_layers,
            ),
            targets: Vec::new(),
            objective_at: bw.and_then(|b| match &b.objective {
                Objective::Direction {
                    location, layer, ..
                } => Some((*location, *layer)),
                _ => None,
            }),
            objective_act: None,
            past,
        };
        let owned = |t: Tensor| TchResult::Ok(OwnedTensor::owned(t.f_detach()?, false));
        let (logits, objective, grads) = match bw {
            None => (
                tch::no_grad(|| self.run(input, x, &mut hooks))?.logits,
                None,
                Vec::new(),
            ),
            Some(bw) => {
                let r = self.resolve(input, bw)?;
                tch::with_grad(|| -> Result<_> {
                    let fin = self.run(input, x, &mut hooks)?;
                    let value = self.objective_value(&bw.objective, &r, &fin, x, &hooks)?;
                    let grads = hooks.backward(&value)?;
                    Ok((fin.logits, Some(owned(value)?), grads))
                })?
            }
        };
        let out = ForwardOutput {
            logits: logits.map(owned).transpose()?,
            activations: hooks.got,
            objective,
            grads,
        };
        Ok(out)
    }

    /// Each row's objective `[batch]` in float32, still attached to the autograd graph.
    fn objective_value(
        &self,
        o: &Objective,
        r: &Resolved,
        fin: &Final,
        x: &Experiment,
        hooks: &Hooks,
    ) -> TchResult<Tensor> {
        let missing = |what: &str| tch::TchError::Kind(format!("objective: no {what}"));
        let unembed = |x: &Tensor| self.product(x, (Unembed, None), None);
        let h = || fin.h.as_ref().ok_or_else(|| missing("final residual"));
        let rows = || unembed(&objective::at_positions(h()?, &r.positions)?);
        let moved = |t: &Tensor| t.f_to_device_(self.device.to_tch(), Kind::Float, false, false);
        match o {
            Objective::Logit { tokens, .. } => objective::pick(&rows()?, tokens),
            Objective::LogitDiff { tokens, others, .. } => {
                let l = rows()?;
                objective::pick(&l, tokens)?.f_sub(&objective::pick(&l, others)?)
            }
            Objective::LogProb { .. } => {
                let (ids, counted) = r.log_prob.as_ref().ok_or_else(|| missing("targets"))?;
                let full = match (&fin.logits, x.logits) {
                    (Some(l), LogitsChoice::All) => l.shallow_clone(),
                    _ => unembed(h()?)?,
                };
                objective::mean_log_prob(&full, ids, counted)
            }
            Objective::Direction {
                location: Activation::Logits,
                direction,
                ..
            } => objective::dot(&rows()?, &moved(direction)?),
            Objective::Direction { direction, .. } => {
                let act = hooks
                    .objective_act
                    .as_ref()
                    .ok_or_else(|| missing("activation"))?;
                objective::dot(
                    &objective::at_positions(act, &r.positions)?,
                    &moved(direction)?,
                )
            }
        }
    }

    /// The edit with its operand on the model's device, in the model's dtype.
    fn on_device(&self, e: &Edit) -> TchResult<Edit> {
        let dev = self.device.to_tch();
        let kind = self.options.dtype.kind();
        let moved = |t: &Tensor| t.f_to_device_(dev, kind, false, false);
        let op = match &e.op {
            EditOp::Set(v) => EditOp::Set(*v),
            EditOp::Scale(f) => EditOp::Scale(*f),
            EditOp::Add(t) => EditOp::Add(moved(t)?),
            EditOp::Replace(t) => EditOp::Replace(moved(t)?),
        };
        Ok(Edit {
            location: e.location,
            layer: e.layer,
            selection: e.selection.clone(),
            op,
        })
    }

    fn run(&self, input: &ForwardInput, x: &Experiment, hooks: &mut Hooks) -> TchResult<Final> {
        let dev = self.device.to_tch();
        let (b, t) = (input.batch, input.seq_len);
        let pad = match &input.pad {
            Some(p) if p.iter().any(|&x| x) => {
                Some(Tensor::f_from_slice(p)?.f_view([b, t])?.f_to(dev)?)
            }
            _ => None,
        };
        let mask = Mask {
            allowed: match hooks.past {
                None => self.attention_mask(t, pad.as_ref())?,
                Some(p) => self.mask_after(p, t)?,
            },
            causal_only: pad.is_none() && hooks.past.is_none(),
        };
        let (mut h, first) = match (&x.start, x.start_key()) {
            (Some(s), Some((act, layer))) => {
                let kind = self.options.dtype.kind();
                let resid = s.resid.f_to_device_(dev, kind, false, false)?;
                (hooks.at(act, layer, resid)?, s.layer)
            }
            _ => (self.embed(input, pad.as_ref(), hooks)?, 0),
        };
        for layer in first..x.end_layer.unwrap_or(self.config.n_layers) {
            h = self.block(layer, h, &mask, hooks)?;
        }
        if x.end_layer.is_some() {
            return Ok(Final {
                h: None,
                logits: None,
            });
        }
        let (lnf, scale) = (Activation::ResidLnFScale, Activation::ResidPostLnF);
        let h = self.layer_norm(
            &h,
            self.p(FinalLnWeight)?,
            self.p(FinalLnBias)?,
            hooks,
            (lnf, scale, None),
        )?;
        let unembed = |x: &Tensor| self.product(x, (Unembed, None), None);
        let logits = match x.logits {
            LogitsChoice::All => Some(unembed(&h)?),
            LogitsChoice::Last => {
                let last = last_positions(pad.as_ref(), b, t, dev)?;
                let d = h.size()[2];
                let rows = h.f_gather(
                    1,
                    &last.f_view([b, 1, 1])?.f_expand([b, 1, d], false)?,
                    false,
                )?;
                Some(unembed(&rows)?)
            }
            LogitsChoice::None => None,
        };
        Ok(Final { h: Some(h), logits })
    }

    /// Token plus position embeddings: `resid.post_emb`.
    fn embed(
        &self,
        input: &ForwardInput,
        pad: Option<&Tensor>,
        hooks: &mut Hooks,
    ) -> TchResult<Tensor> {
        let dev = self.device.to_tch();
        let (b, t) = (input.batch, input.seq_len);
        let tokens = Tensor::f_from_slice(&input.tokens)?
            .f_view([b, t])?
            .f_to(dev)?;
        let positions = match (hooks.past, pad) {
            (Some(past), _) => {
                // Row r's new tokens are positions lengths[r].. (padding clamped in range).
                let start = Tensor::f_from_slice(&past.lengths)?
                    .f_to(dev)?
                    .f_view([b, 1])?;
                let last = self.config.ctx_window - 1;
                start
                    .f_add(&Tensor::f_arange(t, (Kind::Int64, dev))?.f_unsqueeze(0)?)?
                    .f_clamp_max(last)?
            }
            (None, None) => Tensor::f_arange(t, (Kind::Int64, dev))?.f_unsqueeze(0)?,
            (None, Some(p)) => p
                .f_logical_not()?
                .f_cumsum(1, Kind::Int64)?
                .f_sub_scalar(1)?
                .f_clamp_min(0)?,
        };
        let x = Tensor::f_embedding(self.p(TokEmbed)?, &tokens, -1, false, false)?.f_add(
            &Tensor::f_embedding(self.p(PosEmbed)?, &positions, -1, false, false)?,
        )?;
        hooks.at(Activation::ResidPostEmb, None, x)
    }

    /// Allowed (query, key) pairs `[batch or 1, 1, T, S]`: causal, and where padding is
    /// present, never exactly one of query and key padding.
    fn attention_mask(&self, t: i64, pad: Option<&Tensor>) -> TchResult<Tensor> {
        let dev = self.device.to_tch();
        let causal = Tensor::f_ones([t, t], (Kind::Bool, dev))?.f_tril(0)?;
        let allowed = match pad {
            None => causal.f_view([1, 1, t, t])?,
            Some(p) => {
                let xor = p.f_unsqueeze(2)?.f_logical_xor(&p.f_unsqueeze(1)?)?;
                causal
                    .f_unsqueeze(0)?
                    .f_logical_and(&xor.f_logical_not()?)?
                    .f_unsqueeze(1)?
            }
        };
        Ok(allowed)
    }

    /// Allowed (query, key) pairs `[batch, 1, T, S]` after a past: new query `j` of row `r`
    /// sees keys `0 ..= lengths[r] + j` (its cached history, then the new keys up to itself).
    /// Padding queries see real keys; their outputs are never cached.
    fn mask_after(&self, past: &Past, t: i64) -> TchResult<Tensor> {
        allowed_after(&past.lengths, t, past.attended(t), self.device.to_tch())
    }

    fn block(&self, layer: i64, x: Tensor, mask: &Mask, hooks: &mut Hooks) -> TchResult<Tensor> {
        use Activation::*;
        let c = &self.config;
        let (b, t) = (x.size()[0], x.size()[1]);
        let (heads, dqk, dv) = (c.n_heads, c.d_head_qk(), c.d_head_v());
        let l = Some(layer);
        let h = self.layer_norm(
            &x,
            self.lp(layer, Ln1Weight)?,
            self.lp(layer, Ln1Bias)?,
            hooks,
            (AttnLnScale, ResidPostAttnLn, l),
        )?;
        // Keys are cached scaled, and the explicit path sees scaled q and k.
        let keep_scaled = hooks.sees_pattern(l) || hooks.past.is_some();
        // TDB scales q and k by d_head^-1/4 each; when neither is read or changed and the
        // fused kernel runs, it applies d_head^-1/2 itself (two fewer passes over q and k).
        let in_kernel = !keep_scaled && !hooks.touches(AttnQ, l) && !hooks.touches(AttnK, l);
        let qk_scale = (dqk as f64).powf(-0.25);
        let proj = |(weight, bias): (Piece, Piece), d: i64| -> TchResult<Tensor> {
            self.dense(&h, layer, (weight, bias))?
                .f_view([b, t, heads, d])
        };
        let scaled = |x: Tensor| match in_kernel {
            true => Ok(x),
            false => x.f_mul_scalar(qk_scale),
        };
        let q = hooks.at(AttnQ, l, scaled(proj((QWeight, QBias), dqk)?)?)?;
        let k = hooks.at(AttnK, l, scaled(proj((KWeight, KBias), dqk)?)?)?;
        let v = hooks.at(AttnV, l, proj((VWeight, VBias), dv)?)?;
        if let Some(p) = hooks.past {
            p.write(layer, &k, &v)?;
        }
        let v_out = match (hooks.sees_pattern(l), hooks.past) {
            (true, past) => {
                let cached = past
                    .map(|p| p.cached(layer, q.kind()).map(|rows| (p, rows)))
                    .transpose()?;
                let past = cached.as_ref().map(|(p, rows)| (*p, rows.as_slice()));
                explicit_attention(l, (&q, &k, &v), &mask.allowed, past, hooks)?
            }
            (false, Some(p)) => fused_after(p, layer, &q, &mask.allowed)?,
            (false, None) => {
                let rest = if in_kernel { qk_scale * qk_scale } else { 1.0 };
                fused_attention((&q, &k, &v), mask, rest)?
            }
        };
        let v_out = hooks.at(AttnVOut, l, v_out)?;
        let delta_attn = self.dense(
            &v_out.f_reshape([b, t, heads * dv])?,
            layer,
            (OutWeight, OutBias),
        )?;
        let delta_attn = hooks.at(ResidDeltaAttn, l, delta_attn)?;
        let x = hooks.at(ResidPostAttn, l, x.f_add(&delta_attn)?)?;
        let h = self.layer_norm(
            &x,
            self.lp(layer, Ln2Weight)?,
            self.lp(layer, Ln2Bias)?,
            hooks,
            (MlpLnScale, ResidPostMlpLn, l),
        )?;
        let pre = self.dense(&h, layer, (MlpInWeight, MlpInBias))?;
        let pre = hooks.at(MlpPreAct, l, pre)?;
        let post = hooks.at(MlpPostAct, l, pre.f_gelu("tanh")?)?;
        let delta_mlp = self.dense(&post, layer, (MlpOutWeight, MlpOutBias))?;
        let delta_mlp = hooks.at(ResidDeltaMlp, l, delta_mlp)?;
        hooks.at(ResidPostMlp, l, x.f_add(&delta_mlp)?)
    }

    /// A layer's linear map `(weight, bias)` applied to `x`.
    fn dense(&self, x: &Tensor, layer: i64, (weight, bias): (Piece, Piece)) -> TchResult<Tensor> {
        self.product(x, (weight, Some(layer)), Some(self.lp(layer, bias)?))
    }

    /// TDB's Norm: in float32, `x - mean`, `scale = sqrt(mean(x^2) + 1e-5)`, `x / scale * w + b`,
    /// cast back. `(scale, output, layer)` name the two activations it produces; an edit of the
    /// scale changes what the normalisation divides by.
    fn layer_norm(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        hooks: &mut Hooks,
        (scale_at, out_at, layer): (Activation, Activation, Option<i64>),
    ) -> TchResult<Tensor> {
        if !hooks.touches(scale_at, layer) {
            // Nothing reads or changes the scale: libtorch's fused kernel, the same formula,
            // which computes in float32 for half-precision inputs and rounds once at the end.
            let out = x.f_layer_norm([w.size()[0]], Some(w), Some(b), 1e-5, false)?;
            return hooks.at(out_at, layer, out);
        }
        let kind = x.kind();
        let xf = x.f_to_dtype(Kind::Float, false, false)?;
        let (wf, bf) = (
            w.f_to_dtype(Kind::Float, false, false)?,
            b.f_to_dtype(Kind::Float, false, false)?,
        );
        let centered = xf.f_sub(&xf.f_mean_dim([-1i64].as_slice(), true, Kind::Float)?)?;
        let mut scale = centered
            .f_square()?
            .f_mean_dim([-1i64].as_slice(), true, Kind::Float)?
            .f_add_scalar(1e-5)?
            .f_sqrt()?;
        let edited = hooks.at(scale_at, layer, scale.f_to_dtype(kind, false, false)?)?;
        if hooks.edits_at(scale_at, layer) || hooks.grad_at.contains(&(scale_at, layer)) {
            scale = edited.f_to_dtype(Kind::Float, false, false)?;
        }
        let out = centered.f_div(&scale)?.f_mul(&wf)?.f_add(&bf)?;
        hooks.at(out_at, layer, out.f_to_dtype(kind, false, false)?)
    }
}

/// A per-layer piece missing past layer 0 means the config claims more layers than exist.
fn missing_layer(e: crate::error::Error, key: &str, config: &Config) -> crate::error::Error {
    match (e.kind, layout::layer_of(key)) {
        (ErrorKind::NotFound, Some(l)) if l > 0 => {
            let mut claim = crate::source::layer_claim_error("model", config.n_layers, l);
            claim.message = format!("{} ({})", claim.message, e.message);
            claim
        }
        _ => e,
    }
}

/// The attention mask of a pass: allowed (query, key) pairs `[B or 1, 1, T, S]`, and whether
/// they are exactly the causal ones (no padding, no past), which the fused kernel applies
/// itself, faster.
struct Mask {
    allowed: Tensor,
    causal_only: bool,
}

/// Attention without its pattern: libtorch's fused kernel (no `[B, H, T, S]` tensor is
/// materialised), for passes that neither capture, edit nor differentiate `attn.qk_*`; same
/// result as `explicit_attention` within rounding. `q` is `[B, T, H, d]`, `k` and `v`
/// `[B, S, H, d]`; `scale` is what q.k still needs (1 when q and k arrive scaled). Returns
/// `[B, T, H, d_head_v]`.
fn fused_attention(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    mask: &Mask,
    scale: f64,
) -> TchResult<Tensor> {
    let heads_first = |x: &Tensor| x.f_permute([0, 2, 1, 3]);
    Tensor::f_scaled_dot_product_attention(
        &heads_first(q)?,
        &heads_first(k)?,
        &heads_first(v)?,
        (!mask.causal_only).then_some(&mask.allowed),
        0.0,
        mask.causal_only,
        scale,
        false,
    )?
    .f_permute([0, 2, 1, 3])
}

/// `fused_attention` after a past over the rows' buffers in place (their cached keys and
/// values, then the new ones the pass has just written): nothing is copied, so a step's cost
/// does not grow with a join. One call for all rows when they share an allocation, else one
/// per row. `q` `[B, T, H, d]` arrives scaled, as the cache is; it attends in the cache's
/// dtype and the result comes back in its own. `allowed` is the pass's `[B, 1, T, S]` mask.
fn fused_after(past: &Past, layer: i64, q: &Tensor, allowed: &Tensor) -> TchResult<Tensor> {
    let t = q.size()[1];
    // [B, T, H, d] -> [B, H, T, d], in the cache's dtype.
    let (back, kind) = (q.kind(), past.layers[layer as usize][0].0.kind());
    let q = q.f_permute([0, 2, 1, 3])?.f_to_kind(kind)?;
    // Keys 0..s of `[rows, S', H, d]` buffers; a mask only where some key must be hidden.
    let attend = |q: &Tensor, k: &Tensor, v: &Tensor, allowed: Tensor, everything: bool| {
        let s = k.size()[1].min(allowed.size()[3]);
        let allowed = allowed.f_narrow(3, 0, s)?;
        let keys = |x: &Tensor| x.f_narrow(1, 0, s)?.f_permute([0, 2, 1, 3]);
        Tensor::f_scaled_dot_product_attention(
            q,
            &keys(k)?,
            &keys(v)?,
            (!everything).then_some(&allowed),
            0.0,
            false,
            1.0,
            false,
        )
    };
    let out = match &past.joint {
        Some(j) => {
            let (k, v) = &j.layers[layer as usize];
            // One query per row sees every key when the rows hold equally many.
            let even = past.lengths.iter().all(|&p| p == past.lengths[0]);
            attend(&q, k, v, allowed.shallow_clone(), t == 1 && even)?
        }
        None => {
            let rows = past.rows(layer, |r| past.new[r])?;
            let per_row = rows
                .iter()
                .enumerate()
                .map(|(r, (k, v))| {
                    let row = |x: &Tensor| x.f_narrow(0, r as i64, 1);
                    attend(
                        &row(&q)?,
                        &k.f_unsqueeze(0)?,
                        &v.f_unsqueeze(0)?,
                        row(allowed)?,
                        t == 1,
                    )
                })
                .collect::<TchResult<Vec<_>>>()?;
            Tensor::f_cat(&per_row, 0)?
        }
    };
    out.f_permute([0, 2, 1, 3])?.f_to_kind(back)
}

/// Allowed (query, key) pairs `[rows, 1, t, s]` for `t` new queries after each row's cached
/// positions: query `j` of row `r` sees keys `0 ..= cached[r] + j`.
fn allowed_after(cached: &[i64], t: i64, s: i64, dev: tch::Device) -> TchResult<Tensor> {
    let limit = Tensor::f_from_slice(cached)?
        .f_to(dev)?
        .f_view([cached.len() as i64, 1, 1, 1])?
        .f_add(&Tensor::f_arange(t, (Kind::Int64, dev))?.f_view([1, 1, t, 1])?)?;
    Tensor::f_arange(s, (Kind::Int64, dev))?
        .f_view([1, 1, 1, s])?
        .f_le_tensor(&limit)
}

/// Attention through its pattern `[B, H, T, S]`, for requests that capture, edit or
/// differentiate `attn.qk_*` (with or without a past); returns `[B, T, H, d_head_v]`.
fn explicit_attention(
    l: Option<i64>,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    mask: &Tensor,
    past: Option<(&Past, &[(Tensor, Tensor)])>,
    hooks: &mut Hooks,
) -> TchResult<Tensor> {
    use Activation::*;
    let t = q.size()[1];
    // [B, H, T, S]; edits see [B, T, S, H] before the masks, which are applied after them.
    let raw = match past {
        None => q
            .f_permute([0, 2, 1, 3])?
            .f_matmul(&k.f_permute([0, 2, 3, 1])?)?,
        Some((p, rows)) => scores_after(rows, q, k, p.attended(t))?,
    };
    let raw = hooks.edit_heads_last(AttnQkLogits, l, raw)?;
    let logits = raw.f_masked_fill(&mask.f_logical_not()?, f64::NEG_INFINITY)?;
    let logits = hooks.tap(AttnQkLogits, l, logits, true)?;
    let probs = logits
        .f_softmax(-1, Kind::Float)?
        .f_to_dtype(q.kind(), false, false)?;
    let probs = hooks.edit_heads_last(AttnQkProbs, l, probs)?;
    let probs = hooks.tap(AttnQkProbs, l, probs, true)?;
    match past {
        None => probs
            .f_matmul(&v.f_permute([0, 2, 1, 3])?)?
            .f_permute([0, 2, 1, 3]),
        Some((_, rows)) => values_after(rows, &probs, v),
    }
}

/// Attention scores after a past `[B, H, T, S]`: each row's new queries against its cached
/// keys (read in place, never copied) and then its new keys, zero-padded to `S` (the mask
/// hides the padding). `rows` holds each row's cached `(keys, values)` `[P, H, d]`.
fn scores_after(rows: &[(Tensor, Tensor)], q: &Tensor, k: &Tensor, s: i64) -> TchResult<Tensor> {
    let per_row = rows
        .iter()
        .enumerate()
        .map(|(b, (kp, _))| {
            let qb = q.f_get(b as i64)?.f_permute([1, 0, 2])?; // [H, T, d]
            let cached = qb.f_matmul(&kp.f_permute([1, 2, 0])?)?; // [H, T, P]
            let new = qb.f_matmul(&k.f_get(b as i64)?.f_permute([1, 2, 0])?)?; // [H, T, T]
            let both = Tensor::f_cat(&[cached, new], 2)?;
            let room = s - both.size()[2];
            both.f_constant_pad_nd([0, room].as_slice())
        })
        .collect::<TchResult<Vec<_>>>()?;
    Tensor::f_stack(&per_row, 0)
}

/// The attention output after a past `[B, T, H, dv]`: each row's probabilities over its
/// cached positions times its cached values, plus over its new positions times the new values.
fn values_after(rows: &[(Tensor, Tensor)], probs: &Tensor, v: &Tensor) -> TchResult<Tensor> {
    let t = v.size()[1];
    let per_row = rows
        .iter()
        .enumerate()
        .map(|(b, (_, vp))| {
            let pb = probs.f_get(b as i64)?; // [H, T, S]
            let p = vp.size()[0];
            let cached = pb.f_narrow(2, 0, p)?.f_matmul(&vp.f_permute([1, 0, 2])?)?;
            let new = pb
                .f_narrow(2, p, t)?
                .f_matmul(&v.f_get(b as i64)?.f_permute([1, 0, 2])?)?;
            cached.f_add(&new)?.f_permute([1, 0, 2]) // [T, H, dv]
        })
        .collect::<TchResult<Vec<_>>>()?;
    Tensor::f_stack(&per_row, 0)
}

/// Each row's last non-padding position `[batch]` (0 for a row of padding only).
fn last_positions(pad: Option<&Tensor>, b: i64, t: i64, dev: tch::Device) -> TchResult<Tensor> {
    match pad {
        None => Tensor::f_full([b], t - 1, (Kind::Int64, dev)),
        Some(p) => p
            .f_logical_not()?
            .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Int64)?
            .f_sub_scalar(1)?
            .f_clamp_min(0),
    }
}

/// What `run` ends with: the final normalised residual and the logits (None when stopped).
struct Final {
    h: Option<Tensor>,
    logits: Option<Tensor>,
}

/// An objective's resolved positions and, for the log-probability, `(targets, counted)`.
struct Resolved {
    positions: Vec<i64>,
    log_prob: Option<(Vec<i64>, Vec<bool>)>,
}

/// A set of activation keys as a table over (location, layer), so the checks at every
/// location of every layer cost an index, not a hash.
struct KeySet {
    /// Slot 0: the model-wide instance; slot `l + 1`: layer `l`.
    slots: usize,
    present: Vec<bool>,
}

impl KeySet {
    fn new(keys: impl Iterator<Item = ActivationKey>, n_layers: i64) -> KeySet {
        let slots = n_layers.max(0) as usize + 1;
        let mut set = KeySet {
            slots,
            present: vec![false; Activation::ALL.len() * slots],
        };
        for key in keys {
            if let Some(i) = set.index(key) {
                set.present[i] = true;
            }
        }
        set
    }

    fn index(&self, (act, layer): ActivationKey) -> Option<usize> {
        let slot = match layer {
            None => 0,
            Some(l) if l >= 0 && (l as usize) + 1 < self.slots => l as usize + 1,
            Some(_) => return None,
        };
        Some(act as usize * self.slots + slot)
    }

    fn contains(&self, key: &ActivationKey) -> bool {
        self.index(*key).is_some_and(|i| self.present[i])
    }
}

/// Where a forward pass meets its request: the edits at each location, then the capture of
/// the (edited) value when it was asked for, and with a backward pass the gradient targets
/// and the objective's activation.
struct Hooks<'a> {
    wanted: KeySet,
    edits: &'a [Edit],
    got: Vec<(ActivationKey, OwnedTensor)>,
    grad_at: KeySet,
    /// The tensor downstream sees at each gradient location; true when held `[B, H, T, S]`.
    targets: Vec<(ActivationKey, Tensor, bool)>,
    objective_at: Option<ActivationKey>,
    objective_act: Option<Tensor>,
    /// Incremental decoding: the cached keys and values (the pass adds the new ones).
    past: Option<&'a Past>,
}

impl Hooks<'_> {
    fn edits_at(&self, act: Activation, layer: Option<i64>) -> bool {
        self.edits
            .iter()
            .any(|e| e.location == act && e.layer == layer)
    }

    /// Whether the request touches this layer's attention pattern (capture, edit, gradient or
    /// objective at `attn.qk_logits`/`attn.qk_probs`): only then is the pattern materialised.
    fn sees_pattern(&self, layer: Option<i64>) -> bool {
        [Activation::AttnQkLogits, Activation::AttnQkProbs]
            .into_iter()
            .any(|act| self.touches(act, layer))
    }

    /// Whether anything reads or changes this location: a capture, an edit, a gradient or the
    /// objective.
    fn touches(&self, act: Activation, layer: Option<i64>) -> bool {
        let key = (act, layer);
        self.wanted.contains(&key)
            || self.grad_at.contains(&key)
            || self.objective_at == Some(key)
            || self.edits_at(act, layer)
    }

    /// `x` after every edit at this location, in list order.
    fn edit(&self, act: Activation, layer: Option<i64>, x: Tensor) -> TchResult<Tensor> {
        self.edits
            .iter()
            .filter(|e| e.location == act && e.layer == layer)
            .try_fold(x, |x, e| e.apply(&x))
    }

    /// Registers `x` as what downstream sees: a gradient target (a new autograd leaf when
    /// nothing upstream is differentiated, so nothing before the first target is recorded),
    /// the objective's activation, a capture. `heads_last`: `x` is `[B, H, T, S]`.
    fn tap(
        &mut self,
        act: Activation,
        layer: Option<i64>,
        x: Tensor,
        heads_last: bool,
    ) -> TchResult<Tensor> {
        let key = (act, layer);
        let x = match self.grad_at.contains(&key) {
            true if !x.requires_grad() => x.f_detach()?.f_set_requires_grad(true)?,
            _ => x,
        };
        if self.grad_at.contains(&key) {
            self.targets.push((key, x.shallow_clone(), heads_last));
        }
        let exposed = || match heads_last {
            true => x.f_permute([0, 2, 3, 1]),
            false => Ok(x.shallow_clone()),
        };
        if self.objective_at == Some(key) {
            self.objective_act = Some(exposed()?);
        }
        if self.wanted.contains(&key) {
            self.got
                .push((key, OwnedTensor::owned(exposed()?.f_detach()?, false)));
        }
        Ok(x)
    }

    /// Edits, then taps: what every location but the attention pattern does.
    fn at(&mut self, act: Activation, layer: Option<i64>, x: Tensor) -> TchResult<Tensor> {
        let x = self.edit(act, layer, x)?;
        self.tap(act, layer, x, false)
    }

    /// Edits an attention pattern held as `[B, H, T, S]` in its exposed layout `[B, T, S, H]`.
    fn edit_heads_last(&self, act: Activation, layer: Option<i64>, x: Tensor) -> TchResult<Tensor> {
        if !self.edits_at(act, layer) {
            return Ok(x);
        }
        self.edit(act, layer, x.f_permute([0, 2, 3, 1])?)?
            .f_permute([0, 3, 1, 2])
    }

    /// The gradients of the rows' summed objective at every target, in exposed layouts;
    /// zeros where the objective does not depend on a target.
    fn backward(&self, value: &Tensor) -> TchResult<Vec<(ActivationKey, OwnedTensor)>> {
        let total = value.f_sum(Kind::Float)?;
        let inputs: Vec<&Tensor> = self.targets.iter().map(|(_, t, _)| t).collect();
        let grads = match total.requires_grad() && !inputs.is_empty() {
            true => Tensor::f_run_backward(&[&total], &inputs, false, false)?,
            false => Vec::new(),
        };
        self.targets
            .iter()
            .enumerate()
            .map(|(i, (key, t, heads_last))| {
                let g = match grads.get(i) {
                    Some(g) if g.defined() => g.shallow_clone(),
                    _ => t.f_zeros_like()?,
                };
                let g = match heads_last {
                    true => g.f_permute([0, 2, 3, 1])?,
                    false => g,
                };
                Ok((
                    *key,
                    OwnedTensor::owned(g.f_detach()?.f_contiguous()?, false),
                ))
            })
            .collect()
    }
}

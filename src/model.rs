//! The transformer of spec section 6 (GPT-2 style, pre-LayerNorm, TDB's conventions), built
//! on libtorch from a context's pieces, with the activations of a forward pass exposed and
//! editable, a run that may start and stop at a layer, and a choice of which logits to compute.
use crate::activations::Activation;
use crate::config::Config;
use crate::device::Device;
use crate::dims::Dimension;
use crate::edits::{broadcasts, Edit, EditOp};
use crate::error::{err, ErrorKind, Result};
use crate::layout;
use crate::tensor::OwnedTensor;
use std::collections::{HashMap, HashSet};
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

/// What an experiment adds to a forward pass; the default is a plain pass.
#[derive(Debug, Default)]
pub struct Experiment {
    /// Applied where each activation is produced, in list order.
    pub edits: Vec<Edit>,
    pub start: Option<Start>,
    /// Run only the layers before this one: no later layer, final norm or unembedding.
    pub end_layer: Option<i64>,
    pub logits: LogitsChoice,
}

/// The logits (unless the request skipped them) and the requested activations, each
/// `[batch, ...per-sequence shape]`.
pub struct ForwardOutput {
    pub logits: Option<OwnedTensor>,
    pub activations: Vec<(ActivationKey, OwnedTensor)>,
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
}

/// A created model: parameters by state-dict key, immutable, shared by every thread.
pub struct Model {
    config: Config,
    n_vocab: i64,
    device: Device,
    options: ModelOptions,
    params: HashMap<String, OwnedTensor>,
}

impl Model {
    /// Builds the model from pieces served by `load` (the context's cache). On CPU in
    /// float32 without simplify the parameters are the mapped pieces themselves (no copy).
    pub fn create(
        config: &Config,
        n_vocab: i64,
        device: Device,
        options: ModelOptions,
        load: impl Fn(&str) -> Result<OwnedTensor>,
    ) -> Result<Model> {
        device.check_available()?;
        let mut params = HashMap::new();
        for (key, shape) in layout::pieces(config, n_vocab) {
            let piece = load(&key).map_err(|e| missing_layer(e, &key, config))?;
            let stored = piece.shape();
            let ok =
                stored == shape || (layout::may_broadcast(&key) && broadcasts(&stored, &shape));
            if !ok {
                return Err(err(
                    ErrorKind::Shape,
                    format!("piece `{key}`: expected shape {shape:?} but got {stored:?}"),
                ));
            }
            let param = if piece.tensor.kind() == Kind::Float && device == Device::Cpu {
                piece
            } else {
                piece.computed(|t| t.f_to_device_(device.to_tch(), Kind::Float, false, false))?
            };
            params.insert(key, param);
        }
        let mut model = Model {
            config: config.clone(),
            n_vocab,
            device,
            options,
            params,
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
        for p in model.params.values_mut() {
            p.read_only = true;
        }
        Ok(model)
    }

    pub fn options(&self) -> ModelOptions {
        self.options
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A parameter by state-dict key (after simplify, the folded value).
    pub fn param(&self, key: &str) -> Result<&OwnedTensor> {
        self.params.get(key).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!("model has no parameter `{key}`"),
            )
        })
    }

    fn p(&self, key: &str) -> TchResult<&Tensor> {
        self.params
            .get(key)
            .map(|t| &t.tensor)
            .ok_or_else(|| tch::TchError::Kind(format!("missing parameter {key}")))
    }

    fn lp(&self, layer: i64, suffix: &str) -> TchResult<&Tensor> {
        self.p(&format!("xf_layers.{layer}.{suffix}"))
    }

    /// `simplify`: each block's ln_1 goes into q/k/v and ln_2 into mlp.in_layer
    /// (`W' = W * g[None, :]`, `b' = b + W @ beta`), then those gains become 1 and biases 0.
    fn fold_layer_norms(&mut self) -> Result<()> {
        for layer in 0..self.config.n_layers {
            for (ln, targets) in [
                ("ln_1", &["attn.q_proj", "attn.k_proj", "attn.v_proj"][..]),
                ("ln_2", &["mlp.in_layer"][..]),
            ] {
                let key = |s: &str| format!("xf_layers.{layer}.{s}");
                let g = self
                    .param(&key(&format!("{ln}.weight")))?
                    .tensor
                    .shallow_clone();
                let beta = self
                    .param(&key(&format!("{ln}.bias")))?
                    .tensor
                    .shallow_clone();
                for t in targets {
                    let w = self.param(&key(&format!("{t}.weight")))?;
                    let b = self.param(&key(&format!("{t}.bias")))?;
                    let folded_b = b.computed(|b| b.f_add(&w.tensor.f_mv(&beta)?))?;
                    let folded_w = w.computed(|w| w.f_mul(&g.f_unsqueeze(0)?))?;
                    self.params.insert(key(&format!("{t}.weight")), folded_w);
                    self.params.insert(key(&format!("{t}.bias")), folded_b);
                }
                let ones = OwnedTensor::owned(g.f_ones_like()?, false);
                let zeros = OwnedTensor::owned(beta.f_zeros_like()?, false);
                self.params.insert(key(&format!("{ln}.weight")), ones);
                self.params.insert(key(&format!("{ln}.bias")), zeros);
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
            e.check(&self.full_shape(e.location, b, t), &which)?;
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
        Ok(())
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

    /// `forward` with edits, a start, an end and a logits choice (an experiment).
    pub fn forward_with(
        &self,
        input: &ForwardInput,
        wanted: &[ActivationKey],
        x: &Experiment,
    ) -> Result<ForwardOutput> {
        self.check_request(input, wanted, x)?;
        let edits = x
            .edits
            .iter()
            .map(|e| self.on_device(e))
            .collect::<TchResult<Vec<_>>>()?;
        let mut hooks = Hooks {
            wanted: wanted.iter().copied().collect(),
            edits: &edits,
            got: Vec::new(),
        };
        let logits = tch::no_grad(|| self.run(input, x, &mut hooks))?;
        Ok(ForwardOutput {
            logits: logits.map(|l| OwnedTensor::owned(l, false)),
            activations: hooks.got,
        })
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

    fn run(
        &self,
        input: &ForwardInput,
        x: &Experiment,
        hooks: &mut Hooks,
    ) -> TchResult<Option<Tensor>> {
        let dev = self.device.to_tch();
        let (b, t) = (input.batch, input.seq_len);
        let pad = match &input.pad {
            Some(p) if p.iter().any(|&x| x) => {
                Some(Tensor::f_from_slice(p)?.f_view([b, t])?.f_to(dev)?)
            }
            _ => None,
        };
        let mask = self.attention_mask(t, pad.as_ref())?;
        let (mut h, first) = match &x.start {
            Some(s) => {
                let kind = self.options.dtype.kind();
                (s.resid.f_to_device_(dev, kind, false, false)?, s.layer)
            }
            None => (self.embed(input, pad.as_ref(), hooks)?, 0),
        };
        for layer in first..x.end_layer.unwrap_or(self.config.n_layers) {
            h = self.block(layer, h, &mask, hooks)?;
        }
        if x.end_layer.is_some() {
            return Ok(None);
        }
        let (lnf, scale) = (Activation::ResidLnFScale, Activation::ResidPostLnF);
        let h = self.layer_norm(
            &h,
            self.p("final_ln.weight")?,
            self.p("final_ln.bias")?,
            hooks,
            (lnf, scale, None),
        )?;
        let unembed = self.p("unembed.weight")?;
        Ok(match x.logits {
            LogitsChoice::All => Some(h.f_linear::<&Tensor>(unembed, None)?),
            LogitsChoice::Last => {
                let last = last_positions(pad.as_ref(), b, t, dev)?;
                let d = h.size()[2];
                let rows = h.f_gather(
                    1,
                    &last.f_view([b, 1, 1])?.f_expand([b, 1, d], false)?,
                    false,
                )?;
                Some(rows.f_linear::<&Tensor>(unembed, None)?)
            }
            LogitsChoice::None => None,
        })
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
        let positions = match pad {
            None => Tensor::f_arange(t, (Kind::Int64, dev))?.f_unsqueeze(0)?,
            Some(p) => p
                .f_logical_not()?
                .f_cumsum(1, Kind::Int64)?
                .f_sub_scalar(1)?
                .f_clamp_min(0)?,
        };
        let x =
            Tensor::f_embedding(self.p("tok_embed.weight")?, &tokens, -1, false, false)?.f_add(
                &Tensor::f_embedding(self.p("pos_embed.weight")?, &positions, -1, false, false)?,
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

    fn block(&self, layer: i64, x: Tensor, mask: &Tensor, hooks: &mut Hooks) -> TchResult<Tensor> {
        use Activation::*;
        let c = &self.config;
        let (b, t) = (x.size()[0], x.size()[1]);
        let (heads, dqk, dv) = (c.n_heads, c.d_head_qk(), c.d_head_v());
        let l = Some(layer);
        let h = self.layer_norm(
            &x,
            self.lp(layer, "ln_1.weight")?,
            self.lp(layer, "ln_1.bias")?,
            hooks,
            (AttnLnScale, ResidPostAttnLn, l),
        )?;
        let qk_scale = (dqk as f64).powf(-0.25);
        let proj = |name: &str, d: i64| -> TchResult<Tensor> {
            h.f_linear(
                self.lp(layer, &format!("attn.{name}.weight"))?,
                Some(self.lp(layer, &format!("attn.{name}.bias"))?),
            )?
            .f_view([b, t, heads, d])
        };
        let q = hooks.at(AttnQ, l, proj("q_proj", dqk)?.f_mul_scalar(qk_scale)?)?;
        let k = hooks.at(AttnK, l, proj("k_proj", dqk)?.f_mul_scalar(qk_scale)?)?;
        let v = hooks.at(AttnV, l, proj("v_proj", dv)?)?;
        // [B, H, T, S]; edits see [B, T, S, H] before the masks, which are applied after them.
        let raw = q
            .f_permute([0, 2, 1, 3])?
            .f_matmul(&k.f_permute([0, 2, 3, 1])?)?;
        let raw = hooks.edit_heads_last(AttnQkLogits, l, raw)?;
        let logits = raw.f_masked_fill(&mask.f_logical_not()?, f64::NEG_INFINITY)?;
        hooks.put_heads_last(AttnQkLogits, l, &logits)?;
        let probs = logits
            .f_softmax(-1, Kind::Float)?
            .f_to_dtype(x.kind(), false, false)?;
        let probs = hooks.edit_heads_last(AttnQkProbs, l, probs)?;
        hooks.put_heads_last(AttnQkProbs, l, &probs)?;
        let v_out = probs
            .f_matmul(&v.f_permute([0, 2, 1, 3])?)?
            .f_permute([0, 2, 1, 3])?;
        let v_out = hooks.at(AttnVOut, l, v_out)?;
        let delta_attn = v_out.f_reshape([b, t, heads * dv])?.f_linear(
            self.lp(layer, "attn.out_proj.weight")?,
            Some(self.lp(layer, "attn.out_proj.bias")?),
        )?;
        let delta_attn = hooks.at(ResidDeltaAttn, l, delta_attn)?;
        let x = hooks.at(ResidPostAttn, l, x.f_add(&delta_attn)?)?;
        let h = self.layer_norm(
            &x,
            self.lp(layer, "ln_2.weight")?,
            self.lp(layer, "ln_2.bias")?,
            hooks,
            (MlpLnScale, ResidPostMlpLn, l),
        )?;
        let pre = h.f_linear(
            self.lp(layer, "mlp.in_layer.weight")?,
            Some(self.lp(layer, "mlp.in_layer.bias")?),
        )?;
        let pre = hooks.at(MlpPreAct, l, pre)?;
        let post = hooks.at(MlpPostAct, l, pre.f_gelu("tanh")?)?;
        let delta_mlp = post.f_linear(
            self.lp(layer, "mlp.out_layer.weight")?,
            Some(self.lp(layer, "mlp.out_layer.bias")?),
        )?;
        let delta_mlp = hooks.at(ResidDeltaMlp, l, delta_mlp)?;
        hooks.at(ResidPostMlp, l, x.f_add(&delta_mlp)?)
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
        let kind = x.kind();
        let xf = x.f_to_dtype(Kind::Float, false, false)?;
        let centered = xf.f_sub(&xf.f_mean_dim([-1i64].as_slice(), true, Kind::Float)?)?;
        let mut scale = centered
            .f_square()?
            .f_mean_dim([-1i64].as_slice(), true, Kind::Float)?
            .f_add_scalar(1e-5)?
            .f_sqrt()?;
        let edited = hooks.at(scale_at, layer, scale.f_to_dtype(kind, false, false)?)?;
        if hooks.edits_at(scale_at, layer) {
            scale = edited.f_to_dtype(Kind::Float, false, false)?;
        }
        let out = centered
            .f_div(&scale)?
            .f_mul(&w.f_to_dtype(Kind::Float, false, false)?)?
            .f_add(&b.f_to_dtype(Kind::Float, false, false)?)?;
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

/// Where a forward pass meets its request: the edits at each location, then the capture of
/// the (edited) value when it was asked for.
struct Hooks<'a> {
    wanted: HashSet<ActivationKey>,
    edits: &'a [Edit],
    got: Vec<(ActivationKey, OwnedTensor)>,
}

impl Hooks<'_> {
    fn edits_at(&self, act: Activation, layer: Option<i64>) -> bool {
        self.edits
            .iter()
            .any(|e| e.location == act && e.layer == layer)
    }

    /// `x` after every edit at this location, in list order.
    fn edit(&self, act: Activation, layer: Option<i64>, x: Tensor) -> TchResult<Tensor> {
        self.edits
            .iter()
            .filter(|e| e.location == act && e.layer == layer)
            .try_fold(x, |x, e| e.apply(&x))
    }

    fn put(&mut self, act: Activation, layer: Option<i64>, t: &Tensor) {
        if self.wanted.contains(&(act, layer)) {
            self.got
                .push(((act, layer), OwnedTensor::owned(t.shallow_clone(), false)));
        }
    }

    /// Edits, then captures: what every location but the attention pattern does.
    fn at(&mut self, act: Activation, layer: Option<i64>, x: Tensor) -> TchResult<Tensor> {
        let x = self.edit(act, layer, x)?;
        self.put(act, layer, &x);
        Ok(x)
    }

    /// Edits an attention pattern held as `[B, H, T, S]` in its exposed layout `[B, T, S, H]`.
    fn edit_heads_last(&self, act: Activation, layer: Option<i64>, x: Tensor) -> TchResult<Tensor> {
        if !self.edits_at(act, layer) {
            return Ok(x);
        }
        self.edit(act, layer, x.f_permute([0, 2, 3, 1])?)?
            .f_permute([0, 3, 1, 2])
    }

    fn put_heads_last(&mut self, act: Activation, layer: Option<i64>, x: &Tensor) -> TchResult<()> {
        if self.wanted.contains(&(act, layer)) {
            self.put(act, layer, &x.f_permute([0, 2, 3, 1])?);
        }
        Ok(())
    }
}

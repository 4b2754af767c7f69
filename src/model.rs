//! The transformer of spec section 6 (GPT-2 style, pre-LayerNorm, TDB's conventions), built
//! on libtorch from a context's pieces, with the activations of a forward pass exposed.
use crate::activations::Activation;
use crate::config::Config;
use crate::device::Device;
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

/// The logits and the requested activations, each `[batch, ...per-sequence shape]`.
pub struct ForwardOutput {
    pub logits: OwnedTensor,
    pub activations: Vec<(ActivationKey, OwnedTensor)>,
}

impl ForwardOutput {
    pub fn get(&self, key: ActivationKey) -> Option<&OwnedTensor> {
        if key == (Activation::Logits, None) {
            return Some(&self.logits);
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
            let piece = load(&key)?;
            let stored = piece.shape();
            let ok =
                stored == shape || (layout::may_broadcast(&key) && broadcastable(&stored, &shape));
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
        if input.tokens.len() as i64 != b * t {
            return bad(format!(
                "{} token ids given for a {b}x{t} batch",
                input.tokens.len()
            ));
        }
        if let Some((i, id)) = input
            .tokens
            .iter()
            .enumerate()
            .find(|(_, &id)| id < 0 || id >= self.n_vocab)
        {
            return Err(err(
                ErrorKind::Token,
                format!(
                    "token id {id} at position {i} is outside the vocabulary (0..{})",
                    self.n_vocab
                ),
            ));
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
        for &(act, layer) in wanted {
            match (act.per_layer(), layer) {
                (true, Some(l)) if (0..self.config.n_layers).contains(&l) => {}
                (true, Some(l)) => {
                    return bad(format!(
                        "layer {l} out of range for {} (model has {} layers)",
                        act.name(),
                        self.config.n_layers
                    ))
                }
                (true, None) => {
                    return bad(format!("{} is per-layer: a layer is required", act.name()))
                }
                (false, Some(l)) => {
                    return bad(format!(
                        "{} is model-wide: no layer may be given (got {l})",
                        act.name()
                    ))
                }
                (false, None) => {}
            }
        }
        Ok(())
    }

    /// Runs the model without recording gradients; keeps only the requested activations.
    pub fn forward(&self, input: &ForwardInput, wanted: &[ActivationKey]) -> Result<ForwardOutput> {
        self.check_input(input, wanted)?;
        let mut cap = Capture {
            wanted: wanted.iter().copied().collect(),
            got: Vec::new(),
        };
        let logits = tch::no_grad(|| self.run(input, &mut cap))?;
        Ok(ForwardOutput {
            logits: OwnedTensor::owned(logits, false),
            activations: cap.got,
        })
    }

    fn run(&self, input: &ForwardInput, cap: &mut Capture) -> TchResult<Tensor> {
        let dev = self.device.to_tch();
        let (b, t) = (input.batch, input.seq_len);
        let tokens = Tensor::f_from_slice(&input.tokens)?
            .f_view([b, t])?
            .f_to(dev)?;
        let pad = match &input.pad {
            Some(p) if p.iter().any(|&x| x) => {
                Some(Tensor::f_from_slice(p)?.f_view([b, t])?.f_to(dev)?)
            }
            _ => None,
        };
        let positions = match &pad {
            None => Tensor::f_arange(t, (Kind::Int64, dev))?.f_unsqueeze(0)?,
            Some(p) => p
                .f_logical_not()?
                .f_cumsum(1, Kind::Int64)?
                .f_sub_scalar(1)?
                .f_clamp_min(0)?,
        };
        let mask = self.attention_mask(t, pad.as_ref())?;
        let mut x =
            Tensor::f_embedding(self.p("tok_embed.weight")?, &tokens, -1, false, false)?.f_add(
                &Tensor::f_embedding(self.p("pos_embed.weight")?, &positions, -1, false, false)?,
            )?;
        cap.put(Activation::ResidPostEmb, None, &x);
        for layer in 0..self.config.n_layers {
            x = self.block(layer, x, &mask, cap)?;
        }
        let (h, scale) =
            self.layer_norm(&x, self.p("final_ln.weight")?, self.p("final_ln.bias")?)?;
        cap.put(Activation::ResidLnFScale, None, &scale);
        cap.put(Activation::ResidPostLnF, None, &h);
        h.f_linear::<&Tensor>(self.p("unembed.weight")?, None)
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

    fn block(&self, layer: i64, x: Tensor, mask: &Tensor, cap: &mut Capture) -> TchResult<Tensor> {
        let c = &self.config;
        let (b, t) = (x.size()[0], x.size()[1]);
        let (heads, dqk, dv) = (c.n_heads, c.d_head_qk(), c.d_head_v());
        let (h, scale) = self.layer_norm(
            &x,
            self.lp(layer, "ln_1.weight")?,
            self.lp(layer, "ln_1.bias")?,
        )?;
        let l = Some(layer);
        cap.put(Activation::AttnLnScale, l, &scale);
        cap.put(Activation::ResidPostAttnLn, l, &h);
        let qk_scale = (dqk as f64).powf(-0.25);
        let proj = |name: &str, d: i64| -> TchResult<Tensor> {
            h.f_linear(
                self.lp(layer, &format!("attn.{name}.weight"))?,
                Some(self.lp(layer, &format!("attn.{name}.bias"))?),
            )?
            .f_view([b, t, heads, d])
        };
        let q = proj("q_proj", dqk)?.f_mul_scalar(qk_scale)?;
        let k = proj("k_proj", dqk)?.f_mul_scalar(qk_scale)?;
        let v = proj("v_proj", dv)?;
        cap.put(Activation::AttnQ, l, &q);
        cap.put(Activation::AttnK, l, &k);
        cap.put(Activation::AttnV, l, &v);
        // [B, H, T, S]
        let logits = q
            .f_permute([0, 2, 1, 3])?
            .f_matmul(&k.f_permute([0, 2, 3, 1])?)?
            .f_masked_fill(&mask.f_logical_not()?, f64::NEG_INFINITY)?;
        let probs = logits
            .f_softmax(-1, Kind::Float)?
            .f_to_dtype(x.kind(), false, false)?;
        if cap.wants(Activation::AttnQkLogits, l) {
            cap.put(
                Activation::AttnQkLogits,
                l,
                &logits.f_permute([0, 2, 3, 1])?,
            );
        }
        if cap.wants(Activation::AttnQkProbs, l) {
            cap.put(Activation::AttnQkProbs, l, &probs.f_permute([0, 2, 3, 1])?);
        }
        let v_out = probs
            .f_matmul(&v.f_permute([0, 2, 1, 3])?)?
            .f_permute([0, 2, 1, 3])?;
        cap.put(Activation::AttnVOut, l, &v_out);
        let delta_attn = v_out.f_reshape([b, t, heads * dv])?.f_linear(
            self.lp(layer, "attn.out_proj.weight")?,
            Some(self.lp(layer, "attn.out_proj.bias")?),
        )?;
        cap.put(Activation::ResidDeltaAttn, l, &delta_attn);
        let x = x.f_add(&delta_attn)?;
        cap.put(Activation::ResidPostAttn, l, &x);
        let (h, scale) = self.layer_norm(
            &x,
            self.lp(layer, "ln_2.weight")?,
            self.lp(layer, "ln_2.bias")?,
        )?;
        cap.put(Activation::MlpLnScale, l, &scale);
        cap.put(Activation::ResidPostMlpLn, l, &h);
        let pre = h.f_linear(
            self.lp(layer, "mlp.in_layer.weight")?,
            Some(self.lp(layer, "mlp.in_layer.bias")?),
        )?;
        cap.put(Activation::MlpPreAct, l, &pre);
        let post = pre.f_gelu("tanh")?;
        cap.put(Activation::MlpPostAct, l, &post);
        let delta_mlp = post.f_linear(
            self.lp(layer, "mlp.out_layer.weight")?,
            Some(self.lp(layer, "mlp.out_layer.bias")?),
        )?;
        cap.put(Activation::ResidDeltaMlp, l, &delta_mlp);
        let x = x.f_add(&delta_mlp)?;
        cap.put(Activation::ResidPostMlp, l, &x);
        Ok(x)
    }

    /// TDB's Norm: in float32, `x - mean`, `scale = sqrt(mean(x^2) + 1e-5)`, `x / scale * w + b`,
    /// cast back. Returns the output and the scale `[B, T, 1]`.
    fn layer_norm(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> TchResult<(Tensor, Tensor)> {
        let kind = x.kind();
        let xf = x.f_to_dtype(Kind::Float, false, false)?;
        let centered = xf.f_sub(&xf.f_mean_dim([-1i64].as_slice(), true, Kind::Float)?)?;
        let scale = centered
            .f_square()?
            .f_mean_dim([-1i64].as_slice(), true, Kind::Float)?
            .f_add_scalar(1e-5)?
            .f_sqrt()?;
        let out = centered
            .f_div(&scale)?
            .f_mul(&w.f_to_dtype(Kind::Float, false, false)?)?
            .f_add(&b.f_to_dtype(Kind::Float, false, false)?)?;
        Ok((
            out.f_to_dtype(kind, false, false)?,
            scale.f_to_dtype(kind, false, false)?,
        ))
    }
}

/// Whether a tensor of shape `from` broadcasts to `to` (numpy rules).
fn broadcastable(from: &[i64], to: &[i64]) -> bool {
    from.len() <= to.len()
        && from
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(f, t)| *f == 1 || f == t)
}

/// Keeps the requested activations and nothing else.
struct Capture {
    wanted: HashSet<ActivationKey>,
    got: Vec<(ActivationKey, OwnedTensor)>,
}

impl Capture {
    fn wants(&self, act: Activation, layer: Option<i64>) -> bool {
        self.wanted.contains(&(act, layer))
    }

    fn put(&mut self, act: Activation, layer: Option<i64>, t: &Tensor) {
        if self.wants(act, layer) {
            self.got
                .push(((act, layer), OwnedTensor::owned(t.shallow_clone(), false)));
        }
    }
}

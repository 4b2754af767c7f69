//! The model context (the seed's `ModelContext`): dimensions, config and weights in the
//! standard shapes, read lazily from a checkpoint source and cached per context.
pub mod processing;

use crate::device::Device;
use crate::encoding;
use crate::error::{err, ErrorKind, Result};
use crate::model::{Model, ModelOptions};
use crate::schema::dims::Dimension;
pub use crate::schema::dims::Layers;
use crate::schema::weights::{permutation, WeightLocation};
use crate::source::{detect, PieceSource, SourceOptions};
use crate::tensor::OwnedTensor;
use crate::tokenizer::Tokenizer;
use model_context_formats::TensorRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The seed's surface. Implementations supply sizes and raw weights; the shared methods add
/// layer checks, normalisation and the shape check, exactly as the seed's `get_weight`.
pub trait ModelContext: Send + Sync {
    fn model_name(&self) -> &str;
    /// The device results go to when a call names none.
    fn device(&self) -> Device;
    fn get_dim_size(&self, dim: Dimension) -> Result<i64>;
    /// The weight in its standard shape, before normalisation and the shape check.
    fn weight_helper(&self, loc: WeightLocation, layer: Option<i64>) -> Result<OwnedTensor>;
    fn encoding_name(&self) -> Result<&str>;
    /// The config dictionary (the seven keys of spec section 1).
    fn config_json(&self) -> Result<serde_json::Value>;
    /// The tokenizer of the context's encoding (spec section 4), built on first use.
    fn tokenizer(&self) -> Result<&Tokenizer> {
        Err(err(
            ErrorKind::Unsupported,
            format!("the {} context has no tokenizer", self.model_name()),
        ))
    }
    /// The seed's `get_or_create_model`: the first call creates the model (with `opts`, or
    /// the defaults), later calls return the same one; options that differ from the created
    /// model's are an error rather than silently ignored.
    fn get_or_create_model(&self, opts: Option<ModelOptions>) -> Result<Arc<Model>> {
        let _ = opts;
        Err(err(
            ErrorKind::Unsupported,
            format!("the {} context has no model", self.model_name()),
        ))
    }

    /// Sizes of a shape spec; `singleton` counts as 1.
    fn shape_from_spec(&self, spec: &[Dimension]) -> Result<Vec<i64>> {
        spec.iter()
            .map(|&d| match d {
                Dimension::Singleton => Ok(1),
                _ => self.get_dim_size(d),
            })
            .collect()
    }

    /// A weight in the standard shape, optionally L2-normalised along `normalize_dim`.
    fn get_weight(
        &self,
        loc: WeightLocation,
        layer: Option<i64>,
        normalize_dim: Option<Dimension>,
        device: Option<Device>,
    ) -> Result<OwnedTensor> {
        check_layer(self, loc, layer)?;
        let axis = match normalize_dim {
            None => None,
            Some(d) => Some(loc.axis_of(d).ok_or_else(|| {
                err(
                    ErrorKind::InvalidArgument,
                    format!(
                        "cannot normalise {} along {}: it must appear exactly once in {:?}",
                        loc.name(),
                        d.name(),
                        loc.spec()
                            .shape
                            .iter()
                            .map(|d| d.name())
                            .collect::<Vec<_>>()
                    ),
                )
            })?),
        };
        let weight = self
            .weight_helper(loc, layer)?
            .to_device(device.unwrap_or(self.device()))?;
        let weight = match axis {
            None => weight,
            Some(a) => weight.computed(|t| l2_normalize(t, a as i64))?,
        };
        let expected = self.shape_from_spec(loc.spec().shape)?;
        if weight.shape() != expected {
            return Err(err(
                ErrorKind::Shape,
                format!(
                    "{}{}: expected shape {expected:?} but got {:?}",
                    loc.name(),
                    layer.map(|l| format!(" layer {l}")).unwrap_or_default(),
                    weight.shape()
                ),
            ));
        }
        Ok(weight)
    }

    /// Beyond the seed: a weight with every option of `WeightRequest` (a stack over all
    /// layers, a dtype conversion of just this result).
    fn weight(&self, req: &WeightRequest) -> Result<OwnedTensor> {
        let one = |layer| -> Result<OwnedTensor> {
            let w = self.get_weight(req.location, layer, req.normalize_dim, req.device)?;
            match req.dtype {
                Some(kind) if w.tensor.kind() != kind => {
                    w.computed(|t| t.f_to_dtype(kind, false, false))
                }
                _ => Ok(w),
            }
        };
        match req.layer {
            Layers::None => one(None),
            Layers::One(l) => one(Some(l)),
            Layers::All if !req.location.spec().per_layer() => Err(err(
                ErrorKind::InvalidArgument,
                format!(
                    "{} is model-wide: it has no layers to stack",
                    req.location.name()
                ),
            )),
            Layers::All => {
                let parts = (0..self.n_layers()?)
                    .map(|l| one(Some(l)))
                    .collect::<Result<Vec<_>>>()?;
                let tensors: Vec<&tch::Tensor> = parts.iter().map(|p| &p.tensor).collect();
                Ok(OwnedTensor::owned(
                    tch::Tensor::f_stack(&tensors, 0)?,
                    false,
                ))
            }
        }
    }

    /// The shape `weight` would return for a location (without reading any piece).
    fn weight_shape(&self, loc: WeightLocation, layers: Layers) -> Result<Vec<i64>> {
        let mut shape = self.shape_from_spec(loc.spec().shape)?;
        if layers == Layers::All && loc.spec().per_layer() {
            shape.insert(0, self.n_layers()?);
        }
        Ok(shape)
    }

    fn get_embedding(&self, device: Option<Device>) -> Result<OwnedTensor> {
        self.get_weight(WeightLocation::Embedding, None, None, device)
    }

    /// The seed's `get_unembedding_with_ln_gain`: unembedding rows scaled by the final gain.
    fn get_unembedding_with_ln_gain(&self, device: Option<Device>) -> Result<OwnedTensor> {
        let unembed = self.get_weight(WeightLocation::Unembedding, None, None, device)?;
        let gain = self.get_weight(WeightLocation::LayerNormGainFinal, None, None, device)?;
        unembed.computed(|u| u.f_mul(&gain.tensor.f_unsqueeze(1)?))
    }

    fn n_layers(&self) -> Result<i64> {
        self.get_dim_size(Dimension::Layers)
    }
    fn n_neurons(&self) -> Result<i64> {
        self.get_dim_size(Dimension::MlpActs)
    }
    fn n_attention_heads(&self) -> Result<i64> {
        self.get_dim_size(Dimension::AttnHeads)
    }
    fn n_residual_stream_channels(&self) -> Result<i64> {
        self.get_dim_size(Dimension::ResidualStreamChannels)
    }
    fn n_vocab(&self) -> Result<i64> {
        self.get_dim_size(Dimension::VocabSize)
    }
    fn n_context(&self) -> Result<i64> {
        self.get_dim_size(Dimension::MaxContextLength)
    }
}

/// torch's `normalize`: `v / max(||v||_2, 1e-12)` along `axis`.
fn l2_normalize(t: &tch::Tensor, axis: i64) -> std::result::Result<tch::Tensor, tch::TchError> {
    let norm = t.f_norm_scalaropt_dim(2.0, [axis].as_slice(), true)?;
    t.f_div(&norm.f_clamp_min(1e-12)?.f_expand_as(t)?)
}

fn check_layer<C: ModelContext + ?Sized>(
    ctx: &C,
    loc: WeightLocation,
    layer: Option<i64>,
) -> Result<()> {
    match (loc.spec().per_layer(), layer) {
        (true, None) => Err(err(
            ErrorKind::InvalidArgument,
            format!("{} is per-layer: a layer is required", loc.name()),
        )),
        (false, Some(l)) => Err(err(
            ErrorKind::InvalidArgument,
            format!(
                "{} is model-wide: no layer may be given (got {l})",
                loc.name()
            ),
        )),
        (true, Some(l)) => {
            let n = ctx.n_layers()?;
            if (0..n).contains(&l) {
                Ok(())
            } else {
                Err(err(
                    ErrorKind::InvalidArgument,
                    format!(
                        "layer {l} out of range for {} (model has {n} layers)",
                        loc.name()
                    ),
                ))
            }
        }
        (false, None) => Ok(()),
    }
}

/// A weight request with the options beyond the seed's `get_weight`.
#[derive(Clone, Debug)]
pub struct WeightRequest {
    pub location: WeightLocation,
    pub layer: Layers,
    pub normalize_dim: Option<Dimension>,
    pub device: Option<Device>,
    /// Convert the result (only it: nothing else is copied); None keeps the stored dtype.
    pub dtype: Option<tch::Kind>,
}

/// How to open a context; grows with the C ABI's `mc_open_options`.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// None: the seed's default device.
    pub device: Option<Device>,
    /// Weight processing (docs/weight-processing.md); all off by default.
    pub processing: crate::context::processing::Processing,
    /// Cache, offline mode, mirror and progress for remote checkpoints.
    pub source: SourceOptions,
}

/// The standard context over a TDB-layout checkpoint.
pub struct StandardModelContext {
    name: String,
    device: Device,
    source: Box<dyn PieceSource>,
    n_vocab: i64,
    pieces: Mutex<HashMap<String, Arc<TensorRecord>>>,
    model: once_cell::sync::OnceCell<Arc<Model>>,
    processing: crate::context::processing::Processing,
    /// Every piece after processing, made on first use when any step is enabled.
    processed: once_cell::sync::OnceCell<HashMap<String, OwnedTensor>>,
}

impl StandardModelContext {
    /// The seed's `from_model_type`: opens `model` reading config.json only: a named model
    /// (spec section 8), an `http(s)://` prefix of a TDB checkpoint, a local TDB folder or a
    /// local Hugging Face GPT-2 folder (`source::detect` tells them apart).
    pub fn open(model: &str, opts: &OpenOptions) -> Result<StandardModelContext> {
        let device = match opts.device {
            Some(d) => {
                d.check_available()?;
                d
            }
            None => Device::default_device(),
        };
        let (_, source) = detect::open_source(model, &opts.source)?;
        let mut ctx = Self::from_source(model, device, source)?;
        ctx.processing = opts.processing;
        Ok(ctx)
    }

    /// A context over any piece source.
    pub fn from_source(name: &str, device: Device, source: Box<dyn PieceSource>) -> Result<Self> {
        let n_vocab = encoding::n_vocab(&source.config().enc)
            .map_err(crate::Error::from)
            .map_err(|e| err(e.kind, format!("{}: {}", source.location(), e.message)))?;
        crate::source::check_layer_claim(&*source)?;
        Ok(StandardModelContext {
            name: name.to_string(),
            device,
            source,
            n_vocab,
            pieces: Mutex::new(HashMap::new()),
            model: once_cell::sync::OnceCell::new(),
            processing: Default::default(),
            processed: once_cell::sync::OnceCell::new(),
        })
    }

    pub fn config(&self) -> &crate::config::Config {
        self.source.config()
    }

    /// A piece, read on first use and then served from the per-context cache.
    fn piece(&self, key: &str) -> Result<Arc<TensorRecord>> {
        if let Some(p) = self.lock_pieces().get(key) {
            return Ok(p.clone());
        }
        let record = self.source.load_piece(key)?;
        let origin = self.source.location();
        crate::schema::layout::check(self.config(), self.n_vocab, key, &record.shape, &origin)?;
        let record = Arc::new(record);
        Ok(self
            .lock_pieces()
            .entry(key.to_string())
            .or_insert(record)
            .clone())
    }

    /// A piece as the model and the weights see it: the mapped file, or its processed value.
    fn base_param(&self, key: &str) -> Result<OwnedTensor> {
        if !self.processing.any() {
            return OwnedTensor::from_record(&*self.piece(key)?);
        }
        let processed = self.processed.get_or_try_init(|| self.process_all())?;
        processed.get(key).map(OwnedTensor::share).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!("no piece `{key}` in the layout"),
            )
        })
    }

    fn process_all(&self) -> Result<HashMap<String, OwnedTensor>> {
        let mut pieces = crate::context::processing::Pieces::default();
        let mut views = Vec::new();
        for key in crate::schema::layout::piece_keys(self.config()) {
            let view = OwnedTensor::from_record(&*self.piece(&key.0.key(key.1))?)?;
            let float = view.tensor.f_to_dtype(tch::Kind::Float, false, false)?;
            pieces.insert(key, float)?;
            views.push((key, view));
        }
        crate::context::processing::process(&mut pieces, self.config(), self.processing)?;
        // A piece no step changed is still the mapped view: keep it, with its owner.
        let mut out = HashMap::new();
        for (key, view) in views {
            let t = pieces.get(key).ok_or_else(|| {
                err(
                    ErrorKind::Internal,
                    format!("processing lost piece {}", key.0.key(key.1)),
                )
            })?;
            let kept = match view.tensor.data_ptr() == t.data_ptr() {
                true => view,
                false => OwnedTensor::owned(t.shallow_clone(), true),
            };
            out.insert(key.0.key(key.1), kept);
        }
        Ok(out)
    }

    fn lock_pieces(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TensorRecord>>> {
        // A panic while holding the lock cannot leave the map half-updated: recover it.
        self.pieces.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ModelContext for StandardModelContext {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn device(&self) -> Device {
        self.device
    }

    fn get_dim_size(&self, dim: Dimension) -> Result<i64> {
        dim.size_in(self.config(), self.n_vocab).ok_or_else(|| {
            err(
                ErrorKind::InvalidArgument,
                format!(
                    "{} is an activation dimension: a model has no size for it",
                    dim.name()
                ),
            )
        })
    }

    fn weight_helper(&self, loc: WeightLocation, layer: Option<i64>) -> Result<OwnedTensor> {
        let key = loc.piece_name(layer);
        let spec = loc.spec();
        // Once the model exists its parameters are the weights (folded, after simplify).
        let mut w = match self.model.get() {
            Some(model) => model.param(&key)?.share(),
            None => self.base_param(&key)?,
        };
        let stored = w.shape();
        let shape_err = |what: &str| {
            err(
                ErrorKind::Shape,
                format!(
                    "{}: piece `{key}` has shape {stored:?}: {what}",
                    self.source.location()
                ),
            )
        };
        if let Some(axis) = spec.split_heads {
            let n = self.config().n_heads;
            let size = *stored
                .get(axis)
                .ok_or_else(|| shape_err("too few dimensions to split heads"))?;
            if size % n != 0 {
                return Err(shape_err(&format!(
                    "axis {axis} does not split into {n} heads"
                )));
            }
            let mut split = stored.clone();
            split.splice(axis..=axis, [n, size / n]);
            w = w.with_view(|t| t.f_view(split.as_slice()))?;
        }
        if let Some(reshape) = spec.reshape {
            let perm = permutation(reshape);
            if perm.len() != w.shape().len() {
                return Err(shape_err(&format!(
                    "{reshape} needs {} dimensions",
                    perm.len()
                )));
            }
            w = w.with_view(|t| t.f_permute(perm.as_slice()))?;
        }
        if spec.piece.may_broadcast() {
            let expected = self.shape_from_spec(spec.shape)?;
            if w.shape().len() > expected.len() {
                return Err(shape_err(&format!("cannot broadcast to {expected:?}")));
            }
            w = w
                .with_view(|t| t.f_expand(expected.as_slice(), false))
                .map_err(|_| shape_err(&format!("cannot broadcast to {expected:?}")))?;
        }
        Ok(w)
    }

    fn encoding_name(&self) -> Result<&str> {
        Ok(&self.config().enc)
    }

    fn config_json(&self) -> Result<serde_json::Value> {
        Ok(self.config().to_json())
    }

    /// Shared by every context of the same encoding (`Tokenizer::shared`), built on first use.
    fn tokenizer(&self) -> Result<&Tokenizer> {
        Ok(Tokenizer::shared(&self.config().enc)?)
    }

    fn get_or_create_model(&self, opts: Option<ModelOptions>) -> Result<Arc<Model>> {
        let model = self.model.get_or_try_init(|| {
            let create = opts.unwrap_or_default();
            Model::create(self.config(), self.n_vocab, self.device, create, |k| {
                self.base_param(k)
            })
            .map(Arc::new)
        })?;
        match opts {
            Some(o) if o != model.options() => Err(err(
                ErrorKind::InvalidArgument,
                format!(
                    "the model of {} was already created with {:?}; it cannot be re-created with {o:?}",
                    self.name,
                    model.options()
                ),
            )),
            _ => Ok(model.clone()),
        }
    }
}

/// The model name prefix that opens a tokenizer-only context: `"tiktoken:cl100k_base"`.
pub const TOKENIZER_ONLY_PREFIX: &str = "tiktoken:";

/// What a context supports, as JSON, so bindings need no hard-coded tables: every weight
/// location with its dimensions and (where the context knows them) sizes, every dimension,
/// every activation. Ids are the indices of the enums, which the C constants equal.
pub fn describe(ctx: &dyn ModelContext) -> serde_json::Value {
    use serde_json::json;
    let names = |dims: &[Dimension]| dims.iter().map(|d| d.name()).collect::<Vec<_>>();
    let weights = WeightLocation::ALL
        .iter()
        .map(|&l| {
            let shape = ctx.shape_from_spec(l.spec().shape).ok();
            json!({"name": l.name(), "id": l as i32, "per_layer": l.spec().per_layer(),
                   "dims": names(l.spec().shape), "shape": shape})
        })
        .collect::<Vec<_>>();
    let dimensions = Dimension::ALL
        .iter()
        .map(|&d| json!({"name": d.name(), "id": d as i32, "size": ctx.get_dim_size(d).ok()}))
        .collect::<Vec<_>>();
    let activations = crate::schema::activations::Activation::ALL
        .iter()
        .map(|&a| json!({"name": a.name(), "id": a as i32, "per_layer": a.per_layer(), "dims": names(a.shape())}))
        .collect::<Vec<_>>();
    json!({"weights": weights, "dimensions": dimensions, "activations": activations})
}

/// Opens `model`: a checkpoint (see `StandardModelContext::open`), or `"tiktoken:<encoding>"`
/// for a tokenizer-only context.
pub fn open_context(model: &str, opts: &OpenOptions) -> Result<Box<dyn ModelContext>> {
    match model.strip_prefix(TOKENIZER_ONLY_PREFIX) {
        Some(enc) => Ok(Box::new(TokenizerOnlyContext::open(enc, opts)?)),
        None => Ok(Box::new(StandardModelContext::open(model, opts)?)),
    }
}

/// A context with a tokenizer and no checkpoint, for users who only tokenize: the tokenizer
/// and `vocab_size` work; weights, config and the other dimensions are `Unsupported`.
pub struct TokenizerOnlyContext {
    name: String,
    device: Device,
    tokenizer: &'static Tokenizer,
}

impl TokenizerOnlyContext {
    /// Builds (or reuses) the encoding's tokenizer; an unknown encoding lists the known ones.
    pub fn open(encoding_name: &str, opts: &OpenOptions) -> Result<Self> {
        let device = match opts.device {
            Some(d) => {
                d.check_available()?;
                d
            }
            None => Device::Cpu,
        };
        Ok(TokenizerOnlyContext {
            name: format!("{TOKENIZER_ONLY_PREFIX}{encoding_name}"),
            device,
            tokenizer: Tokenizer::shared(encoding_name)?,
        })
    }

    fn unsupported<T>(&self, what: &str) -> Result<T> {
        Err(err(
            ErrorKind::Unsupported,
            format!(
                "{} is a tokenizer-only context: it has no {what} (open a checkpoint for that)",
                self.name
            ),
        ))
    }
}

impl ModelContext for TokenizerOnlyContext {
    fn model_name(&self) -> &str {
        &self.name
    }
    fn device(&self) -> Device {
        self.device
    }
    fn get_dim_size(&self, dim: Dimension) -> Result<i64> {
        match dim {
            Dimension::VocabSize => Ok(self.tokenizer.n_vocab() as i64),
            Dimension::Singleton => Ok(1),
            other => self.unsupported(&format!("size for {}", other.name())),
        }
    }
    fn weight_helper(&self, loc: WeightLocation, _: Option<i64>) -> Result<OwnedTensor> {
        self.unsupported(&format!("weights ({})", loc.name()))
    }
    fn encoding_name(&self) -> Result<&str> {
        Ok(self.tokenizer.name())
    }
    fn config_json(&self) -> Result<serde_json::Value> {
        self.unsupported("config")
    }
    fn tokenizer(&self) -> Result<&Tokenizer> {
        Ok(self.tokenizer)
    }
}

/// The seed's stub: dimensions only, for tests of code that needs sizes but no weights.
pub struct StubModelContext {
    sizes: HashMap<Dimension, i64>,
}

impl StubModelContext {
    pub fn new(sizes: HashMap<Dimension, i64>) -> Self {
        StubModelContext { sizes }
    }
}

fn stub_unsupported<T>(what: &str) -> Result<T> {
    Err(err(
        ErrorKind::Unsupported,
        format!("the stub model context has no {what}"),
    ))
}

impl ModelContext for StubModelContext {
    fn model_name(&self) -> &str {
        "stub"
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn get_dim_size(&self, dim: Dimension) -> Result<i64> {
        self.sizes.get(&dim).copied().ok_or_else(|| {
            err(
                ErrorKind::Unsupported,
                format!("the stub model context has no size for {}", dim.name()),
            )
        })
    }
    fn weight_helper(&self, _: WeightLocation, _: Option<i64>) -> Result<OwnedTensor> {
        stub_unsupported("weights")
    }
    fn encoding_name(&self) -> Result<&str> {
        stub_unsupported("encoding")
    }
    fn config_json(&self) -> Result<serde_json::Value> {
        stub_unsupported("config")
    }
}

//! Helpers shared by the integration tests: where generated data lives, and tensor bytes.
#![allow(dead_code)]
use model_context::model::edits::{AxisSelection, Edit, EditOp};
use model_context::model::ActivationKey;
use model_context::schema::activations::Activation;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A generated data folder; fails (never skips) with the command that makes it.
pub fn data_dir(env: &str, default: &str, script: &str) -> PathBuf {
    let dir = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(default));
    assert!(
        dir.join("manifest.json").is_file() || dir.join("config.json").is_file(),
        "{} is missing: run `.venv/bin/python {script} {}` (scripts/test.sh does)",
        dir.display(),
        dir.display()
    );
    dir
}

/// The row-major bytes of a tensor (any dtype, any strides).
pub fn tensor_bytes(t: &tch::Tensor) -> Vec<u8> {
    let c = t.contiguous();
    let n = c.numel() * c.kind().elt_size_in_bytes();
    // SAFETY: `c` is contiguous with `n` bytes of data and lives across the copy.
    unsafe { std::slice::from_raw_parts(c.data_ptr() as *const u8, n).to_vec() }
}

/// A C ABI struct filled by its `mc_<struct>_init(p, sizeof *p)`, as a C caller does.
pub fn init<T>(f: unsafe extern "C" fn(*mut T, usize) -> i32) -> T {
    let mut v = std::mem::MaybeUninit::<T>::uninit();
    // SAFETY: `_init` writes all size_of::<T>() bytes on MC_OK.
    unsafe {
        assert_eq!(
            f(v.as_mut_ptr(), std::mem::size_of::<T>()),
            0,
            "init failed"
        );
        v.assume_init()
    }
}

pub fn load(dir: &Path, entry: &Value) -> Tensor {
    let bytes = std::fs::read(dir.join(entry["file"].as_str().unwrap())).unwrap();
    let shape: Vec<i64> = serde_json::from_value(entry["shape"].clone()).unwrap();
    Tensor::f_from_data_size(&bytes, &shape, Kind::Float).unwrap()
}

/// "attn.q.1" -> (attn.q, Some(1)); "resid.post_emb" -> (resid.post_emb, None).
pub fn parse_key(key: &str) -> ActivationKey {
    if let Some((loc, layer)) = key.rsplit_once('.') {
        if let (Ok(l), Some(a)) = (layer.parse::<i64>(), Activation::from_name(loc)) {
            return (a, Some(l));
        }
    }
    (
        Activation::from_name(key).unwrap_or_else(|| panic!("unknown key {key}")),
        None,
    )
}

/// Max |a - b| over entries where `keep` (broadcast) is true; -inf must match -inf exactly.
pub fn max_diff(a: &Tensor, b: &Tensor, keep: Option<&Tensor>) -> f64 {
    assert_eq!(a.size(), b.size());
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    let both_inf = a
        .isinf()
        .logical_and(&b.isinf())
        .logical_and(&a.eq_tensor(&b));
    let mut d = (&a - &b).abs().masked_fill(&both_inf, 0.0);
    if let Some(k) = keep {
        d = d.masked_fill(&k.logical_not(), 0.0);
    }
    d.nan_to_num(1e9, 1e9, 1e9).max().double_value(&[])
}

/// xorshift64*: deterministic random test inputs without a dependency.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A golden case's `tokens` rows and `pad` rows as one forward input.
pub fn case_input(case: &Value) -> model_context::model::ForwardInput {
    let rows: Vec<Vec<i64>> = serde_json::from_value(case["tokens"].clone()).unwrap();
    let pad: Option<Vec<Vec<bool>>> = serde_json::from_value(case["pad"].clone()).unwrap();
    model_context::model::ForwardInput {
        batch: rows.len() as i64,
        seq_len: rows[0].len() as i64,
        tokens: rows.concat(),
        pad: pad.map(|p| p.concat()),
    }
}

/// The edit lists of the manifest as the library's edits.
pub fn edits(dir: &Path, case: &Value) -> Vec<Edit> {
    case["edits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let key = match e["layer"].as_i64() {
                Some(l) => format!("{}.{l}", e["location"].as_str().unwrap()),
                None => e["location"].as_str().unwrap().to_string(),
            };
            let (location, layer) = parse_key(&key);
            let selection = e["selection"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| match s.as_array() {
                    None => AxisSelection::All,
                    Some(ix) => {
                        AxisSelection::Indices(ix.iter().map(|i| i.as_i64().unwrap()).collect())
                    }
                })
                .collect();
            let value = e["value"].as_f64().unwrap();
            let op = match e["op"].as_str().unwrap() {
                "set" => EditOp::Set(value),
                "scale" => EditOp::Scale(value),
                "add" => EditOp::Add(load(dir, &e["operand"])),
                "replace" => EditOp::Replace(load(dir, &e["operand"])),
                op => panic!("unknown op {op}"),
            };
            Edit {
                location,
                layer,
                selection,
                op,
            }
        })
        .collect()
}

/// The CPU, and CUDA device 0 where libtorch sees one (a SKIPPED line otherwise).
pub fn devices() -> Vec<model_context::Device> {
    if tch::Cuda::is_available() {
        vec![model_context::Device::Cpu, model_context::Device::Cuda(0)]
    } else {
        eprintln!("SKIPPED on CUDA: no CUDA device visible to libtorch (CPU only)");
        vec![model_context::Device::Cpu]
    }
}

/// A float32 CPU model of one checkpoint in a generated golden folder.
pub fn golden_model(
    env: &str,
    default: &str,
    script: &str,
    name: &str,
) -> std::sync::Arc<model_context::model::Model> {
    golden_model_with(env, default, script, name, None)
}

/// `golden_model` with model options (a dtype, say); None: the defaults.
pub fn golden_model_with(
    env: &str,
    default: &str,
    script: &str,
    name: &str,
    options: Option<model_context::model::ModelOptions>,
) -> std::sync::Arc<model_context::model::Model> {
    use model_context::ModelContext;
    let dir = data_dir(env, default, script).join(name);
    let opts = model_context::OpenOptions {
        device: Some(model_context::Device::Cpu),
        ..Default::default()
    };
    let ctx = model_context::StandardModelContext::open(dir.to_str().unwrap(), &opts).unwrap();
    ctx.get_or_create_model(options).unwrap()
}

/// Rows of ids as one batch, right-padded to the longest (a pad mask only when needed).
pub fn padded(rows: &[&[i64]]) -> model_context::model::ForwardInput {
    let t = rows.iter().map(|r| r.len()).max().unwrap();
    let mut tokens = Vec::new();
    let mut pad = Vec::new();
    for r in rows {
        tokens.extend(r.iter().copied().chain(std::iter::repeat_n(0, t - r.len())));
        pad.extend((0..t).map(|i| i >= r.len()));
    }
    model_context::model::ForwardInput {
        tokens,
        batch: rows.len() as i64,
        seq_len: t as i64,
        pad: pad.iter().any(|&p| p).then_some(pad),
    }
}

/// `<ENV>=<model>/<input>` keeps one model's cases for one input (the GPU bundle carries only
/// those); unset, every case runs.
pub fn selected(env: &str, model: &Value, case: &Value) -> bool {
    std::env::var(env).map_or(true, |only| {
        only == format!(
            "{}/{}",
            model["name"].as_str().unwrap(),
            case["input"].as_str().unwrap()
        )
    })
}

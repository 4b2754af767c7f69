//! One context shared by several threads through the C ABI, from cold (pieces, model and
//! tokenizer are all created by whichever thread gets there first): weights, encode, decode and
//! forward run concurrently, every tensor is freed by a thread other than the one it was made
//! on, and every result is byte-identical to the one computed single-threaded on a separate
//! context. (ThreadSanitizer cannot check this build: see docs/reliability.md for
//! why, and for what stands in for it: this test, and tests/c/stress.c under AddressSanitizer.)
mod common;
use model_context::ffi::dlpack::DLManagedTensorVersioned;
use model_context::ffi::*;
use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::ptr::null_mut;
use std::sync::{Arc, Barrier, Mutex};

/// Threads sharing the context, and rounds of every operation each one runs.
const THREADS: usize = 4;
fn rounds() -> usize {
    std::env::var("MC_STRESS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

fn demo() -> String {
    common::data_dir(
        "MC_DEMO_DIR",
        "data/demo",
        "scripts/make_checkpoint.py --preset demo",
    )
    .to_str()
    .unwrap()
    .to_string()
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(mc_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[track_caller]
fn ok(status: mc_status) {
    assert_eq!(status, MC_OK, "{}", last_error());
}

/// A context pointer shared by threads (the C ABI's contract: every call but mc_free takes
/// `const mc_context *` and may run concurrently).
#[derive(Clone, Copy)]
struct Shared(*const mc_context);
// SAFETY: the C ABI documents contexts as safe to share across threads.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// A tensor handed to another thread to free.
struct Handoff(*mut DLManagedTensorVersioned);
// SAFETY: DLPack deleters may run on any thread (documented by the C ABI).
unsafe impl Send for Handoff {}

fn open(path: &str) -> *mut mc_context {
    let mut ctx = null_mut();
    let path = CString::new(path).unwrap();
    ok(unsafe { mc_open(path.as_ptr(), c"cpu".as_ptr(), &mut ctx) });
    ctx
}

/// A tensor's shape, dtype bits and elements in row-major order (any strides).
fn contents(t: *const DLManagedTensorVersioned) -> (Vec<i64>, u8, Vec<u8>) {
    // SAFETY: a live tensor from the library: shape and strides hold ndim entries, and every
    // element the view reaches is readable.
    unsafe {
        let dl = &(*t).dl_tensor;
        let nd = dl.ndim as usize;
        let shape = std::slice::from_raw_parts(dl.shape, nd).to_vec();
        let strides = std::slice::from_raw_parts(dl.strides, nd).to_vec();
        let esz = (dl.dtype.bits as usize).div_ceil(8);
        let base = (dl.data as *const u8).add(dl.byte_offset as usize);
        let numel: i64 = shape.iter().product();
        let mut out = Vec::with_capacity(numel as usize * esz);
        if numel == 0 {
            return (shape, dl.dtype.bits, out);
        }
        // Rows of the last dimension, walked with an odometer over the others.
        let (inner, inner_stride) = match nd {
            0 => (1, 1),
            _ => (shape[nd - 1], strides[nd - 1]),
        };
        let outer = nd.saturating_sub(1);
        let mut index = vec![0i64; outer];
        loop {
            let row: i64 = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
            let at = |j: i64| base.offset(((row + j * inner_stride) * esz as i64) as isize);
            if inner_stride == 1 {
                out.extend_from_slice(std::slice::from_raw_parts(at(0), inner as usize * esz));
            } else {
                for j in 0..inner {
                    out.extend_from_slice(std::slice::from_raw_parts(at(j), esz));
                }
            }
            let mut d = outer;
            loop {
                if d == 0 {
                    return (shape, dl.dtype.bits, out);
                }
                d -= 1;
                index[d] += 1;
                if index[d] < shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
    }
}

/// One operation of the stress, named for messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Op {
    Weight { loc: i32, layer: i32, norm: i32 },
    Encode(usize),
    Decode(usize),
    Forward,
}

fn texts() -> Vec<Vec<u8>> {
    let prose = "The quick brown fox jumps over the lazy dog; 123 numbers, émigré cafés, 東京 and \
                 emoji 🦀.\n\tIndented <|endoftext|> text after the special token. ";
    vec![
        prose.as_bytes().to_vec(),
        "  leading spaces\r\nand\u{0301} marks   "
            .as_bytes()
            .to_vec(),
        // Long enough for the encoder's parallel path (threads of its own for each call).
        prose.repeat(1500).into_bytes(),
    ]
}

const TOKENS: [u32; 16] = [
    464, 2068, 7586, 21831, 11, 50256, 318, 257, 1332, 13, 198, 40, 1101, 4128, 25, 30,
];

/// Runs one operation; tensors it makes are pushed to `made` (to be freed by someone else).
fn run(ctx: Shared, op: &Op, made: &mut Vec<Handoff>) -> Vec<u8> {
    let ctx = ctx.0;
    let texts = texts();
    match *op {
        Op::Weight { loc, layer, norm } => {
            let mut t = null_mut();
            ok(unsafe { mc_get_weight(ctx, loc, layer, norm, std::ptr::null(), &mut t) });
            let (shape, bits, bytes) = contents(t);
            made.push(Handoff(t));
            let mut out: Vec<u8> = shape.iter().flat_map(|s| s.to_le_bytes()).collect();
            out.push(bits);
            out.extend(bytes);
            out
        }
        Op::Encode(i) => {
            let text = &texts[i];
            let mut ids = vec![0u32; text.len()];
            let mut n = 0;
            ok(unsafe {
                mc_encode(
                    ctx,
                    text.as_ptr() as *const c_char,
                    text.len(),
                    ids.as_mut_ptr(),
                    ids.len(),
                    &mut n,
                )
            });
            ids.truncate(n);
            ids.iter().flat_map(|id| id.to_le_bytes()).collect()
        }
        Op::Decode(i) => {
            // The ids of text i, decoded: the bytes of the text itself.
            let ids = run(Shared(ctx), &Op::Encode(i), made);
            let ids: Vec<u32> = ids
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let mut bytes = vec![0u8; texts[i].len()];
            let mut n = 0;
            ok(unsafe {
                mc_decode(
                    ctx,
                    ids.as_ptr(),
                    ids.len(),
                    bytes.as_mut_ptr() as *mut c_char,
                    bytes.len(),
                    &mut n,
                )
            });
            bytes.truncate(n);
            assert_eq!(bytes, texts[i], "decode(encode(text {i}))");
            bytes
        }
        Op::Forward => {
            let acts = [
                MC_ACT_MLP_POST_ACT,
                MC_ACT_ATTN_QK_PROBS,
                MC_ACT_RESID_POST_EMB,
            ];
            let layers = [MC_LAYER_ALL, 1, MC_LAYER_NONE];
            let mut r = common::init(mc_forward_request_init);
            r.tokens = TOKENS.as_ptr().cast();
            r.n_tokens = TOKENS.len();
            r.token_type = MC_TOKENS_UINT32;
            r.batch = 2;
            r.seq_len = 8;
            r.activations = acts.as_ptr();
            r.layers = layers.as_ptr();
            r.n_activations = acts.len();
            let mut output = null_mut();
            ok(unsafe { mc_forward(ctx, &r, &mut output) });
            let mut out = Vec::new();
            for (act, layer) in [
                (MC_ACT_LOGITS, MC_LAYER_NONE),
                (MC_ACT_MLP_POST_ACT, 0),
                (MC_ACT_MLP_POST_ACT, 1),
                (MC_ACT_ATTN_QK_PROBS, 1),
            ] {
                let mut t = null_mut();
                ok(unsafe { mc_forward_output_get(output, act, layer, &mut t) });
                out.extend(contents(t).2);
                made.push(Handoff(t));
            }
            unsafe { mc_forward_output_free(output) };
            out
        }
    }
}

fn ops(n_layers: i32) -> Vec<Op> {
    let mut ops = Vec::new();
    for loc in 0..MC_WEIGHT_COUNT {
        let mut per_layer = false;
        ok(unsafe { mc_weight_location_per_layer(loc, &mut per_layer) });
        let layers: Vec<i32> = match per_layer {
            true => (0..n_layers).chain([MC_LAYER_ALL]).collect(),
            false => vec![MC_LAYER_NONE],
        };
        for layer in layers {
            ops.push(Op::Weight {
                loc,
                layer,
                norm: MC_DIM_NONE,
            });
        }
    }
    // Normalised (computed, not mapped) weights too.
    ops.push(Op::Weight {
        loc: MC_WEIGHT_EMBEDDING,
        layer: MC_LAYER_NONE,
        norm: MC_DIM_RESIDUAL_STREAM_CHANNELS,
    });
    ops.push(Op::Weight {
        loc: MC_WEIGHT_MLP_TO_HIDDEN,
        layer: 0,
        norm: MC_DIM_MLP_ACTS,
    });
    ops.extend((0..texts().len()).map(Op::Encode));
    ops.extend((0..texts().len()).map(Op::Decode));
    ops.push(Op::Forward);
    ops
}

#[test]
fn threads_sharing_a_context_get_the_single_threaded_results() {
    let model = demo();
    // The reference: one thread, its own context.
    let reference_ctx = open(&model);
    let mut n_layers = 0i64;
    ok(unsafe { mc_dim_size(reference_ctx, MC_DIM_LAYERS, &mut n_layers) });
    let ops = ops(n_layers as i32);
    let mut made = Vec::new();
    let reference: HashMap<Op, Vec<u8>> = ops
        .iter()
        .map(|op| (op.clone(), run(Shared(reference_ctx), op, &mut made)))
        .collect();
    for t in made.drain(..) {
        unsafe { ((*t.0).deleter.unwrap())(t.0) };
    }
    unsafe { mc_free(reference_ctx) };

    // The stress: a fresh context, every thread starting at once on a different order of ops.
    let ctx = Shared(open(&model));
    let rounds = rounds();
    let start = Arc::new(Barrier::new(THREADS));
    let pool: Arc<Mutex<Vec<(usize, Handoff)>>> = Arc::new(Mutex::new(Vec::new()));
    let reference = Arc::new(reference);
    let handles: Vec<_> = (0..THREADS)
        .map(|id| {
            let (start, pool, reference, ops) =
                (start.clone(), pool.clone(), reference.clone(), ops.clone());
            std::thread::spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (id as u64 + 1).wrapping_mul(0xff51);
                let mut freed_foreign = 0usize;
                start.wait();
                for round in 0..rounds {
                    let mut order: Vec<&Op> = ops.iter().collect();
                    for i in (1..order.len()).rev() {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        order.swap(i, (rng % (i as u64 + 1)) as usize);
                    }
                    for op in order {
                        let mut made = Vec::new();
                        let got = run(ctx, op, &mut made);
                        assert!(
                            got == reference[op],
                            "thread {id} round {round}: {op:?} differs from the single-threaded result"
                        );
                        // Leave this thread's tensors for others; free theirs.
                        let mut pool = pool.lock().unwrap();
                        pool.extend(made.into_iter().map(|t| (id, t)));
                        let (foreign, mine): (Vec<_>, Vec<_>) =
                            pool.drain(..).partition(|(owner, _)| *owner != id);
                        *pool = mine;
                        drop(pool);
                        for (_, t) in foreign {
                            unsafe { ((*t.0).deleter.unwrap())(t.0) };
                            freed_foreign += 1;
                        }
                    }
                }
                freed_foreign
            })
        })
        .collect();
    let freed_foreign: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let left = std::mem::take(&mut *pool.lock().unwrap());
    // Free what is left after the context itself: tensors outlive their context.
    unsafe { mc_free(ctx.0 as *mut mc_context) };
    for (_, t) in left {
        unsafe { ((*t.0).deleter.unwrap())(t.0) };
    }
    let per_thread = rounds * ops.len();
    eprintln!(
        "{THREADS} threads x {rounds} rounds x {} ops = {} calls, {freed_foreign} tensors freed on another thread",
        ops.len(),
        THREADS * per_thread
    );
    assert!(freed_foreign > per_thread, "{freed_foreign} foreign frees");
}

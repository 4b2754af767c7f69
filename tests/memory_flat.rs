//! Resource use over long runs: opening, reading and freeing contexts and tensors, decoding
//! states (appends, forks, truncates, then freed), and
//! encoding and decoding, keep the process's resident memory flat. The first rounds warm up
//! (libtorch's allocator pools, the shared tokenizer, the mapped pages); anonymous resident
//! memory after the warm-up and after many more rounds must agree within a few MiB (file-backed
//! pages, such as libtorch's code paged in late, are not leaks), and so must the address
//! space and the number of mappings (a leaked tensor that views a mapped piece keeps its mapping
//! alive without making its pages resident).
mod common;
use model_context::ffi::dlpack::DLManagedTensorVersioned;
use model_context::ffi::*;
use std::ffi::{c_char, CStr, CString};
use std::ptr::{null, null_mut};

const WARM_UP: usize = 20;
fn rounds() -> usize {
    std::env::var("MC_FLAT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}
/// Growth allowed between the warmed-up process and the end (allocator noise, not leaks: one
/// leaked normalised embedding per round would add 3.7 GiB over the default rounds, one leaked
/// mapped piece one mapping per round).
const MAX_GROWTH_KB: i64 = 8 << 10;
/// Growth allowed once over the whole run: seen here, 12.3 MiB of anonymous memory appears in
/// some runs at a random round (before or after the warm-up) and never again.
const MAX_ONCE_KB: i64 = 32 << 10;
const MAX_NEW_MAPPINGS: i64 = 16;

/// A field of /proc/self/status, in KiB.
fn status_kb(field: &str) -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// (anonymous resident KiB, address space KiB, mappings, file-backed resident KiB) of this
/// process. Leaks are anonymous memory; file-backed pages (libtorch's code, mapped pieces) come
/// and go with the page cache, so they are reported but not bounded.
fn usage() -> (i64, i64, i64, i64) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    (
        status_kb("RssAnon:"),
        status_kb("VmSize:"),
        maps.lines().count() as i64,
        status_kb("RssFile:"),
    )
}

#[track_caller]
fn ok(status: mc_status) {
    let msg = unsafe { CStr::from_ptr(mc_last_error()) }
        .to_string_lossy()
        .into_owned();
    assert_eq!(status, MC_OK, "{msg}");
}

fn free(t: *mut DLManagedTensorVersioned) {
    unsafe { ((*t).deleter.unwrap())(t) }
}

/// One round of open / get / forward / free.
fn weights_round(model: &CString, with_forward: bool) {
    let mut ctx = null_mut();
    ok(unsafe { mc_open(model.as_ptr(), c"cpu".as_ptr(), &mut ctx) });
    for (loc, layer, norm) in [
        (MC_WEIGHT_EMBEDDING, MC_LAYER_NONE, MC_DIM_NONE),
        (MC_WEIGHT_UNEMBEDDING, MC_LAYER_NONE, MC_DIM_NONE),
        (MC_WEIGHT_ATTN_TO_QUERY, 1, MC_DIM_NONE),
        (MC_WEIGHT_MLP_TO_HIDDEN, MC_LAYER_ALL, MC_DIM_NONE),
        (
            MC_WEIGHT_EMBEDDING,
            MC_LAYER_NONE,
            MC_DIM_RESIDUAL_STREAM_CHANNELS,
        ),
    ] {
        let mut t = null_mut();
        ok(unsafe { mc_get_weight(ctx, loc, layer, norm, null(), &mut t) });
        free(t);
    }
    let mut e = null_mut();
    ok(unsafe { mc_get_unembedding_with_ln_gain(ctx, null(), &mut e) });
    let mut json = null_mut();
    ok(unsafe { mc_config_json(ctx, &mut json) });
    unsafe { mc_string_free(json) };
    if with_forward {
        let tokens = [464u32, 2068, 7586, 21831, 11, 50256, 318, 257];
        let mut r = common::init(mc_forward_request_init);
        r.tokens = tokens.as_ptr().cast();
        r.n_tokens = tokens.len();
        r.token_type = MC_TOKENS_UINT32;
        r.batch = 1;
        r.seq_len = 8;
        let mut out = null_mut();
        ok(unsafe { mc_forward(ctx, &r, &mut out) });
        let mut logits = null_mut();
        ok(unsafe { mc_forward_output_get(out, MC_ACT_LOGITS, MC_LAYER_NONE, &mut logits) });
        unsafe { mc_forward_output_free(out) };
        free(logits);
    }
    unsafe { mc_free(ctx) };
    free(e); // after its context
}

fn tokens_round(ctx: *const mc_context, text: &[u8]) {
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
    let mut bytes = vec![0u8; text.len()];
    let mut m = 0;
    ok(unsafe {
        mc_decode(
            ctx,
            ids.as_ptr(),
            n,
            bytes.as_mut_ptr() as *mut c_char,
            bytes.len(),
            &mut m,
        )
    });
    assert_eq!(&bytes[..m], text);
}

/// One round of a decoding state: two sequences, a prompt each, steps, a fork, a truncate,
/// then the state freed.
fn state_round(ctx: *mut mc_context) {
    let mut st = null_mut();
    ok(unsafe { mc_state_new(ctx, 3, &mut st) });
    let mut req: mc_append_request = common::init(mc_append_request_init);
    let seqs = [0i32, 1];
    let tokens: Vec<i64> = (0..24).map(|i| 100 + i).collect();
    let offsets = [0usize, 16, 24];
    req.seq_ids = seqs.as_ptr();
    req.n_seq_ids = 2;
    req.offsets = offsets.as_ptr();
    req.n_offsets = 3;
    req.logits = MC_LOGITS_LAST;
    for step in 0..6 {
        let (toks, offs): (&[i64], [usize; 3]) = match step {
            0 => (&tokens, offsets),
            _ => (&tokens[..2], [0, 1, 2]),
        };
        req.tokens = toks.as_ptr() as *const _;
        req.n_tokens = toks.len();
        req.offsets = offs.as_ptr();
        let mut out = null_mut();
        ok(unsafe { mc_state_append(st, &req, &mut out) });
        unsafe { mc_forward_output_free(out) };
    }
    ok(unsafe { mc_state_copy(st, 0, 2) });
    ok(unsafe { mc_state_truncate(st, 1, 3) });
    unsafe { mc_state_free(st) };
}

#[test]
fn long_loops_keep_resident_memory_flat() {
    let dir = common::data_dir(
        "MC_DEMO_DIR",
        "data/demo",
        "scripts/make_checkpoint.py --preset demo",
    );
    let model = CString::new(dir.to_str().unwrap()).unwrap();
    let text = "Tokens in a loop, émigré 東京 🦀 <|endoftext|> and 12345 numbers.\n".repeat(200);
    let mut tok_ctx = null_mut();
    ok(unsafe { mc_open(model.as_ptr(), c"cpu".as_ptr(), &mut tok_ctx) });
    let rounds = rounds();
    let mut marks = Vec::new();
    for i in 0..WARM_UP + rounds {
        if i == WARM_UP || i == WARM_UP + rounds / 2 {
            marks.push(usage());
        }
        weights_round(&model, i % 10 == 0);
        tokens_round(tok_ctx, text.as_bytes());
        state_round(tok_ctx);
    }
    marks.push(usage());
    unsafe { mc_free(tok_ctx) };
    let (start, middle, end) = (marks[0], marks[1], marks[2]);
    eprintln!(
        "{rounds} rounds after {WARM_UP} warm-up rounds: anonymous RSS {} KiB -> {} KiB -> {} KiB, \
         file-backed RSS {:+} KiB, address space {:+} KiB, mappings {} -> {}",
        start.0,
        middle.0,
        end.0,
        end.3 - start.3,
        end.1 - start.1,
        start.2,
        end.2
    );
    // A leak grows both halves of the run; the allocator's one-time growth (an arena of a
    // worker thread reaching a new high once, at a moment scheduling decides) grows one.
    let halves = [middle.0 - start.0, end.0 - middle.0];
    assert!(
        halves.iter().min().unwrap() <= &MAX_GROWTH_KB && end.0 - start.0 <= MAX_ONCE_KB,
        "anonymous resident memory grew by {halves:?} KiB over the two halves of {rounds} rounds \
         (from {} to {} KiB)",
        start.0,
        end.0
    );
    assert!(
        end.1 - start.1 <= MAX_GROWTH_KB,
        "the address space grew by {} KiB over {rounds} rounds",
        end.1 - start.1
    );
    assert!(
        end.2 - start.2 <= MAX_NEW_MAPPINGS,
        "{} new mappings over {rounds} rounds",
        end.2 - start.2
    );
}

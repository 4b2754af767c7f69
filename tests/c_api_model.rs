//! The model's C ABI: forward requests, outputs, sampling, and a clear status for every bad
//! input with the context still usable.
mod common;
use model_context::ffi::dlpack::DLManagedTensorVersioned;
use model_context::ffi::*;
use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};

fn model_dir() -> CString {
    let dir = common::data_dir(
        "MC_MODEL_GOLDEN_DIR",
        "data/model_golden",
        "scripts/gen_model_golden.py",
    );
    CString::new(dir.join("e32_l2_h4").to_str().unwrap()).unwrap()
}

fn open() -> *mut mc_context {
    let mut ctx = null_mut();
    assert_eq!(
        unsafe { mc_open(model_dir().as_ptr(), c"cpu".as_ptr(), &mut ctx) },
        MC_OK
    );
    ctx
}

fn last_error() -> String {
    unsafe {
        CStr::from_ptr(mc_last_error())
            .to_string_lossy()
            .into_owned()
    }
}

fn request(
    tokens: &[u32],
    batch: i64,
    seq: i64,
    acts: &[i32],
    layers: &[i32],
) -> mc_forward_request {
    let mut r = common::init(mc_forward_request_init);
    r.tokens = tokens.as_ptr().cast();
    r.n_tokens = tokens.len();
    r.token_type = MC_TOKENS_UINT32;
    r.batch = batch;
    r.seq_len = seq;
    r.activations = acts.as_ptr();
    r.layers = layers.as_ptr();
    r.n_activations = acts.len();
    r
}

fn forward(
    ctx: *const mc_context,
    r: &mc_forward_request,
) -> Result<*mut mc_forward_output, (i32, String)> {
    let mut out = null_mut();
    match unsafe { mc_forward(ctx, r, &mut out) } {
        MC_OK => Ok(out),
        s => {
            assert!(out.is_null());
            Err((s, last_error()))
        }
    }
}

fn get(out: *const mc_forward_output, act: i32, layer: i32) -> Result<Vec<i64>, i32> {
    let mut t: *mut DLManagedTensorVersioned = null_mut();
    match unsafe { mc_forward_output_get(out, act, layer, &mut t) } {
        MC_OK => unsafe {
            let dl = &(*t).dl_tensor;
            let shape = std::slice::from_raw_parts(dl.shape, dl.ndim as usize).to_vec();
            assert_eq!((*t).flags & 1, 0, "fresh memory, writable");
            ((*t).deleter.unwrap())(t);
            Ok(shape)
        },
        s => Err(s),
    }
}

#[test]
fn forward_through_the_c_api() {
    let ctx = open();
    let tokens = [464u32, 2068, 7586, 21831, 464, 2068];
    let r = request(
        &tokens,
        2,
        3,
        &[
            MC_ACT_MLP_POST_ACT,
            MC_ACT_RESID_POST_EMB,
            MC_ACT_ATTN_QK_PROBS,
        ],
        &[MC_LAYER_ALL, MC_LAYER_NONE, 1],
    );
    let out = forward(ctx, &r).unwrap();
    assert_eq!(
        get(out, MC_ACT_LOGITS, MC_LAYER_NONE).unwrap(),
        [2, 3, 50257]
    );
    assert_eq!(get(out, MC_ACT_MLP_POST_ACT, 0).unwrap(), [2, 3, 128]);
    assert_eq!(get(out, MC_ACT_MLP_POST_ACT, 1).unwrap(), [2, 3, 128]);
    assert_eq!(
        get(out, MC_ACT_RESID_POST_EMB, MC_LAYER_NONE).unwrap(),
        [2, 3, 32]
    );
    assert_eq!(get(out, MC_ACT_ATTN_QK_PROBS, 1).unwrap(), [2, 3, 3, 4]);
    assert_eq!(get(out, MC_ACT_ATTN_QK_PROBS, 0), Err(MC_ERR_NOT_FOUND));
    assert!(
        last_error().contains("attn.qk_probs layer 0 was not requested"),
        "{}",
        last_error()
    );
    assert_eq!(get(out, 20, 0), Err(MC_ERR_INVALID_ARGUMENT));
    // The same ids as int64 give the same logits (with layer 1's pattern captured again, so
    // that layer takes the same, explicit, attention path).
    let wide: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let mut r64 = request(&tokens, 2, 3, &[MC_ACT_ATTN_QK_PROBS], &[1]);
    r64.tokens = wide.as_ptr().cast();
    r64.token_type = MC_TOKENS_INT64;
    let out64 = forward(ctx, &r64).unwrap();
    let logits = |o| unsafe {
        let mut t: *mut DLManagedTensorVersioned = null_mut();
        assert_eq!(
            mc_forward_output_get(o, MC_ACT_LOGITS, MC_LAYER_NONE, &mut t),
            MC_OK
        );
        let v = std::slice::from_raw_parts((*t).dl_tensor.data as *const f32, 6 * 50257).to_vec();
        ((*t).deleter.unwrap())(t);
        v
    };
    assert_eq!(logits(out), logits(out64));
    unsafe {
        mc_forward_output_free(out);
        mc_forward_output_free(out64);
        mc_forward_output_free(null_mut());
        mc_free(ctx);
    }
}

#[test]
fn bad_requests_have_their_status_and_leave_the_context_usable() {
    let ctx = open();
    let good = [1u32, 2, 3];
    let long = vec![1u32; 33];
    let oov = [1u32, 50257, 3];
    let pad = [false, true];
    let cases: Vec<(mc_forward_request, i32, &str)> = vec![
        (
            request(&oov, 1, 3, &[], &[]),
            MC_ERR_TOKEN,
            "token id 50257",
        ),
        (
            request(&long, 1, 33, &[], &[]),
            MC_ERR_INVALID_ARGUMENT,
            "exceeds ctx_window 32",
        ),
        (
            request(&good, 0, 3, &[], &[]),
            MC_ERR_INVALID_ARGUMENT,
            "empty or overflowing batch",
        ),
        (
            {
                let mut r = request(&good, 1, 3, &[], &[]);
                r.n_tokens = 2;
                r
            },
            MC_ERR_INVALID_ARGUMENT,
            "`request->n_tokens` = 2 but batch * seq_len = 1 * 3 = 3",
        ),
        (
            request(&good, 1, 5, &[], &[]),
            MC_ERR_INVALID_ARGUMENT,
            "`request->n_tokens` = 3 but batch * seq_len = 1 * 5 = 5",
        ),
        (
            request(&good, 2, 3, &[], &[]),
            MC_ERR_INVALID_ARGUMENT,
            "`request->n_tokens` = 3 but batch * seq_len = 2 * 3 = 6",
        ),
        (
            request(&good, i64::MAX, 2, &[], &[]),
            MC_ERR_INVALID_ARGUMENT,
            "empty or overflowing batch",
        ),
        (
            {
                let mut r = request(&good, 1, 3, &[], &[]);
                r.n_pad = 3;
                r
            },
            MC_ERR_NULL_ARGUMENT,
            "`request->pad` is NULL but `request->n_pad` is 3",
        ),
        (
            {
                let mut r = request(&good, 1, 3, &[MC_ACT_MLP_PRE_ACT], &[0]);
                r.layers = null();
                r
            },
            MC_ERR_NULL_ARGUMENT,
            "`request->layers` is NULL but its length is 1",
        ),
        (
            request(&good, 1, 3, &[99], &[0]),
            MC_ERR_INVALID_ARGUMENT,
            "activation location 99",
        ),
        (
            request(&good, 1, 3, &[MC_ACT_MLP_PRE_ACT], &[2]),
            MC_ERR_INVALID_ARGUMENT,
            "layer 2 out of range",
        ),
        (
            request(&good, 1, 3, &[MC_ACT_MLP_PRE_ACT], &[-7]),
            MC_ERR_INVALID_ARGUMENT,
            "-7",
        ),
        (
            {
                let mut r = request(&good, 1, 3, &[], &[]);
                r.pad = pad.as_ptr();
                r.n_pad = 2;
                r
            },
            MC_ERR_INVALID_ARGUMENT,
            "`request->n_pad` = 2 but batch * seq_len = 1 * 3 = 3",
        ),
        (
            {
                let mut r = request(&good, 1, 3, &[], &[]);
                r.token_type = 5;
                r
            },
            MC_ERR_INVALID_ARGUMENT,
            "`request->token_type` = 5",
        ),
        (
            {
                let mut r = request(&good, 1, 3, &[], &[]);
                r.tokens = null();
                r
            },
            MC_ERR_NULL_ARGUMENT,
            "tokens",
        ),
    ];
    for (r, status, needle) in cases {
        let (s, msg) = forward(ctx, &r)
            .err()
            .unwrap_or_else(|| panic!("accepted: {needle}"));
        assert_eq!(s, status, "{needle}: {msg}");
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    let mut out = null_mut();
    assert_eq!(
        unsafe { mc_forward(ctx, null(), &mut out) },
        MC_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        unsafe { mc_forward(null(), &request(&good, 1, 3, &[], &[]), &mut out) },
        MC_ERR_NULL_ARGUMENT
    );
    let mut act = 3;
    assert_eq!(
        unsafe { mc_activation_from_name(c"mlp.nothing".as_ptr(), &mut act) },
        MC_ERR_NOT_FOUND
    );
    assert_eq!(act, 3);
    assert_eq!(
        unsafe { mc_activation_from_name(c"mlp.post_act".as_ptr(), &mut act) },
        MC_OK
    );
    assert_eq!(act, MC_ACT_MLP_POST_ACT);
    assert_eq!(
        unsafe { CStr::from_ptr(mc_activation_name(MC_ACT_ATTN_QK_LOGITS)) }
            .to_str()
            .unwrap(),
        "attn.qk_logits"
    );
    let mut opts = common::init(mc_model_options_init);
    opts.simplify = true;
    assert_eq!(
        unsafe { mc_create_model(ctx, &opts) },
        MC_ERR_INVALID_ARGUMENT,
        "a default model already exists"
    );
    opts.dtype = 9;
    assert_eq!(
        unsafe { mc_create_model(ctx, &opts) },
        MC_ERR_INVALID_ARGUMENT
    );
    let mut opts = common::init(mc_model_options_init);
    opts.reserved[1] = 1;
    assert_eq!(
        unsafe { mc_create_model(ctx, &opts) },
        MC_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("`opts->reserved` = [0, 1, 0] must be zero"));
    let out = forward(ctx, &request(&good, 1, 3, &[], &[])).expect("still usable");
    unsafe { mc_forward_output_free(out) };
    unsafe { mc_free(ctx) };
}

#[test]
fn sampling_through_the_c_api() {
    let ctx = open();
    let prompt = [464u32, 2068];
    let mut opts = common::init(mc_sample_options_init);
    opts.max_new_tokens = 6;
    opts.stop_at_end_of_text = false;
    let mut n = 0usize;
    assert_eq!(
        unsafe { mc_sample(ctx, prompt.as_ptr(), 2, &opts, null_mut(), 0, &mut n) },
        MC_OK
    );
    assert_eq!(n, 6);
    let mut small = [7u32; 3];
    assert_eq!(
        unsafe {
            mc_sample(
                ctx,
                prompt.as_ptr(),
                2,
                &opts,
                small.as_mut_ptr(),
                3,
                &mut n,
            )
        },
        MC_ERR_BUFFER_TOO_SMALL
    );
    assert_eq!(small, [7; 3]);
    let run = |temperature: f64, seed: u64| {
        let mut o = opts;
        o.temperature = temperature;
        o.seed = seed;
        let mut buf = [0u32; 6];
        let mut n = 0usize;
        assert_eq!(
            unsafe { mc_sample(ctx, prompt.as_ptr(), 2, &o, buf.as_mut_ptr(), 6, &mut n) },
            MC_OK,
            "{}",
            last_error()
        );
        buf[..n].to_vec()
    };
    assert_eq!(run(0.0, 1), run(0.0, 2), "greedy ignores the seed");
    assert_eq!(run(2.0, 5), run(2.0, 5));
    assert_ne!(run(2.0, 5), run(2.0, 6));
    opts.temperature = -1.0;
    let mut buf = [0u32; 6];
    assert_eq!(
        unsafe { mc_sample(ctx, prompt.as_ptr(), 2, &opts, buf.as_mut_ptr(), 6, &mut n) },
        MC_ERR_INVALID_ARGUMENT
    );
    opts.temperature = 0.0;
    assert_eq!(
        unsafe { mc_sample(ctx, prompt.as_ptr(), 0, &opts, buf.as_mut_ptr(), 6, &mut n) },
        MC_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("empty prompt"));
    unsafe { mc_free(ctx) };
}

/// A float32 CPU DLPack tensor over `data`, borrowed by the library (no deleter).
fn borrowed(data: &[f32], shape: &mut [i64]) -> DLManagedTensorVersioned {
    use model_context::ffi::dlpack::*;
    DLManagedTensorVersioned {
        version: DLPackVersion { major: 1, minor: 1 },
        manager_ctx: null_mut(),
        deleter: None,
        flags: 0,
        dl_tensor: DLTensor {
            data: data.as_ptr() as *mut _,
            device: DLDevice {
                device_type: 1,
                device_id: 0,
            },
            ndim: shape.len() as i32,
            dtype: DLDataType {
                code: 2,
                bits: 32,
                lanes: 1,
            },
            shape: shape.as_mut_ptr(),
            strides: null_mut(),
            byte_offset: 0,
        },
    }
}

fn logits_of(ctx: *const mc_context, r: &mc_forward_request) -> Vec<f32> {
    let out = forward(ctx, r).unwrap();
    let mut t: *mut DLManagedTensorVersioned = null_mut();
    assert_eq!(
        unsafe { mc_forward_output_get(out, MC_ACT_LOGITS, MC_LAYER_NONE, &mut t) },
        MC_OK
    );
    let v = unsafe {
        let dl = &(*t).dl_tensor;
        let n: i64 = std::slice::from_raw_parts(dl.shape, dl.ndim as usize)
            .iter()
            .product();
        let v = std::slice::from_raw_parts(dl.data as *const f32, n as usize).to_vec();
        ((*t).deleter.unwrap())(t);
        v
    };
    unsafe { mc_forward_output_free(out) };
    v
}

#[test]
fn edits_start_end_and_logits_choice_through_the_c_api() {
    let ctx = open();
    let tokens = [464u32, 2068, 7586, 21831];
    let plain = logits_of(ctx, &request(&tokens, 1, 4, &[], &[]));
    // Zero-ablate neuron 5 of layer 1 and capture it: the captured value is the edited one.
    let neuron = [5i64];
    let sel = [
        mc_axis_selection {
            indices: null(),
            n_indices: 0,
        },
        mc_axis_selection {
            indices: null(),
            n_indices: 0,
        },
        mc_axis_selection {
            indices: neuron.as_ptr(),
            n_indices: 1,
        },
    ];
    let mut e = common::init(mc_edit_init);
    (e.location, e.layer, e.op) = (MC_ACT_MLP_POST_ACT, 1, MC_EDIT_SET);
    (e.selection, e.n_selection) = (sel.as_ptr(), 3);
    let mut r = request(&tokens, 1, 4, &[MC_ACT_MLP_POST_ACT], &[1]);
    (r.edits, r.n_edits) = (&e, 1);
    let out = forward(ctx, &r).unwrap();
    let mut t: *mut DLManagedTensorVersioned = null_mut();
    assert_eq!(
        unsafe { mc_forward_output_get(out, MC_ACT_MLP_POST_ACT, 1, &mut t) },
        MC_OK
    );
    unsafe {
        let v = std::slice::from_raw_parts((*t).dl_tensor.data as *const f32, 4 * 128);
        assert!((0..4).all(|p| v[p * 128 + 5] == 0.0) && v[6] != 0.0);
        ((*t).deleter.unwrap())(t);
        mc_forward_output_free(out);
    }
    assert_ne!(logits_of(ctx, &r), plain);
    // Steering with a borrowed [d_model] vector; the last position's logits only.
    // Not a constant vector: the layer norms downstream would remove that.
    let steer: Vec<f32> = (0..32).map(|i| i as f32 / 8.0 - 2.0).collect();
    let mut shape = [32i64];
    let operand = borrowed(&steer, &mut shape);
    let mut s = common::init(mc_edit_init);
    (s.location, s.layer, s.op, s.operand) = (MC_ACT_RESID_POST_MLP, 0, MC_EDIT_ADD, &operand);
    let mut r = request(&tokens, 1, 4, &[], &[]);
    (r.edits, r.n_edits, r.logits) = (&s, 1, MC_LOGITS_LAST);
    let last = logits_of(ctx, &r);
    assert_eq!(last.len(), 50257);
    r.logits = MC_LOGITS_ALL;
    let all = logits_of(ctx, &r);
    assert!(last
        .iter()
        .zip(&all[3 * 50257..])
        .all(|(a, b)| (a - b).abs() < 1e-5));
    assert!(last
        .iter()
        .zip(&plain[3 * 50257..])
        .any(|(a, b)| (a - b).abs() > 1e-3));
    // Start at layer 1 from a residual of zeros (no tokens), stop after layer 1: no logits.
    let zeros = vec![0f32; 4 * 32];
    let mut rshape = [1i64, 4, 32];
    let resid = borrowed(&zeros, &mut rshape);
    let mut r = request(&[], 1, 4, &[MC_ACT_RESID_POST_MLP], &[MC_LAYER_ALL]);
    (r.start_residual, r.start_layer, r.end_layer) = (&resid, 1, 2);
    let out = forward(ctx, &r).unwrap();
    assert_eq!(
        get(out, MC_ACT_LOGITS, MC_LAYER_NONE),
        Err(MC_ERR_NOT_FOUND)
    );
    assert_eq!(get(out, MC_ACT_RESID_POST_MLP, 1).unwrap(), [1, 4, 32]);
    assert_eq!(
        get(out, MC_ACT_RESID_POST_MLP, 0),
        Err(MC_ERR_NOT_FOUND),
        "layer 0 was not run"
    );
    unsafe { mc_forward_output_free(out) };
    unsafe { mc_free(ctx) };
}

#[test]
fn bad_edits_have_their_status_and_name_the_field() {
    let ctx = open();
    let tokens = [464u32, 2068, 7586];
    let big = [400i64];
    let whole = mc_axis_selection {
        indices: null(),
        n_indices: 0,
    };
    let out_of_range = [
        whole,
        whole,
        mc_axis_selection {
            indices: big.as_ptr(),
            n_indices: 1,
        },
    ];
    let no_length = [mc_axis_selection {
        indices: big.as_ptr(),
        n_indices: 0,
    }];
    let no_list = [mc_axis_selection {
        indices: null(),
        n_indices: 2,
    }];
    let v = vec![1f32; 7];
    let mut shape7 = [7i64];
    let wrong_shape = borrowed(&v, &mut shape7);
    let mut on_gpu = borrowed(&v, &mut shape7);
    // A CUDA device no machine has (the data is host memory: never dereferenced).
    (
        on_gpu.dl_tensor.device.device_type,
        on_gpu.dl_tensor.device.device_id,
    ) = (2, 57);
    let mut int_operand = borrowed(&v, &mut shape7);
    int_operand.dl_tensor.dtype.code = 0;
    let narrow = vec![0f32; 3 * 31];
    let mut nshape = [1i64, 3, 31];
    let narrow_resid = borrowed(&narrow, &mut nshape);
    type Tweak<'a> = Box<dyn Fn(&mut mc_edit, &mut mc_forward_request) + 'a>;
    let cases: Vec<(Tweak, i32, &str)> = vec![
        (
            Box::new(|e, _| (e.selection, e.n_selection) = (out_of_range.as_ptr(), 3)),
            MC_ERR_INVALID_ARGUMENT,
            "axis 2: index 400 out of range 0..128",
        ),
        (
            Box::new(|e, _| (e.selection, e.n_selection) = (no_length.as_ptr(), 1)),
            MC_ERR_INVALID_ARGUMENT,
            "`request->edits[0].selection[0].indices` is given but",
        ),
        (
            Box::new(|e, _| (e.selection, e.n_selection) = (no_list.as_ptr(), 1)),
            MC_ERR_NULL_ARGUMENT,
            "`request->edits[0].selection[0].indices` is NULL but its length is 2",
        ),
        (
            Box::new(|e, _| (e.selection, e.n_selection) = (null(), 1)),
            MC_ERR_NULL_ARGUMENT,
            "selection` is NULL",
        ),
        (
            Box::new(|e, _| (e.location, e.layer) = (MC_ACT_LOGITS, MC_LAYER_NONE)),
            MC_ERR_INVALID_ARGUMENT,
            "logits cannot be edited",
        ),
        (
            Box::new(|e, _| e.op = 9),
            MC_ERR_INVALID_ARGUMENT,
            "`request->edits[0].op` = 9",
        ),
        (
            Box::new(|e, _| e.op = MC_EDIT_ADD),
            MC_ERR_NULL_ARGUMENT,
            "`request->edits[0].operand` is NULL",
        ),
        (
            Box::new(|e, _| (e.op, e.operand) = (MC_EDIT_REPLACE, &wrong_shape)),
            MC_ERR_SHAPE,
            "operand of shape [7] does not broadcast to the selection's shape [1, 3, 128]",
        ),
        (
            Box::new(|e, _| (e.op, e.operand) = (MC_EDIT_ADD, &on_gpu)),
            MC_ERR_DEVICE,
            "`request->edits[0].operand`: device cuda:57 requested",
        ),
        (
            Box::new(|e, _| (e.op, e.operand) = (MC_EDIT_ADD, &int_operand)),
            MC_ERR_INVALID_ARGUMENT,
            "expected float32, float16 or bfloat16",
        ),
        (
            Box::new(|e, _| e.struct_size = 8),
            MC_ERR_INVALID_ARGUMENT,
            "edits[0]",
        ),
        (
            Box::new(|_, r| r.n_edits = 2),
            MC_ERR_INVALID_ARGUMENT,
            "`request->edits[1].struct_size` differs",
        ),
        (
            Box::new(|_, r| r.reserved = 1),
            MC_ERR_INVALID_ARGUMENT,
            "`request->reserved` = 1 must be zero",
        ),
        (
            Box::new(|_, r| r.logits = 3),
            MC_ERR_INVALID_ARGUMENT,
            "`request->logits` = 3",
        ),
        (
            Box::new(|_, r| r.end_layer = 3),
            MC_ERR_INVALID_ARGUMENT,
            "out of order or out of range",
        ),
        (
            Box::new(|e, r| (e.layer, r.start_residual, r.start_layer) = (1, &narrow_resid, 1)),
            MC_ERR_SHAPE,
            "the start residual has shape [1, 3, 31] but layer 1's input is [1, 3, 32]",
        ),
    ];
    // edits[1] reads past edits[0] only when n_edits says so: give it a zeroed neighbour.
    for (tweak, status, needle) in cases {
        let mut pair = [common::init(mc_edit_init), unsafe { std::mem::zeroed() }];
        (pair[0].location, pair[0].layer) = (MC_ACT_MLP_POST_ACT, 0);
        let mut r = request(&tokens, 1, 3, &[], &[]);
        tweak(&mut pair[0], &mut r);
        if r.n_edits == 0 {
            r.n_edits = 1;
        }
        r.edits = pair.as_ptr();
        let (s, msg) = forward(ctx, &r)
            .err()
            .unwrap_or_else(|| panic!("accepted: {needle}"));
        assert_eq!(s, status, "{needle}: {msg}");
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    assert!(
        forward(ctx, &request(&tokens, 1, 3, &[], &[])).is_ok(),
        "context usable"
    );
    unsafe { mc_free(ctx) };
}

/// A decoding state keeps the model alive: freeing the context first is allowed, and the
/// state still appends; a call on a state never reads a freed context.
#[test]
fn a_state_outlives_its_context() {
    use model_context::ffi::*;
    let dir = common::data_dir(
        "MC_DEMO_DIR",
        "data/demo",
        "scripts/make_checkpoint.py --preset demo",
    );
    let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    let mut ctx = null_mut();
    assert_eq!(
        unsafe { mc_open(path.as_ptr(), c"cpu".as_ptr(), &mut ctx) },
        MC_OK
    );
    let mut st = null_mut();
    assert_eq!(
        unsafe { mc_state_new(ctx, 2, &mut st) },
        MC_OK,
        "{}",
        last_error()
    );
    unsafe { mc_free(ctx) };
    let mut req: mc_append_request = common::init(mc_append_request_init);
    let (seq, tokens, offsets) = ([1i32], [464i64, 2068], [0usize, 2]);
    req.seq_ids = seq.as_ptr();
    req.n_seq_ids = 1;
    req.tokens = tokens.as_ptr() as *const _;
    req.n_tokens = 2;
    req.offsets = offsets.as_ptr();
    req.n_offsets = 2;
    let mut out = null_mut();
    assert_eq!(
        unsafe { mc_state_append(st, &req, &mut out) },
        MC_OK,
        "{}",
        last_error()
    );
    unsafe { mc_forward_output_free(out) };
    let mut n = 0i64;
    assert_eq!(unsafe { mc_state_length(st, 1, &mut n) }, MC_OK);
    assert_eq!(n, 2);
    assert_eq!(
        unsafe { mc_state_length(st, -1, &mut n) },
        MC_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("negative"));
    unsafe { mc_state_free(st) };
}

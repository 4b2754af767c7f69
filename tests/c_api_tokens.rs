//! The token calls' boundary: every error through the C API (NULLs, bad UTF-8 with its offset,
//! disallowed special tokens, ids outside the vocabulary, the size probe, strings that are not
//! one token), out-parameters untouched on failure (except the size-probe length), the
//! tokenizer-only context, and a handle that stays usable after each failure.
mod common;
use model_context::ffi::dlpack::DLManagedTensorVersioned;
use model_context::ffi::*;
use model_context::tokenizer::Tokenizer;
use std::ffi::{c_char, CStr, CString};
use std::ptr::{null, null_mut};

const SENTINEL: u32 = 0xDEAD_BEEF;
const NSENT: usize = 987_654;

fn last_error() -> String {
    unsafe {
        CStr::from_ptr(mc_last_error())
            .to_string_lossy()
            .into_owned()
    }
}

fn open(model: &str) -> Result<*mut mc_context, (mc_status, String)> {
    let mut ctx = null_mut();
    let m = CString::new(model).unwrap();
    let s = unsafe { mc_open(m.as_ptr(), c"cpu".as_ptr(), &mut ctx) };
    if s == MC_OK {
        Ok(ctx)
    } else {
        assert!(ctx.is_null(), "out written on failure");
        Err((s, last_error()))
    }
}

/// Asserts a status and that the message names every needle.
#[track_caller]
fn expect(status: mc_status, want: mc_status, needles: &[&str]) {
    let msg = last_error();
    assert_eq!(status, want, "status {} ({msg})", unsafe {
        CStr::from_ptr(mc_status_name(status)).to_str().unwrap()
    });
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
    }
}

fn encode(ctx: *const mc_context, text: &[u8]) -> Result<Vec<u32>, (mc_status, String)> {
    let mut buf = vec![SENTINEL; text.len()];
    let mut n = NSENT;
    let s = unsafe {
        mc_encode(
            ctx,
            text.as_ptr() as *const c_char,
            text.len(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut n,
        )
    };
    if s == MC_OK {
        assert!(
            buf[n..].iter().all(|&t| t == SENTINEL),
            "wrote past the count"
        );
        buf.truncate(n);
        Ok(buf)
    } else {
        assert_eq!(n, NSENT, "count written on failure");
        assert!(
            buf.iter().all(|&t| t == SENTINEL),
            "tokens written on failure"
        );
        Err((s, last_error()))
    }
}

fn decode(ctx: *const mc_context, ids: &[u32]) -> Result<Vec<u8>, (mc_status, String)> {
    let mut n = NSENT;
    let s = unsafe { mc_decode(ctx, ids.as_ptr(), ids.len(), null_mut(), 0, &mut n) };
    if s != MC_OK {
        assert_eq!(n, NSENT, "length written on failure");
        return Err((s, last_error()));
    }
    let mut buf = vec![0x5au8; n + 3];
    let mut m = NSENT;
    let s = unsafe {
        mc_decode(
            ctx,
            ids.as_ptr(),
            ids.len(),
            buf.as_mut_ptr() as *mut c_char,
            n,
            &mut m,
        )
    };
    assert_eq!(s, MC_OK);
    assert_eq!(m, n);
    assert_eq!(&buf[n..], [0x5a; 3], "wrote past the length (a NUL?)");
    buf.truncate(n);
    Ok(buf)
}

#[track_caller]
fn assert_usable(ctx: *const mc_context) {
    let ids = encode(ctx, b"still usable").expect("handle still usable");
    assert_eq!(decode(ctx, &ids).unwrap(), b"still usable");
}

#[test]
fn tokenizer_only_context() {
    let ctx = open("tiktoken:cl100k_base").unwrap();
    assert_eq!(encode(ctx, b"hello world").unwrap(), [15339, 1917]);
    let mut size = 77i64;
    assert_eq!(
        unsafe { mc_dim_size(ctx, MC_DIM_VOCAB_SIZE, &mut size) },
        MC_OK
    );
    assert_eq!(size, 100277);
    size = 77;
    let s = unsafe { mc_dim_size(ctx, MC_DIM_LAYERS, &mut size) };
    expect(s, MC_ERR_UNSUPPORTED, &["tiktoken:cl100k_base", "layers"]);
    assert_eq!(size, 77);
    let sentinel = std::ptr::dangling_mut::<DLManagedTensorVersioned>();
    for (loc, layer) in [
        (MC_WEIGHT_EMBEDDING, MC_LAYER_NONE),
        (MC_WEIGHT_UNEMBEDDING, MC_LAYER_NONE),
        (MC_WEIGHT_ATTN_TO_QUERY, 0),
        (MC_WEIGHT_MLP_TO_HIDDEN, 1),
    ] {
        let mut out = sentinel;
        let s = unsafe { mc_get_weight(ctx, loc, layer, MC_DIM_NONE, null(), &mut out) };
        expect(s, MC_ERR_UNSUPPORTED, &["tokenizer-only"]);
        assert_eq!(out, sentinel);
    }
    let mut out = sentinel;
    let s = unsafe { mc_get_embedding(ctx, null(), &mut out) };
    expect(s, MC_ERR_UNSUPPORTED, &["tokenizer-only"]);
    let s = unsafe { mc_get_unembedding_with_ln_gain(ctx, null(), &mut out) };
    expect(s, MC_ERR_UNSUPPORTED, &[]);
    assert_eq!(out, sentinel);
    let mut json: *mut c_char = null_mut();
    let s = unsafe { mc_config_json(ctx, &mut json) };
    expect(s, MC_ERR_UNSUPPORTED, &["config"]);
    assert!(json.is_null());
    assert_usable(ctx);
    unsafe { mc_free(ctx) };

    for enc in ["gpt2", "r50k_base", "p50k_base", "p50k_edit", "o200k_base"] {
        let ctx = open(&format!("tiktoken:{enc}")).unwrap();
        let want = Tokenizer::shared(enc)
            .unwrap()
            .encode("Hello, world")
            .unwrap();
        assert_eq!(encode(ctx, b"Hello, world").unwrap(), want, "{enc}");
        unsafe { mc_free(ctx) };
    }
    let (s, msg) = open("tiktoken:cl200k").unwrap_err();
    assert_eq!(s, MC_ERR_UNSUPPORTED, "{msg}");
    assert!(
        msg.contains("cl200k") && msg.contains("cl100k_base, o200k_base"),
        "{msg}"
    );
    let (s, msg) = open("tiktoken:").unwrap_err();
    assert_eq!(s, MC_ERR_UNSUPPORTED, "{msg}");
}

#[test]
fn checkpoint_context_tokenizes_with_its_encoding() {
    let dir = common::data_dir(
        "MC_CONTEXT_GOLDEN_DIR",
        "data/context_golden",
        "scripts/gen_context_golden.py",
    );
    // basic uses gpt2 (the default), m_attn_heads3 names p50k_base.
    for (ckpt, spaces) in [("basic", vec![220, 220]), ("m_attn_heads3", vec![50257])] {
        let ctx = open(dir.join(ckpt).to_str().unwrap()).unwrap();
        assert_eq!(encode(ctx, b"  ").unwrap(), spaces, "{ckpt}");
        assert_eq!(encode(ctx, b"<|endoftext|>").unwrap(), [50256]);
        assert_usable(ctx);
        unsafe { mc_free(ctx) };
    }
}

#[test]
fn null_arguments() {
    let ctx = open("tiktoken:cl100k_base").unwrap();
    let text = b"abc";
    let tp = text.as_ptr() as *const c_char;
    let mut ids = [SENTINEL; 8];
    let mut n = NSENT;
    let mut tok = SENTINEL;
    let mut bytes = [0u8; 8];
    let bp = bytes.as_mut_ptr() as *mut c_char;
    let mut offsets = [NSENT; 4];
    unsafe {
        expect(
            mc_encode(null(), tp, 3, ids.as_mut_ptr(), 8, &mut n),
            MC_ERR_NULL_ARGUMENT,
            &["ctx"],
        );
        expect(
            mc_encode(ctx, tp, 3, ids.as_mut_ptr(), 8, null_mut()),
            MC_ERR_NULL_ARGUMENT,
            &["n_tokens"],
        );
        expect(
            mc_encode(ctx, null(), 3, ids.as_mut_ptr(), 8, &mut n),
            MC_ERR_NULL_ARGUMENT,
            &["text", "3"],
        );
        assert_eq!((n, ids[0]), (NSENT, SENTINEL));
        // NULL with length 0 is the empty text.
        assert_eq!(
            mc_encode(ctx, null(), 0, ids.as_mut_ptr(), 8, &mut n),
            MC_OK
        );
        assert_eq!(n, 0);
        assert_eq!(mc_encode(ctx, null(), 0, null_mut(), 0, &mut n), MC_OK);
        n = NSENT;
        expect(
            mc_decode(null(), ids.as_ptr(), 1, bp, 8, &mut n),
            MC_ERR_NULL_ARGUMENT,
            &["ctx"],
        );
        expect(
            mc_decode(ctx, null(), 2, bp, 8, &mut n),
            MC_ERR_NULL_ARGUMENT,
            &["tokens"],
        );
        expect(
            mc_decode(ctx, ids.as_ptr(), 1, bp, 8, null_mut()),
            MC_ERR_NULL_ARGUMENT,
            &["n_bytes"],
        );
        assert_eq!(n, NSENT);
        assert_eq!(mc_decode(ctx, null(), 0, bp, 8, &mut n), MC_OK);
        assert_eq!(n, 0);
        n = NSENT;
        expect(
            mc_decode_token(null(), 0, bp, 8, &mut n),
            MC_ERR_NULL_ARGUMENT,
            &["ctx"],
        );
        expect(
            mc_decode_token(ctx, 0, bp, 8, null_mut()),
            MC_ERR_NULL_ARGUMENT,
            &["n_bytes"],
        );
        expect(
            mc_encode_token_str(null(), tp, 1, &mut tok),
            MC_ERR_NULL_ARGUMENT,
            &["ctx"],
        );
        expect(
            mc_encode_token_str(ctx, tp, 1, null_mut()),
            MC_ERR_NULL_ARGUMENT,
            &["token"],
        );
        expect(
            mc_encode_token_str(ctx, null(), 1, &mut tok),
            MC_ERR_NULL_ARGUMENT,
            &["text"],
        );
        assert_eq!(tok, SENTINEL);
        expect(
            mc_decode_token_list(ctx, ids.as_ptr(), 0, bp, 8, null_mut(), 1, &mut n),
            MC_ERR_NULL_ARGUMENT,
            &["offsets"],
        );
        expect(
            mc_decode_token_list(
                ctx,
                ids.as_ptr(),
                0,
                bp,
                8,
                offsets.as_mut_ptr(),
                offsets.len(),
                null_mut(),
            ),
            MC_ERR_NULL_ARGUMENT,
            &["n_bytes"],
        );
        expect(
            mc_decode_token_list(
                null(),
                ids.as_ptr(),
                0,
                bp,
                8,
                offsets.as_mut_ptr(),
                offsets.len(),
                &mut n,
            ),
            MC_ERR_NULL_ARGUMENT,
            &["ctx"],
        );
        // `offsets` must hold n + 1 entries: checked before any id is read, nothing written.
        let mut few = [NSENT; 2];
        let three = [464u32, 2068, 7586];
        n = NSENT;
        expect(
            mc_decode_token_list(ctx, three.as_ptr(), 3, bp, 8, few.as_mut_ptr(), 2, &mut n),
            MC_ERR_BUFFER_TOO_SMALL,
            &["`offsets` holds 2 entries but 4 are needed"],
        );
        assert_eq!((few, n), ([NSENT; 2], NSENT));
        let one = [tp];
        let one_len = [3usize];
        expect(
            mc_encode_batch(
                ctx,
                one.as_ptr(),
                one_len.as_ptr(),
                1,
                ids.as_mut_ptr(),
                8,
                few.as_mut_ptr(),
                1,
                &mut n,
            ),
            MC_ERR_BUFFER_TOO_SMALL,
            &["`offsets` holds 1 entries but 2 are needed"],
        );
        assert_eq!((few, n), ([NSENT; 2], NSENT));
        let texts = [tp, null()];
        let lens = [3usize, 2];
        expect(
            mc_encode_batch(
                ctx,
                texts.as_ptr(),
                lens.as_ptr(),
                2,
                ids.as_mut_ptr(),
                8,
                offsets.as_mut_ptr(),
                offsets.len(),
                &mut n,
            ),
            MC_ERR_NULL_ARGUMENT,
            &["texts[1]"],
        );
        expect(
            mc_encode_batch(
                ctx,
                null(),
                lens.as_ptr(),
                2,
                ids.as_mut_ptr(),
                8,
                offsets.as_mut_ptr(),
                offsets.len(),
                &mut n,
            ),
            MC_ERR_NULL_ARGUMENT,
            &["texts"],
        );
        expect(
            mc_encode_batch(
                ctx,
                texts.as_ptr(),
                null(),
                2,
                ids.as_mut_ptr(),
                8,
                offsets.as_mut_ptr(),
                offsets.len(),
                &mut n,
            ),
            MC_ERR_NULL_ARGUMENT,
            &["text_lens"],
        );
        expect(
            mc_encode_batch(
                ctx,
                texts.as_ptr(),
                lens.as_ptr(),
                1,
                ids.as_mut_ptr(),
                8,
                null_mut(),
                2,
                &mut n,
            ),
            MC_ERR_NULL_ARGUMENT,
            &["offsets"],
        );
        expect(
            mc_encode_batch(
                ctx,
                texts.as_ptr(),
                lens.as_ptr(),
                1,
                ids.as_mut_ptr(),
                8,
                offsets.as_mut_ptr(),
                offsets.len(),
                null_mut(),
            ),
            MC_ERR_NULL_ARGUMENT,
            &["n_tokens"],
        );
        expect(
            mc_encode_batch(
                null(),
                texts.as_ptr(),
                lens.as_ptr(),
                1,
                ids.as_mut_ptr(),
                8,
                offsets.as_mut_ptr(),
                offsets.len(),
                &mut n,
            ),
            MC_ERR_NULL_ARGUMENT,
            &["ctx"],
        );
        assert_eq!((n, offsets[0], ids[0]), (NSENT, NSENT, SENTINEL));
        // A texts[i] NULL with length 0 is empty; zero texts may come as NULL arrays.
        let lens0 = [3usize, 0];
        assert_eq!(
            mc_encode_batch(
                ctx,
                texts.as_ptr(),
                lens0.as_ptr(),
                2,
                ids.as_mut_ptr(),
                8,
                offsets.as_mut_ptr(),
                offsets.len(),
                &mut n,
            ),
            MC_OK
        );
        assert_eq!((n, &offsets[..3]), (1, &[0, 1, 1][..]));
        assert_eq!(
            mc_encode_batch(
                ctx,
                null(),
                null(),
                0,
                null_mut(),
                0,
                offsets.as_mut_ptr(),
                offsets.len(),
                &mut n
            ),
            MC_OK
        );
        assert_eq!(n, 0);
        assert_eq!(
            mc_encode_batch(
                ctx,
                null(),
                null(),
                0,
                ids.as_mut_ptr(),
                8,
                offsets.as_mut_ptr(),
                offsets.len(),
                &mut n
            ),
            MC_OK
        );
        assert_eq!((n, offsets[0]), (0, 0));
        let strs = [tp];
        let one = [1usize];
        expect(
            mc_encode_token_str_list(ctx, strs.as_ptr(), one.as_ptr(), 1, null_mut()),
            MC_ERR_NULL_ARGUMENT,
            &["tokens"],
        );
        expect(
            mc_encode_token_str_list(null(), strs.as_ptr(), one.as_ptr(), 1, ids.as_mut_ptr()),
            MC_ERR_NULL_ARGUMENT,
            &["ctx"],
        );
        expect(
            mc_encode_token_str_list(ctx, null(), one.as_ptr(), 1, ids.as_mut_ptr()),
            MC_ERR_NULL_ARGUMENT,
            &["texts"],
        );
        assert_eq!(
            mc_encode_token_str_list(ctx, null(), null(), 0, null_mut()),
            MC_OK
        );
    }
    assert_usable(ctx);
    unsafe { mc_free(ctx) };
}

#[test]
fn bad_utf8_names_the_offset() {
    let ctx = open("tiktoken:o200k_base").unwrap();
    for (text, offset) in [
        (&b"abc\xffdef"[..], 3),
        (b"\x80", 0),
        (b"caf\xc3", 3),
        (b"ok \xed\xa0\x80 surrogate", 3),
        (b"\xf4\x90\x80\x80 too big", 0),
        (b"a\x00b\xc0\xaf", 3),
    ] {
        let (s, msg) = encode(ctx, text).unwrap_err();
        assert_eq!(s, MC_ERR_INVALID_ARGUMENT, "{msg}");
        assert!(msg.contains(&format!("offset {offset}")), "{msg}");
        let mut tok = SENTINEL;
        let s = unsafe {
            mc_encode_token_str(ctx, text.as_ptr() as *const c_char, text.len(), &mut tok)
        };
        expect(s, MC_ERR_INVALID_ARGUMENT, &[&format!("offset {offset}")]);
        assert_eq!(tok, SENTINEL);
    }
    // In a batch and a list, the message names the text's index too.
    let texts = [b"fine".as_ptr() as *const c_char, b"ba\xffd".as_ptr() as _];
    let lens = [4usize, 4];
    let mut ids = [SENTINEL; 8];
    let mut offsets = [NSENT; 3];
    let mut n = NSENT;
    let s = unsafe {
        mc_encode_batch(
            ctx,
            texts.as_ptr(),
            lens.as_ptr(),
            2,
            ids.as_mut_ptr(),
            8,
            offsets.as_mut_ptr(),
            offsets.len(),
            &mut n,
        )
    };
    expect(s, MC_ERR_INVALID_ARGUMENT, &["text 1", "offset 2"]);
    assert_eq!((n, offsets[0], ids[0]), (NSENT, NSENT, SENTINEL));
    let s = unsafe {
        mc_encode_token_str_list(ctx, texts.as_ptr(), lens.as_ptr(), 2, ids.as_mut_ptr())
    };
    expect(s, MC_ERR_INVALID_ARGUMENT, &["string 1", "offset 2"]);
    assert_eq!(ids[0], SENTINEL);
    // NUL bytes are text like any other.
    let tok = Tokenizer::shared("o200k_base").unwrap();
    assert_eq!(
        encode(ctx, b"a\0b\0").unwrap(),
        tok.encode("a\0b\0").unwrap()
    );
    assert_usable(ctx);
    unsafe { mc_free(ctx) };
}

#[test]
fn disallowed_special_tokens_and_endoftext() {
    let ctx = open("tiktoken:cl100k_base").unwrap();
    assert_eq!(encode(ctx, b"a<|endoftext|>b").unwrap(), [64, 100257, 65]);
    for (text, special) in [
        (&b"x <|fim_prefix|> y"[..], "<|fim_prefix|>"),
        (b"<|endoftext|><|endofprompt|>", "<|endofprompt|>"),
        (b"<|fim_suffix|><|fim_middle|>", "<|fim_suffix|>"),
    ] {
        let (s, msg) = encode(ctx, text).unwrap_err();
        assert_eq!(s, MC_ERR_TOKEN, "{msg}");
        assert!(msg.contains(special), "{msg}");
        let mut t = SENTINEL;
        let s =
            unsafe { mc_encode_token_str(ctx, text.as_ptr() as *const c_char, text.len(), &mut t) };
        expect(s, MC_ERR_TOKEN, &[special]);
        assert_eq!(t, SENTINEL);
    }
    // gpt2 has no FIM tokens: there they are ordinary text.
    let gpt2 = open("tiktoken:gpt2").unwrap();
    assert!(encode(gpt2, b"<|fim_prefix|>").unwrap().len() > 1);
    unsafe { mc_free(gpt2) };
    assert_usable(ctx);
    unsafe { mc_free(ctx) };
}

#[test]
fn ids_outside_the_vocabulary() {
    let ctx = open("tiktoken:cl100k_base").unwrap();
    // 100256 is an unused id below n_vocab; 100277 is n_vocab.
    for (ids, bad, index) in [
        (vec![0u32, 100256], 100256u32, 1usize),
        (vec![100277], 100277, 0),
        (vec![1, 2, u32::MAX], u32::MAX, 2),
    ] {
        let (s, msg) = decode(ctx, &ids).unwrap_err();
        assert_eq!(s, MC_ERR_TOKEN, "{msg}");
        assert!(
            msg.contains(&format!("token id {bad} (at index {index})")),
            "{msg}"
        );
        let mut buf = [0x5au8; 64];
        let mut n = NSENT;
        let s = unsafe { mc_decode_token(ctx, bad, buf.as_mut_ptr() as *mut c_char, 64, &mut n) };
        expect(s, MC_ERR_TOKEN, &[&bad.to_string(), "cl100k_base"]);
        assert_eq!((n, buf[0]), (NSENT, 0x5a));
        let mut offsets = [NSENT; 4];
        let s = unsafe {
            mc_decode_token_list(
                ctx,
                ids.as_ptr(),
                ids.len(),
                buf.as_mut_ptr() as *mut c_char,
                64,
                offsets.as_mut_ptr(),
                offsets.len(),
                &mut n,
            )
        };
        expect(s, MC_ERR_TOKEN, &[&bad.to_string()]);
        assert_eq!((n, offsets[0], buf[0]), (NSENT, NSENT, 0x5a));
    }
    assert_usable(ctx);
    unsafe { mc_free(ctx) };
}

#[test]
fn size_probe_semantics() {
    let ctx = open("tiktoken:cl100k_base").unwrap();
    let text = "Size probes: the count comes back, the buffer stays as it was.";
    let want = Tokenizer::shared("cl100k_base")
        .unwrap()
        .encode(text)
        .unwrap();
    let tp = text.as_ptr() as *const c_char;
    let mut n = NSENT;
    unsafe {
        // Probe: NULL with capacity 0.
        assert_eq!(mc_encode(ctx, tp, text.len(), null_mut(), 0, &mut n), MC_OK);
        assert_eq!(n, want.len());
        // Too small: the count, the buffer untouched.
        let mut buf = vec![SENTINEL; want.len()];
        n = NSENT;
        let s = mc_encode(
            ctx,
            tp,
            text.len(),
            buf.as_mut_ptr(),
            want.len() - 1,
            &mut n,
        );
        expect(s, MC_ERR_BUFFER_TOO_SMALL, &[&want.len().to_string()]);
        assert_eq!(n, want.len());
        assert!(buf.iter().all(|&t| t == SENTINEL));
        // NULL with a capacity: too small as well.
        n = NSENT;
        let s = mc_encode(ctx, tp, text.len(), null_mut(), 5, &mut n);
        expect(s, MC_ERR_BUFFER_TOO_SMALL, &["NULL"]);
        assert_eq!(n, want.len());
        // Exactly the needed capacity suffices.
        assert_eq!(
            mc_encode(ctx, tp, text.len(), buf.as_mut_ptr(), want.len(), &mut n),
            MC_OK
        );
        assert_eq!(buf, want);

        // Decode: probe, too small, exact.
        let mut len = NSENT;
        assert_eq!(
            mc_decode(ctx, want.as_ptr(), want.len(), null_mut(), 0, &mut len),
            MC_OK
        );
        assert_eq!(len, text.len());
        let mut bytes = vec![0x5au8; text.len()];
        len = NSENT;
        let s = mc_decode(
            ctx,
            want.as_ptr(),
            want.len(),
            bytes.as_mut_ptr() as *mut c_char,
            text.len() - 1,
            &mut len,
        );
        expect(s, MC_ERR_BUFFER_TOO_SMALL, &[]);
        assert_eq!(len, text.len());
        assert!(bytes.iter().all(|&b| b == 0x5a));
        assert_eq!(
            mc_decode(
                ctx,
                want.as_ptr(),
                want.len(),
                bytes.as_mut_ptr() as *mut c_char,
                text.len(),
                &mut len
            ),
            MC_OK
        );
        assert_eq!(bytes, text.as_bytes());

        // One token.
        let id = want[1];
        let piece = Tokenizer::shared("cl100k_base")
            .unwrap()
            .decode_token(id)
            .unwrap()
            .to_vec();
        assert!(piece.len() > 2);
        len = NSENT;
        assert_eq!(mc_decode_token(ctx, id, null_mut(), 0, &mut len), MC_OK);
        assert_eq!(len, piece.len());
        let mut small = vec![0x5au8; piece.len()];
        len = NSENT;
        let s = mc_decode_token(
            ctx,
            id,
            small.as_mut_ptr() as *mut c_char,
            piece.len() - 1,
            &mut len,
        );
        expect(s, MC_ERR_BUFFER_TOO_SMALL, &[]);
        assert_eq!(len, piece.len());
        assert!(small.iter().all(|&b| b == 0x5a));
        assert_eq!(
            mc_decode_token(
                ctx,
                id,
                small.as_mut_ptr() as *mut c_char,
                piece.len(),
                &mut len
            ),
            MC_OK
        );
        assert_eq!(small, piece);

        // Token list: offsets only with the bytes.
        let mut offsets = vec![NSENT; want.len() + 1];
        len = NSENT;
        assert_eq!(
            mc_decode_token_list(
                ctx,
                want.as_ptr(),
                want.len(),
                null_mut(),
                0,
                offsets.as_mut_ptr(),
                offsets.len(),
                &mut len
            ),
            MC_OK
        );
        assert_eq!(len, text.len());
        assert!(
            offsets.iter().all(|&o| o == NSENT),
            "offsets written by a probe"
        );
        len = NSENT;
        let s = mc_decode_token_list(
            ctx,
            want.as_ptr(),
            want.len(),
            bytes.as_mut_ptr() as *mut c_char,
            3,
            offsets.as_mut_ptr(),
            offsets.len(),
            &mut len,
        );
        expect(s, MC_ERR_BUFFER_TOO_SMALL, &[]);
        assert_eq!(len, text.len());
        assert!(offsets.iter().all(|&o| o == NSENT));
        bytes.fill(0);
        assert_eq!(
            mc_decode_token_list(
                ctx,
                want.as_ptr(),
                want.len(),
                bytes.as_mut_ptr() as *mut c_char,
                bytes.len(),
                offsets.as_mut_ptr(),
                offsets.len(),
                &mut len
            ),
            MC_OK
        );
        assert_eq!(bytes, text.as_bytes());
        assert_eq!(offsets[0], 0);
        assert_eq!(offsets[want.len()], text.len());
        for (i, &id) in want.iter().enumerate() {
            let t = Tokenizer::shared("cl100k_base")
                .unwrap()
                .decode_token(id)
                .unwrap();
            assert_eq!(&bytes[offsets[i]..offsets[i + 1]], t);
        }

        // Batch: probe, too small, then text_len-sized capacity.
        let texts: Vec<&str> = vec![text, "", "second text", "<|endoftext|>"];
        let ptrs: Vec<*const c_char> = texts.iter().map(|t| t.as_ptr() as _).collect();
        let lens: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        let one_by_one: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| encode(ctx, t.as_bytes()).unwrap())
            .collect();
        let total: usize = one_by_one.iter().map(Vec::len).sum();
        let mut offsets = vec![NSENT; texts.len() + 1];
        n = NSENT;
        assert_eq!(
            mc_encode_batch(
                ctx,
                ptrs.as_ptr(),
                lens.as_ptr(),
                4,
                null_mut(),
                0,
                offsets.as_mut_ptr(),
                offsets.len(),
                &mut n
            ),
            MC_OK
        );
        assert_eq!(n, total);
        assert!(offsets.iter().all(|&o| o == NSENT));
        let cap: usize = lens.iter().sum();
        let mut ids = vec![SENTINEL; cap];
        n = NSENT;
        let s = mc_encode_batch(
            ctx,
            ptrs.as_ptr(),
            lens.as_ptr(),
            4,
            ids.as_mut_ptr(),
            total - 1,
            offsets.as_mut_ptr(),
            offsets.len(),
            &mut n,
        );
        expect(s, MC_ERR_BUFFER_TOO_SMALL, &[]);
        assert_eq!(n, total);
        assert!(ids.iter().all(|&t| t == SENTINEL));
        assert!(offsets.iter().all(|&o| o == NSENT));
        assert_eq!(
            mc_encode_batch(
                ctx,
                ptrs.as_ptr(),
                lens.as_ptr(),
                4,
                ids.as_mut_ptr(),
                cap,
                offsets.as_mut_ptr(),
                offsets.len(),
                &mut n
            ),
            MC_OK
        );
        assert_eq!(n, total);
        for (i, want) in one_by_one.iter().enumerate() {
            assert_eq!(
                &ids[offsets[i]..offsets[i + 1]],
                want.as_slice(),
                "text {i}"
            );
        }
        assert_eq!(offsets[4], total);
    }
    assert_usable(ctx);
    unsafe { mc_free(ctx) };
}

#[test]
fn text_len_tokens_always_suffice() {
    let ctx = open("tiktoken:o200k_base").unwrap();
    for text in [
        "<|endoftext|>".repeat(20),
        "\u{301}".repeat(50),
        "😀👍🏽".repeat(30),
        "a\nb\rc\td".repeat(40),
        String::new(),
    ] {
        // `encode` gives exactly text_len slots; it must succeed.
        let ids = encode(ctx, text.as_bytes()).unwrap();
        assert!(ids.len() <= text.len());
        assert_eq!(decode(ctx, &ids).unwrap(), text.as_bytes());
    }
    unsafe { mc_free(ctx) };
}

#[test]
fn token_str_must_be_exactly_one_token() {
    let ctx = open("tiktoken:cl100k_base").unwrap();
    let one = |s: &str| {
        let mut t = SENTINEL;
        let st = unsafe { mc_encode_token_str(ctx, s.as_ptr() as *const c_char, s.len(), &mut t) };
        (st, t)
    };
    assert_eq!(one(" hello"), (MC_OK, 24748));
    assert_eq!(one("<|endoftext|>"), (MC_OK, 100257));
    let (s, t) = one("hello world");
    expect(s, MC_ERR_TOKEN, &["[15339, 1917]", "exactly 1 token"]);
    assert_eq!(t, SENTINEL);
    let (s, t) = one("");
    expect(s, MC_ERR_TOKEN, &["[]"]);
    assert_eq!(t, SENTINEL);
    let (s, _) = unsafe {
        let mut t = SENTINEL;
        (mc_encode_token_str(ctx, null(), 0, &mut t), t)
    };
    expect(s, MC_ERR_TOKEN, &["[]"]);

    let strs = ["hello", " world", "!", "<|endoftext|>"];
    let ptrs: Vec<*const c_char> = strs.iter().map(|s| s.as_ptr() as _).collect();
    let lens: Vec<usize> = strs.iter().map(|s| s.len()).collect();
    let mut ids = [SENTINEL; 4];
    assert_eq!(
        unsafe { mc_encode_token_str_list(ctx, ptrs.as_ptr(), lens.as_ptr(), 4, ids.as_mut_ptr()) },
        MC_OK
    );
    assert_eq!(ids, [15339, 1917, 0, 100257]);
    let bad = ["hello", "two words", "!"];
    let ptrs: Vec<*const c_char> = bad.iter().map(|s| s.as_ptr() as _).collect();
    let lens: Vec<usize> = bad.iter().map(|s| s.len()).collect();
    let mut ids = [SENTINEL; 3];
    let s =
        unsafe { mc_encode_token_str_list(ctx, ptrs.as_ptr(), lens.as_ptr(), 3, ids.as_mut_ptr()) };
    expect(
        s,
        MC_ERR_TOKEN,
        &["string 1", "two words", "exactly 1 token"],
    );
    assert_eq!(ids, [SENTINEL; 3], "tokens written on failure");
    assert_usable(ctx);
    unsafe { mc_free(ctx) };
}

#[test]
fn partial_utf8_tokens_decode_to_exact_bytes() {
    let ctx = open("tiktoken:cl100k_base").unwrap();
    let tok = Tokenizer::shared("cl100k_base").unwrap();
    let partial: Vec<u32> = (0..tok.n_vocab())
        .filter(|&id| {
            tok.decode_token(id)
                .is_ok_and(|b| std::str::from_utf8(b).is_err())
        })
        .take(50)
        .collect();
    assert_eq!(partial.len(), 50);
    for &id in &partial {
        let want = tok.decode_token(id).unwrap();
        let mut buf = [0u8; 64];
        let mut n = NSENT;
        assert_eq!(
            unsafe { mc_decode_token(ctx, id, buf.as_mut_ptr() as *mut c_char, 64, &mut n) },
            MC_OK
        );
        assert_eq!(&buf[..n], want, "id {id}");
    }
    // "é" split over two byte-tokens decodes back to its exact bytes.
    let ids = encode(ctx, "\u{1F600}".as_bytes()).unwrap();
    assert!(ids.len() > 1);
    assert_eq!(decode(ctx, &ids).unwrap(), "\u{1F600}".as_bytes());
    unsafe { mc_free(ctx) };
}

#[test]
fn one_context_serves_many_threads() {
    let ctx = open("tiktoken:o200k_base").unwrap() as usize;
    let texts: Vec<String> = (0..8)
        .map(|i| {
            format!(
                "thread {i}: {}",
                "some shared text, ünïcödé 中文 ".repeat(200 + i)
            )
        })
        .collect();
    let want: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| Tokenizer::shared("o200k_base").unwrap().encode(t).unwrap())
        .collect();
    std::thread::scope(|s| {
        for (t, w) in texts.iter().zip(&want) {
            s.spawn(move || {
                let ctx = ctx as *const mc_context;
                for _ in 0..5 {
                    assert_eq!(&encode(ctx, t.as_bytes()).unwrap(), w);
                    assert_eq!(decode(ctx, w).unwrap(), t.as_bytes());
                }
            });
        }
    });
    unsafe { mc_free(ctx as *mut mc_context) };
}

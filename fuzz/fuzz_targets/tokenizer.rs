//! The tokenizer on arbitrary bytes (the bytes `mc_encode` and `mc_decode` receive): errors are
//! fine (not UTF-8, a disallowed special token, an unknown id), panics are not. What succeeds
//! must be right: decode(encode(text)) == text, the ids are tiktoken's (tiktoken-rs's own
//! encoder, on short texts), the parallel encoder agrees with the sequential one, and the
//! pre-tokenizer's pieces tile the text.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use model_context_tokenizer::ErrorKind;
use model_context_tokenizer::{Rank, Tokenizer};

const ENCODINGS: [&str; 3] = ["gpt2", "cl100k_base", "o200k_base"];
/// The parallel encoder starts at 128 KiB; texts repeated past this exercise it.
const PARALLEL_BYTES: usize = 1 << 17;
/// Longest text compared with tiktoken-rs (its backtracking regex is quadratic on some runs).
const REFERENCE_MAX: usize = 512;

fn reference(i: usize) -> &'static tiktoken_rs::CoreBPE {
    static CELLS: [OnceLock<tiktoken_rs::CoreBPE>; 3] = [const { OnceLock::new() }; 3];
    CELLS[i].get_or_init(|| match i {
        0 => tiktoken_rs::r50k_base().unwrap(),
        1 => tiktoken_rs::cl100k_base().unwrap(),
        _ => tiktoken_rs::o200k_base().unwrap(),
    })
}

fn check_text(tok: &Tokenizer, enc: usize, bytes: &[u8]) {
    let result = tok.encode_bytes(bytes);
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(_) => {
            let e = result.expect_err("text that is not UTF-8 was encoded");
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{}", e.message);
            return;
        }
    };
    let ids = match result {
        Ok(ids) => ids,
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Token, "{}", e.message);
            assert!(
                tok.special_tokens()
                    .iter()
                    .any(|(s, _)| text.contains(s.as_str())),
                "refused without a special token: {}",
                e.message
            );
            return;
        }
    };
    assert!(ids.len() <= bytes.len(), "more tokens than bytes");
    assert!(ids.iter().all(|&id| id < tok.n_vocab()));
    let back = tok.decode(&ids).expect("decode what encode made");
    assert_eq!(back, bytes, "decode(encode(text)) != text");
    assert_eq!(tok.encode_single_thread(text).unwrap(), ids);
    if bytes.len() <= REFERENCE_MAX {
        let want: Vec<Rank> = reference(enc).encode_with_special_tokens(text);
        assert_eq!(ids, want, "ids differ from tiktoken-rs for {text:?}");
    }
    if !text.contains("<|") {
        let mut next = 0;
        for (a, b) in tok.pretokenize(text) {
            assert!(a == next && b > a, "pieces do not tile {text:?}");
            next = b;
        }
        assert_eq!(next, text.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let enc = usize::from(selector & 0x3) % ENCODINGS.len();
    let tok = Tokenizer::shared(ENCODINGS[enc]).expect("known encoding");
    check_text(tok, enc, rest);

    // The same bytes as token ids: decoding succeeds exactly when every id is in the vocabulary.
    let ids: Vec<Rank> = rest
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()) % (tok.n_vocab() + 64))
        .collect();
    match tok.decode(&ids) {
        Ok(b) => {
            let parts = tok
                .decode_token_list(&ids)
                .expect("the same ids decode one by one");
            assert_eq!(parts.concat(), b);
        }
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Token, "{}", e.message);
            assert!(tok.decode_token_list(&ids).is_err());
        }
    }

    // A long text made of these bytes: the parallel encoder must give the sequential ids.
    if selector == 0xff && !rest.is_empty() {
        if let Ok(text) = std::str::from_utf8(rest) {
            let long = text.repeat(PARALLEL_BYTES / text.len() + 1);
            match (tok.encode(&long), tok.encode_single_thread(&long)) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "parallel and sequential ids differ"),
                (Err(a), Err(b)) => assert_eq!(a.message, b.message),
                (a, b) => panic!("parallel {:?} vs sequential {:?}", a.is_ok(), b.is_ok()),
            }
        }
    }
});

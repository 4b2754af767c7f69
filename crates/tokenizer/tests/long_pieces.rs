//! Long pieces (merged in linear time) against tiktoken-rs, every encoding: single letters,
//! random letters from small and large alphabets, repeated multi-byte characters, runs of
//! spaces and of symbols, a few kilobytes each; and for cl100k_base and o200k_base, a quarter
//! megabyte (in release) of one letter and of random letters (tiktoken-rs merges pieces of 100
//! bytes and more with a heap, so it can take them).
use model_context_tokenizer::Tokenizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The benchmark's generator of mixed ordinary text.
#[path = "../benches/long_pieces.rs"]
#[allow(dead_code)]
mod bench;

fn reference(name: &str) -> &'static tiktoken_rs::CoreBPE {
    match name {
        "gpt2" | "r50k_base" => tiktoken_rs::r50k_base_singleton(),
        "p50k_base" => tiktoken_rs::p50k_base_singleton(),
        "p50k_edit" => tiktoken_rs::p50k_edit_singleton(),
        "cl100k_base" => tiktoken_rs::cl100k_base_singleton(),
        "o200k_base" => tiktoken_rs::o200k_base_singleton(),
        other => panic!("no reference for {other}"),
    }
}

fn random_text(rng: &mut ChaCha8Rng, alphabet: &[&str], bytes: usize) -> String {
    let mut s = String::new();
    while s.len() < bytes {
        s.push_str(alphabet[rng.random_range(0..alphabet.len())]);
    }
    s
}

#[test]
fn long_pieces_match_tiktoken_rs() {
    let az: Vec<String> = ('a'..='z').map(String::from).collect();
    let az: Vec<&str> = az.iter().map(String::as_str).collect();
    let letters = ["é", "ß", "ж", "Я", "日", "本", "ا", "ก", "Ω", "q", "é", "ñ"];
    let lower = ["é", "ß", "ж", "я", "q", "ñ", "ø", "ł"];
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    for (name, _) in model_context_tokenizer::encoding::ENCODINGS {
        let ours = Tokenizer::shared(name).unwrap();
        let theirs = reference(name);
        let mut texts: Vec<String> = Vec::new();
        for len in [1100, 2048, 4000] {
            for c in ["a", "z", "k", " ", "é", "日", "🙂", "!"] {
                texts.push(c.repeat(len / c.len()));
            }
            texts.push(random_text(&mut rng, &az, len));
            texts.push(random_text(&mut rng, &["a", "b"], len));
            texts.push(random_text(&mut rng, &["a", "b", "c"], len));
            texts.push(random_text(&mut rng, &letters, len));
            texts.push(random_text(&mut rng, &lower, len));
            texts.push(random_text(&mut rng, &["🙂", "!", "#", "€"], len));
        }
        for text in &texts {
            // One piece (or a few, for the mixed letters) of at least the linear threshold.
            let got = ours.encode_single_thread(text).unwrap();
            let want = theirs.encode_ordinary(text);
            assert!(
                got == want,
                "{name}: {} bytes starting {:?}: ours {} tokens, tiktoken-rs {}",
                text.len(),
                &text.chars().take(12).collect::<String>(),
                got.len(),
                want.len()
            );
        }
    }
}

#[test]
fn quarter_megabyte_pieces_match_tiktoken_rs() {
    let bytes = if cfg!(debug_assertions) {
        1 << 14
    } else {
        1 << 18
    };
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let az: String = (0..bytes)
        .map(|_| rng.random_range(b'a'..=b'z') as char)
        .collect();
    let ab: String = (0..bytes)
        .map(|_| if rng.random_bool(0.5) { 'a' } else { 'b' })
        .collect();
    for name in ["cl100k_base", "o200k_base"] {
        let ours = Tokenizer::shared(name).unwrap();
        for text in ["a".repeat(bytes), "x".repeat(bytes), az.clone(), ab.clone()] {
            let got = ours.encode_single_thread(&text).unwrap();
            assert!(
                got == reference(name).encode_ordinary(&text),
                "{name}: {} bytes starting {:?}",
                text.len(),
                &text[..12]
            );
        }
    }
}

/// Ordinary text (short pieces, the scan and heap merges) against tiktoken-rs too.
#[test]
fn mixed_text_matches_tiktoken_rs() {
    let text = bench::mixed(if cfg!(debug_assertions) {
        1 << 16
    } else {
        1 << 20
    });
    for (name, _) in model_context_tokenizer::encoding::ENCODINGS {
        let ours = Tokenizer::shared(name).unwrap().encode_single_thread(&text);
        assert!(
            ours.unwrap() == reference(name).encode_ordinary(&text),
            "{name}"
        );
    }
}

//! The tokenizer against Python tiktoken (golden data from scripts/gen_token_golden.py): ids
//! identical for every text of every encoding, decode round-trips to the original bytes, the
//! texts Python rejects are rejected, every id decodes to Python's bytes, and the parallel and
//! batch paths give the one-by-one result. A randomized comparison with tiktoken-rs's regex
//! pre-tokenizer covers strings the corpus lacks.
mod common;
use common::Rng;
use model_context_tokenizer::{ErrorKind, Rank, Tokenizer};
use serde_json::Value;
use std::path::PathBuf;

const ENCODINGS: [&str; 6] = [
    "gpt2",
    "r50k_base",
    "p50k_base",
    "p50k_edit",
    "cl100k_base",
    "o200k_base",
];

fn golden() -> PathBuf {
    common::data_dir(
        "MC_TOKEN_GOLDEN_DIR",
        "data/token_golden",
        "scripts/gen_token_golden.py",
    )
}

fn read_json(name: &str) -> Value {
    let path = golden().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/data.sh tokens)", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn texts() -> Vec<String> {
    serde_json::from_value(read_json("texts.json")).unwrap()
}

fn ids(v: &Value) -> Vec<Rank> {
    serde_json::from_value(v.clone()).unwrap()
}

/// The special token named in Python's error message.
fn quoted(msg: &str) -> &str {
    msg.split('\'')
        .nth(1)
        .expect("a quoted token in Python's message")
}

#[test]
fn every_text_encodes_to_pythons_ids_and_decodes_back() {
    let texts = texts();
    assert!(texts.len() > 1500, "corpus too small: {}", texts.len());
    for enc in ENCODINGS {
        let tok = Tokenizer::shared(enc).unwrap();
        let gold = read_json(&format!("{enc}.json"));
        let cases = gold["cases"].as_array().unwrap();
        assert_eq!(cases.len(), texts.len(), "{enc}");
        assert_eq!(gold["n_vocab"].as_u64().unwrap(), tok.n_vocab() as u64);
        let (mut ok, mut rejected) = (0, 0);
        for (i, (text, case)) in texts.iter().zip(cases).enumerate() {
            let got = tok.encode(text);
            if let Some(want) = case.get("ids") {
                let want = ids(want);
                let got = got.unwrap_or_else(|e| panic!("{enc} text {i} {text:?}: {e}"));
                assert!(
                    got == want,
                    "{enc} text {i} {text:?}:\n got  {got:?}\n want {want:?}"
                );
                assert_eq!(tok.decode(&got).unwrap(), text.as_bytes(), "{enc} text {i}");
                ok += 1;
            } else {
                let msg = case["error"].as_str().unwrap();
                let e = got.expect_err(&format!("{enc} text {i} {text:?}: Python raised {msg}"));
                assert_eq!(e.kind, ErrorKind::Token, "{enc} text {i}");
                assert!(e.message.contains(quoted(msg)), "{enc}: {e} vs {msg}");
                rejected += 1;
            }
        }
        assert!(ok > 1500, "{enc}: {ok}");
        if enc == "cl100k_base" || enc == "o200k_base" || enc == "p50k_edit" {
            assert!(rejected > 10, "{enc}: only {rejected} texts rejected");
        }
    }
}

#[test]
fn single_thread_parallel_and_batch_paths_agree_with_python() {
    let texts = texts();
    let long = texts.iter().map(String::len).max().unwrap();
    assert!(
        long > 1 << 17,
        "the corpus needs a text above the parallel threshold"
    );
    for enc in ENCODINGS {
        let tok = Tokenizer::shared(enc).unwrap();
        let gold = read_json(&format!("{enc}.json"));
        let cases = gold["cases"].as_array().unwrap();
        let good: Vec<(&String, Vec<Rank>)> = texts
            .iter()
            .zip(cases)
            .filter_map(|(t, c)| c.get("ids").map(|v| (t, ids(v))))
            .collect();
        for (t, want) in good.iter().filter(|(t, _)| t.len() > 1 << 14) {
            assert!(tok.encode_single_thread(t).unwrap() == *want, "{enc}");
            assert!(tok.encode(t).unwrap() == *want, "{enc}");
        }
        let batch: Vec<&[u8]> = good.iter().map(|(t, _)| t.as_bytes()).collect();
        let got = tok.encode_batch(&batch).unwrap();
        assert_eq!(got.len(), good.len());
        for (g, (_, want)) in got.iter().zip(&good) {
            assert!(g == want, "{enc} batch");
        }
        // A failing text fails the batch, named by index.
        if let Some(i) = cases.iter().position(|c| c.get("error").is_some()) {
            let mut batch: Vec<&[u8]> = vec![b"fine"; 5];
            batch.push(texts[i].as_bytes());
            let e = tok.encode_batch(&batch).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Token);
            assert!(e.message.starts_with("text 5:"), "{e}");
        }
    }
}

#[test]
fn every_id_decodes_to_pythons_bytes() {
    for enc in ENCODINGS {
        let tok = Tokenizer::shared(enc).unwrap();
        let path = golden().join(format!("{enc}.vocab.bin"));
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (mut at, mut id, mut gaps) = (0usize, 0u32, 0);
        while at < data.len() {
            let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
            at += 4;
            if len == u32::MAX {
                let e = tok.decode_token(id).unwrap_err();
                assert_eq!(e.kind, ErrorKind::Token);
                assert!(e.message.contains(&id.to_string()), "{e}");
                gaps += 1;
            } else {
                let want = &data[at..at + len as usize];
                assert_eq!(tok.decode_token(id).unwrap(), want, "{enc} id {id}");
                at += len as usize;
            }
            id += 1;
        }
        assert_eq!(id, tok.n_vocab(), "{enc}");
        let gold = read_json(&format!("{enc}.json"));
        for bad in gold["decode_errors"].as_array().unwrap() {
            let bad = bad.as_u64().unwrap() as u32;
            let e = tok.decode(&[0, bad]).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Token);
            assert!(
                e.message.contains(&format!("token id {bad} (at index 1)")),
                "{e}"
            );
            assert!(tok.decode_token_list(&[bad]).is_err());
        }
        let specials: Vec<(String, Rank)> = gold["special_tokens"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap() as Rank))
            .collect();
        assert_eq!(tok.special_tokens(), specials.as_slice(), "{enc}");
        if enc == "cl100k_base" || enc == "o200k_base" {
            assert!(gaps > 10, "{enc}: {gaps} unused ids");
        }
    }
}

#[test]
fn token_strs_follow_the_seed() {
    for enc in ENCODINGS {
        let tok = Tokenizer::shared(enc).unwrap();
        let gold = read_json(&format!("{enc}.json"));
        let mut singles = Vec::new();
        for case in gold["token_strs"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let got = tok.encode_token_str(text);
            match case.get("ids").map(ids) {
                Some(want) if want.len() == 1 => {
                    assert_eq!(got.unwrap(), want[0], "{enc} {text:?}");
                    singles.push((text, want[0]));
                }
                Some(want) => {
                    let e = got.unwrap_err();
                    assert_eq!(e.kind, ErrorKind::Token, "{enc} {text:?}");
                    assert!(e.message.contains(&format!("{want:?}")), "{e}");
                    assert!(e.message.contains("exactly 1 token"), "{e}");
                }
                None => assert_eq!(got.unwrap_err().kind, ErrorKind::Token),
            }
        }
        assert!(singles.len() >= 8, "{enc}");
        let strs: Vec<&str> = singles.iter().map(|(t, _)| *t).collect();
        let want: Vec<Rank> = singles.iter().map(|(_, id)| *id).collect();
        assert_eq!(tok.encode_token_str_list(&strs).unwrap(), want);
        let back = tok.decode_token_list(&want).unwrap();
        for (b, s) in back.iter().zip(&strs) {
            assert_eq!(*b, s.as_bytes());
        }
        let mut bad = strs.clone();
        bad.insert(2, "hello world");
        let e = tok.encode_token_str_list(&bad).unwrap_err();
        assert!(e.message.starts_with("string 2:"), "{e}");
    }
}

#[test]
fn gpt2_is_r50k_base() {
    let (a, b) = (
        Tokenizer::shared("gpt2").unwrap(),
        Tokenizer::shared("r50k_base").unwrap(),
    );
    let text = "GPT-2 shares r50k_base's ranks <|endoftext|> and special token.";
    assert_eq!(a.encode(text).unwrap(), b.encode(text).unwrap());
    assert_eq!(a.n_vocab(), 50257);
    assert_eq!(a.encode("<|endoftext|>").unwrap(), [50256]);
}

#[test]
fn invalid_utf8_names_the_offset() {
    let tok = Tokenizer::shared("cl100k_base").unwrap();
    for (bytes, offset) in [
        (&b"ab\xffcd"[..], 2),
        (b"\xc3", 0),
        (b"ok \xe2\x82", 3),
        (b"\xed\xa0\x80", 0),
    ] {
        let e = tok.encode_bytes(bytes).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains(&format!("offset {offset}")), "{e}");
    }
}

/// Random strings over characters on the edges of the patterns' classes, compared with
/// tiktoken-rs (its regex engine runs tiktoken's expressions).
#[test]
fn random_strings_match_tiktoken_rs() {
    let alphabet: Vec<&str> = vec![
        "a", "A", "s", "S", "t", "l", "L", "e", "v", "r", "R", "m", "d", "D", "'", "ſ", "K", "ǅ",
        "ʰ", "ª", "中", "の", "é", "\u{301}", "\u{20dd}", "1", "٣", "Ⅻ", "½", " ", " ", "  ", "\t",
        "\n", "\r", "\u{a0}", "\u{3000}", "\u{85}", "!", ".", "/", "-", "\"", "😀", "\u{200b}",
        "<", "|", ">", "x",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let cores = [
        ("r50k_base", tiktoken_rs::r50k_base().unwrap()),
        ("p50k_base", tiktoken_rs::p50k_base().unwrap()),
        ("cl100k_base", tiktoken_rs::cl100k_base().unwrap()),
        ("o200k_base", tiktoken_rs::o200k_base().unwrap()),
    ];
    let strings: Vec<String> = (0..3000)
        .map(|_| {
            let n = 1 + rng.below(24);
            (0..n)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect()
        })
        .collect();
    for (enc, core) in &cores {
        let tok = Tokenizer::shared(enc).unwrap();
        for s in &strings {
            let want = core.encode_ordinary(s);
            let got = tok.encode(s).unwrap();
            assert!(got == want, "{enc} {s:?}:\n got  {got:?}\n want {want:?}");
        }
    }
}

/// The hand-written matchers split exactly where tiktoken's expressions do (fancy-regex, the
/// engine tiktoken uses), piece by piece, on random strings over the classes' edge characters.
#[test]
fn pieces_match_the_regex() {
    let alphabet: Vec<&str> = vec![
        "a",
        "b",
        "A",
        "B",
        "s",
        "S",
        "t",
        "T",
        "l",
        "L",
        "e",
        "E",
        "v",
        "r",
        "m",
        "d",
        "'",
        "’",
        "ſ",
        "ǅ",
        "ʰ",
        "ª",
        "中",
        "ß",
        "é",
        "\u{301}",
        "\u{300}",
        "\u{20dd}",
        "1",
        "7",
        "٣",
        "Ⅻ",
        "½",
        " ",
        " ",
        " ",
        "\t",
        "\n",
        "\r",
        "\u{a0}",
        "\u{3000}",
        "\u{85}",
        "\u{b}",
        "!",
        ".",
        "/",
        "-",
        "😀",
        "\u{200b}",
        "\u{10FFFF}",
        "\u{E0001}",
    ];
    let mut rng = Rng(42);
    for (enc, (family, pattern)) in ["r50k_base", "cl100k_base", "o200k_base"]
        .iter()
        .zip(model_context_tokenizer::tokenizer::PATTERNS)
    {
        let tok = Tokenizer::shared(enc).unwrap();
        assert_eq!(tok.pattern().regex(), pattern, "{family}");
        let re = fancy_regex::Regex::new(pattern).unwrap();
        for _ in 0..20_000 {
            let n = 1 + rng.below(16);
            let s: String = (0..n)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let want: Vec<(usize, usize)> = re
                .find_iter(&s)
                .map(|m| {
                    let m = m.unwrap();
                    (m.start(), m.end())
                })
                .collect();
            let got = tok.pretokenize(&s);
            assert!(
                got == want,
                "{family} {s:?}:\n got  {got:?}\n want {want:?}"
            );
        }
    }
}

/// Long texts of repeated tricky material: the parts encoded in parallel join to the sequential
/// result, and pathological runs finish.
#[test]
fn long_texts_split_exactly() {
    let mut rng = Rng(7);
    let words = [
        "alpha ",
        "Beta ",
        "gamma's ",
        "DELTA'LL ",
        "x ",
        "  ",
        "\n\n",
        "\r\n",
        "123456 ",
        "中文 ",
        "😀 ",
        "e\u{301} ",
        "!! ",
        "/// ",
        "ǅx ",
        "\t",
        "a\u{a0}",
        "<|endoftext|>",
    ];
    let text: String = (0..120_000)
        .map(|_| words[rng.below(words.len())])
        .collect();
    assert!(text.len() > 1 << 19);
    for enc in ENCODINGS {
        let tok = Tokenizer::shared(enc).unwrap();
        let seq = tok.encode_single_thread(&text).unwrap();
        assert!(tok.encode(&text).unwrap() == seq, "{enc}");
        assert_eq!(tok.decode(&seq).unwrap(), text.as_bytes());
    }
    let tok = Tokenizer::shared("cl100k_base").unwrap();
    for run in ["a", " ", "1", "\n"] {
        let text = run.repeat(1 << 18);
        let ids = tok.encode(&text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text.as_bytes(), "{run:?}");
    }
}

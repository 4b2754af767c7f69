//! The tokenizer's encode against GitHub's `bpe-openai` 0.3.2 and `tiktoken-rs` 0.12.1, in one
//! process, on one thread, for cl100k_base and o200k_base:
//!
//!   cargo bench -p model_context_tokenizer --bench long_pieces
//!
//! (a) about 8 MB of mixed ordinary text (English prose, source code, other scripts, emoji,
//! digits, whitespace; seeded, like `benches/bench_tokens.py`'s corpus, without
//! `<|endoftext|>`), (b) 1 MB of one letter, (c) 1 MB of random lowercase letters without a
//! space (one piece). Ids are checked equal across the three first. tiktoken-rs merges a piece
//! in quadratic time, so on (b) and (c) it is checked and timed on the first 64 KB only, and
//! ours is timed on that prefix too for the ratio. `BENCH_REPS` sets the repetitions (default
//! 5); each figure is the median. The long-piece tables' one-time build is timed first.
use model_context_tokenizer::Tokenizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

const WORDS: &str = "the of and to in is was that for it with as his on be at by had are but \
    from or have an they which one you were all her she there would their we him been has when \
    who will no more if out so up said what its about than into them can only other time new \
    some could these two may first then do any like my now over such our man me even most made \
    after also did many before must through back years where much your way well down should \
    because each just those people how too little state good very make world still see own men \
    work long get here between both life being under never day same another know while last \
    might us great old year off come since against go came right used take three \
    antidisestablishmentarianism pneumonoultramicroscopic naïve café résumé coöperate façade \
    Zürich Ångström Øresund straße İstanbul ǅemal";

const CONTRACTIONS: [&str; 8] = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "’s"];

const CODE: [&str; 5] = [
    "def fib(n: int) -> int:\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n\nif __name__ == \"__main__\":\n    print([fib(i) for i in range(20)])\n",
    "#include <stdio.h>\n\nint main(int argc, char **argv) {\n\tfor (int i = 0; i < argc; ++i) {\n\t\tprintf(\"%d: %s\\n\", i, argv[i]);\n\t}\n\treturn 0; // done\n}\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "<html>\n  <body class=\"main\">\n    <a href=\"https://example.com/path/to/page?q=1&r=2#frag\">link</a>\n  </body>\n</html>\n",
    "SELECT id, name, COUNT(*) AS n FROM users u JOIN orders o ON o.user_id = u.id\nWHERE u.created_at >= '2024-01-01' GROUP BY 1, 2 HAVING n > 10 ORDER BY n DESC;\n",
];

const OTHER: [&str; 10] = [
    "人工智能是计算机科学的一个分支，它企图了解智能的实质。",
    "東京は日本の首都です。ひらがなとカタカナ、そして漢字を使います。",
    "한국어 텍스트도 포함합니다. 안녕하세요, 세계!",
    "中文English混合mixed文本123数字４５６全角",
    "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇺🇸 ❤️ ✨🚀🔥",
    "Combining: e\u{301} a\u{300}\u{323} n\u{303} o\u{308}\u{304}",
    "Vietnamese: Tiếng Việt có dấu: người, được, những",
    "Devanagari: नमस्ते दुनिया, हिन्दी भाषा",
    "Arabic: السَّلَامُ عَلَيْكُمْ ١٢٣٤ مرحبا",
    "Thai: สวัสดีครับ ภาษาไทย",
];

const MISC: [&str; 6] = [
    "1234567890123456789",
    "3.14159265358979323846",
    "Phone: +1 (555) 123-4567, ZIP 90210-1234",
    "                                        ",
    "line one\r\nline two\r\n\r\n",
    "\t\t\tindented\n\n\n",
];

fn prose(rng: &mut ChaCha8Rng, words: &[&str], sentences: usize) -> String {
    let mut out = Vec::new();
    for _ in 0..sentences {
        let n = rng.random_range(3..=18);
        let mut s = Vec::new();
        for i in 0..n {
            let mut w = words[rng.random_range(0..words.len())].to_string();
            if i == 0 {
                let mut c = w.chars();
                w = c.next().map_or(String::new(), |f| {
                    f.to_uppercase().collect::<String>() + c.as_str()
                });
            }
            match rng.random_range(0..100) {
                0..8 => w.push_str(CONTRACTIONS[rng.random_range(0..CONTRACTIONS.len())]),
                8..12 => w = w.to_uppercase(),
                12..16 => w.push_str([",", ";", ":", " -", "..."][rng.random_range(0..5)]),
                16..18 => w = format!("\"{w}\""),
                18..20 => {
                    let digits = rng.random_range(1..=9);
                    w = rng.random_range(0..10u64.pow(digits)).to_string();
                }
                _ => {}
            }
            s.push(w);
        }
        out.push(s.join(" ") + [".", "!", "?", ".", "."][rng.random_range(0..5)]);
    }
    out.join(if rng.random_bool(0.3) { "  " } else { " " })
}

/// About `bytes` of mixed text in ~2 KB documents, seeded.
pub fn mixed(bytes: usize) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(1234);
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut text = String::new();
    while text.len() < bytes {
        let r: f64 = rng.random();
        let doc = if r < 0.7 {
            let n = rng.random_range(10..=30);
            prose(&mut rng, &words, n)
        } else if r < 0.85 {
            (0..4)
                .map(|_| CODE[rng.random_range(0..CODE.len())])
                .collect()
        } else if r < 0.95 {
            let v: Vec<&str> = (0..8)
                .map(|_| OTHER[rng.random_range(0..OTHER.len())])
                .collect();
            v.join(" ")
        } else {
            let v: Vec<&str> = (0..10)
                .map(|_| MISC[rng.random_range(0..MISC.len())])
                .collect();
            v.join(" ")
        };
        text.push_str(&doc);
        text.push_str("\n\n");
    }
    text
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The median seconds of `reps` runs of `f`.
fn time(reps: usize, mut f: impl FnMut() -> usize) -> f64 {
    let mut times = Vec::new();
    let mut sink = 0;
    for _ in 0..reps {
        let t = Instant::now();
        sink += f();
        times.push(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink);
    median(times)
}

fn row(what: &str, bytes: usize, secs: f64, ours: f64) {
    let ratio = if what == "ours" {
        String::new()
    } else {
        format!("  ours {:.2}x faster", secs / ours)
    };
    println!(
        "    {what:<12} {:>8.1} MB/s {:>9.4} s{ratio}",
        bytes as f64 / 1e6 / secs,
        secs
    );
}

fn main() {
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let inputs: [(&str, String); 3] = [
        ("(a) mixed text", mixed(8 << 20)),
        ("(b) 1 MB of \"a\"", "a".repeat(1 << 20)),
        (
            "(c) 1 MB of random a-z",
            (0..1 << 20)
                .map(|_| rng.random_range(b'a'..=b'z') as char)
                .collect(),
        ),
    ];
    const PREFIX: usize = 64 << 10;
    println!(
        "one thread each (ours: Tokenizer::encode_single_thread; bpe-openai and tiktoken-rs \
         encode on the calling thread); median of {reps}"
    );
    for name in ["cl100k_base", "o200k_base"] {
        let t = Instant::now();
        let ours = Tokenizer::new(name).unwrap();
        let open = t.elapsed().as_secs_f64();
        let t = Instant::now();
        ours.encode_single_thread(&"x".repeat(1 << 12)).unwrap();
        let tables = t.elapsed().as_secs_f64();
        let (peer, tik) = match name {
            "cl100k_base" => (
                bpe_openai::cl100k_base(),
                tiktoken_rs::cl100k_base().unwrap(),
            ),
            _ => (bpe_openai::o200k_base(), tiktoken_rs::o200k_base().unwrap()),
        };
        println!(
            "{name}: open {:.3} s; long-piece tables built on the first long piece: {:.3} s",
            open, tables
        );
        for (what, text) in &inputs {
            let long = !what.starts_with("(a)");
            let mine = ours.encode_single_thread(text).unwrap();
            assert_eq!(
                mine,
                peer.encode(text.as_str()),
                "{name} {what}: bpe-openai"
            );
            assert_eq!(
                mine,
                tik.encode_ordinary(text),
                "{name} {what}: tiktoken-rs"
            );
            println!(
                "  {what}: {:.2} MB, {} tokens, ids equal",
                text.len() as f64 / 1e6,
                mine.len()
            );
            let o = time(reps, || ours.encode_single_thread(text).unwrap().len());
            let p = time(reps, || peer.encode(text.as_str()).len());
            let ts = time(reps, || tik.encode_ordinary(text).len());
            row("ours", text.len(), o, o);
            row("bpe-openai", text.len(), p, o);
            row("tiktoken-rs", text.len(), ts, o);
            if long {
                let small = &text[..PREFIX];
                let os = time(reps, || ours.encode_single_thread(small).unwrap().len());
                let ps = time(reps, || peer.encode(small).len());
                let ts = time(reps, || tik.encode_ordinary(small).len());
                println!("    first {} KB:", PREFIX >> 10);
                row("ours", small.len(), os, os);
                row("bpe-openai", small.len(), ps, os);
                row("tiktoken-rs", small.len(), ts, os);
            }
        }
    }
}

#!/usr/bin/env python3
"""Golden data for the tokenizer: a generated corpus (prose, code, CJK, emoji and combining
marks, whitespace and digit runs, mixed line ends, special tokens, random strings over tricky
characters) encoded by Python tiktoken for every encoding a checkpoint may name, with the
seed's semantics (`encode(text, allowed_special={"<|endoftext|>"})`).

Usage: gen_token_golden.py OUT_DIR
Writes OUT_DIR/texts.json (the corpus), OUT_DIR/<encoding>.json (expected ids or the error
Python raises, per text; encode_token_str cases; ids that decode must reject),
OUT_DIR/<encoding>.vocab.bin (for every id below n_vocab: u32 LE length, then the exact bytes of
`decode_single_token_bytes`, or length 0xFFFFFFFF where Python raises) and OUT_DIR/manifest.json.

Python tiktoken downloads its BPE files at first use; there is no network here, so
`offline_tiktoken()` serves it the byte-identical files tiktoken-rs embeds (its cache is keyed
by the sha1 of the download URL; tiktoken checks each file's sha256). "gpt2" in Python reads
encoder.json/vocab.bpe, whose copies in tiktoken-rs differ from OpenAI's; its ranks and special
token are those of r50k_base (spec section 4), so r50k_base is the reference for "gpt2".
"""
import glob
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys

ENCODINGS = ["gpt2", "r50k_base", "p50k_base", "p50k_edit", "cl100k_base", "o200k_base"]
ALLOWED_SPECIAL = {"<|endoftext|>"}
FILES = ["r50k_base", "p50k_base", "cl100k_base", "o200k_base"]
URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def offline_tiktoken():
    """Points TIKTOKEN_CACHE_DIR at a cache holding tiktoken-rs's copies of the BPE files and
    returns the tiktoken module. Idempotent; fails with a clear message if the crate is absent."""
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "model_context", "tiktoken")
    os.environ["TIKTOKEN_CACHE_DIR"] = cache
    os.makedirs(cache, exist_ok=True)
    cargo_home = os.environ.get("CARGO_HOME") or os.path.join(os.path.expanduser("~"), ".cargo")
    pattern = os.path.join(cargo_home, "registry", "src", "*", "tiktoken-rs-0.12.*", "assets", "{}.tiktoken")
    for name in FILES:
        target = os.path.join(cache, hashlib.sha1(URL.format(name).encode()).hexdigest())
        if os.path.exists(target):
            continue
        if not glob.glob(pattern.format(name)):
            # A fresh machine: let cargo download the crate (it is a dependency of the library).
            subprocess.run(["cargo", "fetch", "--quiet"], cwd=REPO, check=True)
        found = sorted(glob.glob(pattern.format(name)))
        if not found:
            sys.exit(f"{pattern.format(name)} not found (is tiktoken-rs 0.12 still a dependency?)")
        shutil.copyfile(found[-1], target + ".tmp")
        os.replace(target + ".tmp", target)
    import tiktoken
    return tiktoken


def reference_encoding(tiktoken, name):
    return tiktoken.get_encoding("r50k_base" if name == "gpt2" else name)


# ---------------------------------------------------------------------------------------------
# The corpus.

WORDS = ("the of and to in is was that for it with as his on be at by had are but from or have an "
         "they which one you were all her she there would their we him been has when who will no more "
         "if out so up said what its about than into them can only other time new some could these two "
         "may first then do any like my now over such our man me even most made after also did many "
         "before must through back years where much your way well down should because each just those "
         "people how too little state good very make world still see own men work long get here between "
         "both life being under never day same another know while last might us great old year off come "
         "since against go came right used take three antidisestablishmentarianism pneumonoultramicroscopic "
         "naïve café résumé coöperate façade Zürich Ångström Øresund straße İstanbul ǅemal").split()
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL", "'D",
                "'ſ", "'x", "'", "’s", "’ll"]


def prose(rng, n_sentences):
    out = []
    for _ in range(n_sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 18))]
        words[0] = words[0].capitalize()
        for i in range(len(words)):
            r = rng.random()
            if r < 0.08:
                words[i] += rng.choice(CONTRACTIONS)
            elif r < 0.12:
                words[i] = words[i].upper()
            elif r < 0.16:
                words[i] += rng.choice([",", ";", ":", " -", " —", "..."])
            elif r < 0.18:
                words[i] = f"\"{words[i]}\""
            elif r < 0.2:
                words[i] = str(rng.randint(0, 10 ** rng.randint(1, 9)))
        out.append(" ".join(words) + rng.choice([".", "!", "?", ".", "."]))
    return "  ".join(out) if rng.random() < 0.3 else " ".join(out)


CODE = [
    '''def fib(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n\nif __name__ == "__main__":\n    print([fib(i) for i in range(20)])\n''',
    '''#include <stdio.h>\n\nint main(int argc, char **argv) {\n\tfor (int i = 0; i < argc; ++i) {\n\t\tprintf("%d: %s\\n", i, argv[i]);\n\t}\n\treturn 0; // done\n}\n''',
    '''fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!("{:?}", v);\n    /* block comment */ let s = r#"raw "string""#;\n}\n''',
    '''<html>\n  <body class="main">\n    <a href="https://example.com/path/to/page?q=1&r=2#frag">link</a>\n  </body>\n</html>\n''',
    '''SELECT id, name, COUNT(*) AS n FROM users u JOIN orders o ON o.user_id = u.id\nWHERE u.created_at >= '2024-01-01' GROUP BY 1, 2 HAVING n > 10 ORDER BY n DESC;\n''',
    '''{"key": [1, 2.5e-10, -3, true, null], "nested": {"a": "b\\u00e9", "path": "C:\\\\Users\\\\x"}}\n''',
    '''#!/bin/sh\nset -eu\nfor f in ./*.txt; do wc -l "$f" >> /tmp/out.log 2>&1; done\nexit $?\n''',
    '''    if (x != y && z >= 0x1F) { return -1; }  // trailing spaces   \n\t\t  mixed_indent = True\n''',
    '''// URLs and paths: /usr/local/bin, ../../etc/passwd, https://a.b/c/d/, C:/x//y///z\n''',
]

CJK = [
    "人工智能是计算机科学的一个分支，它企图了解智能的实质。",
    "東京は日本の首都です。ひらがなとカタカナ、そして漢字を使います。",
    "한국어 텍스트도 포함합니다. 안녕하세요, 세계!",
    "中文English混合mixed文本123数字４５６全角",
    "「引用」と『二重引用』…　全角スペース　あり",
]

EMOJI_MARKS = [
    "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇺🇸 ❤️ ✨🚀🔥",
    "Combining: e\u0301 a\u0300\u0323 n\u0303 o\u0308\u0304 \u0301leading mark, x\u20dd, Z\u0336\u0336",
    "Vietnamese: Tiếng Việt có dấu: người, được, những",
    "Devanagari: नमस्ते दुनिया, हिन्दी भाषा",
    "Arabic: السَّلَامُ عَلَيْكُمْ ١٢٣٤ مرحبا",
    "Hebrew: שָׁלוֹם עוֹלָם",
    "Thai: สวัสดีครับ ภาษาไทย",
    "Marks alone: \u0301\u0302\u0303 after space \u0301x and !\u0301? and 1\u0301",
    "Titlecase and modifiers: ǅemal ǈ ǋ ʰʲ ʷord ªº ˈstress ᵃᵇ Ǆ",
    "Zero width: a\u200bb\u200cc\u200dd\ufeffe \u2060f",
]

WHITESPACE = [
    " " * 40,
    "\t" * 17,
    "\n" * 12,
    "a" + " " * 33 + "b",
    "a" + " " * 33,
    " " * 33 + "b",
    "word  \n  word",
    "x \t \n \t y",
    "end with spaces   ",
    "end with newline\n",
    "end with mixed \n\t ",
    "\u00a0nbsp\u00a0\u00a0x\u3000ideographic\u3000 space\u2028line sep\u2029para\u0085nel",
    "\u000b\u000cvt ff\u001c\u001d\u001e\u001f unit seps",
    "1 2  3   4    5",
    "  leading spaces",
    "\n\n\nleading newlines",
    " ! ? . , ; : ",
]

DIGITS = [
    "1234567890" * 5,
    "3.14159265358979323846264338327950288419716939937510",
    "Phone: +1 (555) 123-4567, ZIP 90210-1234, 1e10, 0x7FFF_FFFF",
    "٠١٢٣٤٥٦٧٨٩ ۰۱۲ ०१२३ ０１２３４５ Ⅻ Ⅷ ½ ¾ ² ³ 𝟘𝟙𝟚",
    "12,345,678.90 $1,000 €2.50 100%",
    "9" * 100,
    "a1b22c333d4444e55555",
]

LINE_ENDS = [
    "line one\r\nline two\r\n\r\nline four\r\n",
    "mixed\r\nends\nhere\rand\n\rthere\r\r\n\n",
    "trailing cr\r",
    "  \r\n  \r\n\t\r\n",
    "code {\r\n    x = 1;\r\n}\r\n",
    "!!!\r\n\r\n///\n\r/",
    "word\r\n\r\n   \r\nnext",
]

SPECIAL = [
    "<|endoftext|>",
    "Hello<|endoftext|>World",
    "<|endoftext|><|endoftext|>",
    "text before <|endoftext|> text after",
    "spaces before   <|endoftext|>   spaces after",
    "newline before\n<|endoftext|>\nnewline after",
    "trailing whitespace before special \n\t <|endoftext|>",
    "<|endoftext|>\n",
    "almost <|endoftext| and <|endoftext and endoftext|> and <| |> and <||>",
    "<|fim_prefix|>def f():<|fim_suffix|>    return 1<|fim_middle|>",
    "prompt <|endofprompt|> answer",
    "allowed <|endoftext|> then disallowed <|fim_prefix|>",
    "<|endoftext|><|endofprompt|>",
    "nested <|<|endoftext|>|> chars",
    "<|im_start|>user not a special token<|im_end|>",
]

# Characters chosen to sit on every edge of the patterns' classes (letters of each case class,
# marks, numbers of each kind, whitespace of each kind, punctuation incl. ' and /, \r \n).
TRICKY = list("aAzZsStTlLeEvVrRmMdD'’ſ") + [
    "ǅ", "ʰ", "ª", "中", "の", "한", "ß", "İ", "é", "e\u0301", "\u0301", "\u0300", "\u20dd",
    "1", "7", "٣", "Ⅻ", "½", "𝟙", " ", " ", " ", "  ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000",
    "\u2028", "\u0085", "\u000b", "!", "?", ".", ",", "/", "//", "-", "_", "(", ")", "\"", "#",
    "😀", "👍🏽", "\u200b", "\ufeff", "<", "|", ">", "<|endoftext|>",
]
OTHER_SPECIAL = ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|endofprompt|>"]


def random_tricky(rng, n):
    return "".join(rng.choice(TRICKY) for _ in range(n))


def random_codepoints(rng, n):
    """Characters from all over Unicode (every plane in use), no surrogates."""
    out = []
    while len(out) < n:
        plane = rng.choice([0, 0, 0, 0, 1, 2, 14])
        cp = plane * 0x10000 + rng.randrange(0x10000)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        out.append(chr(cp))
        if rng.random() < 0.3:
            out.append(rng.choice([" ", "a", "'s", "1", "\n"]))
    return "".join(out)


def corpus():
    rng = random.Random(20240604)
    texts = ["", " ", "a", "\n", "'", "'s", "hello world", "Hello, World!", "<", "<|"]
    texts += [prose(rng, rng.randint(1, 12)) for _ in range(40)]
    texts += CODE + CJK + EMOJI_MARKS + WHITESPACE + DIGITS + LINE_ENDS + SPECIAL
    texts += [random_tricky(rng, rng.randint(1, 60)) for _ in range(1500)]
    texts += [random_tricky(rng, rng.randint(0, 20)) + rng.choice(OTHER_SPECIAL) + random_tricky(rng, rng.randint(0, 20))
              for _ in range(60)]
    texts += [random_codepoints(rng, rng.randint(1, 40)) for _ in range(300)]
    # Long pieces (the heap-based merge) and long runs.
    texts += ["a" * 5000, " " * 5000, "\n" * 3000, "1" * 3001, "ab" * 2000, "\u0301" * 1000,
              "😀" * 700, "中" * 2000, "x" + " " * 4000 + "y", "!" * 2500, " " * 2000 + "\n" * 2000 + "z",
              "".join(chr(0x4E00 + i) for i in range(3000)), "\t \n" * 1500]
    texts += [prose(rng, 300) + "\n\n" + "".join(CODE) * 3]
    # Longer than the library's threshold for encoding one text on several cores (128 KiB).
    texts += ["<|endoftext|>".join(prose(rng, 200) + "\n\n" + "".join(CODE) + "".join(CJK) + "".join(EMOJI_MARKS)
                                   + "".join(LINE_ENDS) + "".join(WHITESPACE) + "".join(DIGITS) for _ in range(16))]
    return texts


TOKEN_STRS = ["hello", " hello", "Hello", " the", "the", "a", " ", "  ", "\n", "<|endoftext|>", "!",
              "hello world", "antidisestablishmentarianism", "", "中", "😀", "é", "e\u0301", "'s", "123",
              "1234", "<|fim_prefix|>", "<|endofprompt|>", " world", "ing", "\t", "\r\n"]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    tiktoken = offline_tiktoken()
    os.makedirs(out, exist_ok=True)
    texts = corpus()
    with open(os.path.join(out, "texts.json"), "w") as f:
        json.dump(texts, f)
    manifest = {"tiktoken": tiktoken.__version__, "texts": len(texts), "encodings": {}}
    for name in ENCODINGS:
        enc = reference_encoding(tiktoken, name)
        cases = []
        for t in texts:
            try:
                cases.append({"ids": enc.encode(t, allowed_special=ALLOWED_SPECIAL)})
            except ValueError as e:
                cases.append({"error": str(e).split(".")[0]})
        token_strs = []
        for s in TOKEN_STRS:
            try:
                ids = enc.encode(s, allowed_special=ALLOWED_SPECIAL)
                token_strs.append({"text": s, "ids": ids})
            except ValueError as e:
                token_strs.append({"text": s, "error": str(e).split(".")[0]})
        n_vocab = enc.n_vocab
        bad_ids = []
        with open(os.path.join(out, f"{name}.vocab.bin"), "wb") as f:
            for i in range(n_vocab):
                try:
                    b = enc.decode_single_token_bytes(i)
                    f.write(struct.pack("<I", len(b)) + b)
                except KeyError:
                    f.write(struct.pack("<I", 0xFFFFFFFF))
                    bad_ids.append(i)
        decode_errors = []
        for i in bad_ids[:50] + [n_vocab, n_vocab + 1, 2 ** 31, 2 ** 32 - 1]:
            try:
                enc.decode_bytes([0, i])
            except (KeyError, ValueError, OverflowError):
                decode_errors.append(i)
        special = sorted(enc.special_tokens_set)
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump({"encoding": name, "reference": enc.name, "n_vocab": n_vocab,
                       "special_tokens": {s: enc.encode_single_token(s) for s in special},
                       "cases": cases, "token_strs": token_strs,
                       "decode_errors": decode_errors}, f)
        manifest["encodings"][name] = {
            "reference": enc.name, "n_vocab": n_vocab, "gaps": len(bad_ids),
            "errors": sum("error" in c for c in cases)}
        print(f"{name}: n_vocab {n_vocab}, {len(bad_ids)} ids without bytes, "
              f"{manifest['encodings'][name]['errors']} texts rejected", file=sys.stderr)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()

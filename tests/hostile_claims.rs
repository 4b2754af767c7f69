//! Checkpoints whose config claims sizes its pieces do not have: each size key at huge values
//! (2^31-1, 2^40, 10^12, 2^63-1) and in combinations, TDB and Hugging Face layouts. One child
//! process per variant (this test binary re-run) makes the calls a user makes: open, every
//! weight location for layer 0 and stacked over every layer, model creation, a forward pass and
//! a sample, under an address-space limit of what the same calls need on the valid checkpoint
//! (measured here) plus a margin, and a time limit. Every call must return a status with a
//! message; the child must never abort or exceed a limit.
mod common;
use model_context::ffi::dlpack::DLManagedTensorVersioned;
use model_context::ffi::mc_decode;
use model_context::ffi::*;
use serde_json::Value;
use std::ffi::{CStr, CString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::ptr::null_mut;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "MC_HOSTILE_CHILD_DIR";
const MARGIN: u64 = 1 << 30;
const TIME_LIMIT: Duration = Duration::from_secs(90);

fn last_error() -> String {
    unsafe {
        CStr::from_ptr(mc_last_error())
            .to_string_lossy()
            .into_owned()
    }
}

/// A status's name and, for an error, the thread's message.
fn outcome(s: i32) -> (String, String) {
    let name = unsafe { CStr::from_ptr(mc_status_name(s)) }
        .to_string_lossy()
        .into_owned();
    let msg = if s == MC_OK {
        String::new()
    } else {
        last_error()
    };
    (name, msg)
}

/// The child's calls, one line each: `call status message`.
fn child_calls(dir: &str) {
    let say = |call: &str, s: i32| {
        let (name, msg) = outcome(s);
        println!("{call} {name} {msg}");
    };
    let mut ctx = null_mut();
    let path = CString::new(dir).unwrap();
    let s = unsafe { mc_open(path.as_ptr(), c"cpu".as_ptr(), &mut ctx) };
    say("open", s);
    if s != MC_OK {
        return;
    }
    for loc in 0..MC_WEIGHT_COUNT {
        let mut per_layer = false;
        unsafe { mc_weight_location_per_layer(loc, &mut per_layer) };
        let layers: &[i32] = if per_layer {
            &[0, MC_LAYER_ALL]
        } else {
            &[MC_LAYER_NONE]
        };
        for &layer in layers {
            let mut r = common::init(mc_weight_request_init);
            (r.location, r.layer) = (loc, layer);
            let mut t: *mut DLManagedTensorVersioned = null_mut();
            let s = unsafe { mc_get_weight_ex(ctx, &r, &mut t) };
            say(&format!("weight.{loc}.{layer}"), s);
            if !t.is_null() {
                unsafe { ((*t).deleter.unwrap())(t) };
            }
        }
    }
    say("create_model", unsafe {
        mc_create_model(ctx, std::ptr::null())
    });
    let tokens = [464u32, 2068, 7586, 21831];
    let mut r = common::init(mc_forward_request_init);
    (r.tokens, r.n_tokens, r.token_type, r.batch, r.seq_len) =
        (tokens.as_ptr().cast(), 4, MC_TOKENS_UINT32, 1, 4);
    let mut out = null_mut();
    say("forward", unsafe { mc_forward(ctx, &r, &mut out) });
    unsafe { mc_forward_output_free(out) };
    let mut o = common::init(mc_sample_options_init);
    o.max_new_tokens = 2;
    let (mut got, mut n) = ([0u32; 2], 0usize);
    say("sample", unsafe {
        mc_sample(ctx, tokens.as_ptr(), 4, &o, got.as_mut_ptr(), 2, &mut n)
    });
    unsafe { mc_free(ctx) };
}

/// A forward pass far larger than the address space allows, then a small one.
fn child_oom(dir: &str) {
    let mut ctx = null_mut();
    let path = CString::new(dir).unwrap();
    assert_eq!(
        unsafe { mc_open(path.as_ptr(), c"cpu".as_ptr(), &mut ctx) },
        MC_OK
    );
    for batch in [16384i64, 1] {
        let tokens = vec![464u32; batch as usize * 128];
        let mut r = common::init(mc_forward_request_init);
        (r.tokens, r.n_tokens, r.token_type, r.batch, r.seq_len) = (
            tokens.as_ptr().cast(),
            tokens.len(),
            MC_TOKENS_UINT32,
            batch,
            128,
        );
        let mut out = null_mut();
        let s = unsafe { mc_forward(ctx, &r, &mut out) };
        let (name, msg) = outcome(s);
        println!(
            "forward.{batch} {name} {}",
            msg.lines().next().unwrap_or("")
        );
        unsafe { mc_forward_output_free(out) };
    }
    // Decoding 40 million copies of the longest gpt2 token needs gigabytes more than the
    // limit: refused as out of memory (after the ids are checked), then a small decode works.
    let longest = (0..50257u32)
        .max_by_key(|&id| {
            let mut n = 0usize;
            unsafe { mc_decode(ctx, &id, 1, null_mut(), 0, &mut n) };
            n
        })
        .unwrap();
    let mut n = 0usize;
    unsafe { mc_decode(ctx, &longest, 1, null_mut(), 0, &mut n) };
    for count in [40_000_000usize, 3] {
        let ids = vec![longest; count];
        let mut buf = vec![0u8; 3 * n];
        let mut written = 0usize;
        let s = unsafe {
            mc_decode(
                ctx,
                ids.as_ptr(),
                count,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut written,
            )
        };
        let (name, msg) = outcome(s);
        println!(
            "decode.{count} {name} {} bytes={written} token_bytes={n}",
            msg.lines().next().unwrap_or("")
        );
    }
    unsafe { mc_free(ctx) };
}

/// Run as a child (the parent sets the environment): the calls, then the peak address space.
#[test]
fn child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // the parent test runs this binary again with the variable set
    };
    match std::env::var_os("MC_HOSTILE_CHILD_OOM") {
        Some(_) => child_oom(&dir),
        None => child_calls(&dir),
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak = status.lines().find(|l| l.starts_with("VmPeak:")).unwrap();
    println!("peak {}", peak.split_whitespace().nth(1).unwrap());
}

struct Run {
    lines: Vec<String>,
    ok: bool,
    elapsed: Duration,
}

impl Run {
    /// The address-space limit for other runs: this run's peak (VmPeak, KiB) plus the margin.
    fn limit(&self) -> u64 {
        let peak: u64 = self
            .lines
            .iter()
            .find_map(|l| l.strip_prefix("peak "))
            .unwrap()
            .parse()
            .unwrap();
        peak * 1024 + MARGIN
    }
}

/// Runs the child on `dir` under an address-space limit (bytes; 0: none).
fn run_child(dir: &Path, limit: u64) -> Run {
    run_child_with(dir, limit, &[])
}

fn run_child_with(dir: &Path, limit: u64, env: &[(&str, &str)]) -> Run {
    let start = Instant::now();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if limit > 0 {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let rl = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &rl) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = start + TIME_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ok = status.is_some_and(|s| s.success());
    if !ok {
        eprintln!(
            "child on {} failed ({status:?}):\n{text}\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Run {
        lines: text
            .lines()
            .filter(|l| !l.starts_with("running") && !l.is_empty())
            .map(String::from)
            .collect(),
        ok,
        elapsed: start.elapsed(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A copy of `valid` whose config.json has `changes` applied.
fn variant(valid: &Path, out: &Path, name: &str, changes: &[(&str, Value)]) -> PathBuf {
    let dir = out.join(name);
    copy_dir(valid, &dir);
    let path = dir.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (k, v) in changes {
        cfg[*k] = v.clone();
    }
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    dir
}

/// The demo checkpoint (TDB layout).
fn demo() -> PathBuf {
    common::data_dir(
        "MC_DEMO_DIR",
        "data/demo",
        "scripts/make_checkpoint.py --preset demo",
    )
}

const HUGE: [i64; 4] = [2_147_483_647, 1 << 40, 1_000_000_000_000, i64::MAX];

#[test]
fn lying_configs_get_errors_within_the_valid_checkpoints_limits() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let demo = demo();
    let hf = common::data_dir(
        "MC_HF_GOLDEN_DIR",
        "data/hf_golden",
        "scripts/gen_hf_golden.py",
    )
    .join("tied_f32")
    .join("hf_safetensors");
    let tmp = tempfile::tempdir().unwrap();
    // Each variant with the config keys it lies about: its first error must name one.
    let mut variants: Vec<(String, PathBuf, Vec<&str>)> = Vec::new();
    for (layout, valid, keys) in [
        (
            "tdb",
            &demo,
            &["n_layers", "ctx_window", "d_model", "n_heads"][..],
        ),
        (
            "hf",
            &hf,
            &[
                "n_layer",
                "n_positions",
                "n_embd",
                "n_head",
                "n_inner",
                "vocab_size",
            ][..],
        ),
    ] {
        for key in keys {
            for v in HUGE {
                let name = format!("{layout}-{key}-{v}");
                variants.push((
                    name.clone(),
                    variant(valid, tmp.path(), &name, &[(key, v.into())]),
                    vec![key],
                ));
            }
        }
        let (layers, width) = if layout == "tdb" {
            ("n_layers", "d_model")
        } else {
            ("n_layer", "n_embd")
        };
        let name = format!("{layout}-many-layers-wide");
        variants.push((
            name.clone(),
            variant(
                valid,
                tmp.path(),
                &name,
                &[(layers, (1i64 << 40).into()), (width, (1i64 << 20).into())],
            ),
            vec![layers, width],
        ));
    }
    // What the calls need on the valid checkpoints, plus a margin, is every variant's limit.
    let mut limit = 0;
    for valid in [&demo, &hf] {
        let run = run_child(valid, 0);
        assert!(run.ok, "the valid checkpoint {} failed", valid.display());
        assert!(
            run.lines
                .iter()
                .all(|l| !l.contains(" MC_ERR_") || l.starts_with("weight.")),
            "{:?}",
            run.lines
        );
        limit = limit.max(run.limit());
    }
    eprintln!("address-space limit per variant: {} MiB", limit >> 20);
    for (name, dir, keys) in &variants {
        let run = run_child(dir, limit);
        assert!(run.ok, "{name}: the child aborted, crashed or hit a limit");
        assert!(run.elapsed < TIME_LIMIT, "{name}: took {:?}", run.elapsed);
        let calls: Vec<&String> = run
            .lines
            .iter()
            .filter(|l| !l.starts_with("peak "))
            .collect();
        assert!(!calls.is_empty(), "{name}: no call reported");
        let failures: Vec<&&String> = calls.iter().filter(|l| l.contains(" MC_ERR_")).collect();
        assert!(
            !failures.is_empty(),
            "{name}: a lying config was accepted everywhere: {calls:?}"
        );
        for f in &failures {
            let (_, msg) = f.split_once(" MC_ERR_").unwrap();
            assert!(
                msg.split_once(' ').is_some_and(|(_, m)| m.len() > 10),
                "{name}: an error without a message: {f}"
            );
            assert!(
                !msg.starts_with("PANIC") && !msg.starts_with("INTERNAL"),
                "{name}: {f}"
            );
        }
        // A false claim is a format error (a vocabulary the encoding cannot have, unsupported)
        // that names the key.
        let first = failures[0];
        assert!(
            first.contains(" MC_ERR_FORMAT ") || first.contains(" MC_ERR_UNSUPPORTED "),
            "{name}: {first}"
        );
        assert!(
            keys.iter().any(|k| first.contains(k)),
            "{name}: the first error names none of {keys:?}: {first}"
        );
        eprintln!(
            "{name}: {} calls, first failure: {}",
            calls.len(),
            failures[0].chars().take(160).collect::<String>()
        );
    }
}

/// A forward request needing far more memory than the limit (16384 full rows: about 400 GB of
/// logits) is MC_ERR_OUT_OF_MEMORY, and the same context answers a small request afterwards.
#[test]
fn a_request_past_the_address_space_is_out_of_memory_and_the_context_recovers() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let demo = demo();
    let run = run_child_with(
        &demo,
        run_child(&demo, 0).limit(),
        &[("MC_HOSTILE_CHILD_OOM", "1")],
    );
    assert!(run.ok, "the child aborted: {:?}", run.lines);
    let big = run
        .lines
        .iter()
        .find(|l| l.contains("forward.16384 "))
        .unwrap();
    assert!(
        big.contains(" MC_ERR_OUT_OF_MEMORY ") && big.contains("allocate"),
        "{big}"
    );
    let small = run.lines.iter().find(|l| l.contains("forward.1 ")).unwrap();
    assert!(small.contains(" MC_OK"), "{small}");
    let big = run
        .lines
        .iter()
        .find(|l| l.contains("decode.40000000 "))
        .unwrap();
    assert!(
        big.contains(" MC_ERR_OUT_OF_MEMORY ") && big.contains("bytes of decoded text"),
        "{big}"
    );
    let small = run.lines.iter().find(|l| l.contains("decode.3 ")).unwrap();
    assert!(small.contains(" MC_OK"), "{small}");
}

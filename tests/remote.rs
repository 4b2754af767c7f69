//! Remote checkpoints against a real HTTP server on loopback that each test starts and stops:
//! lazy fetching, the cache, fault injection (404, dropped connections, short bodies, 500s
//! that recover, corrupt bodies), offline mode, named models through a mirror, the C
//! options, and two processes fetching at once.
mod common;
use model_context::ffi::*;
use model_context::source::fetch::{checkpoint_dir, RetryPolicy};
use model_context::source::{Progress, SourceOptions};
use model_context::{
    Device, ErrorKind, ModelContext, OpenOptions, StandardModelContext, WeightLocation,
};
use model_context_formats::{tensor_pt_bytes, DType};
use std::collections::{HashMap, VecDeque};
use std::ffi::{c_char, c_void, CStr, CString};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

// ---- the test server ------------------------------------------------------------------------

/// What the server does instead of serving a file, once per request, in order.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// An empty response with this status.
    Status(u16),
    /// The right Content-Length, half the body, then the connection is closed.
    DropMidBody,
    /// A Content-Length larger than the body, the whole body, then the connection is closed.
    ShortBody,
    /// The right length of garbage.
    Garbage,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    faults: HashMap<String, VecDeque<Fault>>,
    /// Every request path, in order.
    log: Vec<String>,
    /// Pause between 4 KiB chunks of a body (to make concurrent downloads overlap).
    chunk_delay: Duration,
}

/// An HTTP/1.1 server on 127.0.0.1 serving `State::files`; stopped and joined on drop.
struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(files: HashMap<String, Vec<u8>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            files,
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut workers = Vec::new();
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let st = st.clone();
                    workers.push(std::thread::spawn(move || serve(conn, &st)));
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Server {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn fault(&self, path: &str, faults: &[Fault]) {
        let mut s = self.state.lock().unwrap();
        s.faults
            .entry(path.to_string())
            .or_default()
            .extend(faults.iter().copied());
    }

    fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    fn requests_for(&self, path: &str) -> usize {
        self.log().iter().filter(|p| *p == path).count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (fault, body, delay) = {
        let mut s = state.lock().unwrap();
        s.log.push(path.clone());
        let fault = s.faults.get_mut(&path).and_then(|q| q.pop_front());
        (fault, s.files.get(&path).cloned(), s.chunk_delay)
    };
    let mut conn = conn;
    let head = |status: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
    };
    let _ = match (fault, body) {
        (Some(Fault::Status(code)), _) => {
            conn.write_all(head(&format!("{code} Injected"), 0).as_bytes())
        }
        (_, None) => conn.write_all(head("404 Not Found", 0).as_bytes()),
        (Some(Fault::DropMidBody), Some(b)) => conn
            .write_all(head("200 OK", b.len()).as_bytes())
            .and_then(|()| conn.write_all(&b[..b.len() / 2])),
        (Some(Fault::ShortBody), Some(b)) => conn
            .write_all(head("200 OK", b.len() + 1000).as_bytes())
            .and_then(|()| conn.write_all(&b)),
        (Some(Fault::Garbage), Some(b)) => conn
            .write_all(head("200 OK", b.len()).as_bytes())
            .and_then(|()| conn.write_all(&vec![0x5a; b.len()])),
        (None, Some(b)) => conn
            .write_all(head("200 OK", b.len()).as_bytes())
            .and_then(|()| {
                for chunk in b.chunks(4096) {
                    conn.write_all(chunk)?;
                    if !delay.is_zero() {
                        std::thread::sleep(delay);
                    }
                }
                Ok(())
            }),
    };
    let _ = conn.flush();
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

// ---- a generated checkpoint -----------------------------------------------------------------

const CONFIG: &str = r#"{"d_model": 8, "n_layers": 2, "n_heads": 2, "ctx_window": 4}"#;

/// The TDB checkpoint's files under `prefix` (e.g. "/ckpt"): config.json and every piece,
/// written by this crate's `.pt` writer with values that differ per piece.
fn checkpoint(prefix: &str) -> HashMap<String, Vec<u8>> {
    let config = model_context::config::Config::from_json(CONFIG, "test").unwrap();
    let mut files = HashMap::new();
    files.insert(format!("{prefix}/config.json"), CONFIG.as_bytes().to_vec());
    for (i, (key, shape)) in model_context::schema::layout::pieces(&config, 50257).enumerate() {
        let n: i64 = shape.iter().product();
        let data: Vec<u8> = (0..n)
            .flat_map(|j| ((i as f32) + (j % 97) as f32 * 0.01).to_le_bytes())
            .collect();
        let bytes = tensor_pt_bytes(DType::F32, &shape, &data).unwrap();
        files.insert(format!("{prefix}/model_pieces/{key}.pt"), bytes);
    }
    files
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(10),
    }
}

fn options(cache: &Path) -> OpenOptions {
    OpenOptions {
        device: Some(Device::Cpu),
        source: SourceOptions {
            cache_dir: Some(cache.to_path_buf()),
            retry: fast_retry(),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The raw piece bytes, as a tensor's contiguous bytes, for comparisons.
fn piece_values(files: &HashMap<String, Vec<u8>>, path: &str) -> Vec<u8> {
    match model_context_formats::load_pt_bytes(files[path].clone(), path).unwrap() {
        model_context_formats::PtValue::Tensor(t) => t.to_contiguous_bytes(),
        _ => panic!("not a tensor"),
    }
}

fn tensor_bytes(t: &tch::Tensor) -> Vec<u8> {
    let c = t.contiguous();
    let n = c.numel() * c.kind().elt_size_in_bytes();
    // SAFETY: `c` is contiguous with `n` bytes and lives across the copy.
    unsafe { std::slice::from_raw_parts(c.data_ptr() as *const u8, n).to_vec() }
}

// ---- tests ----------------------------------------------------------------------------------

#[test]
fn cold_open_fetches_only_needed_pieces_and_a_second_open_makes_no_request() {
    let files = checkpoint("/ckpt");
    let server = Server::start(files.clone());
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/ckpt");
    type Report = (String, u64, Option<u64>);
    let reports: Arc<Mutex<Vec<Report>>> = Default::default();
    let mut opts = options(cache.path());
    let r = reports.clone();
    opts.source.progress = Some(Progress(Arc::new(move |what: &str, done, total| {
        r.lock().unwrap().push((what.to_string(), done, total))
    })));

    let ctx = StandardModelContext::open(&url, &opts).unwrap();
    assert_eq!(
        server.log(),
        ["/ckpt/config.json"],
        "open reads config.json only"
    );
    assert_eq!(ctx.n_layers().unwrap(), 2);
    let emb = ctx
        .get_weight(WeightLocation::Embedding, None, None, None)
        .unwrap();
    assert_eq!(
        server.log(),
        [
            "/ckpt/config.json",
            "/ckpt/model_pieces/tok_embed.weight.pt"
        ]
    );
    assert_eq!(
        tensor_bytes(&emb.tensor),
        piece_values(&files, "/ckpt/model_pieces/tok_embed.weight.pt")
    );
    // Progress: the last report of the piece has every byte, against the server's length.
    let len = files["/ckpt/model_pieces/tok_embed.weight.pt"].len() as u64;
    let last = reports
        .lock()
        .unwrap()
        .iter()
        .rfind(|(w, _, _)| w.contains("tok_embed.weight"))
        .cloned()
        .unwrap();
    assert_eq!((last.1, last.2), (len, Some(len)));
    assert!(
        reports.lock().unwrap().len() >= 4,
        "start and end of two files"
    );
    ctx.get_weight(WeightLocation::AttnToQuery, Some(1), None, None)
        .unwrap();
    assert_eq!(server.log().len(), 3);
    assert_eq!(
        server.log()[2],
        "/ckpt/model_pieces/xf_layers.1.attn.q_proj.weight.pt"
    );
    drop(ctx);

    // A second context over the same cache: no request at all, same values.
    let before = server.log().len();
    let ctx = StandardModelContext::open(&url, &opts).unwrap();
    let again = ctx
        .get_weight(WeightLocation::Embedding, None, None, None)
        .unwrap();
    ctx.get_weight(WeightLocation::AttnToQuery, Some(1), None, None)
        .unwrap();
    assert_eq!(
        server.log().len(),
        before,
        "the cache must serve everything it has"
    );
    assert_eq!(tensor_bytes(&again.tensor), tensor_bytes(&emb.tensor));
    // A trailing slash names the same checkpoint (and the same cache folder).
    StandardModelContext::open(&format!("{url}/"), &opts).unwrap();
    assert_eq!(server.log().len(), before);

    let dir = checkpoint_dir(cache.path(), &url);
    assert_eq!(
        files_under(&dir),
        [
            "config.json",
            "model_pieces/tok_embed.weight.pt",
            "model_pieces/xf_layers.1.attn.q_proj.weight.pt"
        ]
    );
    assert_eq!(
        files_under(cache.path()).len(),
        3,
        "nothing outside the checkpoint folder"
    );
}

#[test]
fn faults_are_retried_or_reported_and_never_cached() {
    let files = checkpoint("/ckpt");
    let server = Server::start(files.clone());
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/ckpt");
    let opts = options(cache.path());
    let ctx = StandardModelContext::open(&url, &opts).unwrap();
    let dir = checkpoint_dir(cache.path(), &url);
    let piece = |key: &str| format!("/ckpt/model_pieces/{key}.pt");
    let get = |loc, layer| ctx.get_weight(loc, layer, None, None);

    // A 500 that recovers on the third try: success, three requests.
    let p = piece("pos_embed.weight");
    server.fault(&p, &[Fault::Status(500), Fault::Status(503)]);
    let w = get(WeightLocation::PositionEmbedding, None).unwrap();
    assert_eq!(tensor_bytes(&w.tensor), piece_values(&files, &p));
    assert_eq!(server.requests_for(&p), 3);

    // A connection dropped mid-body once, then a good body: retried, success.
    let p = piece("final_ln.bias");
    server.fault(&p, &[Fault::DropMidBody]);
    get(WeightLocation::LayerNormBiasFinal, None).unwrap();
    assert_eq!(server.requests_for(&p), 2);

    // A 404: a clear NotFound at once (no retry), nothing cached.
    let p = piece("final_ln.weight");
    server.fault(&p, &[Fault::Status(404)]);
    let e = get(WeightLocation::LayerNormGainFinal, None).err().unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound, "{}", e.message);
    assert!(
        e.message.contains("HTTP 404") && e.message.contains(&p),
        "{}",
        e.message
    );
    assert_eq!(server.requests_for(&p), 1);
    // The failure is not cached: the next call asks again and succeeds.
    get(WeightLocation::LayerNormGainFinal, None).unwrap();
    assert_eq!(server.requests_for(&p), 2);

    // Connections dropped mid-body every time: a Network error after the bounded retries.
    let p = piece("xf_layers.0.ln_1.weight");
    server.fault(&p, &[Fault::DropMidBody; 3]);
    let e = get(WeightLocation::LayerNormGainPreAttn, Some(0))
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Network, "{}", e.message);
    assert!(e.message.contains("failed 3 time(s)"), "{}", e.message);
    assert!(
        e.message.contains("connection failed after"),
        "{}",
        e.message
    );
    assert_eq!(server.requests_for(&p), 3);
    assert!(!dir.join("model_pieces/xf_layers.0.ln_1.weight.pt").exists());
    get(WeightLocation::LayerNormGainPreAttn, Some(0)).unwrap();

    // Bodies shorter than their Content-Length every time: a Network error naming the lengths.
    let p = piece("xf_layers.0.ln_2.weight");
    server.fault(&p, &[Fault::ShortBody; 3]);
    let e = get(WeightLocation::LayerNormGainPreMlp, Some(0))
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Network, "{}", e.message);
    let len = files[&p].len();
    assert!(
        e.message.contains(&format!("{len} of {}", len + 1000)),
        "{}",
        e.message
    );
    assert!(!dir.join("model_pieces/xf_layers.0.ln_2.weight.pt").exists());

    // 500s on every try: a Network error naming the status.
    let p = piece("xf_layers.1.ln_2.weight");
    server.fault(&p, &[Fault::Status(500); 3]);
    let e = get(WeightLocation::LayerNormGainPreMlp, Some(1))
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Network);
    assert!(e.message.contains("HTTP 500"), "{}", e.message);

    // A body of the right length that is not a .pt file: a Format error, nothing cached.
    let p = piece("xf_layers.1.ln_1.weight");
    server.fault(&p, &[Fault::Garbage]);
    let e = get(WeightLocation::LayerNormGainPreAttn, Some(1))
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Format, "{}", e.message);
    assert!(e.message.contains("not usable"), "{}", e.message);
    assert!(!dir.join("model_pieces/xf_layers.1.ln_1.weight.pt").exists());
    get(WeightLocation::LayerNormGainPreAttn, Some(1)).unwrap();

    // The cache holds only complete, valid pieces: no temporary file was left behind, and
    // every cached piece is byte for byte what the server holds.
    let cached = files_under(&dir);
    assert!(cached.iter().all(|f| !f.contains(".tmp")), "{cached:?}");
    for f in cached.iter().filter(|f| f.ends_with(".pt")) {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            files[&format!("/ckpt/{f}")],
            "{f}"
        );
    }
    assert_eq!(
        cached,
        [
            "config.json",
            "model_pieces/final_ln.bias.pt",
            "model_pieces/final_ln.weight.pt",
            "model_pieces/pos_embed.weight.pt",
            "model_pieces/xf_layers.0.ln_1.weight.pt",
            "model_pieces/xf_layers.1.ln_1.weight.pt"
        ]
    );
}

#[test]
fn offline_mode_reads_the_cache_only_and_names_what_is_missing() {
    let server = Server::start(checkpoint("/ckpt"));
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/ckpt");
    let mut opts = options(cache.path());
    opts.source.offline = true;
    let e = StandardModelContext::open(&url, &opts).err().unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(
        e.message.contains("config.json") && e.message.contains("offline"),
        "{}",
        e.message
    );
    assert!(server.log().is_empty());

    // Warm the cache online, then offline: cached pieces work, a missing one is named.
    opts.source.offline = false;
    let ctx = StandardModelContext::open(&url, &opts).unwrap();
    ctx.get_weight(WeightLocation::Embedding, None, None, None)
        .unwrap();
    let requests = server.log().len();
    opts.source.offline = true;
    let ctx = StandardModelContext::open(&url, &opts).unwrap();
    ctx.get_weight(WeightLocation::Embedding, None, None, None)
        .unwrap();
    let e = ctx
        .get_weight(WeightLocation::Unembedding, None, None, None)
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(
        e.message.contains("piece `unembed.weight`"),
        "{}",
        e.message
    );
    assert!(e.message.contains("offline"), "{}", e.message);
    assert_eq!(server.log().len(), requests, "offline mode made a request");
}

#[test]
fn named_models_resolve_against_the_base_url_and_unreachable_servers_fail_clearly() {
    let server = Server::start(checkpoint("/mirror/gpt2/small"));
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path());
    opts.source.base_url = Some(server.url("/mirror/"));
    let ctx = StandardModelContext::open("gpt2-small", &opts).unwrap();
    assert_eq!(
        ctx.get_dim_size(model_context::Dimension::ResidualStreamChannels)
            .unwrap(),
        8
    );
    assert_eq!(server.log(), ["/mirror/gpt2/small/config.json"]);
    // A name the mirror lacks is a NotFound naming the model and the URL.
    let e = StandardModelContext::open("gpt2-xl", &opts).err().unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound, "{}", e.message);
    assert!(
        e.message.contains("gpt2-xl") && e.message.contains("/mirror/gpt2/xl/config.json"),
        "{}",
        e.message
    );
    // A base URL that is not http(s) is refused.
    opts.source.base_url = Some("ftp://example.invalid".into());
    let e = StandardModelContext::open("gpt2-small", &opts)
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{}", e.message);
    drop(server);

    // Nothing listens on this port any more: a Network error after the retries.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = StandardModelContext::open(
        &format!("http://127.0.0.1:{port}/x"),
        &options(cache.path()),
    )
    .err()
    .unwrap();
    assert_eq!(e.kind, ErrorKind::Network, "{}", e.message);
    assert!(e.message.contains("config.json"), "{}", e.message);
}

#[test]
fn two_processes_fetching_the_same_model_at_once_both_succeed() {
    let files = checkpoint("/base/gpt2/small");
    let server = Server::start(files.clone());
    // Slow bodies, so both processes are downloading the same pieces at the same time.
    server.state.lock().unwrap().chunk_delay = Duration::from_millis(2);
    let cache = tempfile::tempdir().unwrap();
    let outs = tempfile::tempdir().unwrap();
    // The environment variables carry the cache folder and the mirror (no options given).
    let children: Vec<_> = (0..2)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_mc-convert"))
                .args(["--quiet", "gpt2-small"])
                .arg(outs.path().join(format!("out{i}")))
                .env("MC_MODEL_CACHE_DIR", cache.path())
                .env("MC_MODEL_BASE_URL", server.url("/base"))
                .env_remove("MC_OFFLINE")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = checkpoint_dir(cache.path(), &server.url("/base/gpt2/small"));
    let cached = files_under(&dir);
    assert_eq!(cached.len(), files.len(), "{cached:?}");
    for f in &cached {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            files[&format!("/base/gpt2/small/{f}")],
            "{f}"
        );
    }
    for i in 0..2 {
        let out = outs.path().join(format!("out{i}/model_pieces"));
        for (path, _) in files.iter().filter(|(p, _)| p.ends_with(".pt")) {
            let name = path.rsplit('/').next().unwrap();
            let got = model_context_formats::load_tensor(&out.join(name)).unwrap();
            assert_eq!(
                got.to_contiguous_bytes(),
                piece_values(&files, path),
                "out{i} {name}"
            );
        }
    }
    // Each process fetched what it needed; at most twice per file in all.
    let log = server.log();
    assert!(
        log.len() >= files.len() && log.len() <= 2 * files.len(),
        "{} requests",
        log.len()
    );
}

// ---- the C options --------------------------------------------------------------------------

unsafe extern "C" fn count_progress(user: *mut c_void, what: *const c_char, done: u64, total: u64) {
    let counters = &*(user as *const [AtomicU64; 2]);
    counters[0].fetch_add(1, Ordering::SeqCst);
    if done == total
        && CStr::from_ptr(what)
            .to_string_lossy()
            .contains("config.json")
    {
        counters[1].store(total, Ordering::SeqCst);
    }
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

#[test]
fn c_open_options_carry_cache_mirror_offline_and_progress() {
    let files = checkpoint("/m/gpt2/medium");
    let server = Server::start(files.clone());
    let cache = tempfile::tempdir().unwrap();
    let cache_c = c(cache.path().to_str().unwrap());
    let base = c(&server.url("/m"));
    let counters = [AtomicU64::new(0), AtomicU64::new(0)];
    let mut opts = common::init(mc_open_options_init);
    opts.device = c"cpu".as_ptr();
    opts.cache_dir = cache_c.as_ptr();
    opts.base_url = base.as_ptr();
    opts.progress = Some(count_progress);
    opts.progress_user_data = &counters as *const _ as *mut c_void;
    let mut ctx = std::ptr::null_mut();
    let s = unsafe { mc_open_ex(c"gpt2-medium".as_ptr(), &opts, &mut ctx) };
    assert_eq!(s, MC_OK, "{}", unsafe {
        CStr::from_ptr(mc_last_error()).to_string_lossy()
    });
    assert!(counters[0].load(Ordering::SeqCst) >= 2);
    assert_eq!(counters[1].load(Ordering::SeqCst), CONFIG.len() as u64);
    assert!(checkpoint_dir(cache.path(), &server.url("/m/gpt2/medium"))
        .join("config.json")
        .is_file());
    unsafe { mc_free(ctx) };

    // Offline with an empty cache: MC_ERR_NOT_FOUND, out untouched, no request.
    let empty = tempfile::tempdir().unwrap();
    let empty_c = c(empty.path().to_str().unwrap());
    opts.cache_dir = empty_c.as_ptr();
    opts.offline = true;
    let requests = server.log().len();
    let sentinel = std::ptr::dangling_mut::<mc_context>();
    let mut out = sentinel;
    let s = unsafe { mc_open_ex(c"gpt2-medium".as_ptr(), &opts, &mut out) };
    assert_eq!(s, MC_ERR_NOT_FOUND);
    assert_eq!(out, sentinel);
    assert_eq!(server.log().len(), requests);

    // A struct_size below the 0.2 size (no caller of this rule can have one) is refused
    // before anything is read: no request reaches the server.
    let mut old = common::init(mc_open_options_init);
    old.struct_size = std::mem::offset_of!(mc_open_options, base_url) as u32;
    let requests = server.log().len();
    let url_c = c(&server.url("/m/gpt2/medium"));
    let mut out = sentinel;
    let s = unsafe { mc_open_ex(url_c.as_ptr(), &old, &mut out) };
    assert_eq!(s, MC_ERR_INVALID_ARGUMENT);
    assert_eq!(out, sentinel);
    assert!(unsafe { CStr::from_ptr(mc_last_error()).to_string_lossy() }
        .contains("`opts->struct_size` = 32, below 64"));
    assert_eq!(server.log().len(), requests);

    // Bad strings in the new fields are named.
    let mut bad = common::init(mc_open_options_init);
    let invalid = [0xffu8, 0];
    bad.base_url = invalid.as_ptr() as *const c_char;
    let s = unsafe { mc_open_ex(c"gpt2-small".as_ptr(), &bad, &mut ctx) };
    assert_eq!(s, MC_ERR_INVALID_ARGUMENT);
    assert!(unsafe { CStr::from_ptr(mc_last_error()).to_string_lossy() }.contains("opts.base_url"));
}

//! Loads every `model_pieces/*.pt` of a checkpoint with `load_tensor` and sums all elements
//! (float32), for `benches/bench_reader.py`.
//!
//! Usage: read_sum CHECKPOINT_DIR [REPETITIONS]
//! Prints one line per repetition: `rep <i> load_s <s> total_s <s> sum <x> elements <n> files <k>`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use model_context_formats::{load_tensor, DType, TensorRecord};

/// Sum of a float32 tensor with 16 independent accumulators (so the loop vectorizes).
fn sum_f32(t: &TensorRecord) -> f32 {
    let copy;
    let values: &[f32] = if t.is_contiguous() {
        // SAFETY: a validated contiguous f32 record has numel elements at data_ptr, aligned
        // to 4 bytes (mapped views are dtype-aligned, copies 64-aligned), and nobody writes.
        unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
    } else {
        copy = t
            .to_contiguous_bytes()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<f32>>();
        &copy
    };
    let mut lanes = [0f32; 16];
    let chunks = values.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .expect("usage: read_sum CHECKPOINT_DIR [REPETITIONS]"),
    );
    let reps: usize = args.next().map_or(1, |r| r.parse().expect("REPETITIONS"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("model_pieces"))
        .expect("read model_pieces")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pt"))
        .collect();
    files.sort();
    for rep in 0..reps {
        let start = Instant::now();
        let mut load = Duration::ZERO;
        let (mut total, mut elements) = (0f64, 0usize);
        for f in &files {
            let t0 = Instant::now();
            let t = load_tensor(f).unwrap_or_else(|e| panic!("{e}"));
            load += t0.elapsed();
            assert_eq!(
                t.dtype,
                DType::F32,
                "{}: only float32 pieces are summed",
                f.display()
            );
            total += f64::from(sum_f32(&t));
            elements += t.numel();
        }
        println!(
            "rep {rep} load_s {:.6} total_s {:.6} sum {total:.6} elements {elements} files {}",
            load.as_secs_f64(),
            start.elapsed().as_secs_f64(),
            files.len()
        );
    }
}

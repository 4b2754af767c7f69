"""What bench_perf.py and its halves share (no torch here: the llama.cpp half runs in a venv
without it): the rows, the seeded ids bench_perf.c also uses, and the timing loop."""
import statistics
import time

SHAPES = [(1, 128), (8, 128), (1, 1024)]
PROMPT, NEW_TOKENS = 32, 128
ROWS = [f"{b}x{t}_{lc}" for b, t in SHAPES for lc in ("all", "last")] + ["generate"]


def seeded(n):
    """The ids bench_perf.c uses: a 32-bit LCG modulo the vocabulary."""
    s, ids = 12345, []
    for _ in range(n):
        s = (s * 1103515245 + 12345) % 2**32
        ids.append(s % 50257)
    return ids


def samples(fn, reps, warmup=1):
    """Wall times of `fn` over `reps` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def timed(fn, reps):
    """Median wall time of `fn` over `reps` calls after one warm-up call."""
    return statistics.median(samples(fn, reps))

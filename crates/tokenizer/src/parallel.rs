//! Data parallelism on threads that live only for the call: a host process is never left with
//! library threads running (a persistent pool's threads outlive `mc_free` and show up in leak
//! checkers as thread blocks lost at exit). The calling thread works too; a helper that cannot
//! be spawned only means fewer helpers.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// The variable that caps the threads one call uses (default: the cores available).
pub const THREADS_VAR: &str = "MC_TOKENIZER_THREADS";

/// How many threads a parallel call uses: `MC_TOKENIZER_THREADS` if it is a positive number,
/// else the cores available to the process.
pub fn threads() -> usize {
    std::env::var(THREADS_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `items.iter().map(f).collect()`, with the items handed out one at a time to up to
/// `threads()` threads; the order of the results is that of the items. A panic in `f`
/// resumes on the calling thread.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = threads().min(items.len());
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    // Not `std::thread::scope`: it keeps a handle to the calling thread in that thread's
    // locals, which a C host's threads never free. The helpers borrow from this frame instead,
    // and `Helpers` joins every one before the frame ends, by return or by unwinding.
    let mut helpers = Helpers(Vec::with_capacity(workers - 1));
    for _ in 1..workers {
        // SAFETY: the thread borrows `next`, `items` and `f`, which outlive it: its handle is
        // in `helpers`, whose drop (or the loop below) joins it before they go out of scope.
        match unsafe { thread::Builder::new().spawn_unchecked(work) } {
            Ok(handle) => helpers.0.push(handle),
            Err(_) => break,
        }
    }
    let mut done = work();
    while let Some(handle) = helpers.0.pop() {
        match handle.join() {
            Ok(d) => done.extend(d),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    done.sort_unstable_by_key(|&(i, _)| i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Joins the helper threads still running when a parallel call ends early (a panic).
struct Helpers<R>(Vec<thread::JoinHandle<R>>);

impl<R> Drop for Helpers<R> {
    fn drop(&mut self) {
        for handle in self.0.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_the_order_of_the_items() {
        let items: Vec<u64> = (0..1000).collect();
        let out = super::map(&items, |&x| x * x);
        assert_eq!(out, items.iter().map(|x| x * x).collect::<Vec<_>>());
        assert!(super::map(&[] as &[u8], |&x| x).is_empty());
    }

    #[test]
    fn a_panic_reaches_the_caller_after_every_helper_ended() {
        let items: Vec<u32> = (0..64).collect();
        let caught = std::panic::catch_unwind(|| {
            super::map(&items, |&x| {
                assert!(x != 40, "item 40");
                x
            })
        });
        assert!(caught.is_err());
    }
}

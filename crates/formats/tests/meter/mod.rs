//! A counting global allocator for the hostile-input tests: how many heap bytes one call on
//! this thread held at its peak, so "bounded memory" is asserted exactly (tests run on their own
//! threads, so one test's allocations never count against another's). A test binary that uses
//! it declares `#[global_allocator] static METER: meter::Meter = meter::Meter;`.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// The system allocator, counting this thread's live bytes and their peak.
pub struct Meter;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    // try_with: a thread being torn down has no counters left; its frees are not counted.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + n;
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every call goes to the system allocator unchanged; the counters only observe.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        add(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// What one measured call cost.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// Most heap bytes held at once during the call, beyond what was held before it.
    pub peak_bytes: usize,
    pub elapsed: Duration,
}

/// Runs `f` on this thread and reports its result, heap peak and time.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Cost) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let start = Instant::now();
    let out = f();
    let elapsed = start.elapsed();
    let peak = PEAK.with(Cell::get) - base;
    (
        out,
        Cost {
            peak_bytes: peak.max(0) as usize,
            elapsed,
        },
    )
}

/// Asserts a cost is within `max_bytes` of heap and `max_time`, naming the input.
#[track_caller]
pub fn assert_bounded(what: &str, cost: Cost, max_bytes: usize, max_time: Duration) {
    assert!(
        cost.peak_bytes <= max_bytes,
        "{what}: held {} bytes at its peak (bound {max_bytes})",
        cost.peak_bytes
    );
    assert!(
        cost.elapsed <= max_time,
        "{what}: took {:?} (bound {max_time:?})",
        cost.elapsed
    );
}

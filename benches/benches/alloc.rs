//! A counting global allocator, so the sizes report can state bytes per idle credential and
//! allocations per hot-path call.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

/// Wraps the system allocator; counts only while enabled, so the timed benchmarks pay one
/// relaxed load of a flag that never changes while they run.
pub(crate) struct Counting;

static ENABLED: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; the counters are plain atomics and never touch the returned memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ENABLED.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same layout, forwarded to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ENABLED.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: `ptr` was allocated by `System` with this layout (all allocations go there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ENABLED.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's guarantees about `ptr`, `layout` and `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Live bytes and allocation count, as counted since counting was enabled.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counts {
    pub(crate) live_bytes: isize,
    pub(crate) allocations: usize,
}

/// Counts the allocations made while `f` runs (on any thread). Frees of memory allocated
/// before counting started are counted too, so hold what you want to measure until after.
pub(crate) fn measure<T>(f: impl FnOnce() -> T) -> (T, Counts) {
    let before = snapshot();
    ENABLED.store(true, Ordering::SeqCst);
    let out = f();
    ENABLED.store(false, Ordering::SeqCst);
    let after = snapshot();
    (
        out,
        Counts {
            live_bytes: after.live_bytes - before.live_bytes,
            allocations: after.allocations - before.allocations,
        },
    )
}

fn snapshot() -> Counts {
    Counts {
        live_bytes: LIVE_BYTES.load(Ordering::SeqCst),
        allocations: ALLOCATIONS.load(Ordering::SeqCst),
    }
}

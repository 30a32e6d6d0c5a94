//! The binary's allocator, mimalloc, the two defaults it departs from, and
//! the upkeep that gives memory back after a spike of connections.
//!
//! Under load glibc's malloc spent about a third of the server's CPU
//! consolidating and unlinking chunks (`perf`, see `BENCHMARKS.md`); mimalloc
//! is built for many small, short-lived allocations on several threads. The
//! library leaves this choice to embedders.
//!
//! The option numbers below are indices into mimalloc's `mi_option_t` enum,
//! which `libmimalloc-sys` does not name; they are the same in its v2 and v3
//! headers, and `Cargo.toml` pins the crate with `=` so that an upgrade is a
//! deliberate change, checked by the test that reads the options back.

use std::cell::Cell;
use std::time::{Duration, Instant};

use libmimalloc_sys::{mi_collect, mi_option_set, mi_option_set_default, mi_option_t};

/// The binary's global allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit`: commit a whole arena when it is reserved.
const MI_OPTION_ARENA_EAGER_COMMIT: mi_option_t = 4;
/// `mi_option_purge_delay`: milliseconds before freed memory goes back to the OS.
const MI_OPTION_PURGE_DELAY: mi_option_t = 15;

/// Freed memory goes back to the OS after a second of disuse instead of
/// mimalloc's 10 ms: purging at every burst cost fan-out a quarter of its
/// throughput and its p99.
const PURGE_DELAY_MS: std::os::raw::c_long = 1000;

/// Arenas are committed as they are used, not eagerly: eager commit made an
/// idle connection cost 12.5 KiB of RSS instead of 9.5, for no measurable
/// gain in throughput.
const ARENA_EAGER_COMMIT: std::os::raw::c_long = 0;

/// How often a worker thread collects its heap at most, and how often an
/// idle worker is woken so that it does. Matches the purge delay: memory
/// freed since the last collection has become purgeable by the next.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    /// When this thread last collected its heap.
    static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The runtime's `on_thread_park` hook: a worker about to sleep collects its
/// heap, at most once per [`COLLECT_EVERY`].
///
/// mimalloc frees a block from another thread onto its page's cross-thread
/// list, and only the page's owner turns such pages back into free memory
/// and purges it after the delay; it does so when it allocates or collects.
/// A worker that goes idle after 10,000 connections closed does neither, so
/// without this the server kept its peak (≈ 100 MiB) for ever. A
/// non-forced collection respects the purge delay: what was freed less than
/// a second ago is purged by the next one, so a busy worker does not purge
/// at every burst (which cost fan-out a quarter of its throughput at a 10 ms
/// delay).
pub(crate) fn collect_when_parking() {
    let now = Instant::now();
    if LAST_COLLECT.get().is_some_and(|last| now.duration_since(last) < COLLECT_EVERY) {
        return;
    }
    LAST_COLLECT.set(Some(now));
    // SAFETY: collects the calling thread's own heap; takes no pointers.
    unsafe { mi_collect(false) };
}

/// Wakes the workers once per [`COLLECT_EVERY`] for ever: a worker parked
/// with nothing to do wakes only for work, and the pages it freed before
/// parking are purged only by its next collection. Each tick spawns an empty
/// task per worker (an idle worker that finds one wakes the next), and each
/// worker collects as it parks again (at most one wake-up per worker per
/// second on an idle server).
pub(crate) async fn wake_workers() {
    let mut tick = tokio::time::interval(COLLECT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for _ in 0..tokio::runtime::Handle::current().metrics().num_workers() {
            drop(tokio::spawn(async {}));
        }
    }
}

/// Applies the defaults that may be set once the program runs; each
/// `MIMALLOC_*` environment variable still wins.
pub(crate) fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a documented option of the allocator in use; takes a plain integer.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// mimalloc reserves its first arena at the first allocation, before `main`,
/// so the arena default is set by a constructor that runs before the Rust
/// runtime allocates anything (ELF `.init_array`).
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static EARLY_ALLOCATOR_DEFAULTS: extern "C" fn() = early_allocator_defaults;

/// Only sets a default: `MIMALLOC_ARENA_EAGER_COMMIT` in the environment
/// still wins, and nothing here allocates.
#[cfg(target_os = "linux")]
extern "C" fn early_allocator_defaults() {
    // SAFETY: sets the default of a documented option of the allocator in use; takes a plain integer.
    unsafe { mi_option_set_default(MI_OPTION_ARENA_EAGER_COMMIT, ARENA_EAGER_COMMIT) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_read_back_as_set() {
        tune();
        // SAFETY: reads documented options of the allocator in use.
        let (purge, eager) = unsafe {
            (
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT),
            )
        };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge, PURGE_DELAY_MS, "option 15 is the purge delay");
        }
        #[cfg(target_os = "linux")]
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            assert_eq!(eager, ARENA_EAGER_COMMIT, "option 4 is arena eager commit, set before the first allocation");
        }
        let _ = eager;
    }

    #[test]
    fn a_parking_thread_collects_at_most_once_a_second() {
        std::thread::spawn(|| {
            collect_when_parking();
            let first = LAST_COLLECT.get().expect("the first park collects");
            collect_when_parking();
            assert_eq!(LAST_COLLECT.get(), Some(first), "a second park within the second does not");
        })
        .join()
        .unwrap();
    }
}

//! Allocator settings for finite runs.
//!
//! mimalloc hands memory freed by the program back to the system (a "purge") once it has not been
//! reused for a while (`purge_delay`, 1 s by default). A run that ends when its input ends
//! (`run --until-end`, which `bench job` runs) frees and allocates each batch's containers over
//! and over; its purged memory was faulted in and zeroed again page by page, which took about a
//! tenth of its time. Such a run keeps its freed memory for reuse instead: all of it goes back
//! when the process exits a moment later. Long-running commands keep the default, so a server
//! returns memory after a burst. An explicit `MIMALLOC_PURGE_DELAY` in the environment wins.

#[cfg(test)]
use libmimalloc_sys::mi_option_get;
use libmimalloc_sys::{mi_option_set, mi_option_t, mi_process_info};

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, the same in mimalloc 2 and 3;
/// the bindings do not name it).
const PURGE_DELAY: mi_option_t = 15;

/// Never purge: memory freed is kept for reuse until the process exits. Does nothing when
/// `MIMALLOC_PURGE_DELAY` is set.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    set_purge_delay(-1);
}

fn set_purge_delay(ms: i64) {
    #[allow(unsafe_code)]
    // SAFETY: mi_option_set stores an integer in mimalloc's option table; it may be called at any
    // time from any thread, and every value is valid for the purge delay (-1 = never).
    unsafe {
        mi_option_set(PURGE_DELAY, ms as _);
    }
}

/// The most memory mimalloc has had committed at once in this process, in bytes: the
/// allocator's peak, which (unlike the resident set) does not include the binary, thread
/// stacks or the kernel's accounting of mapped files.
pub fn peak_committed_bytes() -> Option<u64> {
    let mut peak: usize = 0;
    #[allow(unsafe_code)]
    // SAFETY: mi_process_info writes only through the non-null out-pointers it is given (each
    // may be null); `peak` outlives the call.
    unsafe {
        mi_process_info(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut peak,
            std::ptr::null_mut(),
        );
    }
    u64::try_from(peak).ok().filter(|&p| p > 0)
}

/// The purge delay now in force, in ms (-1: never).
#[cfg(test)]
fn purge_delay() -> i64 {
    #[allow(unsafe_code)]
    // SAFETY: mi_option_get reads an integer from mimalloc's option table.
    let ms = unsafe { mi_option_get(PURGE_DELAY) };
    // A C long: 64 bits here, 32 on some targets.
    #[allow(clippy::useless_conversion)]
    i64::from(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_the_purge_delay() {
        // Option 15 holds mimalloc 3's purge delay default (1000 ms), or what the environment
        // says: it is the purge delay and not a neighbour.
        let configured = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        assert_eq!(purge_delay(), configured);
        set_purge_delay(-1);
        assert_eq!(purge_delay(), -1);
        set_purge_delay(configured);
        assert_eq!(purge_delay(), configured);
    }
}

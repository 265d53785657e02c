//! Bytes kept for a long time, allocated in an allocator heap of their own.
//!
//! A user's awake state is thousands of small values, all freed when it goes to sleep. What it
//! keeps asleep (its entry among the known users, with its packed form) used to be allocated
//! among them, in the same allocator pages: one value that stays keeps its whole page from being
//! given back. A million users gone to sleep held about 290 bytes each more than the same users
//! after a restart (BENCHMARKS.md). A heap of their own keeps the long-lived bytes together.
//!
//! The heap is mimalloc's, whatever the global allocator is (jemalloc in the `vevee` binary, the
//! system's in tests): its heaps allocate from any thread, and `mi_free` frees a block of any
//! heap.

use libmimalloc_sys::{mi_free, mi_heap_malloc, mi_heap_new, mi_heap_t};
use std::ptr::NonNull;
use std::sync::OnceLock;

/// An immutable byte string in the long-lived heap, one pointer wide: its length is stored in
/// the block, in front of the bytes (a map of a million of them keeps 8 bytes less in each of
/// about two million buckets).
pub struct LongLived {
    ptr: NonNull<u8>,
}

/// The length in front of the bytes.
const LEN: usize = size_of::<u32>();

// SAFETY: the block is owned, never changed after `concat` returns, and freed once, by `Drop`;
// mimalloc frees a block from any thread.
unsafe impl Send for LongLived {}
unsafe impl Sync for LongLived {}

/// The heap, created on first use and never deleted (its address as an integer, since a raw
/// pointer is not `Sync`; mimalloc's heaps are safe to use from any thread).
fn heap() -> *mut mi_heap_t {
    static HEAP: OnceLock<usize> = OnceLock::new();
    // SAFETY: `mi_heap_new` takes no arguments; a null result is checked where it is used.
    *HEAP.get_or_init(|| unsafe { mi_heap_new() } as usize) as *mut mi_heap_t
}

impl LongLived {
    /// The concatenation of `parts`, at most 4 GiB.
    pub fn concat(parts: &[&[u8]]) -> LongLived {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let stored = u32::try_from(len).expect("long-lived byte strings are small");
        let heap = heap();
        // SAFETY: `heap` is a live heap (never deleted) when it is not null.
        let raw = if heap.is_null() {
            std::ptr::null_mut()
        } else {
            unsafe { mi_heap_malloc(heap, LEN + len) }
        };
        let Some(ptr) = NonNull::new(raw.cast::<u8>()) else {
            let layout = std::alloc::Layout::array::<u8>(LEN + len).expect("a small layout");
            std::alloc::handle_alloc_error(layout)
        };
        // SAFETY: the block holds `LEN + len` bytes; unaligned, since mimalloc's alignment is
        // not promised here.
        unsafe { ptr.as_ptr().cast::<u32>().write_unaligned(stored) };
        let mut at = LEN;
        for part in parts {
            // SAFETY: the block holds `LEN` bytes and then the sum of the parts' lengths, and is
            // new, so it overlaps no part.
            unsafe {
                ptr.as_ptr()
                    .add(at)
                    .copy_from_nonoverlapping(part.as_ptr(), part.len())
            };
            at += part.len();
        }
        LongLived { ptr }
    }
}

impl std::ops::Deref for LongLived {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the block holds its length and then that many initialized bytes (written in
        // `concat`) until `drop`.
        unsafe {
            let len = self.ptr.as_ptr().cast::<u32>().read_unaligned() as usize;
            std::slice::from_raw_parts(self.ptr.as_ptr().add(LEN), len)
        }
    }
}

impl Drop for LongLived {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `mi_heap_malloc` and is freed only here, once.
        unsafe { mi_free(self.ptr.as_ptr().cast()) }
    }
}

#[cfg(test)]
mod tests {
    use super::LongLived;

    #[test]
    fn bytes_are_the_parts_in_order_from_any_thread() {
        let kept = LongLived::concat(&[b"ab", b"", b"cde"]);
        assert_eq!(&*kept, b"abcde");
        let empty = LongLived::concat(&[]);
        assert!(empty.is_empty());
        // Made on one thread, read and freed on another.
        let other = std::thread::spawn(move || {
            assert_eq!(&*kept, b"abcde");
            drop(kept);
            LongLived::concat(&[&[7u8; 1000]])
        })
        .join()
        .unwrap();
        assert_eq!(other.len(), 1000);
        assert!(other.iter().all(|b| *b == 7));
    }
}

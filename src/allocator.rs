//! The process's allocator and its settings, declared by the `vevee` binary and by the
//! benchmarks that measure it (`vevee::global_allocator!();`), so that both run on the same one.
//! Tests keep the system's.
//!
//! jemalloc keeps far less of what the process freed than mimalloc, which vevee used before: a
//! million idle users took 576 MiB instead of 939, and through a 10M-consume soak the server sat
//! near 200 MiB instead of 330, its growth after the warm-up +52 MB by the floor instead of +80
//! (BENCHMARKS.md, ninth session). On the request path and in replay the two were within the
//! noise of alternating runs. glibc malloc spent a fifth of the CPU in a profile of the actors
//! bench.
//!
//! Its background threads give back freed memory. Without them jemalloc does so inside
//! allocation calls, and a replay, which allocates and frees a lot at once, took up to 1.7 times
//! as long. `_RJEM_MALLOC_CONF` in the environment overrides the settings.

#[doc(hidden)]
pub use tikv_jemallocator;

/// Declares jemalloc as the global allocator, with its settings.
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::tikv_jemallocator::Jemalloc =
            $crate::allocator::tikv_jemallocator::Jemalloc;

        // Read by jemalloc when it starts.
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static ALLOCATOR_CONF: Option<&'static std::ffi::c_char> =
            // SAFETY: a C string literal lives as long as the program.
            Some(unsafe { &*c"background_thread:true".as_ptr() });
    };
}

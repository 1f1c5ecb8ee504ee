#ifndef PACKMETER_SUPPORT_H
#define PACKMETER_SUPPORT_H

#include <stddef.h>

/// Hints the CPU to bring the cache line at `address` closer; never faults.
static inline void pm_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 3);
}

/// Hints a cache line that is about to be written.
static inline void pm_prefetch_write(const void *address) {
    __builtin_prefetch(address, 1, 3);
}

/// Allocates `bytes` for a large table: 2 MiB aligned and, where the kernel allows it,
/// backed by transparent huge pages, so random probes miss the TLB far less often.
/// Small requests are ordinary allocations. Free with `pm_free_table`.
void *pm_allocate_table(size_t bytes);
void pm_free_table(void *pointer);

/// Has the C allocator keep freed memory for reuse instead of handing it back to the
/// kernel: a streaming worker allocates and frees the same large buffers over and over
/// (librdkafka a fetch and a decompression buffer per response, the checkpoint copies),
/// and with glibc's defaults each round trip cost page faults and zeroing. Process-wide;
/// a no-op where the C library has no `mallopt`.
void pm_retain_freed_memory(void);

#endif

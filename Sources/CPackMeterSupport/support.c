#define _GNU_SOURCE
#include "packmeter_support.h"
#include <stdlib.h>
#include <sys/mman.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

enum { huge_page_bytes = 2 * 1024 * 1024 };

void *pm_allocate_table(size_t bytes) {
    if (bytes < huge_page_bytes) {
        return malloc(bytes > 0 ? bytes : 1);
    }
    size_t rounded = (bytes + huge_page_bytes - 1) / huge_page_bytes * huge_page_bytes;
    void *pointer = NULL;
    if (posix_memalign(&pointer, huge_page_bytes, rounded) != 0) {
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    madvise(pointer, rounded, MADV_HUGEPAGE);
#endif
    return pointer;
}

void pm_free_table(void *pointer) {
    free(pointer);
}

void pm_retain_freed_memory(void) {
#if defined(__GLIBC__)
    // Requests below 32 MiB (glibc's largest mmap threshold) come from the heap, so their
    // memory is reused after a free rather than unmapped; the heap's top is only trimmed
    // past 512 MiB free, and grows 16 MiB at a time.
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024);
    mallopt(M_TOP_PAD, 16 * 1024 * 1024);
#endif
}

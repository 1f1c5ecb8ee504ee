#define _GNU_SOURCE
#include "packmeter_support.h"
#include <stdlib.h>
#include <sys/mman.h>

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

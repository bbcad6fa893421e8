/* pylon_bigalloc.c: exact-size allocation for large blocks (payloads).
 *
 * Why this exists: zig's wasm libc malloc rounds every allocation up to a
 * power of two, so a 256 MiB payload (256 MiB + a header) takes 512 MiB of
 * linear memory, twice what the host limits were sized for. build_cap
 * compiles every cap with `-Dmalloc=pylon_malloc` (and free, realloc, calloc)
 * and links this file: requests of BIG_MIN bytes or more get whole 64 KiB
 * wasm pages of their own (waste < 64 KiB), everything smaller goes on to
 * the libc allocator. (A linker `--wrap` would be neater, but `zig cc` does
 * not pass it to wasm-ld.) Pointers from libc-internal allocations (strdup)
 * are small blocks, so pylon_free hands them to libc's free as it should. A freed large block is kept on a table and reused, merged
 * with free neighbours, or extended in place when it ends at the top of
 * memory, so a cap that serves many large calls does not keep growing.
 *
 * Single-threaded, like every cap instance. */
/* This file calls the real allocator: undo build_cap's renaming. */
#undef malloc
#undef free
#undef realloc
#undef calloc

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

size_t malloc_usable_size(void *ptr);

#define PAGE ((size_t)65536)
#define BIG_MIN ((size_t)1 << 20)
#define MAX_REGIONS 64 /* live + free large blocks; beyond it, libc malloc */

typedef struct {
    uintptr_t start;
    size_t pages;
    bool used;
} region;

static region regions[MAX_REGIONS];
static size_t nregions;

static size_t pages_for(size_t size) { return size / PAGE + (size % PAGE != 0); }

static uintptr_t memory_end(void) { return (uintptr_t)__builtin_wasm_memory_size(0) * PAGE; }

static size_t find_used(uintptr_t start) {
    for (size_t k = 0; k < nregions; k++)
        if (regions[k].used && regions[k].start == start)
            return k;
    return SIZE_MAX;
}

/* Removes slot k (the last slot moves into it). */
static void remove_slot(size_t k) { regions[k] = regions[--nregions]; }

/* Grows linear memory by `pages`; returns the old end, or 0 on failure. */
static uintptr_t grow(size_t pages) {
    if (pages > SIZE_MAX / PAGE)
        return 0;
    size_t old = __builtin_wasm_memory_grow(0, pages);
    return old == (size_t)-1 ? 0 : (uintptr_t)old * PAGE;
}

static void *big_alloc(size_t size) {
    size_t need = pages_for(size);
    region *best = NULL, *top = NULL;
    for (size_t k = 0; k < nregions; k++) {
        region *r = &regions[k];
        if (r->used)
            continue;
        if (r->pages >= need && (!best || r->pages < best->pages))
            best = r;
        if (r->start + r->pages * PAGE == memory_end())
            top = r;
    }
    if (best) {
        if (best->pages > need && nregions < MAX_REGIONS) /* split off the rest */
            regions[nregions++] = (region){best->start + need * PAGE, best->pages - need, false};
        else
            need = best->pages;
        best->pages = need;
        best->used = true;
        return (void *)best->start;
    }
    if (top) { /* a free block at the top of memory: grow it to size */
        if (!grow(need - top->pages))
            return NULL;
        top->pages = need;
        top->used = true;
        return (void *)top->start;
    }
    if (nregions == MAX_REGIONS)
        return NULL;
    uintptr_t start = grow(need);
    if (!start)
        return NULL;
    regions[nregions++] = (region){start, need, true};
    return (void *)start;
}

static void big_release(size_t i) {
    regions[i].used = false;
    for (size_t k = 0; k < nregions;) { /* merge with free neighbours */
        region *a = &regions[i], *b = &regions[k];
        if (k == i || b->used) {
            k++;
        } else if (b->start + b->pages * PAGE == a->start) { /* b, then a */
            b->pages += a->pages;
            remove_slot(i);
            i = (k == nregions) ? i : k; /* b was the last slot: now in slot i */
            k = 0;
        } else if (a->start + a->pages * PAGE == b->start) { /* a, then b */
            a->pages += b->pages;
            remove_slot(k);
            i = (i == nregions) ? k : i; /* a was the last slot: now in slot k */
            k = 0;
        } else {
            k++;
        }
    }
}

void *pylon_malloc(size_t size) {
    if (size >= BIG_MIN) {
        void *p = big_alloc(size);
        if (p)
            return p;
    }
    return malloc(size);
}

void pylon_free(void *ptr) {
    size_t i = ptr ? find_used((uintptr_t)ptr) : SIZE_MAX;
    if (i != SIZE_MAX)
        big_release(i);
    else
        free(ptr);
}

void *pylon_calloc(size_t n, size_t size) {
    if (size && n > SIZE_MAX / size)
        return NULL;
    size_t total = n * size;
    if (total < BIG_MIN)
        return calloc(n, size);
    void *p = pylon_malloc(total);
    if (p)
        memset(p, 0, total); /* a reused block is not zero */
    return p;
}

void *pylon_realloc(void *ptr, size_t size) {
    if (!ptr)
        return pylon_malloc(size);
    size_t i = find_used((uintptr_t)ptr);
    region *r = i != SIZE_MAX ? &regions[i] : NULL;
    size_t old_size;
    if (r) {
        old_size = r->pages * PAGE;
        if (size <= old_size)
            return ptr;
        if (r->start + old_size == memory_end() && grow(pages_for(size) - r->pages)) {
            r->pages = pages_for(size); /* at the top of memory: grow in place */
            return ptr;
        }
    } else {
        if (size < BIG_MIN)
            return realloc(ptr, size);
        old_size = malloc_usable_size(ptr);
    }
    void *fresh = pylon_malloc(size);
    if (!fresh)
        return NULL;
    memcpy(fresh, ptr, old_size < size ? old_size : size);
    pylon_free(ptr);
    return fresh;
}

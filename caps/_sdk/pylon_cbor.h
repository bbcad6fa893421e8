/* pylon_cbor.h: read and write the few CBOR (RFC 8949) items a cap replies with.
 *
 * For small fixed shapes: a cap that answers an integer, a byte or text
 * string, an array or map of those, a bool or null should not hand-encode
 * head bytes (0x82, 0xa1, 0x63 'e' 'r' 'r'...). A cap that takes or builds
 * arbitrary CBOR should use a real library (caps/cborcalc shows zcbor).
 *
 * Needs only libc, so any face of a cap may include it; pylon_cap.h (the
 * dynlink face's helpers) includes it and adds pylon_ok_cbor(), which hands
 * a finished buffer back as the reply. Everything is `static inline`: unused
 * helpers cost nothing.
 *
 * Writing: a pylon_cbor_out_t starts zeroed; each pylon_cbor_* call appends
 * one item (or, for arrays and maps, the head announcing the items that
 * follow). Memory comes from malloc/realloc; when it runs out the buffer is
 * freed, `failed` is set and later calls do nothing, so a cap writes its
 * whole reply and checks once at the end (pylon_ok_cbor answers
 * `limit-exceeded` then). Definite lengths only, shortest heads always (the
 * canonical form of RFC 8949, 4.2.1, for these items). */
#ifndef PYLON_CBOR_H
#define PYLON_CBOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* CBOR major types (the top 3 bits of an item's first byte). */
enum {
    PYLON_CBOR_UINT = 0,
    PYLON_CBOR_NEGINT = 1,
    PYLON_CBOR_BYTES = 2,
    PYLON_CBOR_TEXT = 3,
    PYLON_CBOR_ARRAY = 4,
    PYLON_CBOR_MAP = 5,
    PYLON_CBOR_TAG = 6,
    PYLON_CBOR_SIMPLE = 7, /* false, true, null, floats */
};

/* --- reading ------------------------------------------------------------- */

/* Reads one CBOR head (major type + argument) at *p, advancing *p.
 *
 * Enough to take apart small fixed-shape payloads such as `[uint, bytes]`
 * without a CBOR library; for a byte or text string the `arg` bytes of
 * content follow at *p (check `arg <= end - *p` before using them). Rejects
 * indefinite lengths (additional info 28..31). Returns false when the input
 * ends early or is malformed; *p is then unspecified. */
static inline bool pylon_cbor_head(const uint8_t **p, const uint8_t *end, uint8_t *major,
                                   uint64_t *arg) {
    if (*p >= end)
        return false;
    uint8_t ib = *(*p)++;
    uint8_t info = ib & 0x1f;
    *major = ib >> 5;
    if (info < 24) {
        *arg = info;
        return true;
    }
    if (info > 27)
        return false;
    size_t n = (size_t)1 << (info - 24); /* 1, 2, 4 or 8 bytes follow */
    if ((size_t)(end - *p) < n)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | *(*p)++;
    *arg = v;
    return true;
}

/* --- writing ------------------------------------------------------------- */

typedef struct {
    uint8_t *ptr; /* malloc'd; NULL until the first write and after a failure */
    size_t len;
    size_t cap;
    bool failed; /* memory ran out (or a length overflowed): ptr is NULL */
} pylon_cbor_out_t;

/* Writes the shortest head for (major, arg) into out[0..8]; returns its size
 * (1, 2, 3, 5 or 9). The building block of every writer below. */
static inline size_t pylon_cbor_put_head(uint8_t out[9], uint8_t major, uint64_t arg) {
    uint8_t mt = (uint8_t)(major << 5);
    if (arg < 24) {
        out[0] = mt | (uint8_t)arg;
        return 1;
    }
    size_t n = arg <= 0xff ? 1 : arg <= 0xffff ? 2 : arg <= 0xffffffffu ? 4 : 8;
    out[0] = mt | (uint8_t)(n == 1 ? 24 : n == 2 ? 25 : n == 4 ? 26 : 27);
    for (size_t i = 0; i < n; i++)
        out[1 + i] = (uint8_t)(arg >> (8 * (n - 1 - i)));
    return 1 + n;
}

/* Makes room for `more` bytes; false (and `failed`) when memory runs out. */
static inline bool pylon_cbor_reserve(pylon_cbor_out_t *o, size_t more) {
    if (o->failed)
        return false;
    if (more <= o->cap - o->len)
        return true;
    if (more > SIZE_MAX / 2 - o->len) { /* the doubling below would overflow */
        free(o->ptr);
        *o = (pylon_cbor_out_t){.failed = true};
        return false;
    }
    size_t want = o->len + more;
    size_t cap = o->cap ? o->cap : 64;
    while (cap < want)
        cap *= 2;
    uint8_t *grown = realloc(o->ptr, cap);
    if (!grown) {
        free(o->ptr);
        *o = (pylon_cbor_out_t){.failed = true};
        return false;
    }
    o->ptr = grown;
    o->cap = cap;
    return true;
}

/* Appends `n` bytes as they are (content after a head, or pre-encoded CBOR). */
static inline void pylon_cbor_raw(pylon_cbor_out_t *o, const void *data, size_t n) {
    if (n && pylon_cbor_reserve(o, n)) {
        memcpy(o->ptr + o->len, data, n);
        o->len += n;
    }
}

/* Appends one head: the start of any item. */
static inline void pylon_cbor_head_out(pylon_cbor_out_t *o, uint8_t major, uint64_t arg) {
    uint8_t head[9];
    pylon_cbor_raw(o, head, pylon_cbor_put_head(head, major, arg));
}

/* An unsigned integer, 0 .. 2^64-1. */
static inline void pylon_cbor_uint(pylon_cbor_out_t *o, uint64_t v) {
    pylon_cbor_head_out(o, PYLON_CBOR_UINT, v);
}

/* A signed integer, -2^63 .. 2^63-1 (CBOR stores -1-n for a negative n). */
static inline void pylon_cbor_int(pylon_cbor_out_t *o, int64_t v) {
    if (v >= 0)
        pylon_cbor_head_out(o, PYLON_CBOR_UINT, (uint64_t)v);
    else
        pylon_cbor_head_out(o, PYLON_CBOR_NEGINT, (uint64_t)(-(v + 1)));
}

/* A byte string: head, then the bytes. */
static inline void pylon_cbor_bytes(pylon_cbor_out_t *o, const void *data, size_t n) {
    pylon_cbor_head_out(o, PYLON_CBOR_BYTES, n);
    pylon_cbor_raw(o, data, n);
}

/* A text string of `n` bytes, which must be UTF-8 (not checked: a reader
 * such as the guest's cbor2 refuses invalid UTF-8 in text). */
static inline void pylon_cbor_text(pylon_cbor_out_t *o, const char *s, size_t n) {
    pylon_cbor_head_out(o, PYLON_CBOR_TEXT, n);
    pylon_cbor_raw(o, s, n);
}

/* A NUL-terminated text string (a literal key such as "ok"). */
static inline void pylon_cbor_text_z(pylon_cbor_out_t *o, const char *s) {
    pylon_cbor_text(o, s, strlen(s));
}

/* The head of an array of `n` items; write the n items next. */
static inline void pylon_cbor_array(pylon_cbor_out_t *o, uint64_t n) {
    pylon_cbor_head_out(o, PYLON_CBOR_ARRAY, n);
}

/* The head of a map of `n` pairs; write key, value, key, value... next. */
static inline void pylon_cbor_map(pylon_cbor_out_t *o, uint64_t n) {
    pylon_cbor_head_out(o, PYLON_CBOR_MAP, n);
}

static inline void pylon_cbor_bool(pylon_cbor_out_t *o, bool v) {
    uint8_t b = v ? 0xf5 : 0xf4;
    pylon_cbor_raw(o, &b, 1);
}

static inline void pylon_cbor_null(pylon_cbor_out_t *o) {
    uint8_t b = 0xf6;
    pylon_cbor_raw(o, &b, 1);
}

/* A double, always as 9 bytes (0xfb + IEEE 754 binary64, big-endian). */
static inline void pylon_cbor_float64(pylon_cbor_out_t *o, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    uint8_t b[9] = {0xfb};
    for (int i = 0; i < 8; i++)
        b[1 + i] = (uint8_t)(bits >> (56 - 8 * i));
    pylon_cbor_raw(o, b, sizeof b);
}

/* Frees what was written (a reply abandoned for an error). */
static inline void pylon_cbor_discard(pylon_cbor_out_t *o) {
    free(o->ptr);
    *o = (pylon_cbor_out_t){0};
}

#endif

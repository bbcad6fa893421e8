/* A CBOR data item as a tree, decoded and encoded with zcbor.
 *
 * Why a tree and not zcbor's streaming calls straight into each method: the
 * methods take "any" value (echo, describe, merge), and zcbor's API is made
 * for schemas known in advance. Decoding once into this small tree lets each
 * method be plain C over values. Strings are not copied: a text or byte
 * string points into the payload, which outlives the tree.
 *
 * Supported: unsigned ints up to 2^64-1, negative ints down to -2^63 (zcbor
 * reads negatives into int64_t), float16/32/64 (as double), byte and text
 * strings (definite length), arrays and maps (definite or indefinite),
 * false/true/null/undefined and tags up to 2^32-1. Anything else is a
 * `bad-payload`. */
#ifndef CBORCALC_VALUE_H
#define CBORCALC_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Nesting limits; zcbor needs one backup state per open level. Results may
 * nest deeper than inputs (`describe` wraps every level in a map). */
#define VALUE_MAX_DEPTH 64
#define VALUE_ENCODE_DEPTH (2 * VALUE_MAX_DEPTH + 4)

/* How a step failed: the provider maps these to `bad-payload` and
 * `limit-exceeded` (memory). */
typedef enum { ST_OK = 0, ST_BAD_PAYLOAD, ST_NO_MEMORY } status;

typedef enum {
    V_UINT,  /* u: 0 .. 2^64-1 */
    V_NINT,  /* i: -2^63 .. -1 */
    V_FLOAT, /* f */
    V_BYTES, /* str */
    V_TEXT,  /* str (UTF-8, not validated) */
    V_ARRAY, /* items[len] */
    V_MAP,   /* items[2*len]: key, value, key, value... */
    V_BOOL,  /* b */
    V_NULL,
    V_UNDEFINED,
    V_TAG, /* tag, items[0] */
} value_kind;

typedef struct value {
    value_kind kind;
    union {
        uint64_t u;
        int64_t i;
        double f;
        bool b;
        struct {
            const uint8_t *ptr;
            size_t len;
        } str;
        struct {
            struct value *items;
            size_t len; /* elements (arrays), pairs (maps), 1 (tags) */
            uint32_t tag;
        } coll;
    } as;
} value;

/* Bump allocator that owns every tree node; freed in one go after a call. */
typedef struct arena_chunk arena_chunk;
typedef struct {
    arena_chunk *head;
} arena;

void *arena_alloc(arena *a, size_t size); /* NULL when out of memory */
void arena_free(arena *a);

/* Decodes exactly one item filling the whole payload. On failure points
 * *error at a static message. */
status value_decode(arena *a, const uint8_t *payload, size_t len, value *out, const char **error);

/* Encodes `v` into a fresh malloc'd buffer (*out, *out_len), sized exactly. */
status value_encode(const value *v, uint8_t **out, size_t *out_len, const char **error);

/* Deep equality of two items (same kind and value; floats by ==, so NaN is
 * never equal; strings by content). Used for map keys. */
bool value_equal(const value *a, const value *b);

/* Constructors for results (all allocate nothing but what they say). */
static inline value value_uint(uint64_t u) { value v = {.kind = V_UINT}; v.as.u = u; return v; }
static inline value value_float(double f) { value v = {.kind = V_FLOAT}; v.as.f = f; return v; }
static inline value value_null(void) { value v = {.kind = V_NULL}; return v; }
value value_int(int64_t i); /* V_UINT or V_NINT as the sign says */
value value_text(const char *nul_terminated);

#endif

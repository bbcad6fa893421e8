/* CBOR <-> value tree, on top of zcbor (fetched from its PyPI sdist at build
 * time; see cap.toml). Compiled with ZCBOR_CANONICAL so the encoder writes
 * definite-length arrays and maps; decoding is made lenient again at run time
 * (enforce_canonical = false), so any well-formed input is accepted. */
#include "value.h"

#include <stdlib.h>
#include <string.h>

#include "zcbor_decode.h"
#include "zcbor_encode.h"

/* -- arena ----------------------------------------------------------------- */

struct arena_chunk {
    arena_chunk *next;
    size_t used, cap;
    _Alignas(8) uint8_t data[];
};

void *arena_alloc(arena *a, size_t size) {
    size = (size + 7) & ~(size_t)7;
    if (size == 0)
        size = 8;
    arena_chunk *c = a->head;
    if (!c || c->cap - c->used < size) {
        size_t cap = size > 65536 ? size : 65536;
        if (cap > SIZE_MAX - sizeof(arena_chunk))
            return NULL;
        c = malloc(sizeof(arena_chunk) + cap);
        if (!c)
            return NULL;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += size;
    return p;
}

void arena_free(arena *a) {
    while (a->head) {
        arena_chunk *next = a->head->next;
        free(a->head);
        a->head = next;
    }
}

/* -- decode ---------------------------------------------------------------- */

static status decode_item(arena *a, zcbor_state_t *zs, value *out, int depth, const char **err);

static status fail(const char **err, const char *msg) {
    *err = msg;
    return ST_BAD_PAYLOAD;
}

/* Arrays and maps: children go to a growing malloc'd vector (the count of an
 * indefinite-length item is unknown until its end), then to the arena. */
static status decode_collection(arena *a, zcbor_state_t *zs, value *out, bool is_map, int depth,
                                const char **err) {
    if (!(is_map ? zcbor_map_start_decode(zs) : zcbor_list_start_decode(zs)))
        return fail(err, is_map ? "malformed CBOR map header" : "malformed CBOR array header");
    value *vec = NULL;
    size_t n = 0, cap = 0;
    status st = ST_OK;
    while (!zcbor_array_at_end(zs)) {
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            value *grown = cap < SIZE_MAX / sizeof(value) ? realloc(vec, cap * sizeof(value)) : NULL;
            if (!grown) {
                st = ST_NO_MEMORY;
                *err = "out of memory while decoding";
                goto done;
            }
            vec = grown;
        }
        st = decode_item(a, zs, &vec[n], depth + 1, err);
        if (st != ST_OK)
            goto done;
        n++;
    }
    if (!(is_map ? zcbor_map_end_decode(zs) : zcbor_list_end_decode(zs))) {
        st = fail(err, "malformed end of CBOR array or map");
        goto done;
    }
    if (is_map && n % 2) {
        st = fail(err, "CBOR map with a key but no value");
        goto done;
    }
    out->kind = is_map ? V_MAP : V_ARRAY;
    out->as.coll.tag = 0;
    out->as.coll.len = is_map ? n / 2 : n;
    out->as.coll.items = arena_alloc(a, n * sizeof(value));
    if (!out->as.coll.items) {
        st = ST_NO_MEMORY;
        *err = "out of memory while decoding";
        goto done;
    }
    if (n)
        memcpy(out->as.coll.items, vec, n * sizeof(value));
done:
    free(vec);
    return st;
}

static status decode_simple(zcbor_state_t *zs, value *out, const char **err) {
    uint8_t header = *zs->payload;
    switch (header) {
    case 0xf4:
    case 0xf5:
        out->kind = V_BOOL;
        return zcbor_bool_decode(zs, &out->as.b) ? ST_OK : fail(err, "malformed CBOR bool");
    case 0xf6:
        out->kind = V_NULL;
        return zcbor_nil_expect(zs, NULL) ? ST_OK : fail(err, "malformed CBOR null");
    case 0xf7:
        out->kind = V_UNDEFINED;
        return zcbor_undefined_expect(zs, NULL) ? ST_OK : fail(err, "malformed CBOR undefined");
    case 0xf9:
    case 0xfa:
    case 0xfb:
        out->kind = V_FLOAT;
        return zcbor_float_decode(zs, &out->as.f) ? ST_OK : fail(err, "truncated CBOR float");
    default:
        return fail(err, "unsupported CBOR simple value (only false, true, null, undefined and floats)");
    }
}

static status decode_item(arena *a, zcbor_state_t *zs, value *out, int depth, const char **err) {
    if (depth > VALUE_MAX_DEPTH)
        return fail(err, "CBOR nested deeper than 64 levels");
    if (zs->payload >= zs->payload_end)
        return fail(err, "truncated CBOR");
    struct zcbor_string s;
    switch (ZCBOR_MAJOR_TYPE(*zs->payload)) {
    case ZCBOR_MAJOR_TYPE_PINT:
        out->kind = V_UINT;
        return zcbor_uint64_decode(zs, &out->as.u) ? ST_OK : fail(err, "malformed CBOR unsigned integer");
    case ZCBOR_MAJOR_TYPE_NINT:
        out->kind = V_NINT;
        return zcbor_int64_decode(zs, &out->as.i)
                   ? ST_OK
                   : fail(err, "malformed CBOR negative integer, or one below -2^63 (not supported)");
    case ZCBOR_MAJOR_TYPE_BSTR:
    case ZCBOR_MAJOR_TYPE_TSTR: {
        bool text = ZCBOR_MAJOR_TYPE(*zs->payload) == ZCBOR_MAJOR_TYPE_TSTR;
        if (!(text ? zcbor_tstr_decode(zs, &s) : zcbor_bstr_decode(zs, &s)))
            return fail(err, "malformed or indefinite-length CBOR string (only definite lengths)");
        out->kind = text ? V_TEXT : V_BYTES;
        out->as.str.ptr = s.value;
        out->as.str.len = s.len;
        return ST_OK;
    }
    case ZCBOR_MAJOR_TYPE_LIST:
        return decode_collection(a, zs, out, false, depth, err);
    case ZCBOR_MAJOR_TYPE_MAP:
        return decode_collection(a, zs, out, true, depth, err);
    case ZCBOR_MAJOR_TYPE_TAG: {
        uint32_t tag;
        if (!zcbor_tag_decode(zs, &tag))
            return fail(err, "malformed CBOR tag, or one above 2^32-1 (not supported)");
        value *inner = arena_alloc(a, sizeof(value));
        if (!inner) {
            *err = "out of memory while decoding";
            return ST_NO_MEMORY;
        }
        out->kind = V_TAG;
        out->as.coll.tag = tag;
        out->as.coll.len = 1;
        out->as.coll.items = inner;
        return decode_item(a, zs, inner, depth + 1, err);
    }
    default:
        return decode_simple(zs, out, err);
    }
}

status value_decode(arena *a, const uint8_t *payload, size_t len, value *out, const char **err) {
    if (len == 0)
        return fail(err, "empty payload (expected one CBOR item)");
    /* One zcbor backup per open array/map/tag level. */
    ZCBOR_STATE_D(zs, VALUE_MAX_DEPTH + 2, payload, len, 1, 0);
    zs->constant_state->enforce_canonical = false;
    status st = decode_item(a, zs, out, 0, err);
    if (st == ST_OK && zs->payload != zs->payload_end)
        return fail(err, "trailing bytes after the CBOR item");
    return st;
}

/* -- encode ---------------------------------------------------------------- */

static uint64_t head_len(uint64_t arg) {
    return arg < 24 ? 1 : arg <= 0xff ? 2 : arg <= 0xffff ? 3 : arg <= 0xffffffffu ? 5 : 9;
}

/* Exact encoded size, so the reply is allocated once at its final size
 * (false when deeper than the encoder's limit or beyond 4 GiB). */
static bool encoded_size(const value *v, uint64_t *size, int depth) {
    if (depth > VALUE_ENCODE_DEPTH)
        return false;
    switch (v->kind) {
    case V_UINT:
        *size += head_len(v->as.u);
        break;
    case V_NINT:
        *size += head_len((uint64_t)(-(v->as.i + 1)));
        break;
    case V_FLOAT:
        *size += 9;
        break;
    case V_BYTES:
    case V_TEXT:
        *size += head_len(v->as.str.len) + v->as.str.len;
        break;
    case V_ARRAY:
    case V_MAP: {
        size_t n = v->kind == V_MAP ? 2 * v->as.coll.len : v->as.coll.len;
        *size += head_len(v->as.coll.len);
        for (size_t k = 0; k < n; k++)
            if (!encoded_size(&v->as.coll.items[k], size, depth + 1))
                return false;
        break;
    }
    case V_TAG:
        *size += head_len(v->as.coll.tag);
        return encoded_size(v->as.coll.items, size, depth + 1);
    default:
        *size += 1;
    }
    return *size <= SIZE_MAX;
}

static bool encode_item(zcbor_state_t *zs, const value *v) {
    switch (v->kind) {
    case V_UINT:
        return zcbor_uint64_put(zs, v->as.u);
    case V_NINT:
        return zcbor_int64_put(zs, v->as.i);
    case V_FLOAT:
        return zcbor_float64_put(zs, v->as.f);
    case V_BYTES:
        return zcbor_bstr_encode_ptr(zs, (const char *)v->as.str.ptr, v->as.str.len);
    case V_TEXT:
        return zcbor_tstr_encode_ptr(zs, (const char *)v->as.str.ptr, v->as.str.len);
    case V_ARRAY:
    case V_MAP: {
        bool map = v->kind == V_MAP;
        size_t len = v->as.coll.len, n = map ? 2 * len : len;
        if (!(map ? zcbor_map_start_encode(zs, len) : zcbor_list_start_encode(zs, len)))
            return false;
        for (size_t k = 0; k < n; k++)
            if (!encode_item(zs, &v->as.coll.items[k]))
                return false;
        return map ? zcbor_map_end_encode(zs, len) : zcbor_list_end_encode(zs, len);
    }
    case V_BOOL:
        return zcbor_bool_put(zs, v->as.b);
    case V_NULL:
        return zcbor_nil_put(zs, NULL);
    case V_UNDEFINED:
        return zcbor_undefined_put(zs, NULL);
    case V_TAG:
        return zcbor_tag_put(zs, v->as.coll.tag) && encode_item(zs, v->as.coll.items);
    }
    return false;
}

status value_encode(const value *v, uint8_t **out, size_t *out_len, const char **err) {
    uint64_t size = 0;
    if (!encoded_size(v, &size, 0)) {
        *err = "result too deep or too large to encode";
        return ST_BAD_PAYLOAD;
    }
    uint8_t *buf = malloc(size ? (size_t)size : 1);
    if (!buf) {
        *err = "out of memory for the reply";
        return ST_NO_MEMORY;
    }
    /* Canonical (definite-length) encoding keeps one backup per open level. */
    ZCBOR_STATE_E(zs, VALUE_ENCODE_DEPTH + 2, buf, (size_t)size, 0);
    if (!encode_item(zs, v) || zs->payload != buf + size) {
        free(buf);
        *err = "internal error: CBOR encoding failed";
        return ST_BAD_PAYLOAD;
    }
    *out = buf;
    *out_len = (size_t)size;
    return ST_OK;
}

/* -- helpers --------------------------------------------------------------- */

bool value_equal(const value *a, const value *b) {
    if (a->kind != b->kind)
        return false;
    switch (a->kind) {
    case V_UINT:
        return a->as.u == b->as.u;
    case V_NINT:
        return a->as.i == b->as.i;
    case V_FLOAT:
        return a->as.f == b->as.f;
    case V_BOOL:
        return a->as.b == b->as.b;
    case V_BYTES:
    case V_TEXT:
        return a->as.str.len == b->as.str.len &&
               (a->as.str.len == 0 || memcmp(a->as.str.ptr, b->as.str.ptr, a->as.str.len) == 0);
    case V_ARRAY:
    case V_MAP:
    case V_TAG: {
        if (a->as.coll.len != b->as.coll.len ||
            (a->kind == V_TAG && a->as.coll.tag != b->as.coll.tag))
            return false;
        size_t n = a->kind == V_MAP ? 2 * a->as.coll.len : a->as.coll.len;
        for (size_t k = 0; k < n; k++)
            if (!value_equal(&a->as.coll.items[k], &b->as.coll.items[k]))
                return false;
        return true;
    }
    default:
        return true; /* null, undefined */
    }
}

value value_int(int64_t i) {
    value v;
    if (i >= 0) {
        v.kind = V_UINT;
        v.as.u = (uint64_t)i;
    } else {
        v.kind = V_NINT;
        v.as.i = i;
    }
    return v;
}

value value_text(const char *s) {
    value v = {.kind = V_TEXT};
    v.as.str.ptr = (const uint8_t *)s;
    v.as.str.len = strlen(s);
    return v;
}

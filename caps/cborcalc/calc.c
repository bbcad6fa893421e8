/* cborcalc's methods. Each takes one CBOR value and returns one:
 *
 *   echo      any            -> the same value (decoded and re-encoded)
 *   sum       [number...]    -> number (exact for integers; float if any float
 *                               is present or the sum leaves the int range)
 *   stats     [number...]    -> {"count", "mean", "min", "max"} (null when empty)
 *   upper     text           -> text with ASCII letters upper-cased
 *   describe  any            -> {"type": name, "length"?, "items"? | "entries"? | "tag"?, "value"?}
 *   merge     [map...]       -> map; a later map's key wins, first-seen key order
 */
#include "calc.h"

#include <string.h>

#define NOMEM(err) (*(err) = "out of memory", ST_NO_MEMORY)

static status bad(const char **err, const char *msg) {
    *err = msg;
    return ST_BAD_PAYLOAD;
}

static bool is_number(const value *v) {
    return v->kind == V_UINT || v->kind == V_NINT || v->kind == V_FLOAT;
}

static double as_double(const value *v) {
    return v->kind == V_UINT ? (double)v->as.u : v->kind == V_NINT ? (double)v->as.i : v->as.f;
}

/* Integers as a 128-bit value: exact for every int CBOR gives us. */
static __int128 as_i128(const value *v) {
    return v->kind == V_UINT ? (__int128)v->as.u : (__int128)v->as.i;
}

/* a < b, exactly when both are integers. */
static bool less(const value *a, const value *b) {
    if (a->kind != V_FLOAT && b->kind != V_FLOAT)
        return as_i128(a) < as_i128(b);
    return as_double(a) < as_double(b);
}

/* Sum of an array of numbers; *total is exact when *all_ints. */
static status add_up(const value *arg, const char *what, __int128 *itotal, double *ftotal,
                     bool *all_ints, const char **err) {
    if (arg->kind != V_ARRAY)
        return bad(err, what);
    *itotal = 0;
    *ftotal = 0;
    *all_ints = true;
    for (size_t k = 0; k < arg->as.coll.len; k++) {
        const value *v = &arg->as.coll.items[k];
        if (!is_number(v))
            return bad(err, what);
        if (v->kind == V_FLOAT)
            *all_ints = false;
        else
            *itotal += as_i128(v); /* cannot overflow: < 2^32 terms below 2^64 */
        *ftotal += as_double(v);
    }
    return ST_OK;
}

static status m_echo(arena *a, const value *arg, value *out, const char **err) {
    (void)a, (void)err;
    *out = *arg;
    return ST_OK;
}

static status m_sum(arena *a, const value *arg, value *out, const char **err) {
    (void)a;
    __int128 itotal;
    double ftotal;
    bool all_ints;
    status st = add_up(arg, "sum expects an array of numbers", &itotal, &ftotal, &all_ints, err);
    if (st != ST_OK)
        return st;
    if (all_ints && itotal >= 0 && itotal <= (__int128)UINT64_MAX)
        *out = value_uint((uint64_t)itotal);
    else if (all_ints && itotal >= (__int128)INT64_MIN && itotal < 0)
        *out = value_int((int64_t)itotal);
    else /* a float among the terms, or beyond CBOR's integer range */
        *out = value_float(all_ints ? (double)itotal : ftotal);
    return ST_OK;
}

/* A map with `n` pairs allocated in the arena (keys/values filled by caller). */
static value *new_map(arena *a, value *out, size_t n) {
    value *items = arena_alloc(a, 2 * n * sizeof(value));
    if (!items)
        return NULL;
    out->kind = V_MAP;
    out->as.coll.items = items;
    out->as.coll.len = n;
    out->as.coll.tag = 0;
    return items;
}

static status m_stats(arena *a, const value *arg, value *out, const char **err) {
    __int128 itotal;
    double ftotal;
    bool all_ints;
    status st = add_up(arg, "stats expects an array of numbers", &itotal, &ftotal, &all_ints, err);
    if (st != ST_OK)
        return st;
    size_t n = arg->as.coll.len;
    value *kv = new_map(a, out, 4);
    if (!kv)
        return NOMEM(err);
    kv[0] = value_text("count");
    kv[1] = value_uint(n);
    kv[2] = value_text("mean");
    kv[3] = n ? value_float((all_ints ? (double)itotal : ftotal) / (double)n) : value_null();
    kv[4] = value_text("min");
    kv[5] = value_null();
    kv[6] = value_text("max");
    kv[7] = value_null();
    for (size_t k = 0; k < n; k++) {
        const value *v = &arg->as.coll.items[k];
        if (k == 0 || less(v, &kv[5]))
            kv[5] = *v;
        if (k == 0 || less(&kv[7], v))
            kv[7] = *v;
    }
    return ST_OK;
}

static status m_upper(arena *a, const value *arg, value *out, const char **err) {
    if (arg->kind != V_TEXT)
        return bad(err, "upper expects a text string");
    size_t len = arg->as.str.len;
    uint8_t *buf = arena_alloc(a, len);
    if (!buf)
        return NOMEM(err);
    for (size_t k = 0; k < len; k++) {
        uint8_t c = arg->as.str.ptr[k];
        buf[k] = (c >= 'a' && c <= 'z') ? (uint8_t)(c - 'a' + 'A') : c;
    }
    out->kind = V_TEXT;
    out->as.str.ptr = buf;
    out->as.str.len = len;
    return ST_OK;
}

static const char *type_name(value_kind k) {
    switch (k) {
    case V_UINT:
    case V_NINT:
        return "int";
    case V_FLOAT:
        return "float";
    case V_BYTES:
        return "bytes";
    case V_TEXT:
        return "text";
    case V_ARRAY:
        return "array";
    case V_MAP:
        return "map";
    case V_BOOL:
        return "bool";
    case V_NULL:
        return "null";
    case V_UNDEFINED:
        return "undefined";
    case V_TAG:
        return "tag";
    }
    return "?";
}

/* describe: {"type"} plus "length" for strings/arrays/maps, "items" (array
 * of descriptions) for arrays, "entries" (key -> description) for maps and
 * "tag" + "value" for tags. Recursion is bounded by the decoder's depth. */
static status m_describe(arena *a, const value *arg, value *out, const char **err) {
    value_kind k = arg->kind;
    bool sized = k == V_BYTES || k == V_TEXT || k == V_ARRAY || k == V_MAP;
    bool nested = k == V_ARRAY || k == V_MAP || k == V_TAG;
    value *kv = new_map(a, out, 1 + (sized || k == V_TAG) + nested);
    if (!kv)
        return NOMEM(err);
    kv[0] = value_text("type");
    kv[1] = value_text(type_name(k));
    if (sized) {
        kv[2] = value_text("length");
        kv[3] = value_uint(k == V_BYTES || k == V_TEXT ? arg->as.str.len : arg->as.coll.len);
    }
    if (k == V_TAG) {
        kv[2] = value_text("tag");
        kv[3] = value_uint(arg->as.coll.tag);
        kv[4] = value_text("value");
        return m_describe(a, arg->as.coll.items, &kv[5], err);
    }
    if (!nested)
        return ST_OK;
    size_t n = arg->as.coll.len;
    value *inner = &kv[5];
    if (k == V_ARRAY) {
        kv[4] = value_text("items");
        inner->kind = V_ARRAY;
        inner->as.coll.len = n;
        inner->as.coll.tag = 0;
        inner->as.coll.items = arena_alloc(a, n * sizeof(value));
        if (!inner->as.coll.items)
            return NOMEM(err);
        for (size_t i = 0; i < n; i++) {
            status st = m_describe(a, &arg->as.coll.items[i], &inner->as.coll.items[i], err);
            if (st != ST_OK)
                return st;
        }
    } else {
        kv[4] = value_text("entries");
        value *pairs = new_map(a, inner, n);
        if (!pairs)
            return NOMEM(err);
        for (size_t i = 0; i < n; i++) {
            pairs[2 * i] = arg->as.coll.items[2 * i];
            status st = m_describe(a, &arg->as.coll.items[2 * i + 1], &pairs[2 * i + 1], err);
            if (st != ST_OK)
                return st;
        }
    }
    return ST_OK;
}

/* merge: quadratic key search, which is fine for the small maps a call
 * carries; keys compare by value (value_equal). */
static status m_merge(arena *a, const value *arg, value *out, const char **err) {
    if (arg->kind != V_ARRAY)
        return bad(err, "merge expects an array of maps");
    size_t total = 0;
    for (size_t k = 0; k < arg->as.coll.len; k++) {
        if (arg->as.coll.items[k].kind != V_MAP)
            return bad(err, "merge expects an array of maps");
        total += arg->as.coll.items[k].as.coll.len;
    }
    value *pairs = new_map(a, out, total);
    if (!pairs)
        return NOMEM(err);
    size_t n = 0;
    for (size_t k = 0; k < arg->as.coll.len; k++) {
        const value *map = &arg->as.coll.items[k];
        for (size_t i = 0; i < map->as.coll.len; i++) {
            const value *key = &map->as.coll.items[2 * i];
            size_t at = 0;
            while (at < n && !value_equal(&pairs[2 * at], key))
                at++;
            if (at == n)
                pairs[2 * n++] = *key;
            pairs[2 * at + 1] = map->as.coll.items[2 * i + 1];
        }
    }
    out->as.coll.len = n;
    return ST_OK;
}

const calc_method CALC_METHODS[] = {
    {"echo", m_echo},   {"sum", m_sum},           {"stats", m_stats},
    {"upper", m_upper}, {"describe", m_describe}, {"merge", m_merge},
    {NULL, NULL},
};

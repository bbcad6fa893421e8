/* pylon_face.h: what the generated dispatch of a dynlink face
 * (pylon.build.capgen.c_dispatch) needs besides pylon_cap.h and
 * pylon_handles.h: a reader that takes a request apart by the WIT's shapes
 * and says what is wrong, a writer for the reply, and error replies with
 * formatted text.
 *
 * Both sit on zcbor (pinned once for every cap in caps/_sdk/sdk.toml; build_cap
 * compiles it into every generated face with ZCBOR_CANONICAL, so the encoder
 * writes definite lengths). What is here beside zcbor calls is what zcbor
 * does not do: UTF-8 validation of text, the 16-byte handle check against the
 * handle table, the WIT types' ranges, and the reasons in error messages.
 *
 * The generated file defines PYLON_FACE_DEPTH (the deepest array nesting of
 * any request or reply of its interface) before including this header:
 * zcbor keeps one backup state per open array, in arrays sized here.
 *
 * Leniency (docs/cap-interface.md, "Payloads"): any head width is accepted
 * (non-shortest forms too: zcbor's canonical *checking* is turned off at run
 * time), floats of any width and integers where a float is expected;
 * indefinite lengths and tags are refused. Strings must be UTF-8 (the
 * component model refuses the rest when lifting too). */
#ifndef PYLON_FACE_H
#define PYLON_FACE_H

#include <stdarg.h>
#include <stdio.h>

#include "pylon_cap.h"
#include "pylon_handles.h"
#include "zcbor_decode.h"
#include "zcbor_encode.h"

#ifndef ZCBOR_CANONICAL
#error "the generated face needs zcbor built with ZCBOR_CANONICAL (definite lengths); build_cap sets it"
#endif
#ifndef PYLON_FACE_DEPTH
#error "define PYLON_FACE_DEPTH (the deepest array nesting of a request or reply) before including pylon_face.h"
#endif
/* zcbor's states: the live one, a backup per open array, the constant state. */
#define PYLON_FACE_STATES (PYLON_FACE_DEPTH + 2)

/* Own handles one request may move into a call. */
#define PYLON_MAX_OWNED 64

/* --- reading a request ----------------------------------------------------- */

typedef struct {
    zcbor_state_t zs[PYLON_FACE_STATES];
    const char *why;      /* what is wrong (a literal), when a read failed */
    const char *resource; /* set instead when a handle was not live: its type */
    int32_t owned[PYLON_MAX_OWNED];
    uint32_t nowned;
} pylon_rd_t;

/* A non-NULL pointer for empty strings and lists: wit-bindgen's free
 * helpers free only when len > 0, and the callee may pass ptr to memcpy. */
static uint64_t pylon_empty_ __attribute__((unused));
#define PYLON_EMPTY ((void *)&pylon_empty_)

/* Starts reading `len` bytes: one item, the request. */
static inline void pylon_rd_begin(pylon_rd_t *r, const uint8_t *payload, size_t len) {
    static const uint8_t none[1] = {0};
    r->why = NULL;
    r->resource = NULL;
    r->nowned = 0;
    zcbor_new_decode_state(r->zs, PYLON_FACE_STATES, payload ? payload : none, payload ? len : 0, 1, NULL, 0);
    /* ZCBOR_CANONICAL is for the encoder; a request may use any head width. */
    r->zs[0].constant_state->enforce_canonical = false;
}

static inline bool pylon_rd_fail(pylon_rd_t *r, const char *why) {
    r->why = why;
    return false;
}

/* Bytes not read yet. */
static inline size_t pylon_rd_left(const pylon_rd_t *r) {
    return (size_t)(r->zs[0].payload_end - r->zs[0].payload);
}

/* Looks at the next item's initial byte before zcbor reads it. Why: zcbor
 * refuses an indefinite length, a tag or a reserved head too, but only as
 * "wrong type" or "invalid additional info"; the guest is told which. */
static inline bool pylon_rd_peek_(pylon_rd_t *r, uint8_t *ib) {
    zcbor_pop_error(r->zs); /* a failed try inside an earlier, successful read */
    if (pylon_rd_left(r) == 0)
        return pylon_rd_fail(r, "the request ends early");
    uint8_t b = *r->zs[0].payload;
    uint8_t info = ZCBOR_ADDITIONAL(b);
    if (info > ZCBOR_VALUE_IS_8_BYTES)
        return pylon_rd_fail(r, info == ZCBOR_VALUE_IS_INDEFINITE_LENGTH && b != 0xff
                                    ? "indefinite lengths are not accepted"
                                    : "malformed CBOR");
    if (ZCBOR_MAJOR_TYPE(b) == ZCBOR_MAJOR_TYPE_TAG)
        return pylon_rd_fail(r, b == 0xc2 || b == 0xc3 ? "an integer past 64 bits (a CBOR bignum) fits no WIT type"
                                                       : "CBOR tags are not accepted");
    *ib = b;
    return true;
}

/* After a zcbor read failed: its reason, or `expected` for a wrong type. */
static inline bool pylon_rd_zfail_(pylon_rd_t *r, const char *expected) {
    switch (zcbor_pop_error(r->zs)) {
    case ZCBOR_ERR_NO_PAYLOAD:
    case ZCBOR_ERR_INT_SIZE: /* a string or array longer than memory could be */
        return pylon_rd_fail(r, "the request ends early");
    case ZCBOR_ERR_LOW_ELEM_COUNT:
        return pylon_rd_fail(r, "an array has fewer items than its type");
    case ZCBOR_ERR_NO_BACKUP_MEM:
        return pylon_rd_fail(r, "arrays nested deeper than the interface's types");
    default:
        return pylon_rd_fail(r, expected);
    }
}

/* Consumes a CBOR null if one is next; false (consuming nothing) otherwise. */
static inline bool pylon_rd_take_null(pylon_rd_t *r) {
    if (pylon_rd_left(r) == 0 || *r->zs[0].payload != 0xf6)
        return false;
    if (zcbor_nil_expect(r->zs, NULL))
        return true;
    zcbor_pop_error(r->zs); /* no items left here: the value's own read says so */
    return false;
}

static inline bool pylon_rd_null(pylon_rd_t *r) {
    uint8_t b;
    if (!pylon_rd_peek_(r, &b))
        return false;
    return zcbor_nil_expect(r->zs, NULL) || pylon_rd_zfail_(r, "expected null");
}

static inline bool pylon_rd_bool(pylon_rd_t *r, bool *out) {
    uint8_t b;
    if (!pylon_rd_peek_(r, &b))
        return false;
    return zcbor_bool_decode(r->zs, out) || pylon_rd_zfail_(r, "expected a bool");
}

static inline bool pylon_rd_uint(pylon_rd_t *r, uint64_t max, uint64_t *out, const char *range) {
    uint8_t b;
    uint64_t v;
    if (!pylon_rd_peek_(r, &b))
        return false;
    if (ZCBOR_MAJOR_TYPE(b) == ZCBOR_MAJOR_TYPE_NINT)
        return pylon_rd_fail(r, range);
    if (!zcbor_uint64_decode(r->zs, &v))
        return pylon_rd_zfail_(r, "expected an integer");
    if (v > max)
        return pylon_rd_fail(r, range);
    *out = v;
    return true;
}

static inline bool pylon_rd_sint(pylon_rd_t *r, int64_t min, int64_t max, int64_t *out, const char *range) {
    uint8_t b;
    if (!pylon_rd_peek_(r, &b))
        return false;
    if (ZCBOR_MAJOR_TYPE(b) == ZCBOR_MAJOR_TYPE_PINT) {
        /* read as unsigned: 2^63 .. 2^64-1 is out of range, not malformed */
        uint64_t v;
        if (!zcbor_uint64_decode(r->zs, &v))
            return pylon_rd_zfail_(r, "expected an integer");
        if (v > (uint64_t)max)
            return pylon_rd_fail(r, range);
        *out = (int64_t)v;
        return true;
    }
    int64_t v;
    if (!zcbor_int64_decode(r->zs, &v)) /* INT_SIZE: below -2^63 */
        return zcbor_peek_error(r->zs) == ZCBOR_ERR_INT_SIZE ? pylon_rd_fail(r, range)
                                                             : pylon_rd_zfail_(r, "expected an integer");
    if (v < min)
        return pylon_rd_fail(r, range);
    *out = v;
    return true;
}

static inline bool pylon_rd_float(pylon_rd_t *r, double *out) {
    uint8_t b;
    if (!pylon_rd_peek_(r, &b))
        return false;
    if (ZCBOR_IS_FLOAT(b)) /* half, single or double */
        return zcbor_float_decode(r->zs, out) || pylon_rd_zfail_(r, "expected a float");
    if (ZCBOR_MAJOR_TYPE(b) == ZCBOR_MAJOR_TYPE_PINT) {
        uint64_t u;
        if (!zcbor_uint64_decode(r->zs, &u))
            return pylon_rd_zfail_(r, "expected a float");
        *out = (double)u;
        return true;
    }
    if (ZCBOR_MAJOR_TYPE(b) == ZCBOR_MAJOR_TYPE_NINT) {
        int64_t i;
        if (!zcbor_int64_decode(r->zs, &i))
            return zcbor_peek_error(r->zs) == ZCBOR_ERR_INT_SIZE
                       ? pylon_rd_fail(r, "expected a float (this integer is too small)")
                       : pylon_rd_zfail_(r, "expected a float");
        *out = (double)i;
        return true;
    }
    return pylon_rd_fail(r, "expected a float");
}

/* Length of the UTF-8 sequence at s (valid scalar values only), 0 if invalid. */
static inline size_t pylon_utf8_one_(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t c = s[0];
    size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (!len || len > n)
        return 0;
    uint32_t v = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3f);
    }
    static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < least[len] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

static inline bool pylon_utf8_valid_(const uint8_t *s, size_t n) {
    uint32_t cp;
    for (size_t i = 0; i < n;) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = pylon_utf8_one_(s + i, n - i, &cp);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

/* A text (major 3) or byte (major 2) string, copied into malloc'd memory
 * the callee owns (as wit-bindgen's lifting does). */
static inline bool pylon_rd_str(pylon_rd_t *r, uint8_t want, uint8_t **ptr, size_t *len) {
    uint8_t b;
    struct zcbor_string s;
    bool text = want == PYLON_CBOR_TEXT;
    if (!pylon_rd_peek_(r, &b))
        return false;
    if (!(text ? zcbor_tstr_decode(r->zs, &s) : zcbor_bstr_decode(r->zs, &s)))
        return pylon_rd_zfail_(r, text ? "expected a text string" : "expected a byte string");
    /* zcbor does not look inside text strings. */
    if (text && !pylon_utf8_valid_(s.value, s.len))
        return pylon_rd_fail(r, "text is not valid UTF-8");
    if (s.len == 0) {
        *ptr = PYLON_EMPTY;
    } else {
        *ptr = malloc(s.len);
        if (!*ptr)
            return pylon_rd_fail(r, "out of memory");
        memcpy(*ptr, s.value, s.len);
    }
    *len = s.len;
    return true;
}

static inline bool pylon_rd_char(pylon_rd_t *r, uint32_t *out) {
    uint8_t b;
    struct zcbor_string s;
    if (!pylon_rd_peek_(r, &b))
        return false;
    if (!zcbor_tstr_decode(r->zs, &s))
        return pylon_rd_zfail_(r, "expected a text string of one character");
    if (s.len == 0 || s.len > 4 || pylon_utf8_one_(s.value, s.len, out) != s.len)
        return pylon_rd_fail(r, "expected a text string of one character");
    return true;
}

/* Opens an array; its length in *n, at most what the rest could hold (every
 * item takes a byte), so a lying length cannot make the callee allocate.
 * Its items follow; pylon_rd_end closes it. */
static inline bool pylon_rd_array(pylon_rd_t *r, size_t *n) {
    uint8_t b;
    if (!pylon_rd_peek_(r, &b))
        return false;
    if (!zcbor_list_start_decode(r->zs))
        return pylon_rd_zfail_(r, "expected an array");
    if (r->zs[0].elem_count > pylon_rd_left(r))
        return pylon_rd_fail(r, "the request ends early");
    *n = r->zs[0].elem_count;
    return true;
}

static inline bool pylon_rd_array_n(pylon_rd_t *r, size_t want, const char *why) {
    size_t n;
    if (!pylon_rd_array(r, &n))
        return pylon_rd_fail(r, why);
    return n == want || pylon_rd_fail(r, why);
}

/* Closes the array opened last; fails if items of it are left unread. */
static inline bool pylon_rd_end(pylon_rd_t *r) {
    return zcbor_list_end_decode(r->zs) || pylon_rd_fail(r, "an array has more items than its type");
}

/* A handle of resource `type`: the slot's handle, or 0 with r->resource set.
 * zcbor reads the byte string; the handle table checks the token (slot,
 * type and keyed tag: docs/cap-interface.md, "Handles"). */
static inline int32_t pylon_rd_handle(pylon_rd_t *r, uint32_t type, const char *name, bool own) {
    uint8_t b;
    struct zcbor_string s;
    if (!pylon_rd_peek_(r, &b) || !zcbor_bstr_decode(r->zs, &s)) {
        r->resource = name;
        return 0;
    }
    int32_t h = pylon_handle_check(s.value, s.len, type);
    if (!h) {
        r->resource = name;
        return 0;
    }
    if (own) {
        for (uint32_t i = 0; i < r->nowned; i++)
            if (r->owned[i] == h) {
                pylon_rd_fail(r, "the same handle is moved into the call twice");
                return 0;
            }
        if (r->nowned == PYLON_MAX_OWNED) {
            pylon_rd_fail(r, "too many handles moved into one call");
            return 0;
        }
        r->owned[r->nowned++] = h;
    }
    return h;
}

/* After every argument decoded: the own<R> arguments move into the call. */
static inline void pylon_rd_commit_owned(pylon_rd_t *r) {
    for (uint32_t i = 0; i < r->nowned; i++)
        pylon_handle_disown(r->owned[i]);
}

/* --- writing a reply --------------------------------------------------------
 *
 * zcbor encodes into a buffer of fixed size, so the generated code writes a
 * reply in a loop: pylon_wr_start, the pylon_wr_* calls, and pylon_wr_retry,
 * which doubles the buffer and answers true when the reply did not fit (the
 * values are written again from the start; writing changes nothing else).
 * A failed write makes the later ones do nothing, so the code checks once. */

typedef struct {
    zcbor_state_t zs[PYLON_FACE_STATES];
    uint8_t *buf; /* malloc'd; handed over as the reply */
    size_t cap;
    bool ok;  /* every write of this pass succeeded */
    bool oom; /* memory ran out growing the buffer */
} pylon_wr_t;

#define PYLON_WR_FIRST 256
/* The most bytes one CBOR head takes (major type + 8-byte argument). */
#define PYLON_WR_HEAD 9

/* Allocates the reply buffer at `need` bytes (the generated size bound), so
 * one pass fits: a 16 MiB reply costs 16 MiB more, not the 16 + 32 MiB of
 * doubling from PYLON_WR_FIRST. If that allocation fails, writing starts
 * small as before and the retry loop reports running out of memory. */
static inline void pylon_wr_reserve(pylon_wr_t *o, size_t need) {
    if (o->buf || o->oom || need <= PYLON_WR_FIRST)
        return;
    o->buf = malloc(need);
    o->cap = o->buf ? need : 0;
}

static inline void pylon_wr_start(pylon_wr_t *o) {
    if (!o->buf && !o->oom) {
        o->buf = malloc(PYLON_WR_FIRST);
        o->cap = o->buf ? PYLON_WR_FIRST : 0;
        o->oom = !o->buf;
    }
    o->ok = !o->oom;
    if (o->ok)
        zcbor_new_encode_state(o->zs, PYLON_FACE_STATES, o->buf, o->cap, 0);
}

static inline bool pylon_wr_retry(pylon_wr_t *o) {
    if (o->ok || o->oom)
        return false;
    if (zcbor_pop_error(o->zs) != ZCBOR_ERR_NO_PAYLOAD)
        abort(); /* cannot happen: backups are sized by the generator, arrays written with their exact length */
    uint8_t *grown = o->cap <= SIZE_MAX / 2 ? realloc(o->buf, o->cap * 2) : NULL;
    if (!grown) {
        free(o->buf);
        o->buf = NULL;
        o->oom = true;
        return false;
    }
    o->buf = grown;
    o->cap *= 2;
    return true;
}

static inline void pylon_wr_discard(pylon_wr_t *o) {
    free(o->buf);
    o->buf = NULL;
}

/* Replies with what was written (the buffer is handed over, no copy; the
 * post-return hook frees it); `limit-exceeded` if memory ran out. */
static inline bool pylon_ok_wr(pylon_bytes_t *ret, pylon_err_t *err, pylon_wr_t *o) {
    if (o->oom || !o->ok) {
        pylon_wr_discard(o);
        return pylon_error(err, COMPOSE_DYNLINK_TYPES_ERROR_LIMIT_EXCEEDED, "out of memory while encoding the reply");
    }
    ret->ptr = o->buf;
    ret->len = (size_t)(o->zs[0].payload - o->buf);
    o->buf = NULL;
    return true;
}

static inline void pylon_wr_uint(pylon_wr_t *o, uint64_t v) {
    o->ok = o->ok && zcbor_uint64_put(o->zs, v);
}

static inline void pylon_wr_int(pylon_wr_t *o, int64_t v) {
    o->ok = o->ok && zcbor_int64_put(o->zs, v);
}

static inline void pylon_wr_bool(pylon_wr_t *o, bool v) {
    o->ok = o->ok && zcbor_bool_put(o->zs, v);
}

static inline void pylon_wr_null(pylon_wr_t *o) {
    o->ok = o->ok && zcbor_nil_put(o->zs, NULL);
}

/* Always 9 bytes: f32 widens exactly, and the guest reads any width. */
static inline void pylon_wr_float64(pylon_wr_t *o, double v) {
    o->ok = o->ok && zcbor_float64_put(o->zs, v);
}

/* Text must be UTF-8: wit-bindgen's strings are (the component model checks). */
static inline void pylon_wr_text(pylon_wr_t *o, const uint8_t *s, size_t n) {
    o->ok = o->ok && zcbor_tstr_encode_ptr(o->zs, (const char *)s, n);
}

static inline void pylon_wr_bytes(pylon_wr_t *o, const uint8_t *s, size_t n) {
    o->ok = o->ok && zcbor_bstr_encode_ptr(o->zs, (const char *)s, n);
}

/* A char: a text string of its UTF-8 encoding (zcbor has no char). */
static inline void pylon_wr_char(pylon_wr_t *o, uint32_t c) {
    uint8_t b[4];
    size_t n = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    static const uint8_t lead[5] = {0, 0, 0xc0, 0xe0, 0xf0};
    for (size_t i = n - 1; i > 0; i--, c >>= 6)
        b[i] = (uint8_t)(0x80 | (c & 0x3f));
    b[0] = (uint8_t)(lead[n] | c);
    pylon_wr_text(o, b, n);
}

/* An array of exactly n items: start, the n items, end (same n). */
static inline void pylon_wr_array_start(pylon_wr_t *o, size_t n) {
    o->ok = o->ok && zcbor_list_start_encode(o->zs, n);
}

static inline void pylon_wr_array_end(pylon_wr_t *o, size_t n) {
    o->ok = o->ok && zcbor_list_end_encode(o->zs, n);
}

/* An error reply with printf-style text. */
static inline bool pylon_errorf(pylon_err_t *err, uint8_t tag, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return pylon_error(err, tag, fmt);
    if ((size_t)n < sizeof small)
        return pylon_error(err, tag, small);
    char *big = malloc((size_t)n + 1);
    if (!big)
        abort();
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    pylon_error_n(err, tag, big, NULL, 0);
    free(big);
    return false;
}

/* bad-payload for argument `index` of `method`, from what the reader found. */
static inline bool pylon_arg_error(pylon_err_t *err, const pylon_rd_t *r, const char *method, int index,
                                   const char *name) {
    if (r->resource)
        return pylon_errorf(err, COMPOSE_DYNLINK_TYPES_ERROR_BAD_PAYLOAD,
                            "argument %d (%s) of %s is not a live %s handle", index, name, method, r->resource);
    return pylon_errorf(err, COMPOSE_DYNLINK_TYPES_ERROR_BAD_PAYLOAD, "argument %d (%s) of %s: %s", index, name,
                        method, r->why ? r->why : "does not decode");
}

#endif

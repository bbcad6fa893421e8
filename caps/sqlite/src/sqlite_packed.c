/* sqlite core: packed parameters and rows (see sqlite_core.h).
 *
 * The packed format is Python's marshal format, version 2 (no references),
 * restricted to what SQLite stores: None, True/False, int ('i' 32-bit, 'l'
 * 15-bit digits), binary float ('g'), str ('u', UTF-8), bytes ('s'), inside
 * tuples ('(') or lists ('['). The guest writes parameters with
 * `marshal.dumps(obj, 2)` and reads rows with `marshal.loads`: one C call
 * each way, no Python work per value.
 *
 * The "latin-1 in UTF-8" helpers carry those bytes in a WIT string (copied
 * between components as a memcpy, where a list<u8> is copied byte by byte):
 * each byte is the code point of the same value. */
#include "sqlite_core.h"

#include <stdlib.h>
#include <string.h>

/* --- Latin-1 <-> UTF-8 -------------------------------------------------------- */

long score_latin1_from_utf8(uint8_t *p, size_t n) {
    size_t i = 0, o = 0;
    /* ASCII prefix: nothing moves. */
    while (i < n && p[i] < 0x80)
        i++;
    o = i;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            p[o++] = c;
            i++;
        } else if ((c == 0xC2 || c == 0xC3) && i + 1 < n && (p[i + 1] & 0xC0) == 0x80) {
            p[o++] = (uint8_t)(((c & 0x03) << 6) | (p[i + 1] & 0x3F));
            i += 2;
        } else {
            return -1;
        }
    }
    return (long)o;
}

int score_latin1_to_utf8(const uint8_t *p, size_t n, uint8_t **out, size_t *out_len) {
    size_t high = 0;
    for (size_t i = 0; i < n; i++)
        high += p[i] >> 7;
    size_t m = n + high;
    uint8_t *q = malloc(m ? m : 1);
    if (!q)
        return -1;
    if (!high) {
        memcpy(q, p, n);
    } else {
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            uint8_t c = p[i];
            if (c < 0x80) {
                q[o++] = c;
            } else {
                q[o++] = (uint8_t)(0xC0 | (c >> 6));
                q[o++] = (uint8_t)(0x80 | (c & 0x3F));
            }
        }
    }
    *out = q;
    *out_len = m;
    return 0;
}

/* --- writing ------------------------------------------------------------------ */

static int grow(score_buf *b, size_t more) {
    if (b->oom)
        return -1;
    if (b->len + more <= b->cap)
        return 0;
    size_t ncap = b->cap ? b->cap * 2 : 4096;
    while (ncap < b->len + more)
        ncap *= 2;
    uint8_t *p = realloc(b->p, ncap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = ncap;
    return 0;
}

static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void w_byte(score_buf *b, uint8_t c) {
    if (grow(b, 1) == 0)
        b->p[b->len++] = c;
}

static void w_head(score_buf *b, uint8_t type, uint32_t n) {
    if (grow(b, 5) == 0) {
        b->p[b->len] = type;
        put_u32(b->p + b->len + 1, n);
        b->len += 5;
    }
}

static void w_int(score_buf *b, int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
        w_head(b, 'i', (uint32_t)(int32_t)v);
        return;
    }
    uint64_t m = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    uint16_t digits[5];
    int k = 0;
    while (m) {
        digits[k++] = (uint16_t)(m & 0x7FFF);
        m >>= 15;
    }
    w_head(b, 'l', (uint32_t)(int32_t)(v < 0 ? -k : k));
    if (grow(b, (size_t)k * 2) == 0) {
        for (int j = 0; j < k; j++) {
            b->p[b->len++] = (uint8_t)digits[j];
            b->p[b->len++] = (uint8_t)(digits[j] >> 8);
        }
    }
}

static void w_double(score_buf *b, double d) {
    if (grow(b, 9) == 0) {
        b->p[b->len] = 'g';
        memcpy(b->p + b->len + 1, &d, 8); /* wasm is little-endian, as marshal */
        b->len += 9;
    }
}

static void w_bytes(score_buf *b, uint8_t type, const uint8_t *p, size_t n) {
    w_head(b, type, (uint32_t)n);
    if (n && grow(b, n) == 0) {
        memcpy(b->p + b->len, p, n);
        b->len += n;
    }
}

/* Steps up to max_rows rows (at least one step), stopping early once the
 * buffer passes max_bytes, and writes (rows, done, changes, lastrowid). */
int score_step_packed(score_stmt *s, uint32_t max_rows, size_t max_bytes, score_buf *out, score_error *err) {
    size_t start = out->len;
    w_head(out, '(', 4);
    size_t count_at = out->len;
    w_head(out, '[', 0);
    uint32_t nrows = 0;
    int done = 0;
    int ncols = score_column_count(s);
    for (;;) {
        int rc = score_step(s, err);
        if (rc < 0) {
            if (nrows == 0) {
                out->len = start;
                return -1;
            }
            score_defer_error(s, err); /* these rows first, the error next time */
            break;
        }
        if (rc == SQLITE_DONE) {
            done = 1;
            break;
        }
        size_t row_at = out->len;
        w_head(out, '(', (uint32_t)ncols);
        int bad = 0;
        for (int i = 0; i < ncols && !bad; i++) {
            score_value v;
            if (score_column(s, i, &v, err)) {
                score_error e2;
                score_reset(s, &e2);
                bad = 1;
                break;
            }
            switch (v.type) {
            case SQLITE_INTEGER:
                w_int(out, v.i);
                break;
            case SQLITE_FLOAT:
                w_double(out, v.r);
                break;
            case SQLITE_TEXT:
                w_bytes(out, 'u', v.ptr, v.len);
                break;
            case SQLITE_BLOB:
                w_bytes(out, 's', v.ptr, v.len);
                break;
            default:
                w_byte(out, 'N');
                break;
            }
        }
        if (bad) {
            if (nrows == 0) {
                out->len = start;
                return -1;
            }
            out->len = row_at;
            score_defer_error(s, err); /* the good rows first */
            break;
        }
        nrows++;
        if (out->oom)
            break;
        if (nrows >= max_rows || out->len - start >= max_bytes)
            break;
    }
    w_byte(out, done ? 'T' : 'F');
    w_int(out, done ? score_stmt_changes(s) : 0);
    w_int(out, score_stmt_last_insert_rowid(s));
    if (out->oom) {
        score_error e2;
        score_reset(s, &e2);
        out->len = start;
        return score_fail(err, SQLITE_NOMEM, "out of memory");
    }
    put_u32(out->p + count_at + 1, nrows);
    return 0;
}

void score_packed_error(score_buf *out, score_error *e) {
    out->len = 0;
    out->oom = 0;
    w_head(out, '(', 4);
    w_byte(out, 'N');
    w_int(out, e->code);
    w_bytes(out, 'u', (const uint8_t *)(e->message ? e->message : ""), e->message ? e->message_len : 0);
    w_int(out, 0);
    free(e->message);
    e->message = NULL;
}

/* --- reading ------------------------------------------------------------------ */

static int unsupported(score_error *err) {
    return score_fail(err, SQLITE_MISUSE, "pylon-packed: a value the cap cannot bind");
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Reads one value at *pp. Returns 0 or -1 (unsupported / malformed). */
static int r_value(const uint8_t **pp, const uint8_t *end, score_value *v) {
    const uint8_t *p = *pp;
    if (p >= end)
        return -1;
    uint8_t t = *p++;
    v->ptr = NULL;
    v->len = 0;
    switch (t) {
    case 'N':
        v->type = SQLITE_NULL;
        break;
    case 'T':
    case 'F':
        v->type = SQLITE_INTEGER;
        v->i = t == 'T';
        break;
    case 'i':
        if (end - p < 4)
            return -1;
        v->type = SQLITE_INTEGER;
        v->i = (int32_t)get_u32(p);
        p += 4;
        break;
    case 'l': {
        if (end - p < 4)
            return -1;
        int32_t n = (int32_t)get_u32(p);
        p += 4;
        uint32_t k = n < 0 ? (uint32_t)(-(int64_t)n) : (uint32_t)n;
        if (k > 5 || (size_t)(end - p) < (size_t)k * 2)
            return -1;
        uint64_t m = 0;
        for (uint32_t j = k; j-- > 0;) {
            uint32_t d = (uint32_t)p[2 * j] | ((uint32_t)p[2 * j + 1] << 8);
            if (d > 0x7FFF)
                return -1;
            if (m >> 49) /* m << 15 would lose bits */
                return -1;
            m = (m << 15) | d;
        }
        p += (size_t)k * 2;
        if (n < 0) {
            if (m > (uint64_t)INT64_MAX + 1)
                return -1;
            v->i = m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m;
        } else {
            if (m > (uint64_t)INT64_MAX)
                return -1;
            v->i = (int64_t)m;
        }
        v->type = SQLITE_INTEGER;
        break;
    }
    case 'g':
        if (end - p < 8)
            return -1;
        v->type = SQLITE_FLOAT;
        memcpy(&v->r, p, 8);
        p += 8;
        break;
    case 'u':
    case 's': {
        if (end - p < 4)
            return -1;
        uint32_t n = get_u32(p);
        p += 4;
        if ((size_t)(end - p) < n)
            return -1;
        v->type = t == 'u' ? SQLITE_TEXT : SQLITE_BLOB;
        v->ptr = p;
        v->len = n;
        if (t == 'u' && !score_valid_utf8(p, n))
            return -1;
        p += n;
        break;
    }
    default:
        return -1;
    }
    *pp = p;
    return 0;
}

/* Reads a tuple/list header. Returns its length or -1. */
static long r_seq(const uint8_t **pp, const uint8_t *end) {
    const uint8_t *p = *pp;
    if (end - p < 5 || (*p != '(' && *p != '['))
        return -1;
    uint32_t n = get_u32(p + 1);
    if (n > (uint32_t)(end - p))
        return -1;
    *pp = p + 5;
    return (long)n;
}

/* Binds one packed row at *pp (already validated) to s. */
static int bind_packed(score_stmt *s, const uint8_t **pp, const uint8_t *end, int copy, score_error *err) {
    long n = r_seq(pp, end);
    if (n < 0)
        return unsupported(err);
    if (score_bind_begin(s, (size_t)n, err))
        return -1;
    for (long i = 0; i < n; i++) {
        score_value v;
        if (r_value(pp, end, &v))
            return unsupported(err);
        if (score_bind(s, (int)i + 1, &v, copy, err))
            return -1;
    }
    return 0;
}

/* Checks that one packed row at *pp holds only bindable values. */
static int check_row(const uint8_t **pp, const uint8_t *end) {
    long n = r_seq(pp, end);
    if (n < 0)
        return -1;
    for (long i = 0; i < n; i++) {
        score_value v;
        if (r_value(pp, end, &v))
            return -1;
    }
    return 0;
}

int score_run_packed(score_stmt *s, const uint8_t *params, size_t len, uint32_t max_rows, size_t max_bytes,
                     score_buf *out, score_error *err) {
    if (score_check(s, err))
        return -1;
    const uint8_t *p = params, *end = params + len;
    if (check_row(&p, end) || p != end)
        return unsupported(err);
    p = params;
    /* Bound values are copied: rows may still be pending when this returns. */
    if (bind_packed(s, &p, end, 1, err))
        return -1;
    return score_step_packed(s, max_rows, max_bytes, out, err);
}

int score_execute_many_packed(score_stmt *s, const uint8_t *data, size_t len, int64_t *total, score_error *err) {
    *total = 0;
    if (score_check(s, err))
        return -1;
    const uint8_t *p = data, *end = data + len;
    long nrows = r_seq(&p, end);
    if (nrows < 0)
        return unsupported(err);
    const uint8_t *rows = p;
    /* Validate everything first: nothing runs if a value cannot be bound. */
    for (long r = 0; r < nrows; r++)
        if (check_row(&p, end))
            return unsupported(err);
    if (p != end)
        return unsupported(err);
    p = rows;
    int rc = 0;
    for (long r = 0; r < nrows; r++) {
        /* Each row runs to completion here: SQLite may point into `data`. */
        if (bind_packed(s, &p, end, 0, err)) {
            rc = -1;
            break;
        }
        int st = score_step(s, err);
        if (st < 0) {
            rc = -1;
            break;
        }
        if (st == SQLITE_ROW) {
            score_fail(err, SQLITE_MISUSE, "executemany() can only execute DML statements.");
            rc = -1;
            break;
        }
        *total += score_stmt_changes(s);
    }
    /* Drop the pointers into `data` before the caller frees it. */
    score_error e;
    if (!score_check(s, &e)) {
        score_reset(s, &e);
        score_bind_begin(s, (size_t)score_param_count(s), &e);
    } else {
        free(e.message);
    }
    return rc;
}

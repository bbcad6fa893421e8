/* zstd core: see zstd_core.h. */
#include "zstd_core.h"

#include <stdlib.h>
#include <string.h>

#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_findFrameCompressedSize & co. */
#include "zstd.h"

/* Output grows geometrically from here: small enough for tiny inputs,
 * big enough that a 16 MiB stream needs only a handful of reallocs. */
#define MIN_CHUNK ((size_t)64 * 1024)

static zcore_status ok(void) { return (zcore_status){ZCORE_OK, NULL, 0}; }
static zcore_status fail(zcore_kind kind, const char *message) {
    return (zcore_status){kind, message, 0};
}
static zcore_status too_large(uint64_t limit) {
    return (zcore_status){ZCORE_TOO_LARGE, "output exceeds the size limit", limit};
}

void zcore_level_range(int32_t *min, int32_t *max) {
    *min = ZSTD_minCLevel();
    *max = ZSTD_maxCLevel();
}

/* A growable output buffer that never holds more than `cap_limit` bytes. */
typedef struct {
    uint8_t *ptr;
    size_t len, cap;
} growbuf;

static int grow(growbuf *b, size_t want, size_t cap_limit) {
    if (want <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : MIN_CHUNK;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
    if (cap > cap_limit)
        cap = cap_limit;
    if (cap < want)
        return 0;
    uint8_t *p = realloc(b->ptr, cap);
    if (!p)
        return 0;
    b->ptr = p;
    b->cap = cap;
    return 1;
}

/* Hands the bytes to the caller, trimmed; an empty result is NULL/0. */
static void give(growbuf *b, zcore_buf *out) {
    if (b->len == 0) {
        free(b->ptr);
        out->ptr = NULL;
        out->len = 0;
        return;
    }
    uint8_t *p = b->len < b->cap ? realloc(b->ptr, b->len) : b->ptr;
    out->ptr = p ? p : b->ptr;
    out->len = b->len;
}

zcore_status zcore_compress(const uint8_t *src, size_t len, int32_t level, zcore_buf *out) {
    out->ptr = NULL;
    out->len = 0;
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    if (!cctx)
        return fail(ZCORE_FAILED, "out of memory");
    size_t rc = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    if (ZSTD_isError(rc)) {
        ZSTD_freeCCtx(cctx);
        return fail(ZCORE_FAILED, ZSTD_getErrorName(rc));
    }
    size_t bound = ZSTD_compressBound(len);
    uint8_t *dst = malloc(bound ? bound : 1);
    if (!dst) {
        ZSTD_freeCCtx(cctx);
        return fail(ZCORE_FAILED, "out of memory");
    }
    /* ZSTD_compress2 records the content size in the frame header, which
     * lets a decompressor allocate once. */
    rc = ZSTD_compress2(cctx, dst, bound, src, len);
    ZSTD_freeCCtx(cctx);
    if (ZSTD_isError(rc)) {
        free(dst);
        return fail(ZCORE_FAILED, ZSTD_getErrorName(rc));
    }
    growbuf b = {dst, rc, bound};
    give(&b, out);
    return ok();
}

/* Runs `dctx` over all of `src`, appending to `b`, which may not grow past
 * `room` more bytes. `*at_end` tells whether the input ended on a frame
 * boundary. Shared by one-shot and streaming decompression. */
static zcore_status decompress_into(ZSTD_DCtx *dctx, const uint8_t *src, size_t len, growbuf *b,
                                    uint64_t room, uint64_t limit, int *at_end) {
    ZSTD_inBuffer in = {src, len, 0};
    size_t start = b->len;
    /* One byte more than the limit allows, so "exactly at the limit" and
     * "over it" are told apart. */
    size_t cap_limit = room >= SIZE_MAX - start ? SIZE_MAX : (size_t)(start + room + 1);
    for (;;) {
        if (b->len == b->cap) {
            if (b->len >= cap_limit)
                return too_large(limit);
            if (!grow(b, b->cap + 1, cap_limit))
                return b->cap >= cap_limit ? too_large(limit) : fail(ZCORE_FAILED, "out of memory");
        }
        ZSTD_outBuffer o = {b->ptr, b->cap, b->len};
        size_t rc = ZSTD_decompressStream(dctx, &o, &in);
        b->len = o.pos;
        if (ZSTD_isError(rc))
            return fail(ZCORE_CORRUPT, ZSTD_getErrorName(rc));
        if (b->len - start > room)
            return too_large(limit);
        *at_end = rc == 0;
        /* Done when all input is consumed and either zstd did not fill the
         * buffer (a full buffer may mean more output is pending) or the frame
         * is complete and flushed (rc == 0). Without the second case, output
         * that exactly fills the buffer would call zstd once more with no
         * input, which answers with the next frame's header size, and the
         * complete frame would be reported as truncated. */
        if (in.pos == in.size && (o.pos < o.size || rc == 0))
            return ok();
    }
}

zcore_status zcore_decompress(const uint8_t *src, size_t len, uint64_t max_output, zcore_buf *out) {
    out->ptr = NULL;
    out->len = 0;
    if (len == 0)
        return ok();
    /* The header's declared size is only a hint (a hostile frame may lie),
     * but a frame that declares more than the limit can be refused now. */
    unsigned long long declared = ZSTD_getFrameContentSize(src, len);
    if (declared == ZSTD_CONTENTSIZE_ERROR)
        return fail(ZCORE_CORRUPT, "not a zstd frame (bad magic number or header)");
    if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared > max_output)
        return too_large(max_output);
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (!dctx)
        return fail(ZCORE_FAILED, "out of memory");
    growbuf b = {NULL, 0, 0};
    size_t first = MIN_CHUNK;
    if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared + 1 > first)
        first = (size_t)declared + 1;
    if (first > max_output + 1)
        first = (size_t)max_output + 1;
    if (!grow(&b, first, first)) {
        ZSTD_freeDCtx(dctx);
        return fail(ZCORE_FAILED, "out of memory");
    }
    int at_end = 0;
    zcore_status st = decompress_into(dctx, src, len, &b, max_output, max_output, &at_end);
    ZSTD_freeDCtx(dctx);
    if (st.kind == ZCORE_OK && !at_end)
        st = fail(ZCORE_CORRUPT, "truncated zstd frame (input ended inside a frame)");
    if (st.kind != ZCORE_OK) {
        free(b.ptr);
        return st;
    }
    give(&b, out);
    return ok();
}

struct zcore_cstream {
    ZSTD_CCtx *cctx;
    const char *level_error; /* set when the level was refused */
};

zcore_cstream *zcore_cstream_new(int32_t level) {
    zcore_cstream *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    s->cctx = ZSTD_createCCtx();
    if (!s->cctx) {
        free(s);
        return NULL;
    }
    /* A constructor cannot fail across WIT, so a refused level is kept and
     * reported by the first feed instead of silently compressing at another. */
    size_t rc = ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_compressionLevel, level);
    s->level_error = ZSTD_isError(rc) ? ZSTD_getErrorName(rc) : NULL;
    return s;
}

zcore_status zcore_cstream_feed(zcore_cstream *s, const uint8_t *src, size_t len, zcore_mode mode,
                                zcore_buf *out) {
    out->ptr = NULL;
    out->len = 0;
    if (s->level_error)
        return fail(ZCORE_FAILED, s->level_error);
    ZSTD_EndDirective end = mode == ZCORE_END ? ZSTD_e_end : mode == ZCORE_FLUSH ? ZSTD_e_flush
                                                                                 : ZSTD_e_continue;
    ZSTD_inBuffer in = {src, len, 0};
    growbuf b = {NULL, 0, 0};
    size_t chunk = ZSTD_CStreamOutSize();
    for (;;) {
        if (!grow(&b, b.len + chunk, SIZE_MAX)) {
            free(b.ptr);
            return fail(ZCORE_FAILED, "out of memory");
        }
        ZSTD_outBuffer o = {b.ptr, b.cap, b.len};
        size_t remaining = ZSTD_compressStream2(s->cctx, &o, &in, end);
        b.len = o.pos;
        if (ZSTD_isError(remaining)) {
            free(b.ptr);
            /* A failed frame cannot be continued; start clean next time. */
            ZSTD_CCtx_reset(s->cctx, ZSTD_reset_session_only);
            return fail(ZCORE_FAILED, ZSTD_getErrorName(remaining));
        }
        int drained = end == ZSTD_e_continue ? in.pos == in.size : remaining == 0;
        if (drained)
            break;
    }
    give(&b, out);
    return ok();
}

void zcore_cstream_free(zcore_cstream *s) {
    if (!s)
        return;
    ZSTD_freeCCtx(s->cctx);
    free(s);
}

struct zcore_dstream {
    ZSTD_DCtx *dctx;
    uint64_t max_output, produced;
    int at_end;
};

zcore_dstream *zcore_dstream_new(uint64_t max_output) {
    zcore_dstream *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    s->dctx = ZSTD_createDCtx();
    if (!s->dctx) {
        free(s);
        return NULL;
    }
    s->max_output = max_output;
    s->produced = 0;
    s->at_end = 1; /* no input yet: nothing is cut off */
    return s;
}

zcore_status zcore_dstream_feed(zcore_dstream *s, const uint8_t *src, size_t len, zcore_buf *out) {
    out->ptr = NULL;
    out->len = 0;
    if (len == 0)
        return ok();
    growbuf b = {NULL, 0, 0};
    uint64_t room = s->max_output - s->produced;
    size_t first = len * 4 > MIN_CHUNK ? len * 4 : MIN_CHUNK;
    if (first > room + 1)
        first = (size_t)room + 1;
    if (!grow(&b, first, first))
        return fail(ZCORE_FAILED, "out of memory");
    zcore_status st = decompress_into(s->dctx, src, len, &b, room, s->max_output, &s->at_end);
    if (st.kind != ZCORE_OK) {
        free(b.ptr);
        return st;
    }
    s->produced += b.len;
    give(&b, out);
    return ok();
}

int zcore_dstream_at_frame_end(const zcore_dstream *s) { return s->at_end; }

void zcore_dstream_free(zcore_dstream *s) {
    if (!s)
        return;
    ZSTD_freeDCtx(s->dctx);
    free(s);
}

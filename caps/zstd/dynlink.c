/* zstd, dynlink face: the `compose:dynlink/provider` export over the shared
 * core in src/zstd_core.c (the same core the typed embedded face uses).
 *
 * It serves pylon:zstd/zstd@0.1.0 (wit/caps/zstd.wit) by method name, as
 * guest/python/pylon_guest/zstd.py calls it when the embedded import is absent
 * (docs/embedded.md, "Typed calls over dynlink"). Payloads are CBOR:
 *
 *   method                      payload                     reply
 *   level-range                 null                        [min, max]
 *   compress                    [data, level]               {"ok": frame}
 *   decompress                  [data, max-output]          {"ok": data}
 *   compressor.new              level                       handle
 *   compressor.compress         [handle, data]              {"ok": bytes}
 *   compressor.flush            handle (or [handle])        {"ok": bytes}
 *   compressor.finish           handle (or [handle])        {"ok": bytes}
 *   compressor.drop             handle (or [handle])        null
 *   decompressor.new            max-output                  handle
 *   decompressor.decompress     [handle, data]              {"ok": bytes}
 *   decompressor.at-frame-end   handle (or [handle])        bool
 *   decompressor.drop           handle (or [handle])        null
 *
 * Errors:
 *   - not zstd data, a corrupt block, a checksum mismatch or a truncated
 *     frame: `bad-payload("corrupt zstd data: <zstd's message>")`;
 *   - output past max-output (a bomb, or a low limit):
 *     `limit-exceeded("decompressed output would exceed the limit of N bytes")`;
 *   - a CBOR payload of the wrong shape, or an unknown handle: `bad-payload`
 *     saying what was expected;
 *   - anything else the core reports (a refused level, zstd out of memory)
 *     is the typed error in the reply: {"err": {"kind": "failed", "detail": msg}}.
 * pylon_guest.zstd turns the first two into CorruptFrameError and
 * OutputTooLargeError, exactly as on the embedded path.
 *
 * Memory: data is read in place inside the payload; outputs are the core's
 * malloc'ed buffers, turned into the CBOR reply by prepending a few header
 * bytes in place (no second copy of a large output). A 16 MiB call needs
 * about payload + output + zstd's context. */
#include "cap.h"
#include "pylon_cap.h"

#include "zstd_core.h"

/* --- CBOR in ------------------------------------------------------------- */

/* A byte string head; data and len point into the payload. */
static bool read_bytes(const uint8_t **p, const uint8_t *end, const uint8_t **data, size_t *len) {
    uint8_t major;
    uint64_t arg;
    if (!pylon_cbor_head(p, end, &major, &arg) || major != 2 || arg > (uint64_t)(end - *p))
        return false;
    *data = *p;
    *len = (size_t)arg;
    *p += arg;
    return true;
}

static bool read_uint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    uint8_t major;
    return pylon_cbor_head(p, end, &major, v) && major == 0;
}

static bool read_s32(const uint8_t **p, const uint8_t *end, int32_t *v) {
    uint8_t major;
    uint64_t arg;
    if (!pylon_cbor_head(p, end, &major, &arg))
        return false;
    if (major == 0 && arg <= INT32_MAX)
        *v = (int32_t)arg;
    else if (major == 1 && arg <= (uint64_t)INT32_MAX) /* -1 - arg >= INT32_MIN */
        *v = -1 - (int32_t)arg;
    else
        return false;
    return true;
}

/* A two-element array head. */
static bool read_pair(const uint8_t **p, const uint8_t *end) {
    uint8_t major;
    uint64_t arg;
    return pylon_cbor_head(p, end, &major, &arg) && major == 4 && arg == 2;
}

/* A handle alone, `h` or `[h]`, filling the whole payload. cap.call sends a
 * lone argument bare; the one-element array is what docs/embedded.md's
 * `[handle, args...]` gives with no args, so both are accepted. */
static bool read_handle_only(const pylon_bytes_t *payload, uint64_t *h) {
    const uint8_t *p = payload->ptr, *end = p + payload->len;
    if (p < end && *p == 0x81) /* array of one */
        p++;
    return read_uint(&p, end, h) && p == end;
}

/* --- CBOR out ------------------------------------------------------------ */

/* Writes a head (major type + argument) at `out`; returns its length (1-9). */
static size_t put_head(uint8_t *out, uint8_t major, uint64_t arg) {
    major <<= 5;
    if (arg < 24) {
        out[0] = major | (uint8_t)arg;
        return 1;
    }
    int n = arg <= 0xff ? 1 : arg <= 0xffff ? 2 : arg <= 0xffffffffu ? 4 : 8;
    out[0] = major | (n == 1 ? 24 : n == 2 ? 25 : n == 4 ? 26 : 27);
    for (int i = 0; i < n; i++)
        out[1 + i] = (uint8_t)(arg >> (8 * (n - 1 - i)));
    return 1 + (size_t)n;
}

static size_t put_int(uint8_t *out, int64_t v) {
    return v >= 0 ? put_head(out, 0, (uint64_t)v) : put_head(out, 1, (uint64_t)(-1 - v));
}

/* {"ok": <buf>} as the reply, taking ownership of buf.ptr: the header is
 * written in front of the bytes in the same block. */
static bool reply_ok_bytes(pylon_bytes_t *ret, zcore_buf *buf) {
    uint8_t head[16] = {0xa1, 0x62, 'o', 'k'};
    size_t hlen = 4 + put_head(head + 4, 2, buf->len);
    uint8_t *p = realloc(buf->ptr, buf->len + hlen);
    if (!p)
        abort(); /* the output itself fitted; a few more bytes not: trap */
    memmove(p + hlen, p, buf->len);
    memcpy(p, head, hlen);
    ret->ptr = p;
    ret->len = buf->len + hlen;
    return true;
}

static bool reply_small(pylon_bytes_t *ret, const uint8_t *bytes, size_t len) {
    return pylon_ok_copy(ret, bytes, len);
}

static bool reply_uint(pylon_bytes_t *ret, uint64_t v) {
    uint8_t b[9];
    return reply_small(ret, b, put_head(b, 0, v));
}

/* {"err": {"kind": "failed", "detail": msg}}: the typed error for what is
 * neither corrupt input nor a size limit. */
static bool reply_failed(pylon_bytes_t *ret, const char *msg) {
    static const uint8_t head[] = {0xa1, 0x63, 'e', 'r', 'r', 0xa2, 0x64, 'k', 'i', 'n', 'd',
                                   0x66, 'f', 'a', 'i', 'l', 'e', 'd',
                                   0x66, 'd', 'e', 't', 'a', 'i', 'l'};
    if (!msg)
        msg = "zstd failed";
    size_t m = strlen(msg);
    uint8_t *p = malloc(sizeof head + 9 + m);
    if (!p)
        abort();
    memcpy(p, head, sizeof head);
    size_t n = sizeof head + put_head(p + sizeof head, 3, m);
    memcpy(p + n, msg, m);
    ret->ptr = p;
    ret->len = n + m;
    return true;
}

/* Moves a core result into the reply or the error; true on an ok reply. */
static bool deliver(zcore_status st, zcore_buf *buf, pylon_bytes_t *ret, pylon_err_t *err) {
    char msg[96];
    switch (st.kind) {
    case ZCORE_OK:
        return reply_ok_bytes(ret, buf);
    case ZCORE_CORRUPT:
        return pylon_error_n(err, COMPOSE_DYNLINK_TYPES_ERROR_BAD_PAYLOAD, "corrupt zstd data",
                             (const uint8_t *)st.message, strlen(st.message));
    case ZCORE_TOO_LARGE: {
        /* No snprintf (it would drag in stdio): the digits by hand. */
        char digits[24];
        size_t n = 0;
        uint64_t v = st.limit;
        do {
            digits[n++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        static const char pre[] = "decompressed output would exceed the limit of ";
        size_t at = sizeof pre - 1;
        memcpy(msg, pre, at);
        while (n)
            msg[at++] = digits[--n];
        memcpy(msg + at, " bytes", 7);
        return pylon_error(err, COMPOSE_DYNLINK_TYPES_ERROR_LIMIT_EXCEEDED, msg);
    }
    default:
        return reply_failed(ret, st.message);
    }
}

/* --- handles ------------------------------------------------------------- */

/* Live streams by handle. Handles count up from 1 and are never reused, so a
 * stale handle cannot reach a newer stream. Few streams live at once, so a
 * linear scan is fine. */
typedef struct {
    uint64_t id;
    bool compressor;
    void *stream; /* zcore_cstream * or zcore_dstream * */
} slot;

static slot *slots;
static size_t nslots, slots_cap;
static uint64_t next_id = 1;

static uint64_t add_stream(bool compressor, void *stream) {
    if (nslots == slots_cap) {
        size_t cap = slots_cap ? slots_cap * 2 : 16;
        slot *s = realloc(slots, cap * sizeof *s);
        if (!s)
            return 0;
        slots = s;
        slots_cap = cap;
    }
    slots[nslots] = (slot){next_id, compressor, stream};
    nslots++;
    return next_id++;
}

static slot *find_stream(uint64_t id, bool compressor) {
    for (size_t i = 0; i < nslots; i++)
        if (slots[i].id == id && slots[i].compressor == compressor)
            return &slots[i];
    return NULL;
}

static bool no_handle(pylon_err_t *err, bool compressor) {
    return pylon_bad_payload(err, compressor ? "no live compressor with that handle"
                                             : "no live decompressor with that handle");
}

/* --- methods ------------------------------------------------------------- */

static bool do_level_range(pylon_bytes_t *ret) {
    int32_t lo, hi;
    zcore_level_range(&lo, &hi);
    uint8_t b[1 + 9 + 9] = {0x82};
    size_t n = 1;
    n += put_int(b + n, lo);
    n += put_int(b + n, hi);
    return reply_small(ret, b, n);
}

static bool do_compress(const pylon_bytes_t *payload, pylon_bytes_t *ret, pylon_err_t *err) {
    const uint8_t *p = payload->ptr, *end = p + payload->len, *data;
    size_t len;
    int32_t level;
    if (!read_pair(&p, end) || !read_bytes(&p, end, &data, &len) || !read_s32(&p, end, &level) || p != end)
        return pylon_bad_payload(err, "compress expects a CBOR array [data: bytes, level: int32]");
    zcore_buf out;
    zcore_status st = zcore_compress(data, len, level, &out);
    return deliver(st, &out, ret, err);
}

static bool do_decompress(const pylon_bytes_t *payload, pylon_bytes_t *ret, pylon_err_t *err) {
    const uint8_t *p = payload->ptr, *end = p + payload->len, *data;
    size_t len;
    uint64_t max_output;
    if (!read_pair(&p, end) || !read_bytes(&p, end, &data, &len) || !read_uint(&p, end, &max_output) ||
        p != end)
        return pylon_bad_payload(err, "decompress expects a CBOR array [data: bytes, max-output: uint]");
    zcore_buf out;
    zcore_status st = zcore_decompress(data, len, max_output, &out);
    return deliver(st, &out, ret, err);
}

static bool do_compressor_new(const pylon_bytes_t *payload, pylon_bytes_t *ret, pylon_err_t *err) {
    const uint8_t *p = payload->ptr, *end = p + payload->len;
    int32_t level;
    if (!read_s32(&p, end, &level) || p != end)
        return pylon_bad_payload(err, "compressor.new expects a CBOR int32 (the level)");
    zcore_cstream *s = zcore_cstream_new(level);
    uint64_t h = s ? add_stream(true, s) : 0;
    if (!h) {
        zcore_cstream_free(s);
        return reply_failed(ret, "out of memory");
    }
    return reply_uint(ret, h);
}

static bool do_decompressor_new(const pylon_bytes_t *payload, pylon_bytes_t *ret, pylon_err_t *err) {
    const uint8_t *p = payload->ptr, *end = p + payload->len;
    uint64_t max_output;
    if (!read_uint(&p, end, &max_output) || p != end)
        return pylon_bad_payload(err, "decompressor.new expects a CBOR uint (max-output)");
    zcore_dstream *s = zcore_dstream_new(max_output);
    uint64_t h = s ? add_stream(false, s) : 0;
    if (!h) {
        zcore_dstream_free(s);
        return reply_failed(ret, "out of memory");
    }
    return reply_uint(ret, h);
}

/* [handle, data] for compressor.compress and decompressor.decompress. */
static bool do_feed(bool compressor, const pylon_bytes_t *payload, pylon_bytes_t *ret, pylon_err_t *err) {
    const uint8_t *p = payload->ptr, *end = p + payload->len, *data;
    size_t len;
    uint64_t h;
    if (!read_pair(&p, end) || !read_uint(&p, end, &h) || !read_bytes(&p, end, &data, &len) || p != end)
        return pylon_bad_payload(err, compressor
                                          ? "compressor.compress expects a CBOR array [handle: uint, data: bytes]"
                                          : "decompressor.decompress expects a CBOR array [handle: uint, data: bytes]");
    slot *s = find_stream(h, compressor);
    if (!s)
        return no_handle(err, compressor);
    zcore_buf out;
    zcore_status st = compressor ? zcore_cstream_feed(s->stream, data, len, ZCORE_CONTINUE, &out)
                                 : zcore_dstream_feed(s->stream, data, len, &out);
    return deliver(st, &out, ret, err);
}

/* compressor.flush / .finish, decompressor.at-frame-end, <resource>.drop:
 * the payload is the handle alone. */
enum op { OP_FLUSH, OP_FINISH, OP_AT_FRAME_END, OP_DROP };

static bool do_on_handle(bool compressor, enum op op, const pylon_bytes_t *payload, pylon_bytes_t *ret,
                         pylon_err_t *err) {
    uint64_t h;
    if (!read_handle_only(payload, &h))
        return pylon_bad_payload(err, "expected a CBOR uint (the handle)");
    slot *s = find_stream(h, compressor);
    if (!s)
        return no_handle(err, compressor);
    zcore_buf out;
    switch (op) {
    case OP_FLUSH:
    case OP_FINISH:
        return deliver(zcore_cstream_feed(s->stream, NULL, 0, op == OP_FLUSH ? ZCORE_FLUSH : ZCORE_END, &out),
                       &out, ret, err);
    case OP_AT_FRAME_END: {
        uint8_t b = zcore_dstream_at_frame_end(s->stream) ? 0xf5 : 0xf4;
        return reply_small(ret, &b, 1);
    }
    default: { /* OP_DROP */
        if (compressor)
            zcore_cstream_free(s->stream);
        else
            zcore_dstream_free(s->stream);
        *s = slots[--nslots];
        uint8_t null = 0xf6;
        return reply_small(ret, &null, 1);
    }
    }
}

bool exports_compose_dynlink_provider_invoke(cap_string_t *method, cap_list_u8_t *payload,
                                             cap_list_u8_t *ret,
                                             exports_compose_dynlink_provider_error_t *err) {
    bool ok;
    if (pylon_method_is(method, "compress"))
        ok = do_compress(payload, ret, err);
    else if (pylon_method_is(method, "decompress"))
        ok = do_decompress(payload, ret, err);
    else if (pylon_method_is(method, "level-range"))
        ok = do_level_range(ret);
    else if (pylon_method_is(method, "compressor.new"))
        ok = do_compressor_new(payload, ret, err);
    else if (pylon_method_is(method, "compressor.compress"))
        ok = do_feed(true, payload, ret, err);
    else if (pylon_method_is(method, "compressor.flush"))
        ok = do_on_handle(true, OP_FLUSH, payload, ret, err);
    else if (pylon_method_is(method, "compressor.finish"))
        ok = do_on_handle(true, OP_FINISH, payload, ret, err);
    else if (pylon_method_is(method, "compressor.drop"))
        ok = do_on_handle(true, OP_DROP, payload, ret, err);
    else if (pylon_method_is(method, "decompressor.new"))
        ok = do_decompressor_new(payload, ret, err);
    else if (pylon_method_is(method, "decompressor.decompress"))
        ok = do_feed(false, payload, ret, err);
    else if (pylon_method_is(method, "decompressor.at-frame-end"))
        ok = do_on_handle(false, OP_AT_FRAME_END, payload, ret, err);
    else if (pylon_method_is(method, "decompressor.drop"))
        ok = do_on_handle(false, OP_DROP, payload, ret, err);
    else
        ok = pylon_bad_method(err, method);
    cap_list_u8_free(payload);
    cap_string_free(method);
    return ok;
}

/* pylon_cap.h: small helpers for writing a dynlink cap's provider face in C.
 *
 * build_cap() puts this folder on every cap's include path, next to the
 * bindings it generates with wit-bindgen (`cap.h`, world `cap` of
 * wit/dynlink). Include `cap.h` first, then this header.
 *
 * Ownership rules of the generated bindings (wit-bindgen's C convention):
 *   - `method` and `payload` belong to the provider: free them (or hand the
 *     payload buffer back as the reply, which costs no copy);
 *   - the reply (`ret`) and an error's message must be malloc'd; the
 *     generated post-return hook frees them after the host has copied them.
 * The helpers below follow those rules, so a provider only decides *what* to
 * answer.
 *
 * Why everything is `static inline`: the header is the whole "SDK"; a cap
 * needs no extra library and unused helpers cost nothing. */
#ifndef PYLON_CAP_H
#define PYLON_CAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* pylon_cbor_head (reading) and the pylon_cbor_* writers. */
#include "pylon_cbor.h"

/* Short names for the generated types (see the generated cap.h). */
typedef cap_string_t pylon_str_t;
typedef cap_list_u8_t pylon_bytes_t;
typedef exports_compose_dynlink_provider_error_t pylon_err_t;

/* True when the method name equals the NUL-terminated `name`. */
static inline bool pylon_method_is(const pylon_str_t *method, const char *name) {
    size_t n = strlen(name);
    return method->len == n && memcmp(method->ptr, name, n) == 0;
}

/* Fills `err` with error case `tag` (COMPOSE_DYNLINK_TYPES_ERROR_*) and the
 * message "<msg>" or "<msg>: <detail>" (detail may be NULL). Returns false,
 * so a provider can write `return pylon_error(...)`. Aborts (traps) only if
 * even the message cannot be allocated. */
static inline bool pylon_error_n(pylon_err_t *err, uint8_t tag, const char *msg,
                                 const uint8_t *detail, size_t detail_len) {
    size_t m = strlen(msg);
    size_t total = m + (detail ? 2 + detail_len : 0);
    uint8_t *buf = malloc(total ? total : 1);
    if (!buf)
        abort();
    memcpy(buf, msg, m);
    if (detail) {
        memcpy(buf + m, ": ", 2);
        memcpy(buf + m + 2, detail, detail_len);
    }
    err->tag = tag;
    /* Every case of the variant carries a string at the same place. */
    err->val.bad_payload.ptr = buf;
    err->val.bad_payload.len = total;
    return false;
}

static inline bool pylon_error(pylon_err_t *err, uint8_t tag, const char *msg) {
    return pylon_error_n(err, tag, msg, NULL, 0);
}

static inline bool pylon_bad_payload(pylon_err_t *err, const char *msg) {
    return pylon_error(err, COMPOSE_DYNLINK_TYPES_ERROR_BAD_PAYLOAD, msg);
}

/* "unknown method: <name>" as `bad-method`. */
static inline bool pylon_bad_method(pylon_err_t *err, const pylon_str_t *method) {
    return pylon_error_n(err, COMPOSE_DYNLINK_TYPES_ERROR_BAD_METHOD, "unknown method",
                         method->ptr, method->len);
}

/* Replies with a copy of `len` bytes. */
static inline bool pylon_ok_copy(pylon_bytes_t *ret, const void *data, size_t len) {
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        abort();
    memcpy(buf, data, len);
    ret->ptr = buf;
    ret->len = len;
    return true;
}

/* Replies with a 32-bit value as 4 bytes, little-endian. */
static inline bool pylon_ok_u32le(pylon_bytes_t *ret, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return pylon_ok_copy(ret, b, sizeof b);
}

/* Replies with the CBOR written to `o` (pylon_cbor.h), handing its buffer
 * over (no copy; the post-return hook frees it). If memory ran out while it
 * was written, answers `limit-exceeded` instead: the instance stays alive. */
static inline bool pylon_ok_cbor(pylon_bytes_t *ret, pylon_err_t *err, pylon_cbor_out_t *o) {
    if (o->failed || !o->ptr)
        return pylon_error(err, COMPOSE_DYNLINK_TYPES_ERROR_LIMIT_EXCEEDED,
                           o->failed ? "out of memory while encoding the reply" : "empty reply");
    ret->ptr = o->ptr;
    ret->len = o->len;
    *o = (pylon_cbor_out_t){0};
    return true;
}

#endif

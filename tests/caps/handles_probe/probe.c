/* handles_probe: the host's half of the handle contract, seen from a cap.
 *
 * No real resources: a "handle" is a counter. What the tests check is that
 * the host calls the reserved methods when it should, with what it should.
 *
 *   $pylon/init         [key: bytes(32), max-handles: uint] -> null; keeps both.
 *                       Test hooks: max-handles 666 answers bad-payload,
 *                       667 traps (a cap that fails to start).
 *   $pylon/release-all  null -> uint: the live count, which drops to 0
 *   open                -> uint id of a new fake handle; limit-exceeded
 *                       once max-handles are live
 *   live                -> uint: handles live now
 *   max                 -> uint: the max-handles $pylon/init gave
 *   key                 -> bytes(32): the key $pylon/init gave
 *   inits               -> uint: how many times $pylon/init was called
 *   break-release       makes the next $pylon/release-all trap -> null
 *   trap                traps (the instance is dead afterwards)
 *   other               bad-method */
#include "cap.h"
#include "pylon_cap.h"

static uint8_t key[32];
static uint64_t max_handles;
static uint64_t live;
static uint64_t next_id = 1;
static uint64_t inits;
static bool release_traps;

/* [bytes(32), uint] -> key, max_handles; false when the shape is wrong. */
static bool parse_init(const cap_list_u8_t *payload) {
    const uint8_t *p = payload->ptr, *end = p + payload->len;
    uint8_t major;
    uint64_t arg;
    if (!pylon_cbor_head(&p, end, &major, &arg) || major != PYLON_CBOR_ARRAY || arg != 2)
        return false;
    if (!pylon_cbor_head(&p, end, &major, &arg) || major != PYLON_CBOR_BYTES || arg != 32 ||
        (size_t)(end - p) < 32)
        return false;
    memcpy(key, p, 32);
    p += 32;
    if (!pylon_cbor_head(&p, end, &major, &arg) || major != PYLON_CBOR_UINT || p != end)
        return false;
    max_handles = arg;
    return true;
}

static bool reply_uint(cap_list_u8_t *ret, pylon_err_t *err, uint64_t v) {
    pylon_cbor_out_t o = {0};
    pylon_cbor_uint(&o, v);
    return pylon_ok_cbor(ret, err, &o);
}

static bool reply_null(cap_list_u8_t *ret, pylon_err_t *err) {
    pylon_cbor_out_t o = {0};
    pylon_cbor_null(&o);
    return pylon_ok_cbor(ret, err, &o);
}

static bool dispatch(const cap_string_t *method, const cap_list_u8_t *payload, cap_list_u8_t *ret,
                     pylon_err_t *err) {
    if (pylon_method_is(method, "$pylon/init")) {
        inits++;
        if (!parse_init(payload))
            return pylon_bad_payload(err, "$pylon/init wants [bytes(32), uint]");
        if (max_handles == 666)
            return pylon_bad_payload(err, "max-handles 666 is refused (test hook)");
        if (max_handles == 667)
            __builtin_trap();
        return reply_null(ret, err);
    }
    if (pylon_method_is(method, "$pylon/release-all")) {
        if (payload->len != 1 || payload->ptr[0] != 0xf6)
            return pylon_bad_payload(err, "$pylon/release-all wants null");
        if (release_traps)
            __builtin_trap();
        uint64_t n = live;
        live = 0;
        return reply_uint(ret, err, n);
    }
    if (pylon_method_is(method, "open")) {
        if (live >= max_handles)
            return pylon_error(err, COMPOSE_DYNLINK_TYPES_ERROR_LIMIT_EXCEEDED,
                               "the handle table is full (max-handles)");
        live++;
        return reply_uint(ret, err, next_id++);
    }
    if (pylon_method_is(method, "live"))
        return reply_uint(ret, err, live);
    if (pylon_method_is(method, "max"))
        return reply_uint(ret, err, max_handles);
    if (pylon_method_is(method, "inits"))
        return reply_uint(ret, err, inits);
    if (pylon_method_is(method, "key")) {
        pylon_cbor_out_t o = {0};
        pylon_cbor_bytes(&o, key, sizeof key);
        return pylon_ok_cbor(ret, err, &o);
    }
    if (pylon_method_is(method, "break-release")) {
        release_traps = true;
        return reply_null(ret, err);
    }
    if (pylon_method_is(method, "trap"))
        __builtin_trap();
    return pylon_bad_method(err, method);
}

bool exports_compose_dynlink_provider_invoke(cap_string_t *method, cap_list_u8_t *payload,
                                             cap_list_u8_t *ret,
                                             exports_compose_dynlink_provider_error_t *err) {
    bool ok = dispatch(method, payload, ret, err);
    cap_list_u8_free(payload);
    cap_string_free(method);
    return ok;
}

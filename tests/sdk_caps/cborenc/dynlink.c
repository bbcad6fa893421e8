/* cborenc: exercises the SDK's CBOR writers through real provider calls.
 *
 *   uint      payload = CBOR uint          reply = the same uint, re-encoded
 *   int       payload = CBOR int (int64)   reply = the same int, re-encoded
 *   bytes     payload = raw bytes          reply = CBOR bytes of them
 *   text      payload = raw UTF-8          reply = CBOR text of it
 *   float     payload = 8 bytes (LE bits)  reply = CBOR float64
 *   range     payload = CBOR uint n        reply = [0, 1, ..., n-1]
 *   sample    payload = empty              reply = a map of every kind of item
 *   update    payload = CBOR [state: uint, add: uint]
 *                                          reply = {"ok": state + add} (a -update method's shape)
 *   overflow  payload = empty              reply = limit-exceeded (a length that cannot fit) */
#include "cap.h"
#include "pylon_cap.h"

static bool read_uint(const pylon_bytes_t *payload, uint64_t *v) {
    const uint8_t *p = payload->ptr, *end = p + payload->len;
    uint8_t major;
    return pylon_cbor_head(&p, end, &major, v) && major == PYLON_CBOR_UINT && p == end;
}

static bool reply(pylon_str_t *method, pylon_bytes_t *payload, pylon_bytes_t *ret, pylon_err_t *err) {
    pylon_cbor_out_t o = {0};
    if (pylon_method_is(method, "uint")) {
        uint64_t v;
        if (!read_uint(payload, &v))
            return pylon_bad_payload(err, "uint expects a CBOR unsigned integer");
        pylon_cbor_uint(&o, v);
    } else if (pylon_method_is(method, "int")) {
        const uint8_t *p = payload->ptr, *end = p + payload->len;
        uint8_t major;
        uint64_t arg;
        if (!pylon_cbor_head(&p, end, &major, &arg) || p != end || major > PYLON_CBOR_NEGINT ||
            arg > (uint64_t)INT64_MAX)
            return pylon_bad_payload(err, "int expects a CBOR integer in the int64 range");
        pylon_cbor_int(&o, major == PYLON_CBOR_UINT ? (int64_t)arg : -1 - (int64_t)arg);
    } else if (pylon_method_is(method, "bytes")) {
        pylon_cbor_bytes(&o, payload->ptr, payload->len);
    } else if (pylon_method_is(method, "text")) {
        pylon_cbor_text(&o, (const char *)payload->ptr, payload->len);
    } else if (pylon_method_is(method, "float")) {
        if (payload->len != 8)
            return pylon_bad_payload(err, "float expects 8 bytes");
        uint64_t bits = 0;
        for (int i = 7; i >= 0; i--)
            bits = (bits << 8) | payload->ptr[i];
        double v;
        memcpy(&v, &bits, sizeof v);
        pylon_cbor_float64(&o, v);
    } else if (pylon_method_is(method, "range")) {
        uint64_t n;
        if (!read_uint(payload, &n) || n > 1000000)
            return pylon_bad_payload(err, "range expects a CBOR uint up to 1000000");
        pylon_cbor_array(&o, n);
        for (uint64_t i = 0; i < n; i++)
            pylon_cbor_uint(&o, i);
    } else if (pylon_method_is(method, "sample")) {
        static const uint64_t uints[] = {0, 23, 24, 255, 256, 65535, 65536, 4294967295u, 4294967296u, UINT64_MAX};
        static const int64_t ints[] = {-1, -24, -25, -256, -257, -65537, INT64_MIN, INT64_MAX};
        pylon_cbor_map(&o, 6);
        pylon_cbor_text_z(&o, "uints");
        pylon_cbor_array(&o, sizeof uints / sizeof *uints);
        for (size_t i = 0; i < sizeof uints / sizeof *uints; i++)
            pylon_cbor_uint(&o, uints[i]);
        pylon_cbor_text_z(&o, "ints");
        pylon_cbor_array(&o, sizeof ints / sizeof *ints);
        for (size_t i = 0; i < sizeof ints / sizeof *ints; i++)
            pylon_cbor_int(&o, ints[i]);
        pylon_cbor_text_z(&o, "empty");
        pylon_cbor_array(&o, 3);
        pylon_cbor_bytes(&o, "", 0);
        pylon_cbor_text(&o, "", 0);
        pylon_cbor_map(&o, 0);
        pylon_cbor_text_z(&o, "simple");
        pylon_cbor_array(&o, 3);
        pylon_cbor_bool(&o, true);
        pylon_cbor_bool(&o, false);
        pylon_cbor_null(&o);
        pylon_cbor_text_z(&o, "text");
        pylon_cbor_text_z(&o, "h\xc3\xa9llo");
        pylon_cbor_text_z(&o, "float");
        pylon_cbor_float64(&o, -1.5);
    } else if (pylon_method_is(method, "update")) {
        const uint8_t *p = payload->ptr, *end = p + payload->len;
        uint8_t major;
        uint64_t n, state, add;
        if (!pylon_cbor_head(&p, end, &major, &n) || major != PYLON_CBOR_ARRAY || n != 2 ||
            !pylon_cbor_head(&p, end, &major, &state) || major != PYLON_CBOR_UINT ||
            !pylon_cbor_head(&p, end, &major, &add) || major != PYLON_CBOR_UINT || p != end)
            return pylon_bad_payload(err, "update expects a CBOR array [state: uint, add: uint]");
        pylon_cbor_map(&o, 1);
        pylon_cbor_text_z(&o, "ok");
        pylon_cbor_uint(&o, state + add);
    } else if (pylon_method_is(method, "overflow")) {
        pylon_cbor_text_z(&o, "a reply that then cannot grow");
        pylon_cbor_reserve(&o, SIZE_MAX - 8);
        pylon_cbor_null(&o); /* ignored once failed */
    } else {
        return pylon_bad_method(err, method);
    }
    return pylon_ok_cbor(ret, err, &o);
}

bool exports_compose_dynlink_provider_invoke(cap_string_t *method, cap_list_u8_t *payload, cap_list_u8_t *ret,
                                             exports_compose_dynlink_provider_error_t *err) {
    bool ok = reply(method, payload, ret, err);
    cap_list_u8_free(payload);
    cap_string_free(method);
    return ok;
}

/* cborcalc, dynlink face: every method takes one CBOR item and replies with
 * one (methods in calc.c). The pipeline per call:
 *
 *   payload --value_decode--> tree --method--> tree --value_encode--> reply
 *
 * Strings in the trees point into the payload, so it is freed only after the
 * reply is encoded. Errors: unknown method -> bad-method; malformed CBOR or a
 * wrong argument shape -> bad-payload; out of memory -> limit-exceeded. */
#include "cap.h"
#include "pylon_cap.h"

#include "calc.h"

static const calc_method *find_method(const cap_string_t *name) {
    for (const calc_method *m = CALC_METHODS; m->name; m++)
        if (pylon_method_is(name, m->name))
            return m;
    return NULL;
}

static bool fail(pylon_err_t *err, status st, const char *msg) {
    return pylon_error(err, st == ST_NO_MEMORY ? COMPOSE_DYNLINK_TYPES_ERROR_LIMIT_EXCEEDED
                                               : COMPOSE_DYNLINK_TYPES_ERROR_BAD_PAYLOAD,
                       msg);
}

static bool run(const calc_method *m, const cap_list_u8_t *payload, cap_list_u8_t *ret,
                pylon_err_t *err) {
    arena a = {0};
    value arg, result;
    const char *msg = NULL;
    status st = value_decode(&a, payload->ptr, payload->len, &arg, &msg);
    if (st == ST_OK)
        st = m->fn(&a, &arg, &result, &msg);
    if (st == ST_OK)
        st = value_encode(&result, &ret->ptr, &ret->len, &msg);
    arena_free(&a);
    return st == ST_OK ? true : fail(err, st, msg);
}

bool exports_compose_dynlink_provider_invoke(cap_string_t *method, cap_list_u8_t *payload,
                                             cap_list_u8_t *ret,
                                             exports_compose_dynlink_provider_error_t *err) {
    const calc_method *m = find_method(method);
    bool ok = m ? run(m, payload, ret, err) : pylon_bad_method(err, method);
    cap_list_u8_free(payload);
    cap_string_free(method);
    return ok;
}

/* misbehave: a provider that does what a host must survive.
 *
 *   echo  reply = the payload (handed back without a copy)
 *   trap  executes `unreachable`
 *   loop  never returns (only a fuel or epoch limit ends it)
 *   hog   allocates 1 MiB blocks until malloc fails, then frees them and
 *         replies with the bytes it got (u64 little-endian); with payload
 *         "trap" it traps at that point instead */
#include "cap.h"
#include "pylon_cap.h"

#define BLOCK ((size_t)1 << 20)

static bool hog(const cap_list_u8_t *payload, cap_list_u8_t *ret) {
    void *head = NULL; /* blocks form a list, so none can be optimized away */
    uint64_t total = 0;
    for (;;) {
        void **block = malloc(BLOCK);
        if (!block)
            break;
        *block = head;
        ((volatile uint8_t *)block)[BLOCK - 1] = 1; /* touch the far end */
        head = block;
        total += BLOCK;
    }
    if (payload->len == 4 && memcmp(payload->ptr, "trap", 4) == 0)
        __builtin_trap();
    while (head) {
        void *next = *(void **)head;
        free(head);
        head = next;
    }
    uint8_t le[8];
    for (int k = 0; k < 8; k++)
        le[k] = (uint8_t)(total >> (8 * k));
    return pylon_ok_copy(ret, le, sizeof le);
}

bool exports_compose_dynlink_provider_invoke(cap_string_t *method, cap_list_u8_t *payload,
                                             cap_list_u8_t *ret,
                                             exports_compose_dynlink_provider_error_t *err) {
    bool ok;
    if (pylon_method_is(method, "echo")) {
        *ret = *payload; /* ownership passes to the reply; post-return frees it */
        cap_string_free(method);
        return true;
    }
    if (pylon_method_is(method, "trap")) {
        __builtin_trap();
    } else if (pylon_method_is(method, "loop")) {
        volatile uint64_t spins = 0; /* volatile: the loop must really run */
        for (;;)
            spins++;
    } else if (pylon_method_is(method, "hog")) {
        ok = hog(payload, ret);
    } else {
        ok = pylon_bad_method(err, method);
    }
    cap_list_u8_free(payload);
    cap_string_free(method);
    return ok;
}

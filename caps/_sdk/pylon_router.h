/* pylon_router.h: compiles a cap's dynlink face into the portable guest's
 * router (caps/router, built by pylon.build.portable) unchanged.
 *
 * A cap's dynlink.c is written against the bindings of world `cap`
 * (`cap.h`: `cap_string_t`, `exports_compose_dynlink_provider_invoke`...).
 * The router is one component of world `router`, whose bindings
 * (`router.h`) spell the same canonical-ABI types differently. When the
 * router is built, the `cap.h` on the include path is a one-line file that
 * includes this header instead, so each cap's dynlink.c compiles as is:
 *
 *   - the `cap` world's type and function names map onto the router's (the
 *     layouts are identical: both come from the same WIT, wit/dynlink);
 *   - the cap's entry point, `exports_compose_dynlink_provider_invoke`, is
 *     renamed to PYLON_ROUTE_INVOKE, which the build sets per cap
 *     (`pylon_route_invoke_<cap>`), so several caps link into one module
 *     without a clash. Their other functions are either `static` or named
 *     after the cap (crc32c_update, zcore_*, zcbor_*...).
 *
 * The ownership rules of pylon_cap.h hold unchanged: the router hands the
 * cap's `method` and `payload` over as the generated export received them,
 * and the generated post-return hook frees the reply or error message. */
#ifndef PYLON_ROUTER_H
#define PYLON_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "router.h"

typedef router_string_t cap_string_t;
typedef router_list_u8_t cap_list_u8_t;
typedef exports_compose_dynlink_types_error_t exports_compose_dynlink_provider_error_t;

#define cap_string_free router_string_free
#define cap_list_u8_free router_list_u8_free

/* The router exports `types`, so its error tags carry an EXPORTS_ prefix. */
#define COMPOSE_DYNLINK_TYPES_ERROR_DENIED EXPORTS_COMPOSE_DYNLINK_TYPES_ERROR_DENIED
#define COMPOSE_DYNLINK_TYPES_ERROR_NOT_FOUND EXPORTS_COMPOSE_DYNLINK_TYPES_ERROR_NOT_FOUND
#define COMPOSE_DYNLINK_TYPES_ERROR_BAD_METHOD EXPORTS_COMPOSE_DYNLINK_TYPES_ERROR_BAD_METHOD
#define COMPOSE_DYNLINK_TYPES_ERROR_TRAPPED EXPORTS_COMPOSE_DYNLINK_TYPES_ERROR_TRAPPED
#define COMPOSE_DYNLINK_TYPES_ERROR_LIMIT_EXCEEDED EXPORTS_COMPOSE_DYNLINK_TYPES_ERROR_LIMIT_EXCEEDED
#define COMPOSE_DYNLINK_TYPES_ERROR_BAD_PAYLOAD EXPORTS_COMPOSE_DYNLINK_TYPES_ERROR_BAD_PAYLOAD

/* What every routed cap's entry point looks like (the provider's `invoke`). */
typedef bool (*pylon_route_invoke_t)(cap_string_t *method, cap_list_u8_t *payload, cap_list_u8_t *ret,
                                     exports_compose_dynlink_provider_error_t *err);

#ifdef PYLON_ROUTE_INVOKE
#define exports_compose_dynlink_provider_invoke PYLON_ROUTE_INVOKE
bool exports_compose_dynlink_provider_invoke(cap_string_t *method, cap_list_u8_t *payload, cap_list_u8_t *ret,
                                             exports_compose_dynlink_provider_error_t *err);
#endif

/* One routed cap: its name (what `resolve-by-id` matches), its entry point
 * and its optional Python shim (NULL when it ships none). The build
 * generates the table, `pylon_routes`, sorted by name. */
typedef struct {
    const char *name;
    pylon_route_invoke_t invoke;
    const char *shim;
    size_t shim_len;
} pylon_route_t;

extern const pylon_route_t pylon_routes[];
extern const size_t pylon_routes_count;
/* The routed names, ", "-separated, for the `not-found` message. */
extern const char pylon_routes_names[];

#endif

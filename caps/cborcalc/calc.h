/* cborcalc's methods over decoded CBOR values, independent of how they are
 * called (the dynlink face in dynlink.c is one caller). */
#ifndef CBORCALC_CALC_H
#define CBORCALC_CALC_H

#include "value.h"

/* A method: reads `arg`, writes `*out` (allocating from `a` as needed; `out`
 * may point into `arg`). On failure sets *err to a static message. */
typedef status (*calc_fn)(arena *a, const value *arg, value *out, const char **err);

typedef struct {
    const char *name;
    calc_fn fn;
} calc_method;

/* The methods, ending with {NULL, NULL}. */
extern const calc_method CALC_METHODS[];

#endif

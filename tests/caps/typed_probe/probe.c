/* typed_probe: implements wit-bindgen's C exports for probe.wit, as an
 * embedded face would; the generated dynlink face calls these. Echo
 * functions hand their (owned) argument back as the result, which the
 * dispatch frees after encoding: the ownership rules are exercised. */
#include <stdlib.h>
#include <string.h>

#include "bindings.h"

#define P(name) exports_pylon_probe_probe_##name
typedef exports_pylon_probe_probe_counter_t counter_t;

struct exports_pylon_probe_probe_counter_t {
    int64_t value;
};

static uint32_t live_counters;

bool P(echo_bool)(bool v) { return v; }
int8_t P(echo_s8)(int8_t v) { return v; }
int16_t P(echo_s16)(int16_t v) { return v; }
int32_t P(echo_s32)(int32_t v) { return v; }
int64_t P(echo_s64)(int64_t v) { return v; }
uint8_t P(echo_u8)(uint8_t v) { return v; }
uint16_t P(echo_u16)(uint16_t v) { return v; }
uint32_t P(echo_u32)(uint32_t v) { return v; }
uint64_t P(echo_u64)(uint64_t v) { return v; }
float P(echo_f32)(float v) { return v; }
double P(echo_f64)(double v) { return v; }
uint32_t P(echo_char)(uint32_t v) { return v; }
void P(echo_string)(bindings_string_t *v, bindings_string_t *ret) { *ret = *v; }
void P(echo_bytes)(bindings_list_u8_t *v, bindings_list_u8_t *ret) { *ret = *v; }
void P(echo_points)(P(list_point_t) * v, P(list_point_t) * ret) { *ret = *v; }
void P(echo_strings)(bindings_list_string_t *v, bindings_list_string_t *ret) { *ret = *v; }

bool P(echo_option)(bindings_string_t *maybe_v, bindings_string_t *ret) {
    if (!maybe_v)
        return false;
    *ret = *maybe_v;
    return true;
}

bool P(echo_option_u32)(uint32_t *maybe_v, uint32_t *ret) {
    if (!maybe_v)
        return false;
    *ret = *maybe_v;
    return true;
}

void P(echo_tuple)(bindings_tuple3_u8_string_f64_t *v, bindings_tuple3_u8_string_f64_t *ret) { *ret = *v; }
void P(echo_point)(P(point_t) * v, P(point_t) * ret) { *ret = *v; }
void P(echo_shape)(P(shape_t) * v, P(shape_t) * ret) { *ret = *v; }
P(color_t) P(echo_color)(P(color_t) v) { return v; }
void P(echo_list_option)(bindings_list_option_s64_t *v, bindings_list_option_s64_t *ret) { *ret = *v; }

bool P(maybe_fail)(bindings_string_t *v, bool fail, bindings_string_t *ret, P(failure_t) * err) {
    if (fail) {
        err->code = 7;
        err->why = *v;
        return false;
    }
    *ret = *v;
    return true;
}

bool P(check)(bool ok) { return ok; }

bool P(check_ok)(uint32_t v, uint32_t *ret) {
    *ret = v + 1;
    return v != 0;
}

bool P(check_err)(bool fail, bindings_string_t *err) {
    if (fail)
        bindings_string_dup(err, "it failed");
    return !fail;
}

double P(mix)(uint8_t a, int64_t b, float c, bindings_list_u8_t *d, P(point_t) * maybe_e) {
    double sum = (double)a + (double)b + (double)c;
    for (size_t i = 0; i < d->len; i++)
        sum += d->ptr[i];
    bindings_list_u8_free(d);
    if (maybe_e) {
        sum += maybe_e->x + maybe_e->y;
        P(point_free)(maybe_e);
    }
    return sum;
}

void P(nothing)(void) {}

uint32_t P(live)(void) { return live_counters; }

static P(own_counter_t) make(int64_t v) {
    counter_t *c = malloc(sizeof *c);
    if (!c)
        abort();
    c->value = v;
    live_counters++;
    return P(counter_new)(c);
}

P(own_counter_t) P(constructor_counter)(int64_t start) { return make(start); }
int64_t P(method_counter_get)(P(borrow_counter_t) self) { return self->value; }
int64_t P(method_counter_add)(P(borrow_counter_t) self, int64_t n) { return self->value += n; }
P(own_counter_t) P(method_counter_split)(P(borrow_counter_t) self) { return make(self->value); }
P(own_counter_t) P(static_counter_zero)(void) { return make(0); }

bool P(static_counter_try_new)(int64_t start, P(own_counter_t) * ret, bindings_string_t *err) {
    if (start < 0) {
        bindings_string_dup(err, "negative start");
        return false;
    }
    *ret = make(start);
    return true;
}

int64_t P(method_counter_absorb)(P(borrow_counter_t) self, P(own_counter_t) other) {
    counter_t *o = P(counter_rep)(other);
    self->value += o->value;
    P(counter_drop_own)(other); /* runs the destructor */
    return self->value;
}

int64_t P(static_counter_peek)(P(borrow_counter_t) other) { return other->value; }

bool P(static_counter_maybe)(bool make_one, P(own_counter_t) * ret) {
    if (make_one)
        *ret = make(42);
    return make_one;
}

void P(counter_destructor)(counter_t *rep) {
    live_counters--;
    free(rep);
}

/* The kv example cap: what wit-bindgen declares in bindings.h for kv.wit,
 * implemented with a plain array (an example, not a data structure lesson).
 *
 * Ownership follows wit-bindgen's C ABI: arguments passed by pointer belong
 * to the callee (free them or keep them), results are malloc'd by the callee
 * and freed by the bindings after they are sent. */
#include <stdlib.h>
#include <string.h>

#include "bindings.h"

typedef struct {
    bindings_string_t key;
    bindings_list_u8_t value;
} entry_t;

struct exports_example_kv_kv_store_t {
    entry_t *entries;
    size_t len, cap;
};

exports_example_kv_kv_own_store_t exports_example_kv_kv_constructor_store(void) {
    exports_example_kv_kv_store_t *store = calloc(1, sizeof *store);
    if (!store)
        abort(); /* out of memory: the host reports the cap as over its limit */
    return exports_example_kv_kv_store_new(store);
}

static entry_t *find(exports_example_kv_kv_store_t *store, const bindings_string_t *key) {
    for (size_t i = 0; i < store->len; i++) {
        entry_t *e = &store->entries[i];
        if (e->key.len == key->len && memcmp(e->key.ptr, key->ptr, key->len) == 0)
            return e;
    }
    return NULL;
}

void exports_example_kv_kv_method_store_set(exports_example_kv_kv_borrow_store_t self, bindings_string_t *key,
                                            bindings_list_u8_t *value) {
    entry_t *e = find(self, key);
    if (e) { /* replace the value, keep the stored key */
        bindings_list_u8_free(&e->value);
        e->value = *value;
        bindings_string_free(key);
        return;
    }
    if (self->len == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 8;
        entry_t *grown = realloc(self->entries, cap * sizeof *grown);
        if (!grown)
            abort();
        self->entries = grown;
        self->cap = cap;
    }
    self->entries[self->len++] = (entry_t){.key = *key, .value = *value}; /* keeps both buffers */
}

bool exports_example_kv_kv_method_store_get(exports_example_kv_kv_borrow_store_t self, bindings_string_t *key,
                                            bindings_list_u8_t *ret) {
    entry_t *e = find(self, key);
    bindings_string_free(key);
    if (!e)
        return false; /* none */
    ret->len = e->value.len;
    ret->ptr = malloc(ret->len ? ret->len : 1);
    if (!ret->ptr)
        abort();
    memcpy(ret->ptr, e->value.ptr, ret->len);
    return true;
}

void exports_example_kv_kv_method_store_keys(exports_example_kv_kv_borrow_store_t self, bindings_list_string_t *ret) {
    ret->len = self->len;
    ret->ptr = malloc((self->len ? self->len : 1) * sizeof *ret->ptr);
    if (!ret->ptr)
        abort();
    for (size_t i = 0; i < self->len; i++)
        bindings_string_dup_n(&ret->ptr[i], (const char *)self->entries[i].key.ptr, self->entries[i].key.len);
}

/* Runs when the guest drops its handle, or when its run ends with the
 * handle still open ($pylon/release-all). */
void exports_example_kv_kv_store_destructor(exports_example_kv_kv_store_t *rep) {
    for (size_t i = 0; i < rep->len; i++) {
        bindings_string_free(&rep->entries[i].key);
        bindings_list_u8_free(&rep->entries[i].value);
    }
    free(rep->entries);
    free(rep);
}

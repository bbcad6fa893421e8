/* pylon_handles.h: the handle table of a dynlink cap (docs/cap-interface.md,
 * "Handles" and "Reserved methods").
 *
 * One table per cap instance (a global: an instance is one wasm instance).
 * A resource the cap's C code creates (wit-bindgen's `<r>_new(rep)`) gets a
 * slot; the guest sees it as a 16-byte token:
 *
 *   bytes 0-3  slot index (u32 LE)      bytes 4-7  resource type (u32 LE)
 *   bytes 8-15 tag (SipHash-2-4 of a fresh serial under the host's key)
 *
 * Every token the guest sends is checked against all three, so a guessed,
 * stale (slot reused: new serial, new tag), other-type or other-instance
 * token is refused. The generated dispatch (pylon.build.capgen.c_dispatch)
 * is the only user; a hand-written cap may use it the same way.
 *
 * Inside the cap, wit-bindgen's `int32_t __handle` is the slot index + 1
 * (0 is never a handle), so the bindings' own/rep/drop helpers work over it. */
#ifndef PYLON_HANDLES_H
#define PYLON_HANDLES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PYLON_TOKEN_BYTES 16
#define PYLON_KEY_BYTES 32
/* max-handles until $pylon/init says otherwise (the contract's default). */
#define PYLON_DEFAULT_MAX_HANDLES 4096u

/* The interface's resource types, in the order of their type index. */
typedef struct {
    const char *name;         /* WIT name, for messages ("statement") */
    void (*destroy)(void *);  /* runs wit-bindgen's <r>_destructor(rep) */
} pylon_resource_type_t;

/* Registers the resource types (once, from the generated code, before use). */
void pylon_handles_types(const pylon_resource_type_t *types, uint32_t count);

/* `$pylon/init`: the key and the table size. False if called twice. */
bool pylon_handles_init(const uint8_t key[PYLON_KEY_BYTES], uint64_t max_handles);
bool pylon_handles_ready(void);
uint32_t pylon_handles_max(void);

/* A new slot for `rep` of resource type `type`; never fails (aborts only
 * when memory runs out): a creation past max-handles is undone by the
 * caller after the call (pylon_handles_over_limit). Returns slot + 1. */
int32_t pylon_handle_new(uint32_t type, void *rep);
/* The rep of a live handle of `type`; traps on anything else (a bug in the
 * cap's own C, never the guest's input: that is checked by _check). */
void *pylon_handle_rep(int32_t handle, uint32_t type);
/* Runs the destructor and frees the slot (wit-bindgen's drop_own). */
void pylon_handle_drop(int32_t handle, uint32_t type);

/* The handle of a token if it is live and of `type`, else 0. */
int32_t pylon_handle_check(const uint8_t *token, size_t len, uint32_t type);
/* The token of a live handle. */
void pylon_handle_token(int32_t handle, uint8_t out[PYLON_TOKEN_BYTES]);
/* An own<R> argument moved into a call: the guest's token dies (new tag),
 * the resource stays in the table for the callee to keep or drop. */
void pylon_handle_disown(int32_t handle);

/* Creation order: a mark before a call; after it, whether the table went
 * past max-handles, and undoing (destroying) what the call created. */
uint64_t pylon_handles_mark(void);
bool pylon_handles_over_limit(void);
void pylon_handles_destroy_since(uint64_t mark);
/* `$pylon/release-all`: every live handle's destructor, newest first. */
uint32_t pylon_handles_release_all(void);
uint32_t pylon_handles_live(void);

/* Bytes from a generator keyed by $pylon/init's key (the host's OS random
 * source): for a cap that needs randomness without WASI (SQLite's random()). */
void pylon_random_bytes(uint8_t *out, size_t n);

/* SipHash-2-4 (Aumasson & Bernstein), 64-bit output, 16-byte key. */
uint64_t pylon_siphash24(const uint8_t key[16], const uint8_t *msg, size_t len);

#endif

/* pylon_handles.c: see pylon_handles.h. Compiled into every generated
 * dynlink face (pylon.build.caps adds it when cap.toml has [interface]). */
#include "pylon_handles.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    void *rep;
    uint64_t tag;
    uint64_t order; /* creation serial: release-all goes newest first */
    uint32_t type;
    uint32_t next_free; /* free list link (index + 1; 0 ends it) */
    bool live;
} slot_t;

static struct {
    slot_t *slots;
    uint32_t len, cap; /* slots in use at least once / allocated */
    uint32_t free_head; /* index + 1 of the first free slot, 0 if none */
    uint32_t live;
    uint32_t max;
    uint64_t serial; /* bumps for every tag handed out */
    uint8_t key[PYLON_KEY_BYTES];
    bool ready;
    const pylon_resource_type_t *types;
    uint32_t ntypes;
} T = {.max = PYLON_DEFAULT_MAX_HANDLES};

/* --- SipHash-2-4 -------------------------------------------------------------
 * Hand-written (~40 lines) because a dynlink cap has no WASI and no crypto
 * library: this is the keyed generator behind the tags. SipHash is a PRF
 * under a secret key, which is what "unforgeable without the key" needs;
 * tests/test_capgen_c.py checks it against the paper's reference vector. */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
    do {                                                                       \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);              \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                 \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                 \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);              \
    } while (0)

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

uint64_t pylon_siphash24(const uint8_t key[16], const uint8_t *msg, size_t len) {
    uint64_t k0 = le64(key), k1 = le64(key + 8);
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    size_t full = len & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = le64(msg + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++)
        b |= (uint64_t)msg[full + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* A fresh tag: SipHash of (key[16..32] || serial) under key[0..16], so all
 * 32 key bytes the host gives count and no two tags of a run repeat. */
static uint64_t fresh_tag(void) {
    uint8_t msg[24];
    memcpy(msg, T.key + 16, 16);
    uint64_t s = ++T.serial;
    for (int i = 0; i < 8; i++)
        msg[16 + i] = (uint8_t)(s >> (8 * i));
    return pylon_siphash24(T.key, msg, sizeof msg);
}

void pylon_handles_types(const pylon_resource_type_t *types, uint32_t count) {
    T.types = types;
    T.ntypes = count;
}

bool pylon_handles_init(const uint8_t key[PYLON_KEY_BYTES], uint64_t max_handles) {
    if (T.ready)
        return false;
    memcpy(T.key, key, PYLON_KEY_BYTES);
    T.max = max_handles > 0x7fffffffu ? 0x7fffffffu : (uint32_t)max_handles;
    T.ready = true;
    return true;
}

bool pylon_handles_ready(void) { return T.ready; }
uint32_t pylon_handles_max(void) { return T.max; }
uint32_t pylon_handles_live(void) { return T.live; }

int32_t pylon_handle_new(uint32_t type, void *rep) {
    uint32_t i;
    if (T.free_head) {
        i = T.free_head - 1;
        T.free_head = T.slots[i].next_free;
    } else {
        if (T.len == T.cap) {
            uint32_t cap = T.cap ? T.cap * 2 : 16;
            slot_t *grown = realloc(T.slots, (size_t)cap * sizeof *grown);
            if (!grown || cap > 0x7ffffffeu)
                abort();
            T.slots = grown;
            T.cap = cap;
        }
        i = T.len++;
    }
    uint64_t tag = fresh_tag();
    T.slots[i] = (slot_t){.rep = rep, .tag = tag, .order = T.serial, .type = type, .live = true};
    T.live++;
    return (int32_t)(i + 1);
}

static slot_t *live_slot(int32_t handle) {
    if (handle <= 0 || (uint32_t)handle > T.len)
        return NULL;
    slot_t *s = &T.slots[handle - 1];
    return s->live ? s : NULL;
}

void *pylon_handle_rep(int32_t handle, uint32_t type) {
    slot_t *s = live_slot(handle);
    if (!s || s->type != type)
        abort(); /* the cap's own C used a handle it does not hold */
    return s->rep;
}

void pylon_handle_drop(int32_t handle, uint32_t type) {
    slot_t *s = live_slot(handle);
    if (!s || s->type != type)
        abort();
    void *rep = s->rep;
    /* Free the slot before the destructor runs: it may drop other handles. */
    s->live = false;
    s->rep = NULL;
    s->next_free = T.free_head;
    T.free_head = (uint32_t)handle;
    T.live--;
    if (type < T.ntypes && T.types[type].destroy)
        T.types[type].destroy(rep);
}

int32_t pylon_handle_check(const uint8_t *token, size_t len, uint32_t type) {
    if (len != PYLON_TOKEN_BYTES)
        return 0;
    uint32_t slot = (uint32_t)token[0] | (uint32_t)token[1] << 8 | (uint32_t)token[2] << 16 |
                    (uint32_t)token[3] << 24;
    uint32_t ttype = (uint32_t)token[4] | (uint32_t)token[5] << 8 | (uint32_t)token[6] << 16 |
                     (uint32_t)token[7] << 24;
    if (slot >= T.len || ttype != type)
        return 0;
    slot_t *s = &T.slots[slot];
    /* Compare the tag without an early exit (no timing hint per byte). */
    uint64_t diff = le64(token + 8) ^ s->tag;
    if (!s->live || s->type != type || diff != 0)
        return 0;
    return (int32_t)(slot + 1);
}

void pylon_handle_token(int32_t handle, uint8_t out[PYLON_TOKEN_BYTES]) {
    slot_t *s = live_slot(handle);
    if (!s)
        abort();
    uint32_t slot = (uint32_t)handle - 1;
    for (int i = 0; i < 4; i++) {
        out[i] = (uint8_t)(slot >> (8 * i));
        out[4 + i] = (uint8_t)(s->type >> (8 * i));
    }
    for (int i = 0; i < 8; i++)
        out[8 + i] = (uint8_t)(s->tag >> (8 * i));
}

void pylon_handle_disown(int32_t handle) {
    slot_t *s = live_slot(handle);
    if (s)
        s->tag = fresh_tag();
}

uint64_t pylon_handles_mark(void) { return T.serial + 1; }

bool pylon_handles_over_limit(void) { return T.live > T.max; }

static int newest_first(const void *a, const void *b) {
    uint64_t x = T.slots[*(const uint32_t *)a].order, y = T.slots[*(const uint32_t *)b].order;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Destroys the live handles created at or after `mark`, newest first;
 * returns how many were live when it started. */
static uint32_t destroy_from(uint64_t mark) {
    uint32_t n = 0;
    uint32_t *which = malloc((size_t)(T.live ? T.live : 1) * sizeof *which);
    if (!which)
        abort();
    for (uint32_t i = 0; i < T.len; i++)
        if (T.slots[i].live && T.slots[i].order >= mark)
            which[n++] = i;
    qsort(which, n, sizeof *which, newest_first);
    uint64_t *orders = malloc((size_t)(n ? n : 1) * sizeof *orders);
    if (!orders)
        abort();
    for (uint32_t k = 0; k < n; k++)
        orders[k] = T.slots[which[k]].order;
    for (uint32_t k = 0; k < n; k++) {
        slot_t *s = &T.slots[which[k]];
        /* An earlier destructor may have dropped it already (a connection
         * finalizing its statements), and the slot may hold a newer one. */
        if (s->live && s->order == orders[k])
            pylon_handle_drop((int32_t)which[k] + 1, s->type);
    }
    free(orders);
    free(which);
    return n;
}

void pylon_handles_destroy_since(uint64_t mark) { destroy_from(mark); }

uint32_t pylon_handles_release_all(void) { return destroy_from(0); }

void pylon_random_bytes(uint8_t *out, size_t n) {
    /* A different message domain from the tags ("rand" + counter), so these
     * bytes say nothing about any tag: SipHash outputs are independent
     * under one key. Before $pylon/init the key is zero: not random. */
    static uint64_t counter;
    for (size_t i = 0; i < n; i += 8) {
        uint8_t msg[12] = {'r', 'a', 'n', 'd'};
        uint64_t c = ++counter;
        for (int k = 0; k < 8; k++)
            msg[4 + k] = (uint8_t)(c >> (8 * k));
        uint64_t v = pylon_siphash24(T.key, msg, sizeof msg);
        for (size_t k = 0; k < 8 && i + k < n; k++)
            out[i + k] = (uint8_t)(v >> (8 * k));
    }
}

/* zstd core: one-shot and streaming (de)compression with an output limit.
 *
 * The one C source every face of the zstd cap shares (the typed embedded
 * component, embedded.c, and the dynlink provider, dynlink.c). It speaks
 * plain C: buffers are malloc'ed and handed to the caller, errors are a kind
 * plus a static message, so a face only translates types. libzstd itself
 * (zstd.c, zstd.h) comes from the `zstandard` sdist at build time; see
 * python/pylon/build/embedded.py and [vendor.zstd] in cap.toml. */
#ifndef PYLON_ZSTD_CORE_H
#define PYLON_ZSTD_CORE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    ZCORE_OK = 0,
    ZCORE_CORRUPT,   /* not valid zstd data, or truncated */
    ZCORE_TOO_LARGE, /* output would pass the caller's limit */
    ZCORE_FAILED,    /* a refused parameter, or out of memory */
} zcore_kind;

/* The outcome of a call. `message` is static (never freed); `limit` is the
 * limit that was hit for ZCORE_TOO_LARGE. */
typedef struct {
    zcore_kind kind;
    const char *message;
    uint64_t limit;
} zcore_status;

/* Output bytes, malloc'ed; the caller owns `ptr` (NULL when len is 0). */
typedef struct {
    uint8_t *ptr;
    size_t len;
} zcore_buf;

void zcore_level_range(int32_t *min, int32_t *max);

/* One frame holding `src`; level 0 is zstd's default. */
zcore_status zcore_compress(const uint8_t *src, size_t len, int32_t level, zcore_buf *out);

/* Every frame in `src`, producing at most `max_output` bytes. */
zcore_status zcore_decompress(const uint8_t *src, size_t len, uint64_t max_output, zcore_buf *out);

typedef struct zcore_cstream zcore_cstream;
typedef enum { ZCORE_CONTINUE, ZCORE_FLUSH, ZCORE_END } zcore_mode;

zcore_cstream *zcore_cstream_new(int32_t level);
/* Feeds `src` (may be empty) and applies `mode`; `out` gets what is ready. */
zcore_status zcore_cstream_feed(zcore_cstream *s, const uint8_t *src, size_t len, zcore_mode mode,
                                zcore_buf *out);
void zcore_cstream_free(zcore_cstream *s);

typedef struct zcore_dstream zcore_dstream;

zcore_dstream *zcore_dstream_new(uint64_t max_output);
zcore_status zcore_dstream_feed(zcore_dstream *s, const uint8_t *src, size_t len, zcore_buf *out);
/* True when the input so far ends at a frame boundary. */
int zcore_dstream_at_frame_end(const zcore_dstream *s);
void zcore_dstream_free(zcore_dstream *s);

#endif

/* crc32c core: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78).
 *
 * This is the one source every face of the cap shares: the dynlink provider,
 * the embedded typed component and the MicroPython static module all call it.
 * It has no dependencies beyond <stdint.h> / <stddef.h>, so it builds for
 * wasm32-freestanding, wasm32-wasi and the host alike. */
#ifndef PYLON_CRC32C_H
#define PYLON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends `crc` (the value a previous call returned, 0 to start) over
 * `len` bytes at `buf`. crc32c_update(0, "123456789", 9) == 0xE3069283. */
uint32_t crc32c_update(uint32_t crc, const uint8_t *buf, size_t len);

#endif

/* Hardware abstraction for the wasi-p1 port: WASI has no interrupt char,
 * no raw terminal mode and no scheduler, so most of the HAL is empty. */
#include <unistd.h>

static inline void mp_hal_set_interrupt_char(char c) {
    (void)c;
}

static inline mp_uint_t mp_hal_ticks_cpu(void) {
    return 0;
}

/* No pins on a wasm host; defining the type keeps py/mphal.h from pulling in
 * extmod/virtpin.h, which the pinned source does not ship. */
#define mp_hal_pin_obj_t void *

/* MicroPython binding of the crc32c cap: module `crc32c`,
 * crc32c(data, crc=0) -> int.
 *
 * The checksum itself is caps/crc32c/src/crc32c.c, the same source every other
 * face of the cap compiles; this file only converts arguments. */
#include "py/obj.h"
#include "py/runtime.h"

#include "crc32c.h"

static mp_obj_t mod_crc32c_crc32c(size_t n_args, const mp_obj_t *args) {
    /* MicroPython str has the buffer protocol; the cap's other faces take
     * bytes-like objects only, so refuse str here too. */
    if (mp_obj_is_str(args[0])) {
        mp_raise_TypeError(MP_ERROR_TEXT("crc32c() needs a bytes-like object, not str"));
    }
    mp_buffer_info_t buf;
    mp_get_buffer_raise(args[0], &buf, MP_BUFFER_READ);
    uint32_t crc = 0;
    if (n_args > 1) {
        /* Accept the full unsigned 32-bit range (a previous result), which
         * can exceed a small int on wasm32. */
        crc = (uint32_t)mp_obj_int_get_truncated(args[1]);
    }
    crc = crc32c_update(crc, (const uint8_t *)buf.buf, buf.len);
    return mp_obj_new_int_from_uint(crc);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(mod_crc32c_crc32c_obj, 1, 2, mod_crc32c_crc32c);

static const mp_rom_map_elem_t mod_crc32c_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_crc32c) },
    { MP_ROM_QSTR(MP_QSTR_crc32c), MP_ROM_PTR(&mod_crc32c_crc32c_obj) },
};
static MP_DEFINE_CONST_DICT(mod_crc32c_globals, mod_crc32c_globals_table);

const mp_obj_module_t mp_module_crc32c = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&mod_crc32c_globals,
};

MP_REGISTER_MODULE(MP_QSTR_crc32c, mp_module_crc32c);

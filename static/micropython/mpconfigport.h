/* Pylon's MicroPython port: one flat wasm32-wasi (preview 1) command module.
 *
 * Only py/ and shared/ exist in the pinned source (the registry sdist has no
 * extmod/ or lib/), so everything here stays inside what py/ implements.
 * Caps add their own modules through MP_REGISTER_MODULE in their binding. */
#include <stdint.h>

#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)

/* setjmp/longjmp NLR: wasm has no register file to save, so the only NLR that
 * works is setjmp, lowered by LLVM to wasm exception handling (see
 * ehtag.s and docs/micropython-static.md). */
#define MICROPY_NLR_SETJMP (1)

/* GC: conservative, scanning the shadow stack in linear memory. Pointers the
 * compiler keeps in wasm locals are made visible by the spill pass the build
 * runs after linking (python/pylon/build/wasm_spill.py). */
#define MICROPY_ENABLE_GC (1)
#define MICROPY_GC_ALLOC_THRESHOLD (1)
#define MICROPY_STACK_CHECK (1)

/* 1-byte hashes make string-keyed dicts quadratic (measured); 2 is the cure. */
#define MICROPY_QSTR_BYTES_IN_HASH (2)

#define MICROPY_ENABLE_COMPILER (1)
#define MICROPY_PERSISTENT_CODE_LOAD (0)
#define MICROPY_EMIT_X64 (0)
#define MICROPY_EMIT_THUMB (0)
#define MICROPY_EMIT_INLINE_THUMB (0)
#define MICROPY_ENABLE_SOURCE_LINE (1)
#define MICROPY_ERROR_REPORTING (MICROPY_ERROR_REPORTING_DETAILED)
#define MICROPY_WARNINGS (1)
#define MICROPY_FLOAT_IMPL (MICROPY_FLOAT_IMPL_DOUBLE)
#define MICROPY_LONGINT_IMPL (MICROPY_LONGINT_IMPL_MPZ)
#define MICROPY_USE_INTERNAL_PRINTF (0)
#define MICROPY_USE_INTERNAL_ERRNO (0)
#define MICROPY_ENABLE_EXTERNAL_IMPORT (1)
#define MICROPY_READER_POSIX (1)
#define MICROPY_HELPER_REPL (0)
#define MICROPY_KBD_EXCEPTION (0)
#define MICROPY_ENABLE_SCHEDULER (0)
#define MICROPY_MODULE_FROZEN (0)
#define MICROPY_VFS (0)
#define MICROPY_PY_SYS_ARGV (1)
#define MICROPY_PY_SYS_PATH (1)
#define MICROPY_PY_SYS_EXIT (1)
#define MICROPY_PY_SYS_STDFILES (1)
#define MICROPY_PY_SYS_PLATFORM "wasi"
#define MICROPY_PY_SYS_SETTRACE (0)
#define MICROPY_PY_BUILTINS_INPUT (0)
#define MICROPY_PY_BUILTINS_HELP (0)
#define MICROPY_PY_IO (1)
#define MICROPY_PY_THREAD (0)
#define MICROPY_PY_MICROPYTHON_MEM_INFO (1)
/* Modules that live in extmod/ (absent from the pinned source). */
#define MICROPY_PY_OS (0)
#define MICROPY_PY_TIME (0)
#define MICROPY_PY_JSON (0)
#define MICROPY_PY_RE (0)
#define MICROPY_PY_HEAPQ (0)
#define MICROPY_PY_HASHLIB (0)
#define MICROPY_PY_BINASCII (0)
#define MICROPY_PY_RANDOM (0)
#define MICROPY_PY_SELECT (0)
#define MICROPY_PY_PLATFORM (0)
#define MICROPY_PY_DEFLATE (0)
#define MICROPY_PY_FRAMEBUF (0)
#define MICROPY_PY_MACHINE (0)
#define MICROPY_PY_UCTYPES (0)
#define MICROPY_PY_ASYNCIO (0)
#define MICROPY_PY_ERRNO (1)

#define MICROPY_ALLOC_PATH_MAX (256)
#define MICROPY_PORT_INIT_FUNC
#define MICROPY_HW_BOARD_NAME "pylon"
#define MICROPY_HW_MCU_NAME "wasm32-wasi"

typedef intptr_t mp_int_t;
typedef uintptr_t mp_uint_t;
typedef long mp_off_t;

#define MP_STATE_PORT MP_STATE_VM

#include <alloca.h>

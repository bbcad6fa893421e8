/* Entry point of Pylon's MicroPython static profile (wasm32-wasi, preview 1).
 *
 *   pylon-mp.wasm SCRIPT [ARG...]
 *
 * Runs SCRIPT as __main__ with sys.argv = [SCRIPT, ARG...] and SCRIPT's folder
 * first on sys.path (as CPython does), so sibling .py modules in a preopened
 * folder import. Exit status: 0, SystemExit's code, or 1 after printing the
 * traceback of an uncaught exception (a SyntaxError included) to stderr. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "py/builtin.h"
#include "py/compile.h"
#include "py/cstack.h"
#include "py/gc.h"
#include "py/lexer.h"
#include "py/mperrno.h"
#include "py/mphal.h"
#include "py/runtime.h"
#include "py/stackctrl.h"

/* Default GC heap; PYLON_MP_HEAP (bytes, or with a k/m suffix) overrides it.
 * 8 MiB: Node.js 20 (our legacy-EH test runtime) crashes in its WASI layer
 * after a run whose linear memory reached ~16 MiB more than it started with. */
#define DEFAULT_HEAP_BYTES (8 * 1024 * 1024)
/* The shadow stack is 1 MiB (-z stack-size in python/pylon/build/micropython.py),
 * but the limit MicroPython checks (RecursionError) is lower: runtimes keep
 * wasm frames on a separate native stack, 512 KiB by default in wasmtime, and
 * a native frame costs ~1.35x its shadow frame in Python-to-Python calls.
 * 320 KiB of shadow stack (~600 levels of Python recursion) ends in a
 * RecursionError there rather than a trap. */
#define STACK_CHECK_BYTES (320 * 1024)

static char *stack_top;

static void write_all(int fd, const char *str, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, str, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        str += n;
        len -= (size_t)n;
    }
}

static void stderr_print_strn(void *env, const char *str, size_t len) {
    (void)env;
    write_all(STDERR_FILENO, str, len);
}

const mp_print_t mp_stderr_print = {NULL, stderr_print_strn};

/* ---- HAL ------------------------------------------------------------- */

mp_uint_t mp_hal_stdout_tx_strn(const char *str, size_t len) {
    write_all(STDOUT_FILENO, str, len);
    return len;
}

/* No "\n" -> "\r\n" cooking: output goes to files and pipes, not a UART. */
void mp_hal_stdout_tx_strn_cooked(const char *str, size_t len) {
    write_all(STDOUT_FILENO, str, len);
}

void mp_hal_stdout_tx_str(const char *str) {
    write_all(STDOUT_FILENO, str, strlen(str));
}

int mp_hal_stdin_rx_chr(void) {
    unsigned char c;
    return read(STDIN_FILENO, &c, 1) == 1 ? c : -1;
}

static uint64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

mp_uint_t mp_hal_ticks_ms(void) {
    return (mp_uint_t)(monotonic_ns() / 1000000u);
}

mp_uint_t mp_hal_ticks_us(void) {
    return (mp_uint_t)(monotonic_ns() / 1000u);
}

uint64_t mp_hal_time_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void mp_hal_delay_us(mp_uint_t us) {
    struct timespec ts = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000};
    nanosleep(&ts, NULL);
}

void mp_hal_delay_ms(mp_uint_t ms) {
    mp_hal_delay_us(ms * 1000u);
}

/* ---- GC roots ---------------------------------------------------------
 * Roots are MicroPython's own state (scanned by gc_collect_start) and the C
 * shadow stack in linear memory, from the current stack pointer up to the
 * top recorded in main(). wasm locals are invisible here: the spill pass
 * copies every pointer-sized local into the frame's shadow-stack slots. */
void gc_collect(void) {
    volatile char marker = 0;
    char *sp = (char *)&marker;
    gc_collect_start();
    gc_collect_root((void **)((uintptr_t)sp & ~(uintptr_t)(sizeof(void *) - 1)),
        ((uintptr_t)stack_top - ((uintptr_t)sp & ~(uintptr_t)(sizeof(void *) - 1))) / sizeof(void *));
    gc_collect_end();
}

/* ---- imports from the preopened filesystem ---------------------------- */

mp_import_stat_t mp_import_stat(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            return MP_IMPORT_STAT_DIR;
        }
        if (S_ISREG(st.st_mode)) {
            return MP_IMPORT_STAT_FILE;
        }
    }
    return MP_IMPORT_STAT_NO_EXIST;
}

void nlr_jump_fail(void *val) {
    fprintf(stderr, "FATAL: uncaught NLR %p\n", val);
    exit(1);
}

void MP_NORETURN __fatal_error(const char *msg) {
    fprintf(stderr, "FATAL: %s\n", msg);
    exit(1);
}

#ifndef NDEBUG
void MP_WEAK __assert_func(const char *file, int line, const char *func, const char *expr) {
    fprintf(stderr, "Assertion '%s' failed, at file %s:%d\n", expr, file, line);
    __fatal_error("assertion failed");
}
#endif

/* ---- running a script -------------------------------------------------- */

static int exit_code_of(mp_obj_t exc) {
    if (mp_obj_is_subclass_fast(MP_OBJ_FROM_PTR(mp_obj_get_type(exc)), MP_OBJ_FROM_PTR(&mp_type_SystemExit))) {
        /* None -> 0; an int -> its value; anything else is printed, -> 1 (as CPython). */
        mp_obj_t value = mp_obj_exception_get_value(exc);
        mp_int_t code = 0;
        if (value != mp_const_none && !mp_obj_get_int_maybe(value, &code)) {
            mp_obj_print_helper(&mp_stderr_print, value, PRINT_STR);
            mp_print_str(&mp_stderr_print, "\n");
            code = 1;
        }
        return (int)(code & 255);
    }
    mp_obj_print_exception(&mp_stderr_print, exc);
    return 1;
}

static int run_file(const char *path) {
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        qstr source_name = qstr_from_str(path);
        mp_lexer_t *lex = mp_lexer_new_from_file(source_name);
        mp_store_global(MP_QSTR___file__, MP_OBJ_NEW_QSTR(source_name));
        mp_parse_tree_t tree = mp_parse(lex, MP_PARSE_FILE_INPUT);
        mp_obj_t module_fun = mp_compile(&tree, source_name, false);
        mp_call_function_0(module_fun);
        nlr_pop();
        return 0;
    }
    return exit_code_of(MP_OBJ_FROM_PTR(nlr.ret_val));
}

static size_t heap_bytes(void) {
    const char *s = getenv("PYLON_MP_HEAP");
    if (!s || !*s) {
        return DEFAULT_HEAP_BYTES;
    }
    char *end;
    unsigned long n = strtoul(s, &end, 10);
    if (*end == 'k' || *end == 'K') {
        n *= 1024;
    } else if (*end == 'm' || *end == 'M') {
        n *= 1024 * 1024;
    }
    return n < 64 * 1024 ? 64 * 1024 : (size_t)n;
}

int main(int argc, char **argv) {
    volatile char top_marker = 0;
    stack_top = (char *)&top_marker;
    mp_cstack_init_with_top(stack_top, STACK_CHECK_BYTES);

    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRIPT.py [ARG...]\n", argc > 0 ? argv[0] : "pylon-mp");
        return 2;
    }

    size_t size = heap_bytes();
    char *heap = malloc(size);
    if (!heap) {
        fprintf(stderr, "pylon-mp: cannot allocate a %zu-byte heap\n", size);
        return 1;
    }
    gc_init(heap, heap + size);
    mp_init();

    /* sys.path = [<script folder>, ""]: siblings of the script import. */
    const char *script = argv[1];
    const char *slash = strrchr(script, '/');
    mp_obj_t dir = slash
        ? mp_obj_new_str(script, (size_t)(slash - script) == 0 ? 1 : (size_t)(slash - script))
        : MP_OBJ_NEW_QSTR(MP_QSTR_);
    mp_obj_list_append(mp_sys_path, dir);
    if (slash) {
        mp_obj_list_append(mp_sys_path, MP_OBJ_NEW_QSTR(MP_QSTR_));
    }
    for (int i = 1; i < argc; i++) {
        mp_obj_list_append(mp_sys_argv, mp_obj_new_str(argv[i], strlen(argv[i])));
    }

    int code = run_file(script);
    mp_deinit();
    /* The heap is not freed: the process ends here. */
    return code;
}

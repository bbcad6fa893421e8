/* sys.stdin / sys.stdout / sys.stderr as thin streams over WASI fds 0/1/2,
 * and open() over the same stream type for files in preopened folders.
 *
 * shared/runtime/sys_stdio_mphal.c sends stderr to the stdout HAL (fine on a
 * board with one UART); a command module must keep the two streams apart. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "py/mperrno.h"
#include "py/obj.h"
#include "py/runtime.h"
#include "py/stream.h"

typedef struct _stdio_obj_t {
    mp_obj_base_t base;
    int fd;
} stdio_obj_t;

static void stdio_print(const mp_print_t *print, mp_obj_t self_in, mp_print_kind_t kind) {
    (void)kind;
    stdio_obj_t *self = MP_OBJ_TO_PTR(self_in);
    mp_printf(print, "<io.FileIO %d>", self->fd);
}

static mp_uint_t stdio_read(mp_obj_t self_in, void *buf, mp_uint_t size, int *errcode) {
    stdio_obj_t *self = MP_OBJ_TO_PTR(self_in);
    ssize_t n = read(self->fd, buf, size);
    if (n < 0) {
        *errcode = errno;
        return MP_STREAM_ERROR;
    }
    return (mp_uint_t)n;
}

static mp_uint_t stdio_write(mp_obj_t self_in, const void *buf, mp_uint_t size, int *errcode) {
    stdio_obj_t *self = MP_OBJ_TO_PTR(self_in);
    const char *p = buf;
    mp_uint_t left = size;
    while (left > 0) {
        ssize_t n = write(self->fd, p, left);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            *errcode = errno;
            return MP_STREAM_ERROR;
        }
        p += n;
        left -= (mp_uint_t)n;
    }
    return size;
}

static mp_uint_t stdio_ioctl(mp_obj_t self_in, mp_uint_t request, uintptr_t arg, int *errcode) {
    (void)arg;
    stdio_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (request == MP_STREAM_FLUSH) {
        return 0;
    }
    if (request == MP_STREAM_CLOSE) {
        /* The three standard streams stay open, as in CPython's sys.std*. */
        if (self->fd > 2) {
            close(self->fd);
            self->fd = -1;
        }
        return 0;
    }
    *errcode = MP_EINVAL;
    return MP_STREAM_ERROR;
}

static const mp_rom_map_elem_t stdio_locals_dict_table[] = {
    { MP_ROM_QSTR(MP_QSTR_read), MP_ROM_PTR(&mp_stream_read_obj) },
    { MP_ROM_QSTR(MP_QSTR_readline), MP_ROM_PTR(&mp_stream_unbuffered_readline_obj) },
    { MP_ROM_QSTR(MP_QSTR_write), MP_ROM_PTR(&mp_stream_write_obj) },
    { MP_ROM_QSTR(MP_QSTR_flush), MP_ROM_PTR(&mp_stream_flush_obj) },
    { MP_ROM_QSTR(MP_QSTR_readlines), MP_ROM_PTR(&mp_stream_unbuffered_readlines_obj) },
    { MP_ROM_QSTR(MP_QSTR_close), MP_ROM_PTR(&mp_stream_close_obj) },
    { MP_ROM_QSTR(MP_QSTR___enter__), MP_ROM_PTR(&mp_identity_obj) },
    { MP_ROM_QSTR(MP_QSTR___exit__), MP_ROM_PTR(&mp_stream___exit___obj) },
};
static MP_DEFINE_CONST_DICT(stdio_locals_dict, stdio_locals_dict_table);

static const mp_stream_p_t stdio_stream_p = {
    .read = stdio_read,
    .write = stdio_write,
    .ioctl = stdio_ioctl,
    .is_text = true,
};

static MP_DEFINE_CONST_OBJ_TYPE(
    stdio_type,
    MP_QSTR_FileIO,
    MP_TYPE_FLAG_ITER_IS_STREAM,
    print, stdio_print,
    protocol, &stdio_stream_p,
    locals_dict, &stdio_locals_dict
    );

static const mp_stream_p_t bytes_stream_p = {
    .read = stdio_read,
    .write = stdio_write,
    .ioctl = stdio_ioctl,
    .is_text = false,
};

static MP_DEFINE_CONST_OBJ_TYPE(
    bytes_type,
    MP_QSTR_FileIO,
    MP_TYPE_FLAG_ITER_IS_STREAM,
    print, stdio_print,
    protocol, &bytes_stream_p,
    locals_dict, &stdio_locals_dict
    );

/* open(file, mode="r"): modes r, w, a, x with optional b and +. */
static mp_obj_t pylon_open(size_t n_args, const mp_obj_t *args) {
    const char *path = mp_obj_str_get_str(args[0]);
    const char *mode = n_args > 1 ? mp_obj_str_get_str(args[1]) : "r";
    int flags = 0;
    bool binary = false, plus = false;
    char kind = 0;
    for (const char *m = mode; *m; m++) {
        switch (*m) {
            case 'r': case 'w': case 'a': case 'x': kind = *m; break;
            case 'b': binary = true; break;
            case 't': break;
            case '+': plus = true; break;
            default: mp_raise_ValueError(MP_ERROR_TEXT("invalid mode"));
        }
    }
    switch (kind) {
        case 'r': flags = plus ? O_RDWR : O_RDONLY; break;
        case 'w': flags = (plus ? O_RDWR : O_WRONLY) | O_CREAT | O_TRUNC; break;
        case 'a': flags = (plus ? O_RDWR : O_WRONLY) | O_CREAT | O_APPEND; break;
        case 'x': flags = (plus ? O_RDWR : O_WRONLY) | O_CREAT | O_EXCL; break;
        default: mp_raise_ValueError(MP_ERROR_TEXT("invalid mode"));
    }
    int fd = open(path, flags, 0644);
    if (fd < 0) {
        mp_raise_OSError_with_filename(errno, path);
    }
    stdio_obj_t *self = mp_obj_malloc(stdio_obj_t, binary ? &bytes_type : &stdio_type);
    self->fd = fd;
    return MP_OBJ_FROM_PTR(self);
}
MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(mp_builtin_open_obj, 1, 2, pylon_open);

const stdio_obj_t mp_sys_stdin_obj = {{&stdio_type}, 0};
const stdio_obj_t mp_sys_stdout_obj = {{&stdio_type}, 1};
const stdio_obj_t mp_sys_stderr_obj = {{&stdio_type}, 2};

/* sqlite's guest binding: `_sqlite_binding.run_packed(handle, params,
 * max_rows)` and `run(...)`, a CPython extension module linked into pylon.wasm when it
 * embeds sqlite ([embedded.binding] in cap.toml; docs/embedded.md).
 *
 * pylon_guest.sqlite runs every statement through the statement resource's
 * run-packed method: one call binds, steps and returns the first rows. A
 * point select is dominated by fixed costs: componentize-py's generic
 * import path was ~1 us of the ~2 us call, and marshal's C API another
 * ~0.7 us. This makes the same import call from C, with its own codec for
 * the packed values (below). */
#include <string.h>

#include "pylon_binding.h"

/* [method]statement.run-packed: func(params: string, max-rows: u32) -> list<u8>
 * flattened to (self, params ptr, params len, max-rows, return area); the
 * host writes the list's pointer at 0 and its length at 4, the bytes placed
 * by this module's cabi_realloc. */
__attribute__((import_module("pylon:sqlite/sqlite@0.1.0"), import_name("[method]statement.run-packed")))
extern void pylon_sqlite_import_run_packed(int32_t self, const char *params, size_t params_len, uint32_t max_rows,
                                           void *ret);

static PyObject *run_packed(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) return PyErr_Format(PyExc_TypeError, "run_packed() takes 3 arguments (%zd given)", nargs);
    int32_t handle;
    if (pylon_handle_arg(args[0], &handle) < 0) return NULL;
    Py_ssize_t params_len;
    const char *params = PyUnicode_AsUTF8AndSize(args[1], &params_len);
    if (params == NULL) return NULL;
    uint32_t max_rows;
    if (pylon_u32_arg(args[2], &max_rows) < 0) return NULL;
    _Alignas(4) uint8_t ret[8];
    pylon_sqlite_import_run_packed(handle, params, (size_t)params_len, max_rows, ret);
    char *ptr = *(char **)ret;
    size_t len = *(size_t *)(ret + 4);
    PyObject *out = PyBytes_FromStringAndSize(ptr, (Py_ssize_t)len);
    pylon_result_free(ptr, len);
    return out;
}

/* The marshal version pylon_guest.sqlite packs with: 2 has no back-references. */
#define MARSHAL_VERSION 2
/* Nesting a packed value may have before marshal's own code takes over. */
#define MAX_DEPTH 8

/* --- the packed format, written and read here ---------------------------------
 * The packed format is marshal's, version 2 (caps/sqlite/src/sqlite_packed.c
 * reads and writes it in the cap). Calling marshal through its C API costs
 * ~0.7 us per execute here, more than the cap call's own overhead, for a
 * handful of values; these two small codecs handle the types a statement's
 * parameters and rows hold (None, bool, int, float, str, bytes, tuples and
 * lists of them) byte for byte as marshal does, and hand anything else to
 * marshal itself (PyMarshal_*), so the result is always marshal's. */

/* The parameters travel as Latin-1 text (each byte the code point of its
 * value) in a WIT string, so each byte is written as its UTF-8 form. */
typedef struct {
    uint8_t *p;
    size_t len, cap;
    uint8_t small[512];
} text_buf;

static void text_init(text_buf *b) {
    b->p = b->small;
    b->len = 0;
    b->cap = sizeof b->small;
}

static void text_free(text_buf *b) {
    if (b->p != b->small) free(b->p);
}

static int text_reserve(text_buf *b, size_t more) {
    if (more > SIZE_MAX / 2 - b->len) { /* size_t is 32 bits here: never wrap */
        PyErr_NoMemory();
        return -1;
    }
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap * 2 > b->len + more ? b->cap * 2 : b->len + more;
    uint8_t *p = b->p == b->small ? malloc(cap) : realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->p == b->small) memcpy(p, b->small, b->len);
    b->p = p;
    b->cap = cap;
    return 0;
}

static int put(text_buf *b, const uint8_t *bytes, size_t n) {
    if (n > SIZE_MAX / 4) {
        PyErr_NoMemory();
        return -1;
    }
    if (text_reserve(b, 2 * n) < 0) return -1;
    uint8_t *w = b->p + b->len;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = bytes[i];
        if (c < 0x80) {
            *w++ = c;
        } else {
            *w++ = (uint8_t)(0xC0 | (c >> 6));
            *w++ = (uint8_t)(0x80 | (c & 0x3F));
        }
    }
    b->len = (size_t)(w - b->p);
    return 0;
}

static int put_head(text_buf *b, uint8_t type, uint32_t n) {
    uint8_t head[5] = {type, (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
    return put(b, head, 5);
}

/* 0 written, -1 a Python error, 1 a value for marshal itself. */
static int write_value(text_buf *b, PyObject *obj, int depth) {
    void *type = PYLON_TYPE(obj);
    if (obj == Py_None) return put(b, (const uint8_t *)"N", 1);
    if (type == &PyBool_Type) return put(b, (const uint8_t *)(obj == Py_True ? "T" : "F"), 1);
    if (type == &PyLong_Type) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow) return 1;
        if (v == -1 && PyErr_Occurred()) return -1;
        if (v >= INT32_MIN && v <= INT32_MAX) return put_head(b, 'i', (uint32_t)(int32_t)v);
        /* marshal's long: 15-bit digits, least significant first, the count signed. */
        unsigned long long m = v < 0 ? (unsigned long long)(-(v + 1)) + 1 : (unsigned long long)v;
        uint8_t digits[10];
        int k = 0;
        for (; m; k++, m >>= 15) {
            digits[2 * k] = (uint8_t)(m & 0xFF);
            digits[2 * k + 1] = (uint8_t)((m >> 8) & 0x7F);
        }
        if (put_head(b, 'l', (uint32_t)(int32_t)(v < 0 ? -k : k)) < 0) return -1;
        return put(b, digits, (size_t)k * 2);
    }
    if (type == &PyFloat_Type) {
        double d = PyFloat_AsDouble(obj);
        uint8_t out[9] = {'g'};
        memcpy(out + 1, &d, 8); /* wasm is little-endian, as marshal */
        return put(b, out, 9);
    }
    if (type == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &n);
        if (utf8 == NULL) { /* a lone surrogate: marshal writes it ("surrogatepass") */
            PyErr_Clear();
            return 1;
        }
        if (put_head(b, 'u', (uint32_t)n) < 0) return -1;
        return put(b, (const uint8_t *)utf8, (size_t)n);
    }
    if (type == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_Size(obj);
        if (put_head(b, 's', (uint32_t)n) < 0) return -1;
        return put(b, (const uint8_t *)PyBytes_AsString(obj), (size_t)n);
    }
    int is_tuple = type == &PyTuple_Type;
    if ((is_tuple || type == &PyList_Type) && depth < MAX_DEPTH) {
        Py_ssize_t n = is_tuple ? PyTuple_Size(obj) : PyList_Size(obj);
        if (put_head(b, is_tuple ? '(' : '[', (uint32_t)n) < 0) return -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            int rc = write_value(b, is_tuple ? PyTuple_GetItem(obj, i) : PyList_GetItem(obj, i), depth + 1);
            if (rc != 0) return rc;
        }
        return 0;
    }
    return 1;
}

/* The parameters, packed into `b`: by write_value, or by marshal for
 * anything else (whose ValueError for a value it cannot write propagates). */
static int pack_params(text_buf *b, PyObject *params) {
    int rc = write_value(b, params, 0);
    if (rc <= 0) return rc;
    b->len = 0;
    PyObject *packed = PyMarshal_WriteObjectToString(params, MARSHAL_VERSION);
    if (packed == NULL) return -1;
    rc = put(b, (const uint8_t *)PyBytes_AsString(packed), (size_t)PyBytes_Size(packed));
    Py_DecRef(packed);
    return rc;
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Reads one value at *p (before end) into *out: 0 read, -1 a Python error,
 * 1 something for marshal itself (another type, a malformed or truncated
 * value: marshal then reads the whole reply and raises its own error). */
static int read_value(const uint8_t **p, const uint8_t *end, PyObject **out, int depth) {
    if (*p >= end) return 1;
    uint8_t type = *(*p)++;
    switch (type) {
    case 'N':
        Py_IncRef(Py_None);
        *out = Py_None;
        return 0;
    case 'T':
    case 'F':
        *out = PyBool_FromLong(type == 'T');
        return 0;
    case 'g': {
        if (end - *p < 8) return 1;
        double d;
        memcpy(&d, *p, 8);
        *p += 8;
        *out = PyFloat_FromDouble(d);
        return *out == NULL ? -1 : 0;
    }
    default:
        break;
    }
    if (end - *p < 4) return 1;
    uint32_t n = get_u32(*p);
    *p += 4;
    switch (type) {
    case 'i':
        *out = PyLong_FromLongLong((int32_t)n);
        return *out == NULL ? -1 : 0;
    case 'l': {
        int32_t count = (int32_t)n;
        uint32_t k = count < 0 ? 0u - (uint32_t)count : (uint32_t)count;
        if (k == 0 || k > 5 || (size_t)(end - *p) < 2 * (size_t)k) return 1;
        unsigned long long m = 0;
        for (uint32_t j = k; j-- > 0;) {
            uint32_t digit = (uint32_t)(*p)[2 * j] | (uint32_t)(*p)[2 * j + 1] << 8;
            if (digit >= 0x8000 || (j == k - 1 && digit == 0)) return 1;
            if (m >> 48) return 1; /* past 63 bits: marshal's own int */
            m = m << 15 | digit;
        }
        if (m > (count < 0 ? 1ull << 63 : (1ull << 63) - 1)) return 1;
        *p += 2 * k;
        long long v = count < 0 ? (long long)(0 - m) : (long long)m;
        *out = PyLong_FromLongLong(v);
        return *out == NULL ? -1 : 0;
    }
    case 'u':
    case 's':
        if ((size_t)(end - *p) < n) return 1;
        *out = type == 'u' ? PyUnicode_DecodeUTF8((const char *)*p, (Py_ssize_t)n, "surrogatepass")
                           : PyBytes_FromStringAndSize((const char *)*p, (Py_ssize_t)n);
        *p += n;
        return *out == NULL ? -1 : 0;
    case '(':
    case '[': {
        if (depth >= MAX_DEPTH || n > (size_t)(end - *p)) return 1; /* each item is at least a byte */
        PyObject *seq = type == '(' ? PyTuple_New((Py_ssize_t)n) : PyList_New((Py_ssize_t)n);
        if (seq == NULL) return -1;
        for (uint32_t i = 0; i < n; i++) {
            PyObject *item = NULL;
            int rc = read_value(p, end, &item, depth + 1);
            if (rc != 0) {
                Py_DecRef(seq);
                return rc;
            }
            if (type == '(') PyTuple_SetItem(seq, (Py_ssize_t)i, item); /* steals item */
            else PyList_SetItem(seq, (Py_ssize_t)i, item);
        }
        *out = seq;
        return 0;
    }
    default:
        return 1;
    }
}

static PyObject *unpack_reply(const uint8_t *data, size_t len) {
    const uint8_t *p = data;
    PyObject *out = NULL;
    int rc = read_value(&p, data + len, &out, 0);
    if (rc == 0) return out;
    if (rc < 0) return NULL;
    return PyMarshal_ReadObjectFromString((const char *)data, (Py_ssize_t)len);
}

/* run(handle, params, max_rows) -> (rows, done, changes, lastrowid): what
 * pylon_guest.sqlite does around run-packed, in one C call: pack the
 * parameter tuple or list, make the call, unpack the reply where the host
 * wrote it. A value marshal cannot write raises ValueError, as
 * marshal.dumps does, and the caller takes its slower route. */
static PyObject *run(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) return PyErr_Format(PyExc_TypeError, "run() takes 3 arguments (%zd given)", nargs);
    int32_t handle;
    if (pylon_handle_arg(args[0], &handle) < 0) return NULL;
    uint32_t max_rows;
    if (pylon_u32_arg(args[2], &max_rows) < 0) return NULL;
    text_buf text;
    text_init(&text);
    if (pack_params(&text, args[1]) < 0) {
        text_free(&text);
        return NULL;
    }
    _Alignas(4) uint8_t ret[8];
    pylon_sqlite_import_run_packed(handle, (const char *)text.p, text.len, max_rows, ret);
    text_free(&text);
    uint8_t *ptr = *(uint8_t **)ret;
    size_t len = *(size_t *)(ret + 4);
    PyObject *out = unpack_reply(ptr, len);
    pylon_result_free(ptr, len);
    return out;
}

/* pack(params) -> bytes and unpack(data) -> object: the two codecs alone,
 * for tests that hold them to marshal.dumps(params, 2) and marshal.loads. */
static PyObject *pack(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 1) return PyErr_Format(PyExc_TypeError, "pack() takes 1 argument (%zd given)", nargs);
    text_buf text;
    text_init(&text);
    if (pack_params(&text, args[0]) < 0) {
        text_free(&text);
        return NULL;
    }
    /* Back from the Latin-1-in-UTF-8 wire form to marshal's bytes. */
    size_t o = 0;
    for (size_t i = 0; i < text.len; i++, o++) {
        uint8_t c = text.p[i];
        if (c >= 0x80) c = (uint8_t)(((c & 0x03) << 6) | (text.p[++i] & 0x3F));
        text.p[o] = c;
    }
    PyObject *out = PyBytes_FromStringAndSize((const char *)text.p, (Py_ssize_t)o);
    text_free(&text);
    return out;
}

static PyObject *unpack(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 1) return PyErr_Format(PyExc_TypeError, "unpack() takes 1 argument (%zd given)", nargs);
    pylon_bytes_arg data;
    if (pylon_bytes_arg_get(args[0], &data) < 0) return NULL;
    PyObject *out = unpack_reply(data.view.buf, (size_t)data.view.len);
    pylon_bytes_arg_release(&data);
    return out;
}

static PyMethodDef methods[] = {
    {"run_packed", (void *)run_packed, METH_FASTCALL,
     "run_packed(handle, params, max_rows) -> bytes: statement.run-packed of the statement `handle`"},
    {"run", (void *)run, METH_FASTCALL,
     "run(handle, params, max_rows) -> tuple: pack params, run-packed, unpack the reply"},
    {"pack", (void *)pack, METH_FASTCALL, "pack(params) -> bytes: what marshal.dumps(params, 2) gives"},
    {"unpack", (void *)unpack, METH_FASTCALL, "unpack(data) -> object: what marshal.loads(data) gives"},
    {NULL, NULL, 0, NULL},
};

PYLON_BINDING_MODULE(_sqlite_binding, "sqlite's run-packed, called from C.", methods)

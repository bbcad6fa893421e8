/* zstd's guest binding: `_zstd_binding.compress(data, level)` and
 * `decompress(data, max_output)`, a CPython extension module linked into
 * pylon.wasm when it embeds zstd ([embedded.binding] in cap.toml;
 * docs/embedded.md, "A C binding in the guest").
 *
 * pylon_guest.zstd's one-shot calls go through it. Besides skipping
 * componentize-py's generic import path, it saves a copy of every result:
 * the host places the returned list<u8> through this module's cabi_realloc,
 * which here allocates it inside the bytes object the call then returns
 * (pylon_result_alloc), where the generic path copies it out of a malloc'd
 * block into a new bytes object (16 MiB: ~1.5 ms in the guest). The input
 * is read in place from any contiguous buffer. Same results and errors as
 * the generic path, which stays for the dynlink backend. */
#include "pylon_binding.h"

/* compress(data: list<u8>, level: s32) -> result<list<u8>, error> and
 * decompress(data: list<u8>, max-output: u64) -> result<list<u8>, error>,
 * flattened to (ptr, len, level or max-output, return area). The return
 * area (24 bytes, align 8): the result's case at 0; ok: the list's pointer
 * at 8 and length at 12; err: the error variant's case at 8 (0 corrupt,
 * 1 too-large, 2 failed), its string's pointer at 16 and length at 20, or
 * too-large's u64 at 16. */
__attribute__((import_module("pylon:zstd/zstd@0.1.0"), import_name("compress")))
extern void pylon_zstd_import_compress(const void *data, size_t len, int32_t level, void *ret);
__attribute__((import_module("pylon:zstd/zstd@0.1.0"), import_name("decompress")))
extern void pylon_zstd_import_decompress(const void *data, size_t len, uint64_t max_output, void *ret);

/* pylon_guest.zstd's ZstdError, CorruptFrameError, OutputTooLargeError (set_errors). */
static PyObject *zstd_error, *corrupt_error, *too_large_error;

/* The bytes object the host's result is being placed in, during a call. */
static PyObject *placed;

static void *alloc_in_bytes(size_t size, size_t align) {
    (void)align; /* list<u8> and string need 1 */
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (bytes == NULL) return NULL; /* cabi_realloc traps */
    if (placed != NULL) Py_DecRef(placed);
    placed = bytes;
    return PyBytes_AsString(bytes);
}

/* The call's outcome from its return area: the placed bytes, or the
 * exception pylon_guest.zstd raises for the error. */
static PyObject *outcome(const uint8_t *ret) {
    PyObject *bytes = placed;
    placed = NULL;
    const uint8_t *ptr = *(uint8_t *const *)(ret + (ret[0] == 0 ? 8 : 16));
    size_t len = *(const size_t *)(ret + (ret[0] == 0 ? 12 : 20));
    if (ret[0] == 0) {
        if (len == 0) {
            if (bytes != NULL) Py_DecRef(bytes);
            return PyBytes_FromStringAndSize("", 0);
        }
        if (bytes != NULL && (const uint8_t *)PyBytes_AsString(bytes) == ptr && (size_t)PyBytes_Size(bytes) == len)
            return bytes;
        if (bytes != NULL) Py_DecRef(bytes);
        return PyErr_Format(PyExc_RuntimeError, "the zstd cap's result was not placed where this module put it");
    }
    uint8_t which = ret[8];
    if (which == 1) {
        PyObject *limit = PyLong_FromUnsignedLongLong(*(const uint64_t *)(ret + 16));
        if (limit != NULL) {
            PyErr_SetObject(too_large_error, limit); /* OutputTooLargeError(limit) */
            Py_DecRef(limit);
        }
    } else {
        PyObject *message = PyUnicode_DecodeUTF8(len ? (const char *)ptr : "", (Py_ssize_t)len, "replace");
        if (message != NULL && which == 0) {
            PyObject *full = PyUnicode_FromFormat("corrupt zstd data: %U", message);
            Py_DecRef(message);
            message = full;
        }
        if (message != NULL) {
            PyErr_SetObject(which == 0 ? corrupt_error : zstd_error, message);
            Py_DecRef(message);
        }
    }
    if (bytes != NULL) Py_DecRef(bytes);
    return NULL;
}

static int ready(void) {
    if (zstd_error == NULL) {
        PyErr_Format(PyExc_RuntimeError, "_zstd_binding.set_errors() was not called");
        return -1;
    }
    return 0;
}

/* The two imports under one signature: `arg` is compress's level (an s32)
 * or decompress's max-output. */
typedef void (*one_shot_import)(const void *data, size_t len, uint64_t arg, void *ret);

static void import_compress(const void *data, size_t len, uint64_t level, void *ret) {
    pylon_zstd_import_compress(data, len, (int32_t)level, ret);
}

static void import_decompress(const void *data, size_t len, uint64_t max_output, void *ret) {
    pylon_zstd_import_decompress(data, len, max_output, ret);
}

/* Calls `import` on the bytes of `data_obj`, the result placed in a bytes object. */
static PyObject *one_shot(one_shot_import import, PyObject *data_obj, uint64_t arg) {
    if (ready() < 0) return NULL;
    pylon_bytes_arg data;
    if (pylon_bytes_arg_get(data_obj, &data) < 0) return NULL;
    _Alignas(8) uint8_t ret[24];
    pylon_result_alloc = alloc_in_bytes;
    import(data.view.buf, (size_t)data.view.len, arg, ret);
    pylon_result_alloc = NULL;
    pylon_bytes_arg_release(&data);
    return outcome(ret);
}

/* compress(data, level) -> bytes: one frame at `level` (an s32). */
static PyObject *compress(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) return PyErr_Format(PyExc_TypeError, "compress() takes 2 arguments (%zd given)", nargs);
    long level = PyLong_AsLong(args[1]);
    if (level == -1 && PyErr_Occurred()) return NULL;
    return one_shot(import_compress, args[0], (uint64_t)(int64_t)level);
}

/* decompress(data, max_output) -> bytes: every frame, at most `max_output` (a u64) bytes. */
static PyObject *decompress(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) return PyErr_Format(PyExc_TypeError, "decompress() takes 2 arguments (%zd given)", nargs);
    unsigned long long max_output = PyLong_AsUnsignedLongLong(args[1]);
    if (max_output == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    return one_shot(import_decompress, args[0], (uint64_t)max_output);
}

/* set_errors(ZstdError, CorruptFrameError, OutputTooLargeError): the classes to raise. */
static PyObject *set_errors(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) return PyErr_Format(PyExc_TypeError, "set_errors() takes 3 arguments (%zd given)", nargs);
    PyObject **slots[3] = {&zstd_error, &corrupt_error, &too_large_error};
    for (int i = 0; i < 3; i++) {
        Py_IncRef(args[i]);
        if (*slots[i] != NULL) Py_DecRef(*slots[i]);
        *slots[i] = args[i];
    }
    Py_IncRef(Py_None);
    return Py_None;
}

static PyMethodDef methods[] = {
    {"compress", (void *)compress, METH_FASTCALL, "compress(data, level) -> bytes: one zstd frame"},
    {"decompress", (void *)decompress, METH_FASTCALL,
     "decompress(data, max_output) -> bytes: every frame, at most max_output bytes"},
    {"set_errors", (void *)set_errors, METH_FASTCALL,
     "set_errors(ZstdError, CorruptFrameError, OutputTooLargeError): the exceptions raised"},
    {NULL, NULL, 0, NULL},
};

PYLON_BINDING_MODULE(_zstd_binding, "zstd's one-shot compress and decompress, called from C.", methods)

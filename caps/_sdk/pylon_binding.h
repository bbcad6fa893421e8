/* pylon_binding.h: what every guest binding needs besides CPython's ABI.
 *
 * A guest binding (docs/embedded.md, "A C binding in the guest") is a
 * CPython extension module in pylon.wasm that calls a typed import itself.
 * Include this header once per binding: it defines functions, one of them
 * exported. */
#ifndef PYLON_BINDING_H
#define PYLON_BINDING_H

#include <stdlib.h>

#include "pylon_pyabi.h"

/* Where the host's next result goes instead of malloc, when a binding sets
 * it around an import call: a function returning `size` bytes at `align`,
 * or NULL (out of memory). sqlite's and crc32c's leave it unset; zstd's
 * places a returned list<u8> straight inside the bytes object it returns. */
static void *(*pylon_result_alloc)(size_t size, size_t align);

/* The allocator the host calls to place this module's results (a list or a
 * string it returns): the component model asks each module that lowers such
 * a result for one. libc's realloc, shared with libpython, so what the host
 * wrote is freed with free(); but zero bytes get `align`, a non-pointer (as
 * wit-bindgen's C glue does), so free a result only when it is not empty.
 * Out of memory traps: the host would otherwise write the result at
 * address 0. Each binding is its own module, so each exports its own. */
__attribute__((export_name("cabi_realloc")))
void *pylon_binding_cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
    (void)old_size;
    if (new_size == 0) return (void *)align;
    void *out = ptr == NULL && pylon_result_alloc != NULL ? pylon_result_alloc(new_size, align)
                                                           : realloc(ptr, new_size);
    if (out == NULL) abort();
    return out;
}

/* A bytes-like argument, read in place. */
typedef struct {
    Py_buffer view;
    PyObject *copy; /* bytes(obj), for a buffer that is not contiguous */
} pylon_bytes_arg;

/* Fills `arg` with the bytes of `obj`: a contiguous buffer (bytes,
 * bytearray, memoryview...) as it is, a strided memoryview copied first, as
 * bytes(obj) would. Returns 0, or -1 with a Python exception set.
 * Release with pylon_bytes_arg_release. */
static inline int pylon_bytes_arg_get(PyObject *obj, pylon_bytes_arg *arg) {
    arg->copy = NULL;
    if (PyObject_GetBuffer(obj, &arg->view, PyBUF_SIMPLE) == 0) return 0;
    if (!PyErr_ExceptionMatches(PyExc_BufferError)) return -1;
    PyErr_Clear();
    arg->copy = PyBytes_FromObject(obj);
    if (arg->copy == NULL) return -1;
    if (PyObject_GetBuffer(arg->copy, &arg->view, PyBUF_SIMPLE) < 0) {
        Py_DecRef(arg->copy);
        return -1;
    }
    return 0;
}

static inline void pylon_bytes_arg_release(pylon_bytes_arg *arg) {
    PyBuffer_Release(&arg->view);
    if (arg->copy != NULL) Py_DecRef(arg->copy);
}

/* Frees a list or string the host placed through pylon_binding_cabi_realloc
 * (`len` its length in bytes): an empty one sits at the non-pointer the
 * allocator returns for zero bytes and must not reach free(). */
static inline void pylon_result_free(void *ptr, size_t len) {
    if (len > 0) free(ptr);
}

/* A u32 argument: an int in 0..2**32-1 (unsigned long is 32 bits here), or
 * OverflowError / TypeError as Python's own conversions raise. Returns 0, or
 * -1 with a Python exception set. */
static inline int pylon_u32_arg(PyObject *obj, uint32_t *out) {
    unsigned long value = PyLong_AsUnsignedLong(obj);
    if (value == (unsigned long)-1 && PyErr_Occurred()) return -1;
    *out = (uint32_t)value;
    return 0;
}

/* A resource handle (the `handle` attribute of a componentize-py resource
 * object). Returns 0, or -1 with a Python exception set. */
static inline int pylon_handle_arg(PyObject *obj, int32_t *handle) {
    long value = PyLong_AsLong(obj);
    if (value == -1 && PyErr_Occurred()) return -1;
    *handle = (int32_t)value;
    return 0;
}

/* Defines extension module `name` (an identifier: the module's name, as in
 * [embedded.binding].module) with its PyMethodDef table `methods` and the
 * PyInit_<name> the importer calls. One per binding, at the end of its file:
 *     PYLON_BINDING_MODULE(_crc32c_binding, "crc32c from C.", methods)
 * PYLON_BINDING_MODULE_WITH also runs `int setup(PyObject *module)` on the
 * new module (to add types); a negative return fails the import.
 * Single-phase initialisation: the guest has one interpreter. */
#define PYLON_BINDING_MODULE_WITH(name, doc, methods, setup)                                              \
    static PyModuleDef pylon_binding_module = {                                                           \
        PYLON_MODULEDEF_HEAD_INIT, #name, doc, -1, methods, NULL, NULL, NULL, NULL,                       \
    };                                                                                                    \
    __attribute__((visibility("default"))) PyObject *PyInit_##name(void) {                               \
        PyObject *module = PyModule_Create2(&pylon_binding_module, PYLON_PYTHON_ABI_VERSION);             \
        if (module != NULL && (setup)(module) < 0) {                                                      \
            Py_DecRef(module);                                                                            \
            return NULL;                                                                                  \
        }                                                                                                 \
        return module;                                                                                    \
    }

static inline int pylon_binding_no_setup(PyObject *module) {
    (void)module;
    return 0;
}
#define PYLON_BINDING_MODULE(name, doc, methods) \
    PYLON_BINDING_MODULE_WITH(name, doc, methods, pylon_binding_no_setup)

#endif

/* sqlite's guest binding: `_sqlite_binding.run_packed(handle, params,
 * max_rows)` and `run(...)`, a CPython extension module linked into pylon.wasm when it
 * embeds sqlite ([embedded.binding] in cap.toml; docs/embedded.md).
 *
 * pylon_guest.sqlite runs every statement through the statement resource's
 * run-packed method: one call binds, steps and returns the first rows. A
 * point select is dominated by fixed costs, and componentize-py's generic
 * import path was ~1 us of the ~2 us call; this makes the same import call
 * from C. */
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
    unsigned long max_rows = PyLong_AsUnsignedLong(args[2]);
    if (max_rows == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    _Alignas(4) uint8_t ret[8];
    pylon_sqlite_import_run_packed(handle, params, (size_t)params_len, (uint32_t)max_rows, ret);
    char *ptr = *(char **)ret;
    PyObject *out = PyBytes_FromStringAndSize(ptr, (Py_ssize_t) * (size_t *)(ret + 4));
    free(ptr);
    return out;
}

/* The marshal version pylon_guest.sqlite packs with: 2 has no back-references. */
#define MARSHAL_VERSION 2

/* run(handle, params, max_rows) -> (rows, done, changes, lastrowid): what
 * pylon_guest.sqlite does around run-packed, in one C call: marshal the
 * parameter tuple or list, pass it as the Latin-1 text the cap reads (each
 * byte one character, so UTF-8 on the wire), and unmarshal the reply from
 * where the host wrote it. A value marshal cannot write raises ValueError,
 * as marshal.dumps does, and the caller takes its slower route. */
static PyObject *run(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) return PyErr_Format(PyExc_TypeError, "run() takes 3 arguments (%zd given)", nargs);
    int32_t handle;
    if (pylon_handle_arg(args[0], &handle) < 0) return NULL;
    unsigned long max_rows = PyLong_AsUnsignedLong(args[2]);
    if (max_rows == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    PyObject *packed = PyMarshal_WriteObjectToString(args[1], MARSHAL_VERSION);
    if (packed == NULL) return NULL;
    const uint8_t *latin1 = (const uint8_t *)PyBytes_AsString(packed);
    size_t n = (size_t)PyBytes_Size(packed), high = 0;
    for (size_t i = 0; i < n; i++) high += latin1[i] >> 7;
    char small[256];
    char *text = n + high <= sizeof small ? small : malloc(n + high);
    if (text == NULL) {
        Py_DecRef(packed);
        return PyErr_NoMemory();
    }
    char *w = text;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = latin1[i];
        if (c < 0x80) {
            *w++ = (char)c;
        } else {
            *w++ = (char)(0xC0 | (c >> 6));
            *w++ = (char)(0x80 | (c & 0x3F));
        }
    }
    Py_DecRef(packed);
    _Alignas(4) uint8_t ret[8];
    pylon_sqlite_import_run_packed(handle, text, n + high, (uint32_t)max_rows, ret);
    if (text != small) free(text);
    char *ptr = *(char **)ret;
    PyObject *out = PyMarshal_ReadObjectFromString(ptr, (Py_ssize_t) * (size_t *)(ret + 4));
    free(ptr);
    return out;
}

static PyMethodDef methods[] = {
    {"run_packed", (void *)run_packed, METH_FASTCALL,
     "run_packed(handle, params, max_rows) -> bytes: statement.run-packed of the statement `handle`"},
    {"run", (void *)run, METH_FASTCALL,
     "run(handle, params, max_rows) -> tuple: marshal params, run-packed, unmarshal the reply"},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef module = {
    PYLON_MODULEDEF_HEAD_INIT, "_sqlite_binding", "sqlite's run-packed, called from C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

__attribute__((visibility("default"))) PyObject *PyInit__sqlite_binding(void) {
    return PyModule_Create2(&module, PYLON_PYTHON_ABI_VERSION);
}

/* sqlite's guest binding: `_sqlite_binding.run_packed(handle, params,
 * max_rows)`, a CPython extension module linked into pylon.wasm when it
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

static PyMethodDef methods[] = {
    {"run_packed", (void *)run_packed, METH_FASTCALL,
     "run_packed(handle, params, max_rows) -> bytes: statement.run-packed of the statement `handle`"},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef module = {
    PYLON_MODULEDEF_HEAD_INIT, "_sqlite_binding", "sqlite's run-packed, called from C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

__attribute__((visibility("default"))) PyObject *PyInit__sqlite_binding(void) {
    return PyModule_Create2(&module, PYLON_PYTHON_ABI_VERSION);
}

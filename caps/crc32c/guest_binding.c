/* crc32c's guest binding: `_crc32c_binding.crc32c(data, crc=0)`, a CPython
 * extension module linked into pylon.wasm when it embeds crc32c
 * ([embedded.binding] in cap.toml; docs/embedded.md).
 *
 * It calls the typed import pylon:crc32c/crc32c@0.1.0#update directly: the
 * bytes are already in the guest's memory, so the call passes their address
 * and length, and the fused adapter copies them into the cap. Same results
 * and errors as guest/python/crc32c.py's generic route, which the guest uses
 * when this module is absent. */
#include "pylon_binding.h"

/* update(crc: u32, data: list<u8>) -> u32, flattened by the canonical ABI
 * to (i32 crc, i32 ptr, i32 len) -> i32. Declared here rather than through
 * wit-bindgen's C glue, which would also define a cabi_realloc of its own
 * (pylon_binding.h has the one a binding exports). */
__attribute__((import_module("pylon:crc32c/crc32c@0.1.0"), import_name("update")))
extern uint32_t pylon_crc32c_import_update(uint32_t crc, const uint8_t *data, size_t len);

static PyObject *checksum(PyObject *data, PyObject *crc_obj) {
    uint32_t crc = 0;
    if (crc_obj != NULL && pylon_u32_arg(crc_obj, &crc) < 0) return NULL;
    pylon_bytes_arg bytes;
    if (pylon_bytes_arg_get(data, &bytes) < 0) return NULL;
    uint32_t out = pylon_crc32c_import_update(crc, bytes.view.buf, (size_t)bytes.view.len);
    pylon_bytes_arg_release(&bytes);
    return PyLong_FromUnsignedLong(out);
}

static PyObject *crc32c(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    (void)self;
    PyObject *data = nargs > 0 ? args[0] : NULL;
    PyObject *crc = nargs > 1 ? args[1] : NULL;
    if (nargs > 2) return PyErr_Format(PyExc_TypeError, "crc32c() takes at most 2 arguments (%zd given)", nargs);
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_Size(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GetItem(kwnames, i);
        PyObject **slot = PyUnicode_CompareWithASCIIString(name, "data") == 0 ? &data
                          : PyUnicode_CompareWithASCIIString(name, "crc") == 0 ? &crc
                                                                                 : NULL;
        if (slot == NULL) return PyErr_Format(PyExc_TypeError, "crc32c() got an unexpected keyword argument '%U'", name);
        if (*slot != NULL) return PyErr_Format(PyExc_TypeError, "crc32c() got multiple values for argument '%U'", name);
        *slot = args[nargs + i];
    }
    if (data == NULL) return PyErr_Format(PyExc_TypeError, "crc32c() missing required argument 'data'");
    return checksum(data, crc);
}

static PyMethodDef methods[] = {
    {"crc32c", (void *)(PyCFunctionFastWithKeywords)crc32c, METH_FASTCALL | METH_KEYWORDS,
     "crc32c(data, crc=0) -> int\n\nCRC-32C (Castagnoli) of bytes-like data, continuing from crc."},
    {NULL, NULL, 0, NULL},
};

PYLON_BINDING_MODULE(_crc32c_binding, "crc32c over the typed import, called from C.", methods)

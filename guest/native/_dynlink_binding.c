/* _dynlink_binding: compose:dynlink's instance.invoke called from C.
 *
 * The guest's pylon_guest.dynlink routes every dynlink call through
 * `instance.invoke(method, payload)`. componentize-py's generic import path
 * costs ~1 us a call before the host sees it (an argument list walked by an
 * iterator, a Vec per call, the result lifted through a dataclass); this
 * extension module makes the same import call directly. Built by
 * pylon.build.guest_binding and linked into every guest (docs/embedded.md,
 * "A C binding in the guest").
 *
 * invoke(handle, method, payload=b"") -> bytes
 *   handle   the `handle` of a componentize-py `linker.Instance` (borrowed:
 *            the caller keeps the Instance alive for the call)
 *   method   str
 *   payload  any bytes-like object (its bytes are read in place)
 * A WIT error raises errors[case](message), where `errors` is the tuple of
 * six exception classes given once to set_errors(), in the WIT's case order. */
#include "pylon_binding.h"

/* [method]instance.invoke: func(method: string, payload: list<u8>)
 *     -> result<list<u8>, error>
 * flattened by the canonical ABI to (self, method ptr, method len, payload
 * ptr, payload len, return area). The result does not fit in one flat value,
 * so the host writes it to the return area:
 *   0: u8 result case (0 ok, 1 err)
 *   4: ok:  list ptr, 8: list len
 *   4: err: u8 error case, 8: message ptr, 12: message len
 * The host allocates the list and the message in this memory through this
 * module's own cabi_realloc (pylon_binding.h: libc's realloc, shared with
 * libpython); they are the caller's to free. */
__attribute__((import_module("compose:dynlink/linker@0.1.0"), import_name("[method]instance.invoke")))
extern void pylon_linker_invoke(int32_t self, const char *method, size_t method_len, const void *payload,
                                size_t payload_len, void *ret);

#define ERROR_CASES 6
static PyObject *errors[ERROR_CASES];

static PyObject *set_errors(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 1 || PyTuple_Size(args[0]) != ERROR_CASES) {
        PyErr_Clear();
        return PyErr_Format(PyExc_TypeError, "set_errors() takes a tuple of %d exception classes", ERROR_CASES);
    }
    for (int i = 0; i < ERROR_CASES; i++) {
        PyObject *cls = PyTuple_GetItem(args[0], i);
        Py_IncRef(cls);
        if (errors[i] != NULL) Py_DecRef(errors[i]);
        errors[i] = cls;
    }
    Py_IncRef(Py_None);
    return Py_None;
}

static PyObject *invoke(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2 && nargs != 3) return PyErr_Format(PyExc_TypeError, "invoke() takes 2 or 3 arguments (%zd given)", nargs);
    if (errors[0] == NULL) return PyErr_Format(PyExc_RuntimeError, "invoke() before set_errors()");
    int32_t handle;
    if (pylon_handle_arg(args[0], &handle) < 0) return NULL;
    Py_ssize_t method_len;
    const char *method = PyUnicode_AsUTF8AndSize(args[1], &method_len);
    if (method == NULL) return NULL;
    pylon_bytes_arg payload = {.view = {.buf = (void *)"", .len = 0}, .copy = NULL};
    if (nargs == 3 && pylon_bytes_arg_get(args[2], &payload) < 0) return NULL;
    _Alignas(4) uint8_t ret[16];
    pylon_linker_invoke(handle, method, (size_t)method_len, payload.view.buf, (size_t)payload.view.len, ret);
    if (nargs == 3) pylon_bytes_arg_release(&payload);

    uint8_t *ptr = *(uint8_t **)(ret + (ret[0] == 0 ? 4 : 8));
    size_t len = *(size_t *)(ret + (ret[0] == 0 ? 8 : 12));
    PyObject *out;
    if (ret[0] == 0) {
        out = PyBytes_FromStringAndSize((const char *)ptr, (Py_ssize_t)len);
    } else {
        uint8_t kind = ret[4];
        PyObject *message = PyUnicode_DecodeUTF8((const char *)ptr, (Py_ssize_t)len, "replace");
        out = NULL;
        if (message != NULL) {
            PyErr_SetObject(kind < ERROR_CASES ? errors[kind] : PyExc_RuntimeError, message);
            Py_DecRef(message);
        }
    }
    pylon_result_free(ptr, len);
    return out;
}

static PyMethodDef methods[] = {
    {"invoke", (void *)invoke, METH_FASTCALL, "invoke(handle, method, payload=b\"\") -> bytes"},
    {"set_errors", (void *)set_errors, METH_FASTCALL, "set_errors(classes): the six error classes, in WIT order"},
    {NULL, NULL, 0, NULL},
};

PYLON_BINDING_MODULE(_dynlink_binding, "compose:dynlink's instance.invoke, called from C.", methods)

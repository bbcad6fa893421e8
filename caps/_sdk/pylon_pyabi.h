/* pylon_pyabi.h: the part of CPython's stable ABI a guest binding uses.
 *
 * A guest binding (`[embedded.binding]` in a cap.toml; docs/embedded.md,
 * "A C binding in the guest") is a CPython extension module linked into
 * pylon.wasm beside libpython. It calls the cap's typed import itself, so a
 * call skips componentize-py's generic path (an argument list, an iterator,
 * a Vec per call: ~1 us a call; docs/benchmarks.md).
 *
 * Why these declarations are written here and not taken from Python.h: the
 * guest's CPython (3.14, wasm32-wasi, inside componentize-py) ships no
 * headers, and a host's Python.h describes the host (its pyconfig.h says
 * 64-bit longs and pointers). Everything below is in the stable ABI (abi3),
 * whose layouts and signatures CPython promises not to change, and is
 * written for wasm32, where Py_ssize_t, long and pointers are 32 bits.
 * Add a declaration only from the stable ABI's list (Misc/stable_abi.toml in
 * CPython's sources); the one exception, marshal, is marked below. */
#ifndef PYLON_PYABI_H
#define PYLON_PYABI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#if !defined(__wasm32__)
#error "pylon_pyabi.h describes the wasm32 guest's CPython only"
#endif

typedef ssize_t Py_ssize_t;
typedef struct _object PyObject;

/* PyObject_HEAD of a non-free-threaded 32-bit build: refcount, type. */
typedef struct {
    Py_ssize_t ob_refcnt;
    void *ob_type;
} PyObject_HEAD_T;

/* METH_FASTCALL | METH_KEYWORDS: positional arguments in an array, keyword
 * names in a tuple (NULL when there are none), values after the positional. */
typedef PyObject *(*PyCFunctionFastWithKeywords)(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                                 PyObject *kwnames);
#define METH_FASTCALL 0x0080
#define METH_KEYWORDS 0x0002

typedef struct {
    const char *ml_name;
    void *ml_meth; /* a function of the type the flags say */
    int ml_flags;
    const char *ml_doc;
} PyMethodDef;

typedef struct {
    PyObject_HEAD_T ob_base;
    PyObject *(*m_init)(void);
    Py_ssize_t m_index;
    PyObject *m_copy;
} PyModuleDef_Base;

typedef struct {
    PyModuleDef_Base m_base;
    const char *m_name;
    const char *m_doc;
    Py_ssize_t m_size;
    PyMethodDef *m_methods;
    void *m_slots;
    void *m_traverse;
    void *m_clear;
    void *m_free;
} PyModuleDef;

#define PYLON_MODULEDEF_HEAD_INIT {{1, NULL}, NULL, 0, NULL}
/* The abi3 API version PyModule_Create passes under Py_LIMITED_API. */
#define PYLON_PYTHON_ABI_VERSION 3

typedef struct {
    void *buf;
    PyObject *obj;
    Py_ssize_t len;
    Py_ssize_t itemsize;
    int readonly;
    int ndim;
    char *format;
    Py_ssize_t *shape;
    Py_ssize_t *strides;
    Py_ssize_t *suboffsets;
    void *internal;
} Py_buffer;
#define PyBUF_SIMPLE 0

PyObject *PyModule_Create2(PyModuleDef *def, int apiver);
void Py_IncRef(PyObject *obj);
void Py_DecRef(PyObject *obj);
extern PyObject _Py_NoneStruct, _Py_TrueStruct, _Py_FalseStruct;
#define Py_None (&_Py_NoneStruct)
#define Py_True (&_Py_TrueStruct)
#define Py_False (&_Py_FalseStruct)
int PyObject_GetBuffer(PyObject *obj, Py_buffer *view, int flags);
void PyBuffer_Release(Py_buffer *view);
PyObject *PyBytes_FromObject(PyObject *obj);
long PyLong_AsLong(PyObject *obj);
unsigned long PyLong_AsUnsignedLong(PyObject *obj);
PyObject *PyLong_FromUnsignedLong(unsigned long v);
PyObject *PyBytes_FromStringAndSize(const char *data, Py_ssize_t len);
const char *PyUnicode_AsUTF8AndSize(PyObject *s, Py_ssize_t *len);
PyObject *PyUnicode_DecodeUTF8(const char *data, Py_ssize_t len, const char *errors);
Py_ssize_t PyTuple_Size(PyObject *tuple);
PyObject *PyTuple_GetItem(PyObject *tuple, Py_ssize_t i);
int PyUnicode_CompareWithASCIIString(PyObject *s, const char *ascii);
PyObject *PyErr_Occurred(void);
void PyErr_Clear(void);
PyObject *PyErr_Format(PyObject *type, const char *format, ...);
void PyErr_SetObject(PyObject *type, PyObject *value);
PyObject *PyErr_NoMemory(void);
extern PyObject *PyExc_TypeError;
extern PyObject *PyExc_BufferError;
extern PyObject *PyExc_RuntimeError;
int PyErr_ExceptionMatches(PyObject *type);
char *PyBytes_AsString(PyObject *bytes);
Py_ssize_t PyBytes_Size(PyObject *bytes);
PyObject *PyLong_FromLongLong(long long v);
long long PyLong_AsLongLongAndOverflow(PyObject *obj, int *overflow);
PyObject *PyFloat_FromDouble(double v);
double PyFloat_AsDouble(PyObject *obj);
PyObject *PyBool_FromLong(long v);
PyObject *PyTuple_New(Py_ssize_t size);
int PyTuple_SetItem(PyObject *tuple, Py_ssize_t i, PyObject *item);
PyObject *PyList_New(Py_ssize_t size);
int PyList_SetItem(PyObject *list, Py_ssize_t i, PyObject *item);
Py_ssize_t PyList_Size(PyObject *list);
PyObject *PyList_GetItem(PyObject *list, Py_ssize_t i);
/* Exact-type checks compare ob_type with these. */
extern PyObject PyLong_Type, PyFloat_Type, PyUnicode_Type, PyBytes_Type, PyBool_Type, PyTuple_Type, PyList_Type;
#define PYLON_TYPE(obj) (((PyObject_HEAD_T *)(obj))->ob_type)

PyObject *PyLong_FromUnsignedLongLong(unsigned long long v);
unsigned long long PyLong_AsUnsignedLongLong(PyObject *obj);
PyObject *PyUnicode_FromFormat(const char *format, ...);
PyObject *PyDict_New(void);
int PyDict_SetItem(PyObject *dict, PyObject *key, PyObject *value);
int PyDict_Contains(PyObject *dict, PyObject *key);
PyObject *PyObject_GetItem(PyObject *obj, PyObject *key);
Py_ssize_t PyLong_AsSsize_t(PyObject *obj);
void PyErr_SetString(PyObject *type, const char *message);
extern PyObject *PyExc_IndexError;
PyObject *PyObject_Vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames);
PyObject *PyObject_VectorcallMethod(PyObject *name, PyObject *const *args, size_t nargsf, PyObject *kwnames);
PyObject *PyUnicode_InternFromString(const char *s);
int PyObject_IsTrue(PyObject *obj);
extern PyObject *PyExc_ValueError;
extern PyObject PyDict_Type;
PyObject *PyDict_GetItemWithError(PyObject *dict, PyObject *key);
Py_ssize_t PyDict_Size(PyObject *dict);
PyObject *PyObject_GetAttrString(PyObject *obj, const char *name);
int PyModule_AddObjectRef(PyObject *module, const char *name, PyObject *value);

/* Types defined by a binding (PyType_FromSpec; Include/object.h,
 * Include/typeslots.h, Include/descrobject.h). */
typedef struct _typeobject PyTypeObject;
typedef struct {
    int slot;
    void *pfunc;
} PyType_Slot;
typedef struct {
    const char *name;
    int basicsize;
    int itemsize;
    unsigned int flags;
    PyType_Slot *slots;
} PyType_Spec;
#define Py_mp_subscript 5
#define Py_tp_clear 51
#define Py_tp_dealloc 52
#define Py_tp_doc 56
#define Py_tp_init 60
#define Py_tp_iter 62
#define Py_tp_iternext 63
#define Py_tp_methods 64
#define Py_tp_new 65
#define Py_tp_traverse 71
#define Py_tp_members 72
#define Py_tp_free 74
#define Py_TPFLAGS_BASETYPE (1UL << 10)
#define Py_TPFLAGS_HAVE_GC (1UL << 14)
#define Py_TPFLAGS_DEFAULT (1UL << 18) /* Py_TPFLAGS_HAVE_VERSION_TAG */
#define METH_NOARGS 0x0004
typedef struct {
    const char *name;
    int type;
    Py_ssize_t offset;
    int flags;
    const char *doc;
} PyMemberDef;
#define Py_T_INT 1
#define Py_T_OBJECT 6 /* NULL reads as None */
#define Py_T_BOOL 14
#define Py_T_PYSSIZET 19
#define Py_READONLY 1
typedef int (*visitproc)(PyObject *obj, void *arg);
PyObject *PyType_FromSpec(PyType_Spec *spec);
PyObject *PyType_GenericAlloc(PyTypeObject *type, Py_ssize_t nitems);
void *PyType_GetSlot(PyTypeObject *type, int slot);
int PyType_IsSubtype(PyTypeObject *a, PyTypeObject *b);
void PyObject_GC_UnTrack(void *obj);

/* Beyond the stable ABI: marshal's C entry points (Include/marshal.h), whose
 * signatures have not changed since Python 2. Safe here because the guest's
 * CPython is the one componentize-py bundles, and the guest build accepts
 * only the componentize-py version it was checked with
 * (pylon/build/guest.py). */
PyObject *PyMarshal_WriteObjectToString(PyObject *obj, int version);
PyObject *PyMarshal_ReadObjectFromString(const char *data, Py_ssize_t len);

#endif

/* sqlite's guest binding, `_sqlite_binding`: a CPython extension module
 * linked into pylon.wasm when it embeds sqlite ([embedded.binding] in
 * cap.toml; docs/embedded.md).
 *
 * pylon_guest.sqlite runs every statement through the statement resource's
 * run-packed method: one call binds, steps and returns the first rows. A
 * point select is dominated by fixed costs: componentize-py's generic
 * import path was ~1 us of the ~2 us call, and marshal's C API another
 * ~0.7 us. This module makes that call from C (`run_packed`, `run`), and
 * execute-many-packed's (`run_many`), with its own codec for the packed
 * values; and it holds the DB-API objects' hot state and paths in C
 * (ConnectionCore, StatementCore, CursorCore, RowCore, further below). */
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

/* Packs the parameter tuple or list `params`, runs statement `handle` for up
 * to `max_rows` rows and unpacks the reply where the host wrote it: the
 * (rows, done, changes, lastrowid) tuple, or (None, code, message, 0) for an
 * error in band. A value marshal cannot write raises ValueError, as
 * marshal.dumps does, and the caller takes its slower route. */
static PyObject *run_call(int32_t handle, PyObject *params, uint32_t max_rows) {
    text_buf text;
    text_init(&text);
    if (pack_params(&text, params) < 0) {
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

/* run(handle, params, max_rows) -> (rows, done, changes, lastrowid): what
 * pylon_guest.sqlite does around run-packed, in one C call (run_call). */
static PyObject *run(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) return PyErr_Format(PyExc_TypeError, "run() takes 3 arguments (%zd given)", nargs);
    int32_t handle;
    if (pylon_handle_arg(args[0], &handle) < 0) return NULL;
    uint32_t max_rows;
    if (pylon_u32_arg(args[2], &max_rows) < 0) return NULL;
    return run_call(handle, args[1], max_rows);
}

/* [method]statement.execute-many-packed: func(param-rows: string) -> result<s64, error>,
 * flattened to (self, rows ptr, rows len, return area): the result's case at
 * 0; ok: the s64 at 8; err: the error record's code at 8, its message's
 * pointer at 12 and length at 16. */
__attribute__((import_module("pylon:sqlite/sqlite@0.1.0"), import_name("[method]statement.execute-many-packed")))
extern void pylon_sqlite_import_execute_many_packed(int32_t self, const char *rows, size_t rows_len, void *ret);

/* run_many(handle, rows) -> int | (code, message): runs statement `handle`
 * once per parameter row of the list `rows`, packed here straight into the
 * Latin-1 text the call carries (marshal.dumps, .decode("latin-1") and
 * componentize-py's UTF-8 copy of that text were ~25% of an executemany).
 * The rows changed, or the error record as a tuple; ValueError as
 * marshal.dumps raises it for a value it cannot write (nothing ran). */
static PyObject *run_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) return PyErr_Format(PyExc_TypeError, "run_many() takes 2 arguments (%zd given)", nargs);
    int32_t handle;
    if (pylon_handle_arg(args[0], &handle) < 0) return NULL;
    text_buf text;
    text_init(&text);
    if (pack_params(&text, args[1]) < 0) {
        text_free(&text);
        return NULL;
    }
    _Alignas(8) uint8_t ret[24];
    pylon_sqlite_import_execute_many_packed(handle, (const char *)text.p, text.len, ret);
    text_free(&text);
    if (ret[0] == 0) return PyLong_FromLongLong(*(int64_t *)(ret + 8));
    int32_t code = *(int32_t *)(ret + 8);
    char *message = *(char **)(ret + 12);
    size_t message_len = *(size_t *)(ret + 16);
    PyObject *text_obj = PyUnicode_DecodeUTF8(message_len ? message : "", (Py_ssize_t)message_len, "replace");
    pylon_result_free(message, message_len);
    PyObject *code_obj = text_obj != NULL ? PyLong_FromLongLong(code) : NULL;
    PyObject *out = code_obj != NULL ? PyTuple_New(2) : NULL;
    if (out == NULL) {
        if (text_obj != NULL) Py_DecRef(text_obj);
        if (code_obj != NULL) Py_DecRef(code_obj);
        return NULL;
    }
    PyTuple_SetItem(out, 0, code_obj); /* steals */
    PyTuple_SetItem(out, 1, text_obj);
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

/* --- the DB-API objects' hot state, in C ---------------------------------------
 * A point select through pylon_guest.sqlite's Python cursor cost ~1.3 us of
 * interpreted code around the ~1.4 us run() call: the cursor's checks, the
 * statement cache lookup, eight attribute stores, then fetchone's own. These
 * three base types hold the state those steps read and write, as C fields
 * that Python sees as ordinary attributes (member descriptors), so
 * pylon_guest.sqlite's Connection, _Statement and Cursor subclass them and
 * keep every other method in Python. CursorCore.execute and .fetchone do the
 * common case in C: a cached statement, a tuple or list of parameters, rows
 * already fetched, no row factory. Anything else, and every error, goes to
 * the subclass's Python _execute / _fetchone, which hold the full rules. */

typedef struct {
    PyObject_HEAD_T head;
    PyObject *h;     /* _h: the connection resource; None once closed */
    PyObject *cache; /* _cache: sql -> _Statement */
    PyObject *row_factory;
} ConnectionCore;

typedef struct {
    PyObject_HEAD_T head;
    PyObject *description;
    /* keys: the dict keys of its parameters in order (":a" takes params["a"])
     * once Python found every parameter named, else NULL */
    PyObject *keys;
    int handle; /* the embedded statement resource's handle; -1: run it from Python */
    char is_dml, in_use, cached;
} StatementCore;

typedef struct {
    PyObject_HEAD_T head;
    PyObject *connection, *row_factory, *description, *rowcount, *lastrowid;
    PyObject *stmt; /* _stmt: the statement with rows still to step, or None */
    PyObject *rows; /* _rows: the fetched batch; _pos: the next row in it */
    PyObject *done;
    Py_ssize_t pos;
    char closed;
} CursorCore;

typedef struct {
    PyObject_HEAD_T head;
    PyObject *values;      /* _values: the row's tuple */
    PyObject *description; /* _description: its cursor's, () when it had none */
    PyObject *index;       /* column name -> position (see row_index) */
} RowCore;

static PyTypeObject *connection_type, *statement_type, *cursor_type;
static PyObject *empty_tuple, *minus_one, *first_batch_obj;
static PyObject *name_execute, *name_fetchone, *name_iternext, *name_failed, *name_lower;
/* The first run's row count (set_first_batch); 0 until pylon_guest.sqlite
 * sets it, and then every execute takes the Python route. */
static uint32_t first_batch;

#define FIELD(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))
static const Py_ssize_t connection_fields[] = {
    offsetof(ConnectionCore, h), offsetof(ConnectionCore, cache), offsetof(ConnectionCore, row_factory), -1};
static const Py_ssize_t statement_fields[] = {offsetof(StatementCore, description), offsetof(StatementCore, keys),
                                              -1};
static const Py_ssize_t cursor_fields[] = {
    offsetof(CursorCore, connection), offsetof(CursorCore, row_factory), offsetof(CursorCore, description),
    offsetof(CursorCore, rowcount),   offsetof(CursorCore, lastrowid),   offsetof(CursorCore, stmt),
    offsetof(CursorCore, rows),       offsetof(CursorCore, done),        -1};

static const Py_ssize_t row_fields[] = {offsetof(RowCore, values), offsetof(RowCore, description),
                                        offsetof(RowCore, index), -1};

static int traverse_fields(PyObject *self, visitproc visit, void *arg, const Py_ssize_t *fields) {
    for (; *fields >= 0; fields++) {
        PyObject *v = FIELD(self, *fields);
        if (v != NULL) {
            int rc = visit(v, arg);
            if (rc) return rc;
        }
    }
    /* A heap type's instances hold a reference to it. */
    return visit((PyObject *)PYLON_TYPE(self), arg);
}

static int clear_fields(PyObject *self, const Py_ssize_t *fields) {
    for (; *fields >= 0; fields++) {
        PyObject *v = FIELD(self, *fields);
        FIELD(self, *fields) = NULL;
        if (v != NULL) Py_DecRef(v);
    }
    return 0;
}

static void dealloc_fields(PyObject *self, const Py_ssize_t *fields) {
    PyTypeObject *type = PYLON_TYPE(self);
    PyObject_GC_UnTrack(self);
    clear_fields(self, fields);
    ((void (*)(void *))PyType_GetSlot(type, Py_tp_free))(self);
    Py_DecRef((PyObject *)type);
}

/* Stores `value` (a new reference taken here) in a field. */
static void set_field(PyObject **field, PyObject *value) {
    PyObject *old = *field;
    Py_IncRef(value);
    *field = value;
    if (old != NULL) Py_DecRef(old);
}

static int is_a(PyObject *obj, PyTypeObject *type) {
    PyTypeObject *t = PYLON_TYPE(obj);
    return t == type || PyType_IsSubtype(t, type);
}

/* <type>_traverse, <type>_clear and <type>_dealloc over <type>_fields. */
#define CORE_GC_SLOTS(type)                                                                 \
    static int type##_traverse(PyObject *self, visitproc visit, void *arg) {                \
        return traverse_fields(self, visit, arg, type##_fields);                            \
    }                                                                                       \
    static int type##_clear(PyObject *self) { return clear_fields(self, type##_fields); }   \
    static void type##_dealloc(PyObject *self) { dealloc_fields(self, type##_fields); }

CORE_GC_SLOTS(connection)
CORE_GC_SLOTS(statement)
CORE_GC_SLOTS(cursor)
CORE_GC_SLOTS(row)

static PyObject *statement_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    (void)args, (void)kwargs;
    StatementCore *self = (StatementCore *)PyType_GenericAlloc(type, 0);
    if (self != NULL) self->handle = -1;
    return (PyObject *)self;
}

static int is_none(PyObject *obj) { return obj == NULL || obj == Py_None; }

/* No results: a new cursor's state, and a cursor's after an execute that
 * failed, as in sqlite3 (and Cursor._forget_results): no rows left to
 * fetch, no description, rowcount -1. */
static void forget_results(CursorCore *self) {
    set_field(&self->rows, empty_tuple);
    self->pos = 0;
    set_field(&self->done, Py_True);
    set_field(&self->description, Py_None);
    set_field(&self->rowcount, minus_one);
}

static PyObject *cursor_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    (void)args, (void)kwargs;
    CursorCore *self = (CursorCore *)PyType_GenericAlloc(type, 0);
    if (self != NULL) forget_results(self);
    return (PyObject *)self;
}

/* Cursor(connection): the connection, and its row factory at this moment. */
static int cursor_init(PyObject *op, PyObject *args, PyObject *kwargs) {
    CursorCore *self = (CursorCore *)op;
    if (PyTuple_Size(args) != 1 || (kwargs != NULL && PyDict_Size(kwargs) != 0)) {
        PyErr_Format(PyExc_TypeError, "Cursor() takes one argument, the connection");
        return -1;
    }
    PyObject *conn = PyTuple_GetItem(args, 0);
    PyObject *factory;
    if (is_a(conn, connection_type)) {
        factory = ((ConnectionCore *)conn)->row_factory;
        Py_IncRef(factory = factory != NULL ? factory : Py_None);
    } else if ((factory = PyObject_GetAttrString(conn, "row_factory")) == NULL) {
        return -1;
    }
    set_field(&self->connection, conn);
    set_field(&self->row_factory, factory);
    Py_DecRef(factory);
    return 0;
}

/* self.<name>(*args, **kwargs): the Python route, for whatever the C one
 * does not take. */
static PyObject *python_route(PyObject *self, PyObject *name, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames) {
    PyObject *all[8];
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_Size(kwnames) : 0;
    if (nargs + nkw + 1 > (Py_ssize_t)(sizeof all / sizeof all[0]))
        return PyErr_Format(PyExc_TypeError, "too many arguments (%zd given)", nargs + nkw);
    all[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++) all[i + 1] = args[i];
    return PyObject_VectorcallMethod(name, all, (size_t)(nargs + 1), kwnames);
}

/* The reply's four items, checked: a 4-tuple, as the cap sends it. */
static PyObject *reply_item(PyObject *out, Py_ssize_t i) {
    if (PYLON_TYPE(out) != &PyTuple_Type || PyTuple_Size(out) != 4) {
        PyErr_Format(PyExc_RuntimeError, "the sqlite cap sent a malformed reply");
        return NULL;
    }
    return PyTuple_GetItem(out, i);
}

/* The values of dict `params` for the statement's `keys`, as a tuple; NULL
 * (no error set) when one is missing: _execute raises sqlite3's error. */
static PyObject *values_by_key(PyObject *params, PyObject *keys) {
    Py_ssize_t n = PyTuple_Size(keys);
    PyObject *values = PyTuple_New(n);
    if (values == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = PyDict_GetItemWithError(params, PyTuple_GetItem(keys, i));
        if (value == NULL) {
            Py_DecRef(values);
            return NULL;
        }
        Py_IncRef(value);
        PyTuple_SetItem(values, i, value);
    }
    return values;
}

/* Cursor.execute(sql, parameters=()): the statement run from C when it is
 * cached and free, the parameters are a tuple or list (or a dict, once the
 * statement's keys are known) and the cursor holds no statement; else
 * Cursor._execute. */
static PyObject *cursor_execute(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    CursorCore *self = (CursorCore *)op;
    if (kwnames != NULL || nargs < 1 || nargs > 2 || first_batch == 0 || self->closed || !is_none(self->stmt))
        return python_route(op, name_execute, args, nargs, kwnames);
    PyObject *sql = args[0], *params = nargs == 2 ? args[1] : empty_tuple;
    void *ptype = PYLON_TYPE(params);
    ConnectionCore *conn = (ConnectionCore *)self->connection;
    if (PYLON_TYPE(sql) != &PyUnicode_Type ||
        (ptype != &PyTuple_Type && ptype != &PyList_Type && ptype != &PyDict_Type) || conn == NULL ||
        !is_a((PyObject *)conn, connection_type) || is_none(conn->h) || conn->cache == NULL ||
        PYLON_TYPE(conn->cache) != &PyDict_Type)
        return python_route(op, name_execute, args, nargs, kwnames);
    StatementCore *stmt = (StatementCore *)PyDict_GetItemWithError(conn->cache, sql);
    if (stmt == NULL) {
        if (PyErr_Occurred()) return NULL;
        return python_route(op, name_execute, args, nargs, kwnames);
    }
    if (!is_a((PyObject *)stmt, statement_type) || stmt->in_use || !stmt->cached || stmt->handle < 0 ||
        (ptype == &PyDict_Type && (stmt->keys == NULL || PYLON_TYPE(stmt->keys) != &PyTuple_Type)))
        return python_route(op, name_execute, args, nargs, kwnames);
    PyObject *ordered = NULL; /* a dict's values, in the statement's order */
    if (ptype == &PyDict_Type && (ordered = values_by_key(params, stmt->keys)) == NULL) {
        if (!PyErr_Occurred()) return python_route(op, name_execute, args, nargs, kwnames);
        forget_results(self);
        return NULL;
    }
    Py_IncRef((PyObject *)stmt);
    PyObject *out = run_call(stmt->handle, ordered != NULL ? ordered : params, first_batch);
    if (ordered != NULL) Py_DecRef(ordered);
    if (out == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) {
        /* Not marshallable: nothing ran; _execute checks and cleans the values. */
        PyErr_Clear();
        Py_DecRef((PyObject *)stmt);
        return python_route(op, name_execute, args, nargs, kwnames);
    }
    PyObject *rows = out != NULL ? reply_item(out, 0) : NULL;
    if (rows == Py_None) {
        /* The error in band: _Statement.failed binds cleaned values or raises. */
        PyObject *fargs[4] = {(PyObject *)stmt, out, params, first_batch_obj};
        PyObject *again = PyObject_VectorcallMethod(name_failed, fargs, 4, NULL);
        Py_DecRef(out);
        out = again;
        rows = out != NULL ? reply_item(out, 0) : NULL;
    }
    if (rows == NULL) {
        forget_results(self);
        if (out != NULL) Py_DecRef(out);
        Py_DecRef((PyObject *)stmt);
        return NULL;
    }
    PyObject *done = PyTuple_GetItem(out, 1);
    int finished = PyObject_IsTrue(done);
    if (finished < 0) {
        forget_results(self);
        Py_DecRef(out);
        Py_DecRef((PyObject *)stmt);
        return NULL;
    }
    set_field(&self->description, stmt->description != NULL ? stmt->description : Py_None);
    set_field(&self->lastrowid, PyTuple_GetItem(out, 3));
    set_field(&self->rows, rows);
    self->pos = 0;
    set_field(&self->done, done);
    if (finished) {
        /* A cached statement stays in the cache: nothing to give back. */
        set_field(&self->rowcount, stmt->is_dml ? PyTuple_GetItem(out, 2) : minus_one);
    } else {
        set_field(&self->rowcount, minus_one);
        stmt->in_use = 1;
        set_field(&self->stmt, (PyObject *)stmt);
    }
    Py_DecRef(out);
    Py_DecRef((PyObject *)stmt);
    Py_IncRef(op);
    return op;
}

/* The next fetched row (a new reference), made by the row factory if there
 * is one, when there is a fetched row and the cursor and its connection are
 * open. Else NULL: with an exception set if the factory raised, without one
 * when the Python route is to take over. */
static PyObject *next_fetched(CursorCore *self) {
    ConnectionCore *conn = (ConnectionCore *)self->connection;
    if (self->closed || conn == NULL || !is_a((PyObject *)conn, connection_type) || is_none(conn->h) ||
        self->rows == NULL || PYLON_TYPE(self->rows) != &PyList_Type || self->pos < 0 ||
        self->pos >= PyList_Size(self->rows))
        return NULL;
    PyObject *row = PyList_GetItem(self->rows, self->pos);
    Py_IncRef(row);
    self->pos++;
    if (is_none(self->row_factory)) return row;
    PyObject *args[2] = {(PyObject *)self, row};
    PyObject *made = PyObject_Vectorcall(self->row_factory, args, 2, NULL);
    Py_DecRef(row);
    return made;
}

/* Cursor.fetchone(): next_fetched, else Cursor._fetchone. */
static PyObject *cursor_fetchone(PyObject *op, PyObject *unused) {
    (void)unused;
    PyObject *row = next_fetched((CursorCore *)op);
    return row != NULL || PyErr_Occurred() ? row : PyObject_VectorcallMethod(name_fetchone, &op, 1, NULL);
}

/* iter(cursor) is the cursor; next(cursor): next_fetched, else
 * Cursor._iternext (which fetches the next batch, or raises StopIteration). */
static PyObject *cursor_iter(PyObject *op) {
    Py_IncRef(op);
    return op;
}

static PyObject *cursor_iternext(PyObject *op) {
    PyObject *row = next_fetched((CursorCore *)op);
    return row != NULL || PyErr_Occurred() ? row : PyObject_VectorcallMethod(name_iternext, &op, 1, NULL);
}

/* --- Row: sqlite3.Row's hot part ---------------------------------------------
 * A row looked up by column name went through ~0.5 us of Python per lookup
 * (the built-in's: 0.12). RowCore keeps the tuple, the description and an
 * index of the column names; `row[name]` is a dict lookup in C. */

/* The last description indexed and its index: a query's rows share one. */
static PyObject *indexed_description, *description_index;

/* The position of the first column whose lowercased name is the lowercased
 * key, as looking through the columns would find it, kept under each
 * column's lowercased name and, where that gives the same position, under
 * its name as it is; so a name asked for as written needs no lowering. */
static PyObject *row_index(PyObject *description) {
    if (description == indexed_description) {
        Py_IncRef(description_index);
        return description_index;
    }
    PyObject *index = PyDict_New();
    if (index == NULL) return NULL;
    Py_ssize_t n = PyTuple_Size(description);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *column = PyTuple_GetItem(description, i);
        PyObject *name = PYLON_TYPE(column) == &PyTuple_Type && PyTuple_Size(column) > 0 ? PyTuple_GetItem(column, 0)
                                                                                          : NULL;
        if (name == NULL || PYLON_TYPE(name) != &PyUnicode_Type) continue;
        PyObject *lowered = PyObject_VectorcallMethod(name_lower, &name, 1, NULL);
        if (lowered == NULL) goto fail;
        PyObject *position = PyLong_FromLongLong(i);
        int rc = position == NULL ? -1 : 0;
        if (rc == 0 && (rc = PyDict_Contains(index, lowered)) == 0) {
            rc = PyDict_SetItem(index, lowered, position);
            if (rc == 0 && (rc = PyDict_Contains(index, name)) == 0) rc = PyDict_SetItem(index, name, position);
        } else if (rc == 1) {
            rc = 0;
        }
        Py_DecRef(lowered);
        if (position != NULL) Py_DecRef(position);
        if (rc < 0) goto fail;
    }
    if (indexed_description != NULL) {
        Py_DecRef(indexed_description);
        Py_DecRef(description_index);
    }
    Py_IncRef(description);
    Py_IncRef(index);
    indexed_description = description;
    description_index = index;
    return index;
fail:
    Py_DecRef(index);
    return NULL;
}

/* Row(cursor, values): values a tuple, as sqlite3.Row asks. */
static PyObject *row_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_Size(args) != 2 || (kwargs != NULL && PyDict_Size(kwargs) != 0))
        return PyErr_Format(PyExc_TypeError, "Row() takes two arguments, a cursor and a tuple");
    PyObject *cursor = PyTuple_GetItem(args, 0), *values = PyTuple_GetItem(args, 1);
    if (!is_a(values, (PyTypeObject *)&PyTuple_Type))
        return PyErr_Format(PyExc_TypeError, "tuple required for second argument");
    PyObject *description;
    if (is_a(cursor, cursor_type)) {
        description = ((CursorCore *)cursor)->description;
        Py_IncRef(description = description != NULL ? description : Py_None);
    } else if ((description = PyObject_GetAttrString(cursor, "description")) == NULL) {
        return NULL;
    }
    int truthy = PyObject_IsTrue(description);
    if (truthy <= 0 || PYLON_TYPE(description) != &PyTuple_Type) {
        Py_DecRef(description);
        if (truthy < 0) return NULL;
        Py_IncRef(description = empty_tuple);
    }
    PyObject *index = row_index(description);
    RowCore *self = index != NULL ? (RowCore *)PyType_GenericAlloc(type, 0) : NULL;
    if (self == NULL) {
        Py_DecRef(description);
        if (index != NULL) Py_DecRef(index);
        return NULL;
    }
    Py_IncRef(values);
    self->values = values;
    self->description = description; /* the references taken above */
    self->index = index;
    return (PyObject *)self;
}

/* row[key]: by column name (case-insensitively), else as the tuple. */
static PyObject *row_subscript(PyObject *op, PyObject *key) {
    RowCore *self = (RowCore *)op;
    if (PYLON_TYPE(key) != &PyUnicode_Type) return PyObject_GetItem(self->values, key);
    PyObject *position = PyDict_GetItemWithError(self->index, key);
    if (position == NULL && !PyErr_Occurred()) {
        PyObject *lowered = PyObject_VectorcallMethod(name_lower, &key, 1, NULL);
        if (lowered == NULL) return NULL;
        position = PyDict_GetItemWithError(self->index, lowered);
        Py_DecRef(lowered);
    }
    if (position == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_IndexError, "No item with that key");
        return NULL;
    }
    PyObject *value = PyTuple_GetItem(self->values, PyLong_AsSsize_t(position));
    if (value != NULL) Py_IncRef(value);
    return value;
}

static PyMemberDef row_members[] = {
    {"_values", Py_T_OBJECT, offsetof(RowCore, values), Py_READONLY, NULL},
    {"_description", Py_T_OBJECT, offsetof(RowCore, description), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMemberDef connection_members[] = {
    {"_h", Py_T_OBJECT, offsetof(ConnectionCore, h), 0, NULL},
    {"_cache", Py_T_OBJECT, offsetof(ConnectionCore, cache), 0, NULL},
    {"row_factory", Py_T_OBJECT, offsetof(ConnectionCore, row_factory), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};
static PyMemberDef statement_members[] = {
    {"description", Py_T_OBJECT, offsetof(StatementCore, description), 0, NULL},
    {"keys", Py_T_OBJECT, offsetof(StatementCore, keys), 0, NULL},
    {"handle", Py_T_INT, offsetof(StatementCore, handle), 0, NULL},
    {"is_dml", Py_T_BOOL, offsetof(StatementCore, is_dml), 0, NULL},
    {"in_use", Py_T_BOOL, offsetof(StatementCore, in_use), 0, NULL},
    {"cached", Py_T_BOOL, offsetof(StatementCore, cached), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};
static PyMemberDef cursor_members[] = {
    {"connection", Py_T_OBJECT, offsetof(CursorCore, connection), 0, NULL},
    {"row_factory", Py_T_OBJECT, offsetof(CursorCore, row_factory), 0, NULL},
    {"description", Py_T_OBJECT, offsetof(CursorCore, description), 0, NULL},
    {"rowcount", Py_T_OBJECT, offsetof(CursorCore, rowcount), 0, NULL},
    {"lastrowid", Py_T_OBJECT, offsetof(CursorCore, lastrowid), 0, NULL},
    {"_stmt", Py_T_OBJECT, offsetof(CursorCore, stmt), 0, NULL},
    {"_rows", Py_T_OBJECT, offsetof(CursorCore, rows), 0, NULL},
    {"_done", Py_T_OBJECT, offsetof(CursorCore, done), 0, NULL},
    {"_pos", Py_T_PYSSIZET, offsetof(CursorCore, pos), 0, NULL},
    {"_closed", Py_T_BOOL, offsetof(CursorCore, closed), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};
static PyMethodDef cursor_methods[] = {
    {"execute", (void *)cursor_execute, METH_FASTCALL | METH_KEYWORDS,
     "execute(sql, parameters=()) -> Cursor: runs one statement with parameters (a sequence for ?, "
     "a mapping for named parameters)"},
    {"fetchone", (void *)cursor_fetchone, METH_NOARGS, "fetchone() -> the next row, or None"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot connection_slots[] = {
    {Py_tp_doc, "The C state under pylon_guest.sqlite.Connection."},
    {Py_tp_members, connection_members}, {Py_tp_traverse, connection_traverse},
    {Py_tp_clear, connection_clear},     {Py_tp_dealloc, connection_dealloc},
    {0, NULL},
};
static PyType_Slot statement_slots[] = {
    {Py_tp_doc, "The C state under pylon_guest.sqlite._Statement."},
    {Py_tp_members, statement_members}, {Py_tp_new, statement_new},
    {Py_tp_traverse, statement_traverse}, {Py_tp_clear, statement_clear},
    {Py_tp_dealloc, statement_dealloc}, {0, NULL},
};
static PyType_Slot cursor_slots[] = {
    {Py_tp_doc, "The C state and fast paths under pylon_guest.sqlite.Cursor."},
    {Py_tp_members, cursor_members},   {Py_tp_methods, cursor_methods}, {Py_tp_new, cursor_new},
    {Py_tp_init, cursor_init},         {Py_tp_iter, cursor_iter},       {Py_tp_iternext, cursor_iternext},
    {Py_tp_traverse, cursor_traverse}, {Py_tp_clear, cursor_clear},     {Py_tp_dealloc, cursor_dealloc},
    {0, NULL},
};
static PyType_Slot row_slots[] = {
    {Py_tp_doc, "The C state and lookups under pylon_guest.sqlite.Row."},
    {Py_tp_members, row_members},   {Py_tp_new, row_new},     {Py_mp_subscript, row_subscript},
    {Py_tp_traverse, row_traverse}, {Py_tp_clear, row_clear}, {Py_tp_dealloc, row_dealloc},
    {0, NULL},
};
#define CORE_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC)
static PyType_Spec connection_spec = {"_sqlite_binding.ConnectionCore", sizeof(ConnectionCore), 0, CORE_FLAGS,
                                      connection_slots};
static PyType_Spec statement_spec = {"_sqlite_binding.StatementCore", sizeof(StatementCore), 0, CORE_FLAGS,
                                     statement_slots};
static PyType_Spec cursor_spec = {"_sqlite_binding.CursorCore", sizeof(CursorCore), 0, CORE_FLAGS, cursor_slots};
static PyType_Spec row_spec = {"_sqlite_binding.RowCore", sizeof(RowCore), 0, CORE_FLAGS, row_slots};

/* set_first_batch(n): the row count of an execute's first run, pylon_guest.sqlite's _FIRST_BATCH. */
static PyObject *set_first_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 1) return PyErr_Format(PyExc_TypeError, "set_first_batch() takes 1 argument (%zd given)", nargs);
    uint32_t n;
    if (pylon_u32_arg(args[0], &n) < 0) return NULL;
    PyObject *obj = PyLong_FromUnsignedLong(n);
    if (obj == NULL) return NULL;
    if (first_batch_obj != NULL) Py_DecRef(first_batch_obj);
    first_batch_obj = obj;
    first_batch = n;
    Py_IncRef(Py_None);
    return Py_None;
}

/* Adds the type made from `spec` to the module; keeps a reference to it in
 * `*out` (never dropped: the module keeps the type too) unless `out` is NULL. */
static int add_type(PyObject *module, const char *name, PyType_Spec *spec, PyTypeObject **out) {
    PyObject *type = PyType_FromSpec(spec);
    if (type == NULL) return -1;
    int rc = PyModule_AddObjectRef(module, name, type);
    if (out != NULL) *out = (PyTypeObject *)type;
    else Py_DecRef(type);
    return rc;
}

static int setup(PyObject *module) {
    if ((empty_tuple = PyTuple_New(0)) == NULL || (minus_one = PyLong_FromLongLong(-1)) == NULL ||
        (name_execute = PyUnicode_InternFromString("_execute")) == NULL ||
        (name_fetchone = PyUnicode_InternFromString("_fetchone")) == NULL ||
        (name_iternext = PyUnicode_InternFromString("_iternext")) == NULL ||
        (name_failed = PyUnicode_InternFromString("failed")) == NULL ||
        (name_lower = PyUnicode_InternFromString("lower")) == NULL)
        return -1;
    if (add_type(module, "ConnectionCore", &connection_spec, &connection_type) < 0 ||
        add_type(module, "StatementCore", &statement_spec, &statement_type) < 0 ||
        add_type(module, "CursorCore", &cursor_spec, &cursor_type) < 0 ||
        add_type(module, "RowCore", &row_spec, NULL) < 0)
        return -1;
    return 0;
}

static PyMethodDef methods[] = {
    {"run_packed", (void *)run_packed, METH_FASTCALL,
     "run_packed(handle, params, max_rows) -> bytes: statement.run-packed of the statement `handle`"},
    {"run", (void *)run, METH_FASTCALL,
     "run(handle, params, max_rows) -> tuple: pack params, run-packed, unpack the reply"},
    {"run_many", (void *)run_many, METH_FASTCALL,
     "run_many(handle, rows) -> int or (code, message): execute-many-packed of the statement `handle`"},
    {"pack", (void *)pack, METH_FASTCALL, "pack(params) -> bytes: what marshal.dumps(params, 2) gives"},
    {"unpack", (void *)unpack, METH_FASTCALL, "unpack(data) -> object: what marshal.loads(data) gives"},
    {"set_first_batch", (void *)set_first_batch, METH_FASTCALL,
     "set_first_batch(n): the rows CursorCore.execute asks of a statement's first run"},
    {NULL, NULL, 0, NULL},
};

PYLON_BINDING_MODULE_WITH(_sqlite_binding, "sqlite's run-packed, called from C, and the DB-API objects' C state.",
                          methods, setup)

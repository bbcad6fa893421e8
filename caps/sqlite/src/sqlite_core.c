/* sqlite core: see sqlite_core.h for the lifetime rules. */
#include "sqlite_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct score_conn {
    sqlite3 *db; /* NULL once closed */
    int refs;    /* the face's own + one per live statement struct */
    char *begin_sql;
    score_stmt *stmts; /* unfinalized statements, for close() */
};

struct score_stmt {
    sqlite3_stmt *st; /* NULL for empty SQL, and once finalized */
    score_conn *conn;
    int finalized;
    int is_dml;  /* INSERT/UPDATE/DELETE/REPLACE: gets the implicit BEGIN */
    int started; /* stepped since the last reset */
    int64_t changes;
    score_error pending; /* deferred by score_defer_error, if has_pending */
    int has_pending;
    score_stmt *prev, *next;
};

static void drop_pending(score_stmt *s) {
    if (s->has_pending) {
        free(s->pending.message);
        s->has_pending = 0;
    }
}

void score_defer_error(score_stmt *s, score_error *err) {
    drop_pending(s);
    s->pending = *err;
    s->has_pending = 1;
    err->message = NULL;
}

int score_fail(score_error *err, int code, const char *message) {
    size_t n = strlen(message);
    err->code = code;
    err->message = malloc(n + 1);
    err->message_len = err->message ? n : 0;
    if (err->message)
        memcpy(err->message, message, n + 1);
    return -1;
}

static int fail_db(score_error *err, sqlite3 *db, int code) {
    return score_fail(err, code, db ? sqlite3_errmsg(db) : sqlite3_errstr(code));
}

static char *dup_n(const char *p, size_t len) {
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, p, len);
        s[len] = 0;
    }
    return s;
}

/* Skips whitespace and SQL comments, as Python's sqlite3 does to decide
 * whether a statement's tail is empty and what kind of statement it is. */
static const char *skip_blank(const char *p, const char *end) {
    while (p < end) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v' ||
            *p == ';') {
            p++;
        } else if (end - p >= 2 && p[0] == '-' && p[1] == '-') {
            while (p < end && *p != '\n')
                p++;
        } else if (end - p >= 2 && p[0] == '/' && p[1] == '*') {
            p += 2;
            while (p < end && !(end - p >= 2 && p[0] == '*' && p[1] == '/'))
                p++;
            p = p < end ? p + 2 : end;
        } else {
            break;
        }
    }
    return p;
}

static int starts_with_word(const char *p, const char *end, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != word[i])
            return 0;
    }
    return 1;
}

/* --- connections --------------------------------------------------------- */

int score_open(const char *path, size_t len, score_conn **out, score_error *err) {
    *out = NULL;
    char *cpath = dup_n(path, len);
    if (!cpath)
        return score_fail(err, SQLITE_NOMEM, "out of memory");
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(cpath, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    free(cpath);
    if (rc != SQLITE_OK) {
        int code = db ? sqlite3_extended_errcode(db) : rc;
        fail_db(err, db, code);
        sqlite3_close_v2(db);
        return -1;
    }
    sqlite3_extended_result_codes(db, 1);
    /* Python's sqlite3 default timeout is 5 s; keep the same wait. */
    sqlite3_busy_timeout(db, 5000);
    /* This build takes no file locks (VFS unix-none: WASI has none), so
     * "normal" locking mode buys no safety, yet it re-checks the journal and
     * the file's change counter at the start of every read transaction:
     * several WASI calls per statement, a point select 5x slower on a file.
     * Exclusive mode keeps the page cache between transactions instead. */
    if (len && !(len == 8 && memcmp(path, ":memory:", 8) == 0))
        sqlite3_exec(db, "PRAGMA locking_mode=EXCLUSIVE", NULL, NULL, NULL);
    score_conn *c = calloc(1, sizeof *c);
    if (!c) {
        sqlite3_close_v2(db);
        return score_fail(err, SQLITE_NOMEM, "out of memory");
    }
    c->db = db;
    c->refs = 1;
    *out = c;
    return 0;
}

static int check_open(score_conn *c, score_error *err) {
    if (!c->db)
        return score_fail(err, SQLITE_MISUSE, "Cannot operate on a closed database.");
    return 0;
}

int score_exec(score_conn *c, const char *sql, size_t len, score_error *err) {
    if (check_open(c, err))
        return -1;
    char *csql = dup_n(sql, len); /* sqlite3_exec wants a NUL-terminated string */
    if (!csql)
        return score_fail(err, SQLITE_NOMEM, "out of memory");
    char *msg = NULL;
    int rc = sqlite3_exec(c->db, csql, NULL, NULL, &msg);
    free(csql);
    if (rc != SQLITE_OK) {
        score_fail(err, sqlite3_extended_errcode(c->db), msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static void link_stmt(score_conn *c, score_stmt *s) {
    s->prev = NULL;
    s->next = c->stmts;
    if (c->stmts)
        c->stmts->prev = s;
    c->stmts = s;
}

static void unlink_stmt(score_conn *c, score_stmt *s) {
    if (s->prev)
        s->prev->next = s->next;
    else if (c->stmts == s)
        c->stmts = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

int score_prepare(score_conn *c, const char *sql, size_t len, score_stmt **out, score_error *err) {
    *out = NULL;
    if (check_open(c, err))
        return -1;
    if (len > (size_t)INT32_MAX)
        return score_fail(err, SQLITE_TOOBIG, "query string is too large");
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v2(c->db, sql, (int)len, &st, &tail);
    if (rc != SQLITE_OK)
        return fail_db(err, c->db, sqlite3_extended_errcode(c->db));
    const char *end = sql + len;
    if (tail && skip_blank(tail, end) < end) {
        sqlite3_finalize(st);
        return score_fail(err, SQLITE_MISUSE, "You can only execute one statement at a time.");
    }
    score_stmt *s = calloc(1, sizeof *s);
    if (!s) {
        sqlite3_finalize(st);
        return score_fail(err, SQLITE_NOMEM, "out of memory");
    }
    const char *head = skip_blank(sql, end);
    s->is_dml = starts_with_word(head, end, "insert") || starts_with_word(head, end, "update") ||
                starts_with_word(head, end, "delete") || starts_with_word(head, end, "replace");
    s->st = st;
    s->conn = c;
    c->refs++;
    link_stmt(c, s);
    *out = s;
    return 0;
}

void score_set_implicit_begin(score_conn *c, const char *sql, size_t len) {
    free(c->begin_sql);
    c->begin_sql = sql ? dup_n(sql, len) : NULL;
}

int score_in_transaction(score_conn *c) { return c->db && !sqlite3_get_autocommit(c->db); }

static int end_transaction(score_conn *c, const char *sql, score_error *err) {
    if (check_open(c, err))
        return -1;
    if (sqlite3_get_autocommit(c->db))
        return 0;
    return score_exec(c, sql, strlen(sql), err);
}

int score_commit(score_conn *c, score_error *err) { return end_transaction(c, "COMMIT", err); }
int score_rollback(score_conn *c, score_error *err) { return end_transaction(c, "ROLLBACK", err); }

int64_t score_changes(score_conn *c) { return c->db ? sqlite3_changes64(c->db) : 0; }
int64_t score_total_changes(score_conn *c) { return c->db ? sqlite3_total_changes64(c->db) : 0; }
int64_t score_last_insert_rowid(score_conn *c) { return c->db ? sqlite3_last_insert_rowid(c->db) : 0; }

int score_close(score_conn *c, score_error *err) {
    if (!c->db)
        return 0;
    while (c->stmts)
        score_finalize(c->stmts);
    int rc = sqlite3_close(c->db);
    if (rc != SQLITE_OK) {
        fail_db(err, c->db, rc);
        sqlite3_close_v2(c->db); /* let SQLite finish closing when it can */
    }
    c->db = NULL;
    return rc == SQLITE_OK ? 0 : -1;
}

static void conn_unref(score_conn *c) {
    if (--c->refs == 0) {
        free(c->begin_sql);
        free(c);
    }
}

void score_conn_release(score_conn *c) {
    score_error err = {0};
    if (score_close(c, &err))
        free(err.message);
    conn_unref(c);
}

/* --- statements ------------------------------------------------------------ */

int score_check(score_stmt *s, score_error *err) {
    if (!s->conn->db)
        return score_fail(err, SQLITE_MISUSE, "Cannot operate on a closed database.");
    if (s->finalized)
        return score_fail(err, SQLITE_MISUSE, "Cannot operate on a finalized statement.");
    return 0;
}

int score_param_count(score_stmt *s) { return s->st ? sqlite3_bind_parameter_count(s->st) : 0; }
const char *score_param_name(score_stmt *s, int i) {
    return s->st ? sqlite3_bind_parameter_name(s->st, i) : NULL;
}
int score_column_count(score_stmt *s) { return s->st ? sqlite3_column_count(s->st) : 0; }
const char *score_column_name(score_stmt *s, int i) {
    const char *name = s->st ? sqlite3_column_name(s->st, i) : NULL;
    return name ? name : "";
}
int score_readonly(score_stmt *s) { return s->st ? sqlite3_stmt_readonly(s->st) : 1; }

int score_reset(score_stmt *s, score_error *err) {
    if (score_check(s, err))
        return -1;
    /* The code sqlite3_reset returns repeats the last step's error, which
     * was already reported; the reset itself has happened either way. */
    if (s->st)
        sqlite3_reset(s->st);
    s->started = 0;
    drop_pending(s);
    return 0;
}

int score_bind_begin(score_stmt *s, size_t count, score_error *err) {
    if (score_reset(s, err))
        return -1;
    if (s->st)
        sqlite3_clear_bindings(s->st);
    int want = score_param_count(s);
    if (count != (size_t)want) {
        char msg[128];
        snprintf(msg, sizeof msg,
                 "Incorrect number of bindings supplied. The current statement uses %d, and "
                 "there are %zu supplied.",
                 want, count);
        return score_fail(err, SQLITE_MISUSE, msg);
    }
    return 0;
}

int score_bind(score_stmt *s, int i, const score_value *v, int copy, score_error *err) {
    sqlite3_destructor_type how = copy ? SQLITE_TRANSIENT : SQLITE_STATIC;
    int rc;
    switch (v->type) {
    case SQLITE_INTEGER:
        rc = sqlite3_bind_int64(s->st, i, v->i);
        break;
    case SQLITE_FLOAT:
        rc = sqlite3_bind_double(s->st, i, v->r);
        break;
    case SQLITE_TEXT:
        rc = sqlite3_bind_text64(s->st, i, (const char *)(v->ptr ? v->ptr : (const uint8_t *)""),
                                 v->len, how, SQLITE_UTF8);
        break;
    case SQLITE_BLOB:
        rc = v->len ? sqlite3_bind_blob64(s->st, i, v->ptr, v->len, how)
                    : sqlite3_bind_zeroblob(s->st, i, 0);
        break;
    default:
        rc = sqlite3_bind_null(s->st, i);
        break;
    }
    if (rc != SQLITE_OK)
        return fail_db(err, s->conn->db, rc);
    return 0;
}

int score_step(score_stmt *s, score_error *err) {
    if (score_check(s, err))
        return -1;
    if (s->has_pending) {
        *err = s->pending;
        s->has_pending = 0;
        return -1;
    }
    if (!s->st)
        return SQLITE_DONE;
    score_conn *c = s->conn;
    if (!s->started) {
        s->started = 1;
        s->changes = 0;
        if (c->begin_sql && s->is_dml && sqlite3_get_autocommit(c->db)) {
            if (score_exec(c, c->begin_sql, strlen(c->begin_sql), err)) {
                s->started = 0;
                return -1;
            }
        }
    }
    int rc = sqlite3_step(s->st);
    if (rc == SQLITE_ROW)
        return SQLITE_ROW;
    if (rc == SQLITE_DONE) {
        s->changes = s->is_dml ? sqlite3_changes64(c->db) : 0;
        return SQLITE_DONE;
    }
    fail_db(err, c->db, rc);
    /* Leave the statement ready to run again. */
    sqlite3_reset(s->st);
    s->started = 0;
    return -1;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
int score_valid_utf8(const uint8_t *p, size_t n) {
    size_t i = 0;
    /* ASCII, eight bytes at a time. */
    while (i + 8 <= n) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w & 0x8080808080808080ULL)
            break;
        i += 8;
    }
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            k = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (k >= n - i) /* the sequence runs past the end */
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + j] & 0x3F);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

int score_column(score_stmt *s, int i, score_value *v, score_error *err) {
    v->type = sqlite3_column_type(s->st, i);
    v->ptr = NULL;
    v->len = 0;
    switch (v->type) {
    case SQLITE_INTEGER:
        v->i = sqlite3_column_int64(s->st, i);
        break;
    case SQLITE_FLOAT:
        v->r = sqlite3_column_double(s->st, i);
        break;
    case SQLITE_TEXT:
        v->ptr = sqlite3_column_text(s->st, i);
        v->len = (size_t)sqlite3_column_bytes(s->st, i);
        if (!score_valid_utf8(v->ptr, v->len)) {
            char msg[200];
            snprintf(msg, sizeof msg, "Could not decode to UTF-8 column '%.100s'",
                     score_column_name(s, i));
            return score_fail(err, SQLITE_ERROR, msg);
        }
        break;
    case SQLITE_BLOB:
        v->ptr = sqlite3_column_blob(s->st, i);
        v->len = (size_t)sqlite3_column_bytes(s->st, i);
        break;
    default:
        v->type = SQLITE_NULL;
        break;
    }
    return 0;
}

int64_t score_stmt_changes(score_stmt *s) { return s->changes; }
int64_t score_stmt_last_insert_rowid(score_stmt *s) { return score_last_insert_rowid(s->conn); }

void score_finalize(score_stmt *s) {
    drop_pending(s);
    if (s->finalized)
        return;
    if (s->st)
        sqlite3_finalize(s->st);
    s->st = NULL;
    s->finalized = 1;
    unlink_stmt(s->conn, s);
}

void score_stmt_release(score_stmt *s) {
    score_conn *c = s->conn;
    score_finalize(s);
    free(s);
    conn_unref(c);
}

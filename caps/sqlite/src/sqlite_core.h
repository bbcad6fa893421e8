/* sqlite core: connection and statement lifetimes, errors, and the
 * sqlite3 module's transaction rules, over the SQLite amalgamation.
 *
 * Every face of the sqlite cap shares this file (the typed embedded
 * component now, a dynlink provider later): a face only converts its own
 * value types to the score_value struct below and back.
 *
 * Lifetimes. A connection may be closed (or dropped) while statements of it
 * are still alive, in any order, because the component model drops resources
 * in whatever order the guest does. So a score_conn is reference counted: the
 * face holds one reference, each statement another; closing finalizes the
 * statements and leaves the structs behind as "closed" until their last
 * reference goes. Every call on a closed connection or finalized statement
 * fails with SQLITE_MISUSE and a message saying which. */
#ifndef PYLON_SQLITE_CORE_H
#define PYLON_SQLITE_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "sqlite3.h"

/* A failure: SQLite's extended result code and a malloc'ed message the
 * caller takes over (free it, or hand it on). */
typedef struct {
    int code;
    char *message;
    size_t message_len;
} score_error;

/* A value. For TEXT and BLOB, `ptr`/`len` point into SQLite's memory and
 * stay valid only until the next step, reset or finalize. TEXT is
 * guaranteed valid UTF-8. */
typedef struct {
    int type; /* SQLITE_NULL, SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB */
    int64_t i;
    double r;
    const uint8_t *ptr;
    size_t len;
} score_value;

typedef struct score_conn score_conn;
typedef struct score_stmt score_stmt;

/* Connections. Functions returning int return 0 on success, else fill err. */
int score_open(const char *path, size_t len, score_conn **out, score_error *err);
int score_exec(score_conn *c, const char *sql, size_t len, score_error *err);
int score_prepare(score_conn *c, const char *sql, size_t len, score_stmt **out, score_error *err);
/* sql == NULL turns implicit BEGIN off. */
void score_set_implicit_begin(score_conn *c, const char *sql, size_t len);
int score_in_transaction(score_conn *c);
int score_commit(score_conn *c, score_error *err);
int score_rollback(score_conn *c, score_error *err);
int64_t score_changes(score_conn *c);
int64_t score_total_changes(score_conn *c);
int64_t score_last_insert_rowid(score_conn *c);
int score_close(score_conn *c, score_error *err);
/* Drops the face's reference (closing first if still open). */
void score_conn_release(score_conn *c);

/* Statements. */
int score_param_count(score_stmt *s);
/* Name of parameter i (1-based), with its prefix; NULL for a plain "?". */
const char *score_param_name(score_stmt *s, int i);
int score_column_count(score_stmt *s);
const char *score_column_name(score_stmt *s, int i);
int score_readonly(score_stmt *s);
/* Fails with SQLITE_MISUSE once the statement or its connection is gone. */
int score_check(score_stmt *s, score_error *err);
int score_reset(score_stmt *s, score_error *err);
/* Resets, clears bindings and checks that `count` values will be bound. */
int score_bind_begin(score_stmt *s, size_t count, score_error *err);
/* Binds parameter i (1-based). With `copy` 0 SQLite keeps pointing at the
 * caller's TEXT/BLOB bytes, which must then outlive the statement's run. */
int score_bind(score_stmt *s, int i, const score_value *v, int copy, score_error *err);
/* Steps once: returns SQLITE_ROW or SQLITE_DONE, or -1 with err filled.
 * Before the first step of an INSERT/UPDATE/DELETE/REPLACE outside a
 * transaction it runs the connection's implicit BEGIN, if one is set. */
int score_step(score_stmt *s, score_error *err);
/* Column i of the current row. TEXT that is not valid UTF-8 (SQLite stores
 * whatever bytes it was given) fails with SQLITE_ERROR rather than reaching
 * a WIT string, which must be valid UTF-8. */
int score_column(score_stmt *s, int i, score_value *v, score_error *err);
/* Changes made by the statement's last completed run (0 if it reads only). */
int64_t score_stmt_changes(score_stmt *s);
int64_t score_stmt_last_insert_rowid(score_stmt *s);
void score_finalize(score_stmt *s);
/* Drops the face's reference (finalizing first). */
void score_stmt_release(score_stmt *s);

/* Packed values (src/sqlite_packed.c): Python's marshal format, version 2,
 * restricted to None/bool/int/float/str/bytes in tuples and lists. */
typedef struct {
    uint8_t *p;
    size_t len, cap;
    int oom;
} score_buf;
/* Binds the packed tuple/list `params` (after a reset) and steps up to
 * max_rows rows, stopping early once the output passes max_bytes; appends
 * the packed tuple (rows, done, changes, last_insert_rowid) to `out`. A value
 * that cannot be bound fails with SQLITE_MISUSE, "pylon-packed: ...", before
 * anything is bound. */
int score_run_packed(score_stmt *s, const uint8_t *params, size_t len, uint32_t max_rows, size_t max_bytes,
                     score_buf *out, score_error *err);
/* Keeps `err` (taken over) for the statement's next step: a batch that
 * fails after some rows returns those rows first, as stepping one row at a
 * time would. A reset drops it. */
void score_defer_error(score_stmt *s, score_error *err);
/* Replaces `out` with the packed error tuple (None, code, message, 0) and
 * frees the message. */
void score_packed_error(score_buf *out, score_error *e);
/* Steps on (no reset), as score_run_packed after its bind. */
int score_step_packed(score_stmt *s, uint32_t max_rows, size_t max_bytes, score_buf *out, score_error *err);
/* Runs the statement once per row of the packed list of rows `data`; every
 * row is checked before the first runs. `*total`: rows changed. */
int score_execute_many_packed(score_stmt *s, const uint8_t *data, size_t len, int64_t *total, score_error *err);
/* Bytes carried as a string, one code point per byte: decodes the UTF-8 of
 * such a string in place (returns the byte length, -1 if a code point is
 * past U+00FF), or encodes bytes into a fresh malloc'ed buffer (0 or -1). */
long score_latin1_from_utf8(uint8_t *p, size_t n);
int score_latin1_to_utf8(const uint8_t *p, size_t n, uint8_t **out, size_t *out_len);
int score_valid_utf8(const uint8_t *p, size_t n);

/* Sets err to (code, message), copying message. Returns -1. */
int score_fail(score_error *err, int code, const char *message);

#endif

/* memvfs.c: SQLite's operating-system layer for the dynlink face, which
 * runs with no WASI at all (no files, clock or random source): SQLite is
 * built with SQLITE_OS_OTHER=1 and this file supplies sqlite3_os_init(),
 * registering one default VFS that
 *
 *   - refuses every file (xOpen -> SQLITE_CANTOPEN), so only ":memory:"
 *     databases work (temp tables and sorts stay in memory: TEMP_STORE=3);
 *     opening a path fails with SQLite's own SQLITE_CANTOPEN (14), "unable
 *     to open database file";
 *   - draws randomness (random(), randomblob()) from pylon_random_bytes,
 *     keyed by the host's $pylon/init key, so it differs per instance;
 *   - has no clock: xCurrentTime fails, so date('now'), time('now') and
 *     CURRENT_TIMESTAMP give NULL rather than a made-up time.
 *
 * The embedded face does not compile this file (it has WASI files). */
#include <string.h>

#include "pylon_handles.h"
#include "sqlite3.h"

static int mem_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out) {
    (void)vfs, (void)name, (void)flags, (void)out;
    file->pMethods = NULL; /* nothing to close */
    return SQLITE_CANTOPEN;
}

static int mem_delete(sqlite3_vfs *vfs, const char *name, int sync) {
    (void)vfs, (void)name, (void)sync;
    return SQLITE_IOERR_DELETE;
}

static int mem_access(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
    (void)vfs, (void)name, (void)flags;
    *out = 0; /* no file exists */
    return SQLITE_OK;
}

static int mem_fullpath(sqlite3_vfs *vfs, const char *name, int n, char *out) {
    (void)vfs;
    sqlite3_snprintf(n, out, "%s", name);
    return SQLITE_OK;
}

static int mem_random(sqlite3_vfs *vfs, int n, char *out) {
    (void)vfs;
    pylon_random_bytes((uint8_t *)out, (size_t)n);
    return n;
}

static int mem_sleep(sqlite3_vfs *vfs, int us) {
    (void)vfs;
    return us; /* nothing to wait for: no other process shares a database */
}

static int mem_time(sqlite3_vfs *vfs, double *out) {
    (void)vfs, (void)out;
    return SQLITE_ERROR;
}

static int mem_time64(sqlite3_vfs *vfs, sqlite3_int64 *out) {
    (void)vfs, (void)out;
    return SQLITE_ERROR;
}

static int mem_last_error(sqlite3_vfs *vfs, int n, char *out) {
    (void)vfs;
    if (n > 0)
        out[0] = 0;
    return 0;
}

static sqlite3_vfs memvfs = {
    .iVersion = 2,
    .szOsFile = sizeof(sqlite3_file),
    .mxPathname = 512,
    .zName = "pylon-memory",
    .xOpen = mem_open,
    .xDelete = mem_delete,
    .xAccess = mem_access,
    .xFullPathname = mem_fullpath,
    .xRandomness = mem_random,
    .xSleep = mem_sleep,
    .xCurrentTime = mem_time,
    .xGetLastError = mem_last_error,
    .xCurrentTimeInt64 = mem_time64,
};

int sqlite3_os_init(void) { return sqlite3_vfs_register(&memvfs, 1); }

int sqlite3_os_end(void) { return SQLITE_OK; }

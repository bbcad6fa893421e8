"""SQLite and zstd caps embedded in the stock pylon.wasm: a tiny notes store.

The database file lands next to this script, and is a normal SQLite file:
`sqlite3 notes.db` on the host reads it. The script's folder is read-only to
the guest unless the run makes it writable:

    composectl run --dir EXAMPLES_DIR:rw examples/notes_db.py "a note"
"""
import sys

import pylon_guest.sqlite as sqlite3
import pylon_guest.zstd as zstd

with sqlite3.connect("notes.db") as db:
    db.execute("create table if not exists notes (id integer primary key, body blob)")
    for text in sys.argv[1:]:
        db.execute("insert into notes (body) values (?)", (zstd.compress(text.encode() * 50),))
for note_id, body in db.execute("select id, body from notes order by id"):
    text = zstd.decompress(body)
    print(f"#{note_id}: {len(body)} bytes compressed, {len(text)} plain, starts {text[:20]!r}")

"""What a kept embedded store would weigh in a leaner layout (issue 19, item 3).

Copies the six largest tables of a store that `KEEP=... bench/footprint.sh`
kept into fresh SQLite files, first as they are, then with one more layout
change at each step, and measures each copy with SQLite's `dbstat`. A
throwaway model of a migration, not one: it answers which changes would
bring the store under 1.5 KB per kept event before any is built.

    pip install zstandard==0.23.0
    python3 bench/footprint_layout.py STORE.db [src/store/compress]

Each step keeps the previous ones:
  entry    history entries without `eventId` (the row's `event_id` has it)
  partial  `events_status` only for events not accepted (what its readers ask for)
  enums    an event's status and outcome as small integers, not words
  times    times as Unix milliseconds, not 24 characters of text
  ids      event, envelope and person ids as 16 bytes, history naming its event by `seq`
  derived  outbox rows without their envelope, composed when sent from the
           history entry and the record (see bench/README.md for what that asks)
"""
import datetime
import json
import os
import sqlite3
import sys

import zstandard

STORE = sys.argv[1]
DICTS = sys.argv[2] if len(sys.argv) > 2 else "src/store/compress"
source = sqlite3.connect(STORE)
dictionaries = {
    codec: zstandard.ZstdCompressionDict(open(os.path.join(DICTS, name), "rb").read())
    for codec, name in [(1, "bodies-1.dict"), (2, "documents-2.dict"), (3, "persons-3.dict")]
}
DOCUMENTS = 2
STEPS = [
    ("entry", "history entries without eventId"),
    ("partial", "events_status for events not accepted"),
    ("enums", "status and outcome as integers"),
    ("times", "times as Unix ms integers"),
    ("ids", "ids as 16 bytes, history by event seq"),
    ("derived", "envelopes composed when sent"),
]
CODES = {"accepted": 0, "quarantined": 1, "ignored": 2, "applied": 0, "stale": 1, "unchanged": 2, None: None}


def unpack(value, codec):
    if codec == 0:
        return value if isinstance(value, bytes) else value.encode()
    return zstandard.ZstdDecompressor(dict_data=dictionaries[codec]).decompress(value, max_output_size=1 << 22)


def pack(document):
    return zstandard.ZstdCompressor(level=3, dict_data=dictionaries[DOCUMENTS]).compress(document)


def millis(text):
    return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def id_bytes(text):
    """`evt_`/`per_` and 32 hex digits as their 16 bytes."""
    return bytes.fromhex(text.split("_", 1)[1])


def build(db, steps):
    on = steps.__contains__
    text_or = lambda step, kind: kind if on(step) else "TEXT"  # noqa: E731
    db.execute(f"""CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id {text_or('ids', 'BLOB')} NOT NULL UNIQUE,
        source TEXT NOT NULL, dedupe_key TEXT NOT NULL, received_at {text_or('times', 'INTEGER')} NOT NULL,
        headers TEXT NOT NULL, body BLOB, status {text_or('enums', 'INTEGER')} NOT NULL, reason TEXT,
        outcome {text_or('enums', 'INTEGER')}, customer_id TEXT, duplicates INTEGER NOT NULL, redacted INTEGER NOT NULL,
        codec INTEGER NOT NULL, UNIQUE (source, dedupe_key))""")
    accepted = "0" if on("enums") else "'accepted'"
    db.execute("CREATE INDEX events_status ON events (status, seq)" + (f" WHERE status <> {accepted}" if on("partial") else ""))
    event_seq = {}
    for row in source.execute("""SELECT seq, id, source, dedupe_key, received_at, headers, body, status, reason, outcome,
                                 customer_id, duplicates, redacted, codec FROM events"""):
        row = list(row)
        event_seq[row[1]] = row[0]
        if on("ids"):
            row[1] = id_bytes(row[1])
        if on("times"):
            row[4] = millis(row[4])
        if on("enums"):
            row[7], row[9] = CODES[row[7]], CODES[row[9]]
        db.execute(f"INSERT INTO events VALUES ({','.join('?' * len(row))})", row)

    db.execute(f"""CREATE TABLE customers (id TEXT PRIMARY KEY, source TEXT NOT NULL, external_id TEXT NOT NULL, account TEXT,
        email TEXT, status TEXT NOT NULL, profile TEXT NOT NULL, order_key TEXT, merged_into TEXT, merged_from TEXT NOT NULL,
        version INTEGER NOT NULL, changed_at {text_or('times', 'INTEGER')} NOT NULL, change_seq INTEGER NOT NULL UNIQUE,
        last_history INTEGER, last_outbox INTEGER, profile_codec INTEGER NOT NULL)""")
    db.execute("CREATE INDEX customers_source_account ON customers (source, account)")
    db.execute("CREATE INDEX customers_email ON customers (email)")
    for row in source.execute("""SELECT id, source, external_id, account, email, status, profile, order_key, merged_into,
                                 merged_from, version, changed_at, change_seq, last_history, last_outbox, profile_codec
                                 FROM customers"""):
        row = list(row)
        if on("times"):
            row[11] = millis(row[11])
        db.execute(f"INSERT INTO customers VALUES ({','.join('?' * len(row))})", row)

    db.execute(f"""CREATE TABLE history (seq INTEGER PRIMARY KEY AUTOINCREMENT, customer_id TEXT NOT NULL,
        event_id {text_or('ids', 'INTEGER')} NOT NULL, entry TEXT NOT NULL, prev INTEGER, codec INTEGER NOT NULL)""")
    for seq, customer, event, entry, prev, codec in source.execute(
            "SELECT seq, customer_id, event_id, entry, prev, codec FROM history"):
        document = json.loads(unpack(entry, codec))
        if on("entry"):
            document.pop("eventId", None)
        packed = pack(json.dumps(document, separators=(",", ":")).encode())
        db.execute("INSERT INTO history VALUES (?, ?, ?, ?, ?, ?)",
                   (seq, customer, event_seq[event] if on("ids") else event, packed, prev, DOCUMENTS))

    db.execute(f"""CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id {text_or('ids', 'BLOB')} NOT NULL,
        customer_id TEXT NOT NULL, source TEXT NOT NULL, action TEXT NOT NULL, version INTEGER NOT NULL,
        created_at {text_or('times', 'INTEGER')} NOT NULL, body TEXT, prev INTEGER, codec INTEGER NOT NULL)""")
    for row in source.execute("SELECT seq, id, customer_id, source, action, version, created_at, body, prev, codec FROM outbox"):
        row = list(row)
        if on("ids"):
            row[1] = id_bytes(row[1])
        if on("times"):
            row[6] = millis(row[6])
        row[7] = None if on("derived") else pack(unpack(row[7], row[9]))
        db.execute(f"INSERT INTO outbox VALUES ({','.join('?' * len(row))})", row)

    db.execute(f"""CREATE TABLE persons (id {text_or('ids', 'BLOB')} PRIMARY KEY, doc TEXT NOT NULL,
        created_at {text_or('times', 'INTEGER')} NOT NULL, changed_at {text_or('times', 'INTEGER')} NOT NULL,
        seq INTEGER NOT NULL UNIQUE, codec INTEGER NOT NULL)""")
    for row in source.execute("SELECT id, doc, created_at, changed_at, seq, codec FROM persons"):
        row = list(row)
        if on("ids"):
            row[0] = id_bytes(row[0])
        if on("times"):
            row[2], row[3] = millis(row[2]), millis(row[3])
        db.execute("INSERT INTO persons VALUES (?, ?, ?, ?, ?, ?)", row)
    db.execute(f"""CREATE TABLE person_members (customer_id TEXT PRIMARY KEY, person_id {text_or('ids', 'BLOB')},
        version INTEGER NOT NULL) WITHOUT ROWID""")
    for customer, person, version in source.execute("SELECT customer_id, person_id, version FROM person_members"):
        db.execute("INSERT INTO person_members VALUES (?, ?, ?)",
                   (customer, id_bytes(person) if on("ids") and person else person, version))


def measure(steps):
    path = f"{STORE}.layout"
    if os.path.exists(path):
        os.remove(path)
    db = sqlite3.connect(path)
    build(db, steps)
    db.commit()
    total = db.execute("SELECT SUM(pgsize) FROM dbstat").fetchone()[0]
    db.close()
    os.remove(path)
    return total


events = source.execute("SELECT COUNT(*) FROM events").fetchone()[0]
whole = source.execute("SELECT SUM(pgsize) FROM dbstat").fetchone()[0]
copied = measure([])
rest = whole - copied
print(f"{events} kept events; the store as kept {whole / events:.0f} bytes per event, of which the tables not modelled "
      f"{rest / events:.0f}, counted in every line")
print(f"{'layout':44} {'bytes per kept event':>20}")
print(f"{'today, the six tables copied as they are':44} {(copied + rest) / events:20.0f}")
steps = []
for step, what in STEPS:
    steps.append(step)
    print(f"{'+ ' + what:44} {(measure(steps) + rest) / events:20.0f}")

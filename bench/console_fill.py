#!/usr/bin/env python3
"""Multiplies the customers of an embedded store FACTOR times, for
bench/console.sh: each customer imported once (with its history, lookups
and raw event, the honest path) gets FACTOR - 1 copies written straight
into its tables, `~k` added to their ids and `k.` before their emails,
sharing the original's phones (a phone search then pages through FACTOR
customers) and pointing at the original's history. Their names are left
for the server's start to find, as it does for a store kept before name
search (every customer's profile read once). What the console
reads (the record, its lookups, a page of a list) is then as large as a
store of that many customers, in seconds rather than the hours an import
of them takes on a shared machine.

    bench/console_fill.py STORE.db FACTOR
"""
import sqlite3
import sys

db, factor = sys.argv[1], int(sys.argv[2])
con = sqlite3.connect(db)
columns = [row[1] for row in con.execute("PRAGMA table_info(customers)")]
top = con.execute("SELECT COALESCE(MAX(change_seq), 0) FROM customers").fetchone()[0]


def copy(k, column):
    return {
        "id": f"id || '~{k}'",
        "external_id": f"external_id || '~{k}'",
        "change_seq": f"change_seq + {k * (top + 1)}",
        "email": f"'{k}.' || email",
    }.get(column, column)


def copy_lookup(table, k):
    cols = [row[1] for row in con.execute(f"PRAGMA table_info({table})")]
    exprs = [f"customer_id || '~{k}'" if c == "customer_id" else c for c in cols]
    con.execute(
        f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM {table} "
        f"WHERE customer_id NOT LIKE '%~%'"
    )


for k in range(1, factor):
    exprs = ", ".join(copy(k, c) for c in columns)
    con.execute(
        f"INSERT INTO customers ({', '.join(columns)}) SELECT {exprs} FROM customers WHERE id NOT LIKE '%~%'"
    )
    copy_lookup("customer_phones", k)
    copy_lookup("customer_businesses", k)
    con.commit()
# The copies' names are found as a store kept before name search finds
# them: at the next start, which reads every profile (its log says how long).
con.execute("DELETE FROM customer_names")
con.execute("INSERT INTO backfills (name, after) VALUES ('customer_names', '')")
con.commit()
print(con.execute("SELECT COUNT(*) FROM customers").fetchone()[0], "customers")

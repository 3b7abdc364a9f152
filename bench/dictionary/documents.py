#!/usr/bin/env python3
"""Delivers the sample bodies in DIR (samples.py) to a Clientele at URL
(the example configuration's sources and tokens), then writes what the
store made of them, one file each, into OUT: history entries, outbox
envelopes and customer profiles, for `zstd --train` (train.sh)."""
import json, os, sqlite3, sys, urllib.request

samples, url, db, out = sys.argv[1:5]
routes = {"vagaro": ("X-Vagaro-Signature", "vagaro-secret"), "treez": ("Authorization", "Bearer treez-secret"),
          "clientele": ("Authorization", "Bearer clientele-secret")}
for name in sorted(os.listdir(samples)):
    body = open(os.path.join(samples, name), "rb").read()
    doc = json.loads(body)
    source = "vagaro" if "payload" in doc else "treez" if "data" in doc else "clientele"
    header, token = routes[source]
    request = urllib.request.Request(f"{url}/webhooks/{source}", data=body, method="POST",
                                     headers={"Content-Type": "application/json", header: token})
    try:
        urllib.request.urlopen(request).read()
    except urllib.error.HTTPError:
        pass  # quarantined or refused: nothing of it to train on
os.makedirs(out, exist_ok=True)
conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
queries = {"history": "SELECT entry FROM history", "outbox": "SELECT body FROM outbox",
           "profile": "SELECT profile FROM customers"}
for kind, sql in queries.items():
    for i, (text,) in enumerate(conn.execute(sql)):
        if isinstance(text, str):
            with open(os.path.join(out, f"{kind}-{i:05d}.json"), "w") as f:
                f.write(text)

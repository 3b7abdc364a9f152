#!/usr/bin/env python3
"""Delivers the sample bodies in DIR (samples.py) to a Clientele at URL
(the example configuration's sources and tokens), then writes what the
store made of them, one file each, into OUT: history entries, outbox
envelopes and customer profiles, for `zstd --train` (train.sh). The store
keeps them as zstd frames (store::compress): each is unpacked with the
dictionary its row names."""
import json, os, sqlite3, subprocess, sys, urllib.request

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
queries = {"history": "SELECT entry, codec FROM history", "outbox": "SELECT body, codec FROM outbox",
           "profile": "SELECT profile, profile_codec FROM customers"}
dictionaries = os.path.join(os.path.dirname(__file__), "../../src/store/compress")

def unpacked(kept, codec):
    if codec == 0:
        return kept.encode() if isinstance(kept, str) else kept
    [name] = [n for n in os.listdir(dictionaries) if n.endswith(f"-{codec}.dict")]
    return subprocess.run(["zstd", "-q", "-d", "-c", "-D", os.path.join(dictionaries, name)], input=kept,
                          capture_output=True, check=True).stdout

for kind, sql in queries.items():
    for i, (kept, codec) in enumerate(conn.execute(sql)):
        with open(os.path.join(out, f"{kind}-{i:05d}.json"), "wb") as f:
            f.write(unpacked(kept, codec))

#!/usr/bin/env python3
"""Waits until the Clientele at URL (admin token TOKEN) has resolved every
change into persons, then writes each person's document as the store
keeps it (`{"customerIds": [...], "links": [...]}`, compact JSON), one
file each, into OUT, for `zstd --train` (train.sh persons)."""
import json, os, sys, time, urllib.parse, urllib.request

url, token, out = sys.argv[1:4]

def get(path):
    request = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Bearer {token}"})
    return urllib.request.urlopen(request).read().decode()

for _ in range(600):
    unresolved = [l for l in get("/metrics").splitlines() if l.startswith("clientele_persons_unresolved ")]
    if unresolved and float(unresolved[0].split()[1]) == 0:
        break
    time.sleep(0.1)
os.makedirs(out, exist_ok=True)
cursor, n = None, 0
while True:
    query = {"limit": "100"} | ({"cursor": cursor} if cursor else {})
    page = json.loads(get("/api/v1/persons?" + urllib.parse.urlencode(query)))
    for person in page["data"]:
        doc = {"customerIds": person["customerIds"], "links": person["links"]}
        with open(os.path.join(out, f"person-{n:05d}.json"), "w") as f:
            f.write(json.dumps(doc, separators=(",", ":")))
        n += 1
    cursor = page.get("nextCursor")
    if not cursor:
        break

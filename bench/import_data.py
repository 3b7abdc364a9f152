#!/usr/bin/env python3
"""Writes N Vagaro customer bodies, one a line, for bench/import.sh: a
backfill's shape, each customer once, ids as random as Vagaro's (32 hex
digits), in no particular order. First names come from a pool of 50, so
that one is shared by 2% of the customers (a common name for a search to
page through); last names are unique.

    bench/import_data.py N > customers.jsonl
"""
import hashlib
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
template = (
    '{{"id":"evt-{i}","createdDate":"2024-03-15T00:00:00Z","type":"customer","action":"updated",'
    '"payload":{{"customerId":"{cid}","businessIds":["{b1}","{b2}"],"customerFirstName":"{first}",'
    '"customerLastName":"Last{i}","businessGroupId":"group-{g}","email":"person{i}@example.com",'
    '"mobilePhone":"914555{p:04d}","dayPhone":"","nightPhone":"N/A","streetAddress":"{i} Main Street",'
    '"city":"New York","regionCode":"NY","regionName":"New York","countryCode":"US",'
    '"countryName":"United States of America","postalCode":"10030","createdDate":"2023-07-10T08:50:00Z",'
    '"createdBy":"bench","modifiedDate":"2023-{m:02d}-{d:02d}T08:50:00Z","modifiedBy":"bench"}}}}\n'
)
FIRST = (
    "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy Betty Sandra Margaret "
    "Ashley Kimberly Emily Donna Michelle James Robert John Michael David William Richard Joseph Thomas "
    "Christopher Charles Daniel Matthew Anthony Mark Donald Steven Andrew Paul Joshua Kenneth Kevin Brian "
    "George Timothy Ronald Jason Edward Jeffrey Ryan"
).split()
out = sys.stdout
for i in range(n):
    cid = hashlib.md5(str(i).encode()).hexdigest().upper()
    out.write(template.format(i=i, first=FIRST[i % len(FIRST)], cid=cid, b1=i % 50, b2=i % 7, g=i % 10, p=i % 10000, m=1 + i % 12, d=1 + i % 28))

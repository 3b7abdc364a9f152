#!/usr/bin/env python3
"""Sends N deliveries, the same ones each run: bench/ingest.lua's Vagaro and
Treez bodies, alternating, with event numbers from START and customers picked
from them rather than at random, over C keep-alive connections.
With SOURCES_FILE (lines of "name token", as bench/sources.sh makes),
every delivery is a Treez body to one of those sources, with that
source's token: each customer's own, so that a run with few sources and
one with many keep the same customers.

    [SOURCES_FILE=F] bench/deliveries.py PORT N C START
"""
import http.client, os, sys, threading

port, n, conns, start = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
vagaro = '{"id":"%s","createdDate":"%s","type":"customer","action":"updated","payload":{"customerId":"C%07d","businessIds":["%d","%d"],"customerFirstName":"First%d","customerLastName":"Last%d","businessGroupId":"group-%d","email":"person%d@example.com","mobilePhone":"914555%04d","dayPhone":"","nightPhone":"N/A","streetAddress":"%d Main Street","city":"New York","regionCode":"NY","regionName":"New York","countryCode":"US","countryName":"United States of America","postalCode":"10030","createdDate":"2023-07-10T08:50:00Z","createdBy":"bench","modifiedDate":"%s","modifiedBy":"bench"}}'
treez = '{"event_type":"CUSTOMER","dispensary_short_name":"shop%d","data":{"status":"ACTIVE","verification_status":"VERIFIED","customer_id":"%d","first_name":"First%d","middle_name":null,"nickname":null,"last_name":"Last%d","birthday":"1980-02-12","drivers_license":null,"state_medical_id":"N/A","email":"person%d@example.com","phone":"213555%04d","notes":"N/A","is_caregiver":false,"caregiver_license_number":"","rewards_balance":%d,"rewards_type":"POINTS","gender":"U","signup_date":"2024-04-24T11:38:21.000-07:00","last_visit_date":"2000-01-01 00:00:00.000","last_update":"%s","opt_out":"false","banned":false,"addresses":[{"type":"address_of_record","street1":"%d SHEPHERD WAY","street2":"","city":"INGLEWOOD","state":"CA","zipcode":"90301","primary":true}],"merged_customer_ids":[],"merged_into_customer_id":null,"patient_type":"ADULT","customer_groups":["SENIOR"],"external_ids":{"aiq_contact_id":null}}}'

def ts(n):
    s = n % 86400
    return "%04d-%02d-%02dT%02d:%02d:%02d.000Z" % (2026 + n // 29030400, 1 + (n // 2419200) % 12, 1 + (n // 86400) % 28, s // 3600, (s // 60) % 60, s % 60)

sources = []
if os.environ.get("SOURCES_FILE"):
    with open(os.environ["SOURCES_FILE"]) as f:
        sources = [line.split() for line in f if line.strip()]

failures = []
def worker(k):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(k, n, conns):
        counter = start + i
        c = (counter * 7919) % 100000 + 1
        when = ts(counter)
        if sources:
            name, token = sources[c % len(sources)]
            body = treez % (c % 10, c, c, c, c, c % 10000, counter, when, c)
            path, headers = "/webhooks/" + name, {"Content-Type": "application/json", "Authorization": "Bearer " + token}
        elif counter % 2 == 0:
            body = vagaro % ("evt-%d" % counter, when, c, c % 50, c % 7, c, c, c % 10, c, c % 10000, c, when)
            path, headers = "/webhooks/vagaro", {"Content-Type": "application/json", "X-Vagaro-Signature": "vagaro-secret"}
        else:
            body = treez % (c % 10, c, c, c, c, c % 10000, counter, when, c)
            path, headers = "/webhooks/treez", {"Content-Type": "application/json", "Authorization": "Bearer treez-secret"}
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            failures.append(r.status)
threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
for t in threads: t.start()
for t in threads: t.join()
print("sent", n, "failures", len(failures), failures[:3])
sys.exit(1 if failures else 0)

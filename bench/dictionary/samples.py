#!/usr/bin/env python3
"""Bodies shaped like the platforms' customer webhooks (the fixtures in
shared/fixtures: Vagaro's `customer` event, Treez's CUSTOMER event, and a
Clientele envelope), with varied values and layouts, one file each, for
`zstd --train` (bench/dictionary/train.sh). No real person's data: names,
ids and addresses are drawn from small made-up lists."""
import json, os, random, sys, uuid

out = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
rng = random.Random(19)
FIRST = ["Johnny", "Jules", "Maria", "Wei", "Aisha", "Olga", "Pedro", "Sam", "Yuki", "Noor", "Liam", "Emma"]
LAST = ["Smith", "Winnfield", "Garcia", "Chen", "Khan", "Ivanova", "Silva", "Lee", "Tanaka", "Haddad", "Brown"]
STREETS = ["Main Street", "Edgecombe Avenue", "SHEPHERD WAY", "Oak Road", "Sunset Blvd", "Elm St", "Market St"]
CITIES = [("New York", "NY", "10030"), ("INGLEWOOD", "CA", "90301"), ("Austin", "TX", "73301"),
          ("Denver", "CO", "80202"), ("Seattle", "WA", "98101"), ("Miami", "FL", "33101")]

def when(tz="Z"):
    return "20%02d-%02d-%02dT%02d:%02d:%02d.%03d%s" % (rng.randint(23, 27), rng.randint(1, 12), rng.randint(1, 28),
        rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999), tz)

def phone():
    return rng.choice(["", "N/A", None, "%03d555%04d" % (rng.randint(201, 989), rng.randint(0, 9999))])

def person():
    f, l = rng.choice(FIRST), rng.choice(LAST)
    return f, l, rng.choice([None, "", f"{f.lower()}.{l.lower()}{rng.randint(1, 999)}@example.com"])

def vagaro():
    f, l, email = person()
    city, region, postal = rng.choice(CITIES)
    return {"id": str(uuid.UUID(int=rng.getrandbits(128))).upper(), "createdDate": when(),
            "type": "customer", "action": rng.choice(["created", "updated", "updated", "deleted"]),
            "payload": {"customerId": "%032X" % rng.getrandbits(128),
                        "businessIds": [str(rng.randint(1, 99)) for _ in range(rng.randint(1, 3))],
                        "customerFirstName": f, "customerLastName": l,
                        "businessGroupId": "group-%d" % rng.randint(1, 20), "email": email,
                        "mobilePhone": phone(), "dayPhone": phone(), "nightPhone": phone(),
                        "streetAddress": "%d %s" % (rng.randint(1, 9999), rng.choice(STREETS)),
                        "city": city, "regionCode": region, "regionName": city, "countryCode": "US",
                        "countryName": "United States of America", "postalCode": postal,
                        "createdDate": when(), "createdBy": "%024x" % rng.getrandbits(96),
                        "modifiedDate": when(), "modifiedBy": "%024x" % rng.getrandbits(96)}}

def treez():
    f, l, email = person()
    city, region, postal = rng.choice(CITIES)
    merged = [str(rng.randint(1, 99999)) for _ in range(rng.choice([0, 0, 0, 1, 2]))]
    data = {"status": rng.choice(["ACTIVE", "ACTIVE", "INACTIVE"]),
            "verification_status": rng.choice(["VERIFIED", "VERIFICATION_PENDING", "NOT_VERIFIED"]),
            "customer_id": str(rng.randint(1, 999999)), "first_name": f, "middle_name": None, "nickname": None,
            "last_name": l, "birthday": "19%02d-%02d-%02d" % (rng.randint(30, 99), rng.randint(1, 12), rng.randint(1, 28)),
            "drivers_license": rng.choice([None, "D%07d" % rng.randint(0, 9999999)]),
            "drivers_license_expiration": None, "state_medical_id": rng.choice(["N/A", "M%06d" % rng.randint(0, 999999)]),
            "permit_expiration": "N/A", "email": email, "phone": phone(), "notes": "N/A",
            "physician_first_name": None, "physician_last_name": None, "physician_license": None,
            "physician_address": None, "physician_phone": None, "is_caregiver": False,
            "caregiver_license_number": "", "caregiver_name_1": "N/A", "caregiver_name_2": "N/A",
            "caregiver_details": [], "rewards_balance": rng.randint(0, 5000), "rewards_type": "POINTS",
            "gender": rng.choice("MFU"), "signup_date": when("-07:00"),
            "last_visit_date": "2000-01-01 00:00:00.000", "last_update": when("-07:00"),
            "opt_out": rng.choice(["true", "false"]), "referral_source": None, "banned": False,
            "warning_1": False, "warning_2": False,
            "addresses": [{"type": "address_of_record", "street1": "%d %s" % (rng.randint(1, 9999), rng.choice(STREETS)),
                           "street2": "", "city": city, "state": region, "zipcode": postal, "primary": True}],
            "merged_customer_ids": merged, "merged_into_customer_id": None,
            "patient_type": rng.choice(["ADULT", "MEDICAL"]), "imageList": [],
            "customer_groups": rng.sample(["SENIOR", "VIP", "VETERAN", "STAFF"], rng.randint(0, 2)),
            "external_ids": {"aiq_contact_id": None, "sticky_cards_contact_id": None}}
    for key in rng.sample(list(data), rng.randint(0, 6)):
        if key not in ("customer_id", "last_update"):
            del data[key]
    return {"event_type": "CUSTOMER", "dispensary_short_name": "shop%d" % rng.randint(1, 40), "data": data}

def envelope():
    f, l, email = person()
    return {"id": "evt_%032x" % rng.getrandbits(128), "type": "customer", "action": rng.choice(["created", "updated"]),
            "occurredAt": when(), "customer": {"externalId": str(rng.randint(1, 99999)), "firstName": f,
            "lastName": l, "email": email, "phones": [p for p in [phone()] if p], "status": "active"}}

os.makedirs(out, exist_ok=True)
for i in range(count):
    body = rng.choice([vagaro, vagaro, treez, treez, envelope])()
    text = json.dumps(body, indent=rng.choice([None, None, 2]), separators=None if rng.random() < 0.5 else (",", ":"))
    with open(os.path.join(out, "%05d.json" % i), "w") as f:
        f.write(text)

#!/usr/bin/env python3
"""Writes tests/phones/cases.jsonl: phone strings with the E.164 form that
Google's libphonenumber gives them (or null), for the differential test in
tests/phones.rs.

The reference is the Python port `phonenumbers`, pinned below. Run it in a
venv so that the pin holds:

    python3 -m venv target/phones-venv
    target/phones-venv/bin/pip install phonenumbers==9.0.43
    target/phones-venv/bin/python tests/phones/generate.py

For every region libphonenumber knows it takes the example number of each
number type, numbers generated from each type's national number pattern
(kept only when libphonenumber calls them valid), and invalid ones made by
dropping, adding or changing a digit of those. Each number is written in
E.164, international, national, national-digits and significant-number
forms, and parsed with its region as the default country, as Clientele
reads a phone with the record's or the source's country. Non-geographic
numbers (+800, +882, ...) come in their international forms with "US".
The output is deterministic: same pin, same file.
"""

import json
import random
import re
import sys
from pathlib import Path

try:
    import re._parser as sre_parse  # Python >= 3.11
    import re._constants as sre_const
except ImportError:  # pragma: no cover
    import sre_parse
    import sre_constants as sre_const

import phonenumbers as pn
from phonenumbers import PhoneNumberFormat as F
from phonenumbers import PhoneNumberType as T

PINNED = "9.0.43"
GENERATED_PER_REGION = 8
INVALID_PER_REGION = 5
OUT = Path(__file__).with_name("cases.jsonl")

TYPES = {
    "fixed_line": T.FIXED_LINE,
    "mobile": T.MOBILE,
    "toll_free": T.TOLL_FREE,
    "premium_rate": T.PREMIUM_RATE,
    "shared_cost": T.SHARED_COST,
    "voip": T.VOIP,
    "personal_number": T.PERSONAL_NUMBER,
    "pager": T.PAGER,
    "uan": T.UAN,
    "voicemail": T.VOICEMAIL,
}


def sample(pattern, rng):
    """A random string matching `pattern` (digits, classes, groups,
    alternations and bounded repeats: what libphonenumber's patterns use)."""

    def walk(items):
        out = []
        for op, av in items:
            if op is sre_const.LITERAL:
                out.append(chr(av))
            elif op is sre_const.IN:
                chars = []
                for iop, iav in av:
                    if iop is sre_const.LITERAL:
                        chars.append(chr(iav))
                    elif iop is sre_const.RANGE:
                        chars.extend(chr(c) for c in range(iav[0], iav[1] + 1))
                    elif iop is sre_const.CATEGORY:
                        chars.extend("0123456789")
                    else:
                        raise ValueError(f"class item {iop}")
                out.append(rng.choice(chars))
            elif op is sre_const.SUBPATTERN:
                out.append(walk(av[-1]))
            elif op is sre_const.BRANCH:
                out.append(walk(rng.choice(av[1])))
            elif op in (sre_const.MAX_REPEAT, sre_const.MIN_REPEAT):
                lo, hi, sub = av
                hi = min(hi, lo + 6)
                out.append("".join(walk(sub) for _ in range(rng.randint(lo, hi))))
            elif op is sre_const.CATEGORY:
                out.append(rng.choice("0123456789"))
            else:
                raise ValueError(f"op {op}")
        return "".join(out)

    return walk(sre_parse.parse(pattern))


def forms(number):
    """The ways a platform may hold the number, by name."""
    national = pn.format_number(number, F.NATIONAL)
    out = {
        "e164": pn.format_number(number, F.E164),
        "international": pn.format_number(number, F.INTERNATIONAL),
        "national": national,
        "digits": re.sub(r"\D", "", national),
        "significant": pn.national_significant_number(number),
    }
    return out


def expected(text, region):
    try:
        number = pn.parse(text, region)
    except pn.NumberParseException:
        return None
    if not pn.is_valid_number(number):
        return None
    return pn.format_number(number, F.E164)


def numbers_for(region, rng):
    """(type, PhoneNumber) pairs: examples, generated valid, invalid."""
    md = pn.PhoneMetadata.metadata_for_region(region)
    cc = md.country_code
    out = []
    seen = set()

    def add(kind, number):
        key = (number.country_code, number.national_number, number.italian_leading_zero, number.number_of_leading_zeros)
        if key not in seen:
            seen.add(key)
            out.append((kind, number))

    valid = []
    for kind, t in TYPES.items():
        example = pn.example_number_for_type(region, t)
        if example is not None and pn.region_code_for_number(example) == region:
            add(kind, example)
            valid.append((kind, example))

    # Generated numbers, spread over the types the region has.
    kinds = [
        k for k in TYPES
        if getattr(md, k) is not None and getattr(md, k).national_number_pattern
    ]
    made = 0
    tries = 0
    while made < GENERATED_PER_REGION and tries < 2000 and kinds:
        tries += 1
        kind = kinds[made % len(kinds)] if tries < 1000 else rng.choice(kinds)
        desc = getattr(md, kind)
        digits = sample(desc.national_number_pattern, rng)
        try:
            number = pn.parse("+" + str(cc) + digits, None)
        except pn.NumberParseException:
            continue
        if not pn.is_valid_number(number) or pn.region_code_for_number(number) != region:
            continue
        if pn.number_type(number) != TYPES[kind]:
            continue
        before = len(out)
        add(kind, number)
        if len(out) > before:
            valid.append((kind, number))
            made += 1

    # Invalid numbers: a valid one with a digit dropped, added or changed,
    # kept only when libphonenumber calls the result invalid.
    made = 0
    tries = 0
    while made < INVALID_PER_REGION and tries < 500 and valid:
        tries += 1
        _, base = rng.choice(valid)
        nsn = pn.national_significant_number(base)
        i = rng.randrange(len(nsn))
        how = rng.choice(["drop", "add", "change"])
        if how == "drop":
            digits = nsn[:i] + nsn[i + 1:]
        elif how == "add":
            digits = nsn[:i] + rng.choice("0123456789") + nsn[i:]
        else:
            digits = nsn[:i] + rng.choice("0123456789".replace(nsn[i], "")) + nsn[i:][1:]
        if not digits or digits[0] == "0" and not base.italian_leading_zero:
            continue
        try:
            number = pn.parse("+" + str(cc) + digits, None)
        except pn.NumberParseException:
            continue
        if pn.is_valid_number(number):
            continue
        before = len(out)
        add("invalid", number)
        made += len(out) - before
    return out


def main():
    if pn.__version__ != PINNED:
        sys.exit(f"phonenumbers {pn.__version__} is installed; this fixture pins {PINNED}")
    rows = []
    for region in sorted(pn.SUPPORTED_REGIONS):
        rng = random.Random(f"clientele-phones-{region}")
        for kind, number in numbers_for(region, rng):
            written = set()
            for form, text in forms(number).items():
                if text in written:
                    continue
                written.add(text)
                rows.append({"r": region, "t": kind, "f": form, "in": text, "e164": expected(text, region)})
    for code in sorted(pn.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        for kind, t in TYPES.items():
            example = pn.example_number_for_non_geo_entity(code)
            if example is None or pn.number_type(example) != t:
                continue
            for form in ("e164", "international"):
                text = forms(example)[form]
                rows.append({"r": "US", "t": kind, "f": form, "in": text, "e164": expected(text, "US")})
    with OUT.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    valid = sum(1 for r in rows if r["e164"] is not None)
    print(f"{len(rows)} cases ({valid} valid) in {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()

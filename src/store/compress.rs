//! What the store keeps compressed: raw bodies, and its own JSON documents
//! (history entries, outbox envelopes, records' profiles, persons), as zstd frames,
//! each with a dictionary compiled into the binary. One such document is a
//! few hundred bytes to a few KB of JSON whose keys repeat from one row to
//! the next; alone, zstd finds little to share inside one, while a
//! dictionary holds what they all share. The dictionaries are trained by
//! `bench/dictionary/train.sh`: the bodies' on bodies shaped like the
//! platforms' customer webhooks, the documents' and the persons' on what
//! Clientele makes of those.
//!
//! Each row keeps its codec (a `codec` column): `0`, kept as it came
//! (rows kept before compression, and those it would not shrink), or the
//! id of the dictionary it was compressed with. A new dictionary takes a
//! new id and is added to [`DICTIONARIES`]: rows compressed with an older
//! one still read with it. Both backends pack on insert and unpack where
//! rows are decoded ([`super::rows`]).

use std::cell::RefCell;
use std::sync::LazyLock;

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use super::StoreError;

/// Kept as it came.
pub(super) const RAW: i64 = 0;

/// Every dictionary a kept row may name, by id.
const DICTIONARIES: &[(i64, &[u8])] = &[
    (1, include_bytes!("compress/bodies-1.dict")),
    (2, include_bytes!("compress/documents-2.dict")),
    (3, include_bytes!("compress/persons-3.dict")),
];

/// zstd's default level: on 1 KB it costs a few microseconds, and higher
/// levels gained under 3% with the dictionaries.
const LEVEL: i32 = 3;

/// What is compressed, each with its current dictionary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Raw request bodies.
    Body,
    /// Clientele's own JSON: history entries, envelopes, profiles.
    Document,
    /// Persons' documents: customer ids and links, which the documents'
    /// dictionary holds little of.
    Person,
}

impl Kind {
    /// The id of the dictionary new rows of this kind are compressed with.
    fn current(self) -> i64 {
        match self {
            Kind::Body => 1,
            Kind::Document => 2,
            Kind::Person => 3,
        }
    }
}

static ENCODERS: LazyLock<Vec<(i64, EncoderDictionary<'static>)>> = LazyLock::new(|| {
    [Kind::Body, Kind::Document, Kind::Person]
        .map(|kind| {
            (
                kind.current(),
                EncoderDictionary::copy(dictionary(kind.current()), LEVEL),
            )
        })
        .into()
});

static DECODERS: LazyLock<Vec<(i64, DecoderDictionary<'static>)>> = LazyLock::new(|| {
    DICTIONARIES
        .iter()
        .map(|(id, bytes)| (*id, DecoderDictionary::copy(bytes)))
        .collect()
});

thread_local! {
    /// One context per thread, reused: making one allocates far more than
    /// a row. The dictionary is set for each use.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

fn dictionary(id: i64) -> &'static [u8] {
    DICTIONARIES
        .iter()
        .find(|(known, _)| *known == id)
        .map(|(_, bytes)| *bytes)
        .expect("every current dictionary is listed")
}

/// A row's bytes as kept, and their codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Packed {
    pub codec: i64,
    pub bytes: Vec<u8>,
}

/// Compresses `bytes` with the current dictionary of `kind`, or keeps them
/// as they are when that would not make them smaller (or compression
/// fails, which only running out of memory makes it do).
pub(super) fn pack(kind: Kind, bytes: &[u8]) -> Packed {
    let codec = kind.current();
    let encoder = &ENCODERS
        .iter()
        .find(|(id, _)| *id == codec)
        .expect("every kind's dictionary is prepared")
        .1;
    let compressed = COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            let mut compressor = Compressor::new(LEVEL).ok()?;
            // The frame keeps the size (to allocate it once when reading)
            // but neither a checksum nor the dictionary's id: the database
            // checks pages, and the row names the dictionary.
            compressor.include_checksum(false).ok()?;
            compressor.include_dictid(false).ok()?;
            compressor.include_contentsize(true).ok()?;
            *cell = Some(compressor);
        }
        let compressor = cell.as_mut()?;
        compressor.set_prepared_dictionary(encoder).ok()?;
        compressor.compress(bytes).ok()
    });
    match compressed {
        Some(compressed) if compressed.len() < bytes.len() => Packed {
            codec,
            bytes: compressed,
        },
        _ => Packed {
            codec: RAW,
            bytes: bytes.to_vec(),
        },
    }
}

/// Events read for a replay (seq, id, source, body, codec), their bodies
/// as kept.
pub(super) type PackedEvents = Vec<(i64, String, String, Option<Vec<u8>>, i64)>;

/// Events read for a replay (seq, id, source, body), their bodies as
/// received.
pub(super) type Events = Vec<(i64, String, String, Option<Vec<u8>>)>;

/// `events` with their bodies unpacked.
pub(super) fn unpacked(events: PackedEvents) -> Result<Events, StoreError> {
    events
        .into_iter()
        .map(|(seq, id, source, body, codec)| Ok((seq, id, source, body.map(|b| unpack(codec, b)).transpose()?)))
        .collect()
}

/// How long the bytes kept as `bytes` with `codec` are once unpacked, as
/// the frame says (0 if it cannot tell: the unpacking fails then).
pub(super) fn unpacked_len(codec: i64, bytes: &[u8]) -> usize {
    if codec == RAW {
        return bytes.len();
    }
    zstd::zstd_safe::get_frame_content_size(bytes)
        .ok()
        .flatten()
        .map_or(0, |size| size as usize)
}

/// The bytes kept as `bytes` with `codec`.
pub(super) fn unpack(codec: i64, bytes: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    if codec == RAW {
        return Ok(bytes);
    }
    let corrupt = |why: String| StoreError::Bug(format!("a kept row cannot be read: {why}"));
    let dictionary = DECODERS
        .iter()
        .find(|(id, _)| *id == codec)
        .map(|(_, d)| d)
        .ok_or_else(|| corrupt(format!("unknown codec {codec} (a newer Clientele kept it)")))?;
    let size = zstd::zstd_safe::get_frame_content_size(&bytes)
        .ok()
        .flatten()
        .ok_or_else(|| corrupt("no frame size".into()))?;
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(Decompressor::new().map_err(|e| corrupt(e.to_string()))?);
        }
        let decompressor = cell.as_mut().expect("set above");
        decompressor
            .set_prepared_dictionary(dictionary)
            .map_err(|e| corrupt(e.to_string()))?;
        decompressor
            .decompress(&bytes, size as usize)
            .map_err(|e| corrupt(e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREEZ: &[u8] = include_bytes!("../../tests/fixtures/treez-customer.json");

    #[test]
    fn a_body_comes_back_byte_for_byte_and_smaller() {
        let packed = pack(Kind::Body, TREEZ);
        assert_eq!(packed.codec, Kind::Body.current());
        assert!(
            packed.bytes.len() * 3 < TREEZ.len(),
            "{} of {}",
            packed.bytes.len(),
            TREEZ.len()
        );
        assert_eq!(unpacked_len(packed.codec, &packed.bytes), TREEZ.len());
        assert_eq!(unpack(packed.codec, packed.bytes).unwrap(), TREEZ);
    }

    #[test]
    fn a_body_compression_would_not_shrink_is_kept_as_received() {
        for body in [&b""[..], b"{}", &[0xff; 7]] {
            let packed = pack(Kind::Body, body);
            assert_eq!((packed.codec, &packed.bytes[..]), (RAW, body));
            assert_eq!(unpack(packed.codec, packed.bytes).unwrap(), body);
        }
    }

    #[test]
    fn each_kind_reads_back_with_its_own_dictionary() {
        let entry = br#"{"eventId":"evt_1","receivedAt":"2026-12-06T11:47:45.211Z","action":"created","outcome":"applied","changes":{"firstName":{"from":null,"to":"Jules"},"lastName":{"from":null,"to":"Winnfield"}}}"#;
        let packed = pack(Kind::Document, entry);
        assert_eq!(packed.codec, Kind::Document.current());
        assert!(packed.bytes.len() * 2 < entry.len(), "{}", packed.bytes.len());
        assert_eq!(unpack(packed.codec, packed.bytes).unwrap(), entry);
        // Bodies already kept keep reading after documents were packed.
        let body = pack(Kind::Body, TREEZ);
        assert_eq!(unpack(body.codec, body.bytes).unwrap(), TREEZ);
    }

    #[test]
    fn a_person_is_smaller_with_its_own_dictionary() {
        let person = br#"{"customerIds":["treez:shop3:118842","vagaro:C0118842"],"links":[{"customers":["treez:shop3:118842","vagaro:C0118842"],"score":17.4,"evidence":[{"field":"given_name","comparison":"exact","weight":4.0},{"field":"family_name","comparison":"exact","weight":4.5},{"field":"phone","comparison":"exact","weight":11.46},{"field":"birth_date","comparison":"different","weight":-2.56}],"decidedBy":"model"}]}"#;
        let packed = pack(Kind::Person, person);
        assert_eq!(packed.codec, Kind::Person.current());
        assert!(packed.bytes.len() < pack(Kind::Document, person).bytes.len());
        assert_eq!(unpack(packed.codec, packed.bytes).unwrap(), person);
    }

    #[test]
    fn a_body_of_an_unknown_codec_is_an_error_not_garbage() {
        let packed = pack(Kind::Body, TREEZ);
        assert!(unpack(99, packed.bytes.clone()).is_err());
        assert!(unpack(packed.codec, packed.bytes[..packed.bytes.len() / 2].to_vec()).is_err());
    }
}

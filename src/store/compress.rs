//! Raw bodies as the store keeps them: zstd frames compressed with a
//! dictionary trained on bodies shaped like the platforms' customer
//! webhooks (`bench/dictionary/train.sh`), compiled into the binary. A
//! webhook body is a few hundred bytes to a few KB of JSON whose keys
//! repeat from one delivery to the next; alone, zstd finds little to share
//! inside one body, while the dictionary holds what they all share.
//!
//! Each kept body carries its codec (`events.codec`): `0`, kept as
//! received (bodies kept before compression, and those compression would
//! not shrink), or the id of the dictionary it was compressed with. A new
//! dictionary takes a new id and is added to [`DICTIONARIES`]: bodies
//! compressed with an older one still read with it. Both backends pack on
//! insert and unpack in [`super::rows::RawEvent::into_event`].

use std::cell::RefCell;
use std::sync::LazyLock;

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use super::StoreError;

/// Kept as received.
pub(super) const RAW: i64 = 0;

/// The dictionary new bodies are compressed with.
const CURRENT: i64 = 1;

/// Every dictionary a kept body may name, by id.
const DICTIONARIES: &[(i64, &[u8])] = &[(1, include_bytes!("compress/bodies-1.dict"))];

/// zstd's default level: on bodies of 1 KB it costs a few microseconds, and
/// higher levels gained under 3% with the dictionary.
const LEVEL: i32 = 3;

static ENCODER: LazyLock<EncoderDictionary<'static>> =
    LazyLock::new(|| EncoderDictionary::copy(dictionary(CURRENT), LEVEL));

static DECODERS: LazyLock<Vec<(i64, DecoderDictionary<'static>)>> = LazyLock::new(|| {
    DICTIONARIES
        .iter()
        .map(|(id, bytes)| (*id, DecoderDictionary::copy(bytes)))
        .collect()
});

thread_local! {
    /// One context per thread, reused: making one allocates far more than
    /// a body.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

fn dictionary(id: i64) -> &'static [u8] {
    DICTIONARIES
        .iter()
        .find(|(known, _)| *known == id)
        .map(|(_, bytes)| *bytes)
        .expect("the current dictionary is listed")
}

/// A body as kept: its codec and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Packed {
    pub codec: i64,
    pub bytes: Vec<u8>,
}

/// Compresses `body` with the current dictionary, or keeps it as it is
/// when that would not make it smaller (or compression fails, which only
/// running out of memory makes it do).
pub(super) fn pack(body: &[u8]) -> Packed {
    let compressed = COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            let mut compressor = Compressor::with_prepared_dictionary(&ENCODER).ok()?;
            // The frame keeps the body's size (to allocate it once when
            // reading) but neither a checksum nor the dictionary's id: the
            // database checks pages, and the row names the dictionary.
            compressor.include_checksum(false).ok()?;
            compressor.include_dictid(false).ok()?;
            compressor.include_contentsize(true).ok()?;
            *cell = Some(compressor);
        }
        cell.as_mut()?.compress(body).ok()
    });
    match compressed {
        Some(bytes) if bytes.len() < body.len() => Packed { codec: CURRENT, bytes },
        _ => Packed {
            codec: RAW,
            bytes: body.to_vec(),
        },
    }
}

/// The body kept as `bytes` with `codec`.
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

pub(super) fn unpack(codec: i64, bytes: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    if codec == RAW {
        return Ok(bytes);
    }
    let corrupt = |why: String| StoreError::Bug(format!("a kept body cannot be read: {why}"));
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
        let packed = pack(TREEZ);
        assert_eq!(packed.codec, CURRENT);
        assert!(
            packed.bytes.len() * 3 < TREEZ.len(),
            "{} of {}",
            packed.bytes.len(),
            TREEZ.len()
        );
        assert_eq!(unpack(packed.codec, packed.bytes).unwrap(), TREEZ);
    }

    #[test]
    fn a_body_compression_would_not_shrink_is_kept_as_received() {
        for body in [&b""[..], b"{}", &[0xff; 7]] {
            let packed = pack(body);
            assert_eq!((packed.codec, &packed.bytes[..]), (RAW, body));
            assert_eq!(unpack(packed.codec, packed.bytes).unwrap(), body);
        }
    }

    #[test]
    fn a_body_of_an_unknown_codec_is_an_error_not_garbage() {
        let packed = pack(TREEZ);
        assert!(unpack(99, packed.bytes.clone()).is_err());
        assert!(unpack(CURRENT, packed.bytes[..packed.bytes.len() / 2].to_vec()).is_err());
    }
}

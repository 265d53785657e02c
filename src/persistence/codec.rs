//! Byte framing for journal batches, snapshots and history values: the only module that knows
//! bincode and zstd.
//!
//! Both frames are a fixed big-endian header, a CRC32 and a bincode payload. The CRC covers the
//! header fields and the payload, so a torn write, a flipped bit or a truncation is reported as an
//! error and never decodes into a wrong value.
//!
//! Batch frame (26-byte header, then the payload):
//!
//! | bytes | field                                              |
//! |-------|----------------------------------------------------|
//! | 4     | magic `b"VVJB"`                                    |
//! | 2     | format version: 1 to 4, below                       |
//! | 8     | sequence number of the first record                |
//! | 4     | record count                                       |
//! | 4     | payload length in bytes                            |
//! | 4     | CRC32 of the 22 bytes above followed by the payload |
//!
//! The records are the bincode (standard config) encoding of each record, one after the other;
//! the count lives in the header so records can be decoded one at a time into a reused buffer.
//! In versions 3 and 4 (this build's) each record is preceded by its length (u32, big-endian), so
//! a reader can find a record and keep its bytes without decoding it; in versions 1 and 2
//! (earlier builds) the records follow each other bare. In versions 1 and 3 the records are the
//! payload as they are; in 2 and 4 the payload is their length (u32, big-endian) and their zstd
//! compression. A batch is written compressed whenever that makes it
//! smaller, which is nearly always: ids and names repeat from record to record, and sled writes
//! every byte several times over (a leaf of its tree is rewritten whole every few inserts), so
//! the disk, the writer and replay all work on a fraction of the bytes.
//!
//! Snapshot frame: magic `b"VVSN"`, version u16 (1), seq u64, payload length u64, CRC32 (same
//! rule), then the bincode encoding of the state.
//!
//! History values: a version u16, then the bincode payload (version 1) or its length and zstd
//! compression (version 2), by the same rule as batches.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::RefCell;

/// The newest layout of batch frames, the one this build writes. Bump it (and keep a decoder for
/// the old ones) on any change to the framing; changes to the record types themselves are the
/// domain's to version.
pub const FORMAT_VERSION: u16 = FRAMED_COMPRESSED;
/// The newest layout of history values.
const VALUE_VERSION: u16 = COMPRESSED;

/// Version of a batch frame or history value whose payload is the bincode as it is.
const PLAIN: u16 = 1;
/// Version of a batch frame or history value whose payload is compressed.
const COMPRESSED: u16 = 2;
/// [`PLAIN`] and [`COMPRESSED`] for a batch whose records each carry their length.
const FRAMED_PLAIN: u16 = 3;
const FRAMED_COMPRESSED: u16 = 4;
/// Bytes of the length in front of each record of a framed batch.
const RECORD_LEN: usize = 4;
/// Version of the snapshot frame.
const SNAPSHOT_VERSION: u16 = 1;

/// zstd's fastest regular level: a page of a user's ledger shrinks about tenfold, a journal batch
/// about fivefold, at a small share of the writer's time.
const ZSTD_LEVEL: i32 = 1;
/// Payloads shorter than this are not worth compressing: zstd's own framing takes most of the gain.
const COMPRESS_FROM: usize = 128;
/// The most a compressed payload may claim to expand to, so that a damaged length never makes us
/// allocate without bound. Far above any batch (at most 16,384 records) or ledger page.
const EXPANDED_MAX: usize = 256 << 20;
/// A thread's scratch buffer is given back past this size instead of kept for the next call: ledger
/// pages are read on tokio's blocking threads, each with its own, so what each keeps stays small
/// (a page of consumes is 15 KB; a large journal batch on the writer or in replay is allocated
/// again each time, at little cost beside decoding it).
const SCRATCH_KEEP: usize = 256 << 10;

const BATCH_MAGIC: [u8; 4] = *b"VVJB";
const SNAPSHOT_MAGIC: [u8; 4] = *b"VVSN";

/// Header bytes covered by the CRC (everything before the CRC field).
const BATCH_FIELDS_LEN: usize = 4 + 2 + 8 + 4 + 4;
const SNAPSHOT_FIELDS_LEN: usize = 4 + 2 + 8 + 8;
const CRC_LEN: usize = 4;

/// Length of a batch frame header, CRC included; the payload starts here.
pub const BATCH_HEADER_LEN: usize = BATCH_FIELDS_LEN + CRC_LEN;
/// Length of a snapshot frame header, CRC included; the payload starts here.
pub const SNAPSHOT_HEADER_LEN: usize = SNAPSHOT_FIELDS_LEN + CRC_LEN;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("bad magic: expected {expected:?}, found {found:?} (not a vevee {kind} frame)")]
    BadMagic {
        kind: FrameKind,
        expected: [u8; 4],
        found: Vec<u8>,
    },
    #[error(
        "unsupported {kind} format version {found} (this build reads versions 1 to {newest}); \
         was it written by a newer vevee?"
    )]
    UnsupportedVersion {
        kind: FrameKind,
        found: u16,
        newest: u16,
    },
    #[error("truncated {kind} frame: need {needed} bytes, have {actual}")]
    Truncated {
        kind: FrameKind,
        needed: u64,
        actual: u64,
    },
    #[error("{kind} frame has {extra} unexpected trailing bytes after the payload")]
    TrailingBytes { kind: FrameKind, extra: u64 },
    #[error("{kind} checksum mismatch: header says {stored:#010x}, content gives {computed:#010x}")]
    ChecksumMismatch {
        kind: FrameKind,
        stored: u32,
        computed: u32,
    },
    #[error("{kind} payload passed its checksum but does not decode: {reason}")]
    Decode { kind: FrameKind, reason: String },
    #[error("could not encode {kind} payload: {reason}")]
    Encode { kind: FrameKind, reason: String },
}

impl CodecError {
    /// True when the error is what a write cut short (or a damaged frame) looks like, as opposed
    /// to a well-formed frame this build cannot read. Only the former may be discarded as a torn
    /// write: the latter holds acknowledged data that a newer or fixed build can still read.
    pub fn looks_torn(&self) -> bool {
        matches!(
            self,
            CodecError::BadMagic { .. }
                | CodecError::Truncated { .. }
                | CodecError::TrailingBytes { .. }
                | CodecError::ChecksumMismatch { .. }
        )
    }
}

/// Which frame an error is about, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Batch,
    Snapshot,
    History,
}

impl std::fmt::Display for FrameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameKind::Batch => "journal batch",
            FrameKind::Snapshot => "snapshot",
            FrameKind::History => "history value",
        })
    }
}

/// The verified header of a batch frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub first_seq: u64,
    pub count: u32,
}

impl BatchHeader {
    /// Sequence number one past the batch's last record, or `None` on (corrupt) overflow.
    pub fn end_seq(&self) -> Option<u64> {
        self.first_seq.checked_add(u64::from(self.count))
    }
}

/// A decoded batch: records are numbered `first_seq`, `first_seq + 1`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatch<R> {
    pub first_seq: u64,
    pub records: Vec<R>,
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

// ---------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------

/// Encodes `records` as one batch frame whose first record has sequence `first_seq`.
///
/// Fails only if a record's `Serialize` impl is not representable in bincode (for example a
/// sequence of unknown length or `#[serde(flatten)]`), which is a bug in the record type.
pub fn encode_batch<R: Serialize>(first_seq: u64, records: &[R]) -> Result<Vec<u8>, CodecError> {
    let kind = FrameKind::Batch;
    let count = u32::try_from(records.len()).map_err(|_| CodecError::Encode {
        kind,
        reason: format!("{} records do not fit a u32 count", records.len()),
    })?;
    let mut frame = vec![0u8; BATCH_HEADER_LEN];
    let version = with_zstd(|zstd| {
        zstd.scratch.clear();
        for record in records {
            let at = zstd.scratch.len();
            zstd.scratch.extend_from_slice(&[0; RECORD_LEN]);
            bincode::serde::encode_into_std_write(record, &mut zstd.scratch, config()).map_err(
                |e| CodecError::Encode {
                    kind,
                    reason: e.to_string(),
                },
            )?;
            let len = u32::try_from(zstd.scratch.len() - at - RECORD_LEN).map_err(|_| {
                CodecError::Encode {
                    kind,
                    reason: "a record larger than 4 GiB".to_owned(),
                }
            })?;
            zstd.scratch[at..at + RECORD_LEN].copy_from_slice(&len.to_be_bytes());
        }
        Ok(match zstd.put_payload(kind, &mut frame)? {
            PLAIN => FRAMED_PLAIN,
            _ => FRAMED_COMPRESSED,
        })
    })?;
    let payload_len =
        u32::try_from(frame.len() - BATCH_HEADER_LEN).map_err(|_| CodecError::Encode {
            kind,
            reason: "payload larger than 4 GiB".to_owned(),
        })?;
    let mut fields = [0u8; BATCH_FIELDS_LEN];
    fields[0..4].copy_from_slice(&BATCH_MAGIC);
    fields[4..6].copy_from_slice(&version.to_be_bytes());
    fields[6..14].copy_from_slice(&first_seq.to_be_bytes());
    fields[14..18].copy_from_slice(&count.to_be_bytes());
    fields[18..22].copy_from_slice(&payload_len.to_be_bytes());
    seal(&mut frame, &fields);
    Ok(frame)
}

/// Decodes a whole batch frame into a new vector.
pub fn decode_batch<R: DeserializeOwned>(bytes: &[u8]) -> Result<DecodedBatch<R>, CodecError> {
    let mut records = Vec::new();
    let header = decode_batch_into(bytes, &mut records)?;
    Ok(DecodedBatch {
        first_seq: header.first_seq,
        records,
    })
}

/// Decodes a batch frame, appending its records to `out` (a buffer the caller reuses across
/// batches to avoid an allocation per batch). On error `out` is left as it was.
pub fn decode_batch_into<R: DeserializeOwned>(
    bytes: &[u8],
    out: &mut Vec<R>,
) -> Result<BatchHeader, CodecError> {
    let (header, version, payload) = verified_batch(bytes)?;
    let start = out.len();
    let framed = version >= FRAMED_PLAIN;
    let decoded = match version {
        PLAIN | FRAMED_PLAIN => decode_records(header.count, payload, framed, out),
        _ => with_zstd(|zstd| {
            let records = zstd.expand(FrameKind::Batch, payload)?;
            decode_records(header.count, records, framed, out)
        }),
    };
    decoded.inspect_err(|_| out.truncate(start))?;
    Ok(header)
}

/// A verified batch opened by [`open_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenBatch {
    /// This build's framing: the byte range of each record in the caller's buffer, in order.
    Framed(Vec<std::ops::Range<usize>>),
    /// An earlier build's: the records follow each other bare and are found only by decoding
    /// them ([`decode_batch_into`]).
    Bare,
}

/// Verifies a batch frame and expands its payload into `buf`, finding each record's bytes
/// without decoding any: a reader may keep some as bytes and decode the others with
/// [`decode_record`]. The whole framing is checked before anything is returned, so a damaged
/// batch is refused whole.
pub fn open_batch(bytes: &[u8], buf: &mut Vec<u8>) -> Result<(BatchHeader, OpenBatch), CodecError> {
    let (header, version, payload) = verified_batch(bytes)?;
    buf.clear();
    match version {
        PLAIN | COMPRESSED => return Ok((header, OpenBatch::Bare)),
        FRAMED_PLAIN => buf.extend_from_slice(payload),
        _ => with_zstd(|zstd| {
            // Expanded straight into the caller's buffer, not through the scratch one.
            std::mem::swap(&mut zstd.scratch, buf);
            let expanded = zstd.expand(FrameKind::Batch, payload).map(drop);
            std::mem::swap(&mut zstd.scratch, buf);
            expanded
        })?,
    }
    let mut ranges = Vec::with_capacity(header.count as usize);
    let mut at = 0;
    for index in 0..header.count {
        let range = framed_record(buf, at).ok_or_else(|| CodecError::Decode {
            kind: FrameKind::Batch,
            reason: format!("record {index}: its length runs past the payload"),
        })?;
        at = range.end;
        ranges.push(range);
    }
    if at != buf.len() {
        return Err(CodecError::Decode {
            kind: FrameKind::Batch,
            reason: format!(
                "{} bytes left after {} records",
                buf.len() - at,
                header.count
            ),
        });
    }
    Ok((header, OpenBatch::Framed(ranges)))
}

/// The bytes of the framed record whose length starts at `at`.
fn framed_record(payload: &[u8], at: usize) -> Option<std::ops::Range<usize>> {
    let len = payload.get(at..at.checked_add(RECORD_LEN)?)?;
    let len = u32::from_be_bytes(array(len)) as usize;
    let start = at + RECORD_LEN;
    let end = start.checked_add(len)?;
    (end <= payload.len()).then_some(start..end)
}

/// Decodes one record of a framed batch: every byte must belong to it.
pub fn decode_record<R: DeserializeOwned>(bytes: &[u8]) -> Result<R, CodecError> {
    let (record, used) = bincode::serde::decode_from_slice::<R, _>(bytes, config())
        .map_err(|e| decode_error(FrameKind::Batch, e))?;
    if used != bytes.len() {
        return Err(CodecError::Decode {
            kind: FrameKind::Batch,
            reason: format!("{} bytes left after the record", bytes.len() - used),
        });
    }
    Ok(record)
}

/// Decodes a value from the front of `bytes`, borrowing from them where it can, and returns it
/// with the number of bytes it took: a reader takes a record's first fields and leaves the rest.
pub fn decode_prefix<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<(T, usize), CodecError> {
    bincode::serde::borrow_decode_from_slice::<T, _>(bytes, config())
        .map_err(|e| decode_error(FrameKind::Batch, e))
}

/// The bincode of `value` alone, as it appears inside a record: no version, no compression.
pub fn encode_bare<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode {
        kind: FrameKind::Batch,
        reason: e.to_string(),
    })
}

fn decode_error(kind: FrameKind, e: bincode::error::DecodeError) -> CodecError {
    CodecError::Decode {
        kind,
        reason: e.to_string(),
    }
}

/// Checks a batch frame's length, magic, version and CRC without decoding its records.
pub fn verify_batch(bytes: &[u8]) -> Result<BatchHeader, CodecError> {
    verified_batch(bytes).map(|(header, _, _)| header)
}

fn verified_batch(bytes: &[u8]) -> Result<(BatchHeader, u16, &[u8]), CodecError> {
    let kind = FrameKind::Batch;
    let fields = fixed_fields::<BATCH_FIELDS_LEN>(kind, bytes)?;
    check_magic(kind, &fields, BATCH_MAGIC)?;
    let version = check_version(kind, &fields, FORMAT_VERSION)?;
    let first_seq = u64::from_be_bytes(array(&fields[6..14]));
    let count = u32::from_be_bytes(array(&fields[14..18]));
    let payload_len = u64::from(u32::from_be_bytes(array(&fields[18..22])));
    let payload = payload(kind, bytes, BATCH_HEADER_LEN, payload_len)?;
    check_crc(kind, bytes, &fields, BATCH_FIELDS_LEN, payload)?;
    Ok((BatchHeader { first_seq, count }, version, payload))
}

fn decode_records<R: DeserializeOwned>(
    count: u32,
    payload: &[u8],
    framed: bool,
    out: &mut Vec<R>,
) -> Result<(), CodecError> {
    let kind = FrameKind::Batch;
    // Every record takes at least one byte, so the payload length bounds a sane reservation.
    out.reserve((count as usize).min(payload.len()));
    let mut rest = payload;
    for index in 0..count {
        let decode = |reason: String| CodecError::Decode {
            kind,
            reason: format!("record {index}: {reason}"),
        };
        // A framed record must take exactly its length; a bare one takes what it takes.
        let (bytes, after) = if framed {
            let range = framed_record(rest, 0)
                .ok_or_else(|| decode("its length runs past the payload".to_owned()))?;
            (&rest[range.clone()], &rest[range.end..])
        } else {
            (rest, &rest[..0])
        };
        let (record, used) = bincode::serde::decode_from_slice::<R, _>(bytes, config())
            .map_err(|e| decode(e.to_string()))?;
        if framed && used != bytes.len() {
            return Err(decode(format!("{} bytes left in it", bytes.len() - used)));
        }
        out.push(record);
        rest = if framed { after } else { &rest[used..] };
    }
    if !rest.is_empty() {
        return Err(CodecError::Decode {
            kind,
            reason: format!("{} bytes left after {count} records", rest.len()),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------

/// Encodes `state` as a snapshot frame taken at sequence `seq`.
pub fn encode_snapshot<S: Serialize>(seq: u64, state: &S) -> Result<Vec<u8>, CodecError> {
    let kind = FrameKind::Snapshot;
    let mut frame = vec![0u8; SNAPSHOT_HEADER_LEN];
    bincode::serde::encode_into_std_write(state, &mut frame, config()).map_err(|e| {
        CodecError::Encode {
            kind,
            reason: e.to_string(),
        }
    })?;
    let payload_len = (frame.len() - SNAPSHOT_HEADER_LEN) as u64;
    let mut fields = [0u8; SNAPSHOT_FIELDS_LEN];
    fields[0..4].copy_from_slice(&SNAPSHOT_MAGIC);
    fields[4..6].copy_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
    fields[6..14].copy_from_slice(&seq.to_be_bytes());
    fields[14..22].copy_from_slice(&payload_len.to_be_bytes());
    seal(&mut frame, &fields);
    Ok(frame)
}

/// Decodes a snapshot frame into its sequence and state.
pub fn decode_snapshot<S: DeserializeOwned>(bytes: &[u8]) -> Result<(u64, S), CodecError> {
    let kind = FrameKind::Snapshot;
    let fields = fixed_fields::<SNAPSHOT_FIELDS_LEN>(kind, bytes)?;
    check_magic(kind, &fields, SNAPSHOT_MAGIC)?;
    check_version(kind, &fields, SNAPSHOT_VERSION)?;
    let seq = u64::from_be_bytes(array(&fields[6..14]));
    let payload_len = u64::from_be_bytes(array(&fields[14..22]));
    let payload = payload(kind, bytes, SNAPSHOT_HEADER_LEN, payload_len)?;
    check_crc(kind, bytes, &fields, SNAPSHOT_FIELDS_LEN, payload)?;
    let (state, used) =
        bincode::serde::decode_from_slice::<S, _>(payload, config()).map_err(|e| {
            CodecError::Decode {
                kind,
                reason: e.to_string(),
            }
        })?;
    if used != payload.len() {
        return Err(CodecError::Decode {
            kind,
            reason: format!("{} bytes left after the state", payload.len() - used),
        });
    }
    Ok((seq, state))
}

// ---------------------------------------------------------------------------------------------
// History values
// ---------------------------------------------------------------------------------------------

/// Encodes one value of the history store: the format version (2 bytes) and the bincode payload,
/// compressed when that makes it smaller. No CRC of our own: sled checksums what it stores, and a
/// history value is never the only copy of a balance (the journal and the snapshots are).
pub fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let kind = FrameKind::History;
    with_zstd(|zstd| {
        zstd.scratch.clear();
        bincode::serde::encode_into_std_write(value, &mut zstd.scratch, config()).map_err(|e| {
            CodecError::Encode {
                kind,
                reason: e.to_string(),
            }
        })?;
        // The version goes in front once the payload says which.
        let mut out = vec![0u8; 2];
        let version = zstd.put_payload(kind, &mut out)?;
        out[..2].copy_from_slice(&version.to_be_bytes());
        Ok(out)
    })
}

/// Decodes a value written by [`encode_value`].
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let kind = FrameKind::History;
    match split_version(bytes)? {
        (PLAIN, payload) => decode_payload(payload),
        (COMPRESSED, payload) => with_zstd(|zstd| decode_payload(zstd.expand(kind, payload)?)),
        (found, _) => Err(CodecError::UnsupportedVersion {
            kind,
            found,
            newest: VALUE_VERSION,
        }),
    }
}

/// [`encode_value`] with a version of the caller's, for values whose own layout has changed.
pub fn encode_versioned<T: Serialize>(version: u16, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = version.to_be_bytes().to_vec();
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(|e| {
        CodecError::Encode {
            kind: FrameKind::History,
            reason: e.to_string(),
        }
    })?;
    Ok(out)
}

/// The version and the payload of a value written by [`encode_versioned`]; the payload decodes
/// with [`decode_payload`] into the type of that version.
pub fn split_version(bytes: &[u8]) -> Result<(u16, &[u8]), CodecError> {
    match bytes.split_first_chunk::<2>() {
        Some((version, payload)) => Ok((u16::from_be_bytes(*version), payload)),
        None => Err(CodecError::Truncated {
            kind: FrameKind::History,
            needed: 2,
            actual: bytes.len() as u64,
        }),
    }
}

/// Decodes the payload that [`split_version`] found.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    let (value, _) = bincode::serde::decode_from_slice::<T, _>(payload, config()).map_err(|e| {
        CodecError::Decode {
            kind: FrameKind::History,
            reason: e.to_string(),
        }
    })?;
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// Shared framing helpers
// ---------------------------------------------------------------------------------------------

/// Writes the header fields and their CRC into the placeholder at the start of `frame`.
fn seal(frame: &mut [u8], fields: &[u8]) {
    let header_len = fields.len() + CRC_LEN;
    let crc = crc_of(fields, &frame[header_len..]);
    frame[..fields.len()].copy_from_slice(fields);
    frame[fields.len()..header_len].copy_from_slice(&crc.to_be_bytes());
}

fn crc_of(fields: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(fields);
    hasher.update(payload);
    hasher.finalize()
}

fn fixed_fields<const N: usize>(kind: FrameKind, bytes: &[u8]) -> Result<[u8; N], CodecError> {
    let needed = N + CRC_LEN;
    if bytes.len() < needed {
        // A short frame that does not even start with the magic is reported as such: the magic
        // is the more useful clue ("this is not a frame at all").
        let magic_len = bytes.len().min(4);
        let expected = match kind {
            FrameKind::Batch => BATCH_MAGIC,
            FrameKind::Snapshot | FrameKind::History => SNAPSHOT_MAGIC,
        };
        if bytes[..magic_len] != expected[..magic_len] {
            return Err(CodecError::BadMagic {
                kind,
                expected,
                found: bytes[..magic_len].to_vec(),
            });
        }
        return Err(CodecError::Truncated {
            kind,
            needed: needed as u64,
            actual: bytes.len() as u64,
        });
    }
    Ok(array(&bytes[..N]))
}

fn check_magic(kind: FrameKind, fields: &[u8], expected: [u8; 4]) -> Result<(), CodecError> {
    if fields[0..4] != expected {
        return Err(CodecError::BadMagic {
            kind,
            expected,
            found: fields[0..4].to_vec(),
        });
    }
    Ok(())
}

/// The frame's version, if this build reads it (1 to `newest`).
fn check_version(kind: FrameKind, fields: &[u8], newest: u16) -> Result<u16, CodecError> {
    let found = u16::from_be_bytes(array(&fields[4..6]));
    if !(1..=newest).contains(&found) {
        return Err(CodecError::UnsupportedVersion {
            kind,
            found,
            newest,
        });
    }
    Ok(found)
}

/// Returns the payload, requiring the frame to be exactly header plus declared payload.
fn payload(
    kind: FrameKind,
    bytes: &[u8],
    header_len: usize,
    payload_len: u64,
) -> Result<&[u8], CodecError> {
    let available = (bytes.len() - header_len) as u64;
    if available < payload_len {
        return Err(CodecError::Truncated {
            kind,
            needed: header_len as u64 + payload_len,
            actual: bytes.len() as u64,
        });
    }
    if available > payload_len {
        return Err(CodecError::TrailingBytes {
            kind,
            extra: available - payload_len,
        });
    }
    Ok(&bytes[header_len..])
}

fn check_crc(
    kind: FrameKind,
    bytes: &[u8],
    fields: &[u8],
    fields_len: usize,
    payload: &[u8],
) -> Result<(), CodecError> {
    let stored = u32::from_be_bytes(array(&bytes[fields_len..fields_len + CRC_LEN]));
    let computed = crc_of(fields, payload);
    if stored != computed {
        return Err(CodecError::ChecksumMismatch {
            kind,
            stored,
            computed,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Compression
// ---------------------------------------------------------------------------------------------

/// A thread's zstd contexts and scratch buffer, made on first use and reused: a context costs
/// more to set up than a page costs to compress.
#[derive(Default)]
struct Zstd {
    compressor: Option<zstd::bulk::Compressor<'static>>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    /// The encoded payload before compression, or the expanded one after.
    scratch: Vec<u8>,
}

thread_local! {
    static ZSTD: RefCell<Zstd> = RefCell::new(Zstd::default());
}

fn with_zstd<T>(f: impl FnOnce(&mut Zstd) -> Result<T, CodecError>) -> Result<T, CodecError> {
    ZSTD.with(|cell| {
        let mut zstd = cell.borrow_mut();
        let result = f(&mut zstd);
        if zstd.scratch.capacity() > SCRATCH_KEEP {
            zstd.scratch = Vec::new();
        }
        result
    })
}

impl Zstd {
    /// Appends the scratch buffer to `out` as a payload: compressed (its length, then zstd's
    /// frame) when that is smaller, else as it is. Returns the version that says which.
    fn put_payload(&mut self, kind: FrameKind, out: &mut Vec<u8>) -> Result<u16, CodecError> {
        let raw = &self.scratch;
        if raw.len() < COMPRESS_FROM || raw.len() > EXPANDED_MAX {
            out.extend_from_slice(raw);
            return Ok(PLAIN);
        }
        let raw_len = u32::try_from(raw.len()).expect("EXPANDED_MAX fits a u32");
        let compressor = match &mut self.compressor {
            Some(compressor) => compressor,
            empty => empty.insert(
                zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| encode_error(kind, e))?,
            ),
        };
        let start = out.len();
        out.extend_from_slice(&raw_len.to_be_bytes());
        out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        let mut cursor = std::io::Cursor::new(std::mem::take(out));
        cursor.set_position(start as u64 + 4);
        let compressed = compressor.compress_to_buffer(raw, &mut cursor);
        *out = cursor.into_inner();
        match compressed {
            Ok(len) if 4 + len < raw.len() => Ok(COMPRESSED),
            Ok(_) => {
                out.truncate(start);
                out.extend_from_slice(raw);
                Ok(PLAIN)
            }
            Err(e) => Err(encode_error(kind, e)),
        }
    }

    /// Expands a compressed payload into the scratch buffer and returns it.
    fn expand(&mut self, kind: FrameKind, payload: &[u8]) -> Result<&[u8], CodecError> {
        let decode = |reason: String| CodecError::Decode { kind, reason };
        let Some((len, compressed)) = payload.split_first_chunk::<4>() else {
            return Err(decode(
                "compressed payload shorter than its length".to_owned(),
            ));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > EXPANDED_MAX {
            return Err(decode(format!("compressed payload claims {len} bytes")));
        }
        let decompressor = match &mut self.decompressor {
            Some(decompressor) => decompressor,
            empty => {
                empty.insert(zstd::bulk::Decompressor::new().map_err(|e| decode(e.to_string()))?)
            }
        };
        self.scratch.clear();
        self.scratch.reserve(len);
        let expanded = decompressor
            .decompress_to_buffer(compressed, &mut self.scratch)
            .map_err(|e| decode(format!("zstd: {e}")))?;
        if expanded != len {
            return Err(decode(format!(
                "compressed payload expands to {expanded} bytes, not the {len} it claims"
            )));
        }
        Ok(&self.scratch)
    }
}

fn encode_error(kind: FrameKind, e: std::io::Error) -> CodecError {
    CodecError::Encode {
        kind,
        reason: format!("zstd: {e}"),
    }
}

fn array<const N: usize>(slice: &[u8]) -> [u8; N] {
    slice
        .try_into()
        .expect("callers pass slices of exactly N bytes from a length-checked frame")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    /// A fixed test record. Its encoding is pinned by the golden test below: if this test
    /// breaks, the on-disk format changed, which needs a version bump and a migration.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Sample {
        user: String,
        amount: u64,
        delta: i32,
        tag: Option<u8>,
    }

    fn sample(user: &str, amount: u64, delta: i32, tag: Option<u8>) -> Sample {
        Sample {
            user: user.to_owned(),
            amount,
            delta,
            tag,
        }
    }

    #[test]
    fn a_small_batch_encodes_to_exactly_the_pinned_bytes() {
        let records = [sample("ab", 300, -2, None), sample("c", 7, 1, Some(9))];
        let frame = encode_batch(5, &records).expect("encodable");
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            b'V', b'V', b'J', b'B',             // magic
            0x00, 0x03,                         // format version 3: framed, plain
            0, 0, 0, 0, 0, 0, 0, 5,             // first_seq 5
            0, 0, 0, 2,                         // 2 records
            0, 0, 0, 22,                        // payload length
            0xb9, 0x91, 0x84, 0x57,             // CRC32 (checked with Python's zlib.crc32)
            // record 1, 8 bytes: len 2 "ab", varint 300 (0xfb 0x2c 0x01), zigzag(-2)=3, None
            0, 0, 0, 8, 2, b'a', b'b', 0xfb, 0x2c, 0x01, 3, 0,
            // record 2, 6 bytes: len 1 "c", 7, zigzag(1)=2, Some(9)
            0, 0, 0, 6, 1, b'c', 7, 2, 1, 9,
        ];
        assert_eq!(frame, expected, "actual: {frame:02x?}");
        assert_eq!(
            decode_batch::<Sample>(&frame).expect("valid").records,
            records
        );
    }

    #[test]
    fn a_batch_opens_into_the_bytes_of_each_record_and_each_decodes_alone() {
        for records in [alike(3), alike(40)] {
            let frame = encode_batch(7, &records).expect("encodable");
            let mut buf = Vec::new();
            let (header, open) = open_batch(&frame, &mut buf).expect("valid");
            assert_eq!(
                header,
                BatchHeader {
                    first_seq: 7,
                    count: records.len() as u32
                }
            );
            let OpenBatch::Framed(ranges) = open else {
                panic!("this build frames its records");
            };
            let decoded: Vec<Sample> = ranges
                .iter()
                .map(|r| decode_record(&buf[r.clone()]).expect("decodes"))
                .collect();
            assert_eq!(decoded, records);
            // A prefix of a record decodes alone and says how much it took.
            let (user, used): (&str, usize) =
                decode_prefix(&buf[ranges[1].clone()]).expect("prefix");
            assert_eq!(user, records[1].user);
            assert_eq!(used, 1 + user.len());
            assert!(
                decode_record::<String>(&buf[ranges[1].clone()]).is_err(),
                "bytes left over"
            );
        }
    }

    #[test]
    fn a_framed_batch_whose_lengths_overrun_is_refused_whole() {
        let records = [sample("ab", 300, -2, None), sample("c", 7, 1, Some(9))];
        let mut frame = encode_batch(5, &records).expect("encodable");
        // The second record's length claims one byte more than the payload holds; sealed again,
        // as a build that framed it wrongly would have written it.
        frame[BATCH_HEADER_LEN + 12 + 3] = 7;
        let mut fields = [0u8; BATCH_FIELDS_LEN];
        fields.copy_from_slice(&frame[..BATCH_FIELDS_LEN]);
        seal(&mut frame, &fields);
        let mut buf = Vec::new();
        let err = open_batch(&frame, &mut buf).expect_err("overrun");
        assert!(matches!(err, CodecError::Decode { .. }), "{err}");
        let err = decode_batch::<Sample>(&frame).expect_err("overrun");
        assert!(matches!(err, CodecError::Decode { .. }), "{err}");
    }

    #[test]
    fn a_bare_batch_of_an_earlier_build_opens_as_bare() {
        let frame = bare_batch(3, &alike(5), PLAIN);
        let mut buf = Vec::new();
        let (header, open) = open_batch(&frame, &mut buf).expect("valid");
        assert_eq!(
            (header.first_seq, header.count, open),
            (3, 5, OpenBatch::Bare)
        );
    }

    #[test]
    fn a_small_snapshot_encodes_to_exactly_the_pinned_bytes() {
        let frame = encode_snapshot(42, &sample("z", 1, 0, None)).expect("encodable");
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            b'V', b'V', b'S', b'N',
            0x00, 0x01,
            0, 0, 0, 0, 0, 0, 0, 42,
            0, 0, 0, 0, 0, 0, 0, 5,
            0xf9, 0x0f, 0x24, 0x0e,
            1, b'z', 1, 0, 0,
        ];
        assert_eq!(frame, expected, "actual: {frame:02x?}");
        assert_eq!(
            decode_snapshot::<Sample>(&frame),
            Ok((42, sample("z", 1, 0, None)))
        );
    }

    #[test]
    fn an_empty_batch_round_trips() {
        let frame = encode_batch::<Sample>(9, &[]).expect("encodable");
        assert_eq!(frame.len(), BATCH_HEADER_LEN);
        let decoded = decode_batch::<Sample>(&frame).expect("valid");
        assert_eq!(
            decoded,
            DecodedBatch {
                first_seq: 9,
                records: vec![]
            }
        );
    }

    #[test]
    fn a_batch_is_not_mistaken_for_a_snapshot_or_vice_versa() {
        let batch = encode_batch(1, &[sample("a", 1, 1, None)]).expect("encodable");
        let snap = encode_snapshot(1, &sample("a", 1, 1, None)).expect("encodable");
        assert!(matches!(
            decode_snapshot::<Sample>(&batch),
            Err(CodecError::BadMagic { .. })
        ));
        assert!(matches!(
            decode_batch::<Sample>(&snap),
            Err(CodecError::BadMagic { .. })
        ));
    }

    #[test]
    fn a_newer_format_version_is_refused_and_not_called_torn() {
        let mut frame = encode_batch(1, &[sample("a", 1, 1, None)]).expect("encodable");
        frame[5] = 5;
        let err = decode_batch::<Sample>(&frame).expect_err("version 5 is unknown");
        assert!(
            matches!(err, CodecError::UnsupportedVersion { found: 5, .. }),
            "{err}"
        );
        assert!(!err.looks_torn());
    }

    /// Records like a journal's: long ids that repeat from one record to the next.
    fn alike(n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                sample(
                    &format!("user_01M86APSMYPCCDFCBJ0TQGXJ{:02}", i % 3),
                    1_000_000_000 + i as u64,
                    -1,
                    Some(7),
                )
            })
            .collect()
    }

    #[test]
    fn a_batch_of_alike_records_is_written_compressed_and_reads_back() {
        let records = alike(40);
        let frame = encode_batch(12, &records).expect("encodable");
        assert_eq!(frame[4..6], [0, 4], "version 4: framed, compressed");
        let mut plain = Vec::new();
        for record in &records {
            bincode::serde::encode_into_std_write(record, &mut plain, config()).expect("encodable");
        }
        assert!(
            frame.len() * 4 < BATCH_HEADER_LEN + plain.len(),
            "{} bytes against {} plain",
            frame.len(),
            BATCH_HEADER_LEN + plain.len()
        );
        let decoded = decode_batch::<Sample>(&frame).expect("valid");
        assert_eq!(
            decoded,
            DecodedBatch {
                first_seq: 12,
                records
            }
        );
    }

    /// A batch as earlier builds wrote it: records one after the other, without their lengths.
    fn bare_batch(first_seq: u64, records: &[Sample], version: u16) -> Vec<u8> {
        let mut raw = Vec::new();
        for record in records {
            bincode::serde::encode_into_std_write(record, &mut raw, config()).expect("encodable");
        }
        let mut frame = vec![0u8; BATCH_HEADER_LEN];
        if version == COMPRESSED {
            frame.extend_from_slice(&(raw.len() as u32).to_be_bytes());
            frame.extend_from_slice(&zstd::bulk::compress(&raw, ZSTD_LEVEL).expect("compress"));
        } else {
            frame.extend_from_slice(&raw);
        }
        let payload_len = (frame.len() - BATCH_HEADER_LEN) as u32;
        let mut fields = [0u8; BATCH_FIELDS_LEN];
        fields[0..4].copy_from_slice(&BATCH_MAGIC);
        fields[4..6].copy_from_slice(&version.to_be_bytes());
        fields[6..14].copy_from_slice(&first_seq.to_be_bytes());
        fields[14..18].copy_from_slice(&(records.len() as u32).to_be_bytes());
        fields[18..22].copy_from_slice(&payload_len.to_be_bytes());
        seal(&mut frame, &fields);
        frame
    }

    #[test]
    fn plain_and_compressed_batches_of_an_earlier_build_still_read() {
        let records = alike(40);
        for version in [PLAIN, COMPRESSED] {
            let decoded = decode_batch::<Sample>(&bare_batch(3, &records, version)).expect("valid");
            assert_eq!(
                decoded,
                DecodedBatch {
                    first_seq: 3,
                    records: records.clone()
                },
                "version {version}"
            );
        }
    }

    #[test]
    fn a_compressed_payload_that_lies_about_its_length_is_a_decode_error() {
        let records = alike(40);
        let frame = encode_batch(1, &records).expect("encodable");
        let payload = &frame[BATCH_HEADER_LEN..];
        for claimed in [0u32, 5, u32::MAX] {
            let mut lying = payload.to_vec();
            lying[..4].copy_from_slice(&claimed.to_be_bytes());
            let mut fields = [0u8; BATCH_FIELDS_LEN];
            fields.copy_from_slice(&frame[..BATCH_FIELDS_LEN]);
            let mut forged = vec![0u8; BATCH_HEADER_LEN];
            forged.extend_from_slice(&lying);
            seal(&mut forged, &fields);
            let err = decode_batch::<Sample>(&forged).expect_err("wrong length");
            assert!(matches!(err, CodecError::Decode { .. }), "{claimed}: {err}");
        }
    }

    #[test]
    fn history_values_are_compressed_when_that_pays_and_plain_ones_still_read() {
        let large = alike(30);
        let bytes = encode_value(&large).expect("encodable");
        assert_eq!(bytes[..2], [0, 2]);
        assert_eq!(decode_value::<Vec<Sample>>(&bytes), Ok(large.clone()));

        let small = sample("a", 1, 1, None);
        let bytes = encode_value(&small).expect("encodable");
        assert_eq!(bytes[..2], [0, 1], "too short to gain from compression");
        assert_eq!(decode_value::<Sample>(&bytes), Ok(small));

        let plain = encode_versioned(PLAIN, &large).expect("encodable");
        assert_eq!(decode_value::<Vec<Sample>>(&plain), Ok(large));

        let mut unknown = plain.clone();
        unknown[1] = 3;
        assert!(matches!(
            decode_value::<Vec<Sample>>(&unknown),
            Err(CodecError::UnsupportedVersion { found: 3, .. })
        ));
        let mut garbled = encode_value(&alike(30)).expect("encodable");
        let last = garbled.len() - 1;
        garbled[last] ^= 0x5a;
        garbled.truncate(last - 3);
        assert!(decode_value::<Vec<Sample>>(&garbled).is_err());
    }

    #[test]
    fn a_payload_of_the_wrong_type_is_a_decode_error_and_not_called_torn() {
        let frame = encode_batch(1, &[1u8, 2, 3]).expect("encodable");
        let err = decode_batch::<Sample>(&frame).expect_err("u8s are not Samples");
        assert!(matches!(err, CodecError::Decode { .. }), "{err}");
        assert!(!err.looks_torn());
    }

    #[test]
    fn a_failed_decode_leaves_the_reused_buffer_as_it_was() {
        let mut out = vec![sample("keep", 1, 1, None)];
        let good = encode_batch(1, &[sample("a", 1, 1, None)]).expect("encodable");
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(decode_batch_into::<Sample>(&bad, &mut out).is_err());
        assert_eq!(out, vec![sample("keep", 1, 1, None)]);
        decode_batch_into::<Sample>(&good, &mut out).expect("valid");
        assert_eq!(out.len(), 2);
    }

    fn arb_sample() -> impl Strategy<Value = Sample> {
        (".{0,12}", any::<u64>(), any::<i32>(), any::<Option<u8>>()).prop_map(
            |(user, amount, delta, tag)| Sample {
                user,
                amount,
                delta,
                tag,
            },
        )
    }

    proptest! {
        #[test]
        fn any_batch_round_trips(
            first_seq in any::<u64>(),
            records in prop::collection::vec(arb_sample(), 0..20),
        ) {
            let frame = encode_batch(first_seq, &records).expect("encodable");
            let decoded = decode_batch::<Sample>(&frame).expect("valid");
            prop_assert_eq!(decoded, DecodedBatch { first_seq, records });
        }

        #[test]
        fn any_single_flipped_byte_in_a_batch_is_an_error(
            records in prop::collection::vec(arb_sample(), 0..8),
            position in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut frame = encode_batch(77, &records).expect("encodable");
            let at = position.index(frame.len());
            frame[at] ^= flip;
            prop_assert!(decode_batch::<Sample>(&frame).is_err(), "byte {} flipped", at);
        }

        #[test]
        fn any_truncation_of_a_batch_is_an_error_that_looks_torn(
            records in prop::collection::vec(arb_sample(), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let frame = encode_batch(77, &records).expect("encodable");
            let keep = cut.index(frame.len());
            let err = decode_batch::<Sample>(&frame[..keep]).expect_err("truncated");
            prop_assert!(err.looks_torn(), "{}", err);
        }

        #[test]
        fn any_damage_to_a_compressed_batch_is_an_error(
            n in 10usize..60,
            position in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            cut in any::<prop::sample::Index>(),
        ) {
            let frame = encode_batch(5, &alike(n)).expect("encodable");
            prop_assert_eq!(&frame[4..6], &[0u8, 4][..]);
            let mut flipped = frame.clone();
            let at = position.index(frame.len());
            flipped[at] ^= flip;
            prop_assert!(decode_batch::<Sample>(&flipped).is_err(), "byte {} flipped", at);
            let keep = cut.index(frame.len());
            let err = decode_batch::<Sample>(&frame[..keep]).expect_err("truncated");
            prop_assert!(err.looks_torn(), "{}", err);
        }

        #[test]
        fn any_snapshot_round_trips(seq in any::<u64>(), state in arb_sample()) {
            let frame = encode_snapshot(seq, &state).expect("encodable");
            prop_assert_eq!(decode_snapshot::<Sample>(&frame), Ok((seq, state)));
        }

        #[test]
        fn any_damage_to_a_snapshot_is_an_error(
            state in arb_sample(),
            position in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            cut in any::<prop::sample::Index>(),
        ) {
            let frame = encode_snapshot(3, &state).expect("encodable");
            let mut flipped = frame.clone();
            let at = position.index(frame.len());
            flipped[at] ^= flip;
            prop_assert!(decode_snapshot::<Sample>(&flipped).is_err(), "byte {} flipped", at);
            let keep = cut.index(frame.len());
            prop_assert!(decode_snapshot::<Sample>(&frame[..keep]).is_err());
        }
    }
}

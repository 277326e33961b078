//! Decode a batch of raw messages into one Arrow `RecordBatch` of a source's canonical schema.
//!
//! Each message becomes exactly one row or one [`Reject`]; nothing is dropped. The whole batch
//! is decoded in one pass on the fast path. When a message fails as it is fed, the decoder is
//! thrown away and that message is tried alone with a fresh one: if it fails there too it is a
//! reject, the messages before it are decoded again, and decoding resumes after it (k bad
//! messages: about 2k + 1 decodes, at most 2n messages decoded). Otherwise, and when an error
//! comes only at the end of a batch, the batch is split in halves, each decoded with a fresh
//! decoder, until the bad messages stand alone.
//! This module owns decoding and per-field conversion; it knows nothing of Kafka or tables.
// Data path: no unwrap/expect on anything derived from message bytes; each remaining one
// says why it cannot fail.
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod avro;
mod convert;
mod json;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;

use crate::schema;
use crate::spec::{Format, SourceType};

pub use avro::AvroFraming;

/// JSON messages per decode after a batch's first bad message: bounds the prefix decoded
/// again after a later one. (Avro keeps whole runs: its decoders cost more to build than its
/// bytes cost to decode again.)
const JSON_RESUME_CHUNK: usize = 256;
pub use convert::{
    parse_decimal, parse_int, parse_timestamp_micros, timestamp_micros_range, DecimalError,
    IntError,
};

/// Why one message did not become a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Index of the message in the batch given to [`SourceDecoder::decode`].
    pub index: u32,
    /// The field at fault, where one is known.
    pub field: Option<String>,
    /// What was wrong, naming the field.
    pub reason: String,
}

/// The result of decoding a batch.
#[derive(Debug)]
pub struct Decoded {
    /// One row per good message, in message order, in the source's canonical schema.
    pub batch: RecordBatch,
    /// For each row of `batch`, the index of its message.
    pub rows: UInt32Array,
    /// One entry per bad message, in message order.
    pub rejects: Vec<Reject>,
}

/// Errors that stop a decoder from being built (bad configuration, found at start-up).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The Avro schema is unusable or does not match the source type.
    #[error("avro schema for {source_type:?}: {message}")]
    AvroSchema {
        /// The source type.
        source_type: SourceType,
        /// What is wrong.
        message: String,
    },
    /// Arrow failed while assembling a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// A message-level failure inside one decode attempt.
pub(crate) struct Failure {
    pub(crate) field: Option<String>,
    pub(crate) reason: String,
}

/// One decode attempt over a run of messages: built fresh for every attempt.
pub(crate) trait Attempt {
    /// Feeds one message; an error means this message (or the decoder) is bad.
    fn feed(&mut self, msg: &[u8]) -> Result<(), Failure>;
    /// Finishes, returning the decoded columns in source-field order.
    fn finish(self: Box<Self>) -> Result<Vec<ArrayRef>, Failure>;
}

/// A decoder for one source: its type and wire format.
pub struct SourceDecoder {
    source_type: SourceType,
    schema: SchemaRef,
    inner: Inner,
}

enum Inner {
    Json(json::JsonFormat),
    Avro(avro::AvroFormat),
}

impl SourceDecoder {
    /// A JSON decoder for a source type.
    pub fn json(source_type: SourceType) -> Self {
        SourceDecoder {
            source_type,
            schema: schema::source_schema(source_type),
            inner: Inner::Json(json::JsonFormat::new(source_type)),
        }
    }

    /// An Avro decoder from the writer schema (`.avsc` text) and its framing.
    pub fn avro(
        source_type: SourceType,
        avsc: &str,
        framing: AvroFraming,
    ) -> Result<Self, DecodeError> {
        Ok(SourceDecoder {
            source_type,
            schema: schema::source_schema(source_type),
            inner: Inner::Avro(avro::AvroFormat::new(source_type, avsc, framing)?),
        })
    }

    /// Builds the decoder a spec source asks for; `avsc` is the `.avsc` text for Avro formats.
    pub fn for_format(
        source_type: SourceType,
        format: Format,
        avsc: Option<&str>,
        schema_id: Option<u32>,
    ) -> Result<Self, DecodeError> {
        let need = |what: &str| DecodeError::AvroSchema {
            source_type,
            message: format!("{what} is required for Avro sources"),
        };
        match format {
            Format::Json => Ok(Self::json(source_type)),
            Format::Avro => Self::avro(
                source_type,
                avsc.ok_or_else(|| need("avro_schema"))?,
                AvroFraming::Plain,
            ),
            Format::AvroConfluent => Self::avro(
                source_type,
                avsc.ok_or_else(|| need("avro_schema"))?,
                AvroFraming::Confluent(schema_id.ok_or_else(|| need("schema_id"))?),
            ),
        }
    }

    /// The source type.
    pub fn source_type(&self) -> SourceType {
        self.source_type
    }

    /// The canonical schema of decoded batches.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn attempt(&self, capacity: usize) -> Box<dyn Attempt + '_> {
        match &self.inner {
            Inner::Json(j) => Box::new(j.attempt(capacity)),
            Inner::Avro(a) => Box::new(a.attempt(capacity)),
        }
    }

    /// Decodes a batch. Never fails on bad data: bad messages come back as rejects.
    pub fn decode(&self, msgs: &[&[u8]]) -> Result<Decoded, DecodeError> {
        let mut pieces: Vec<(u32, Vec<ArrayRef>)> = Vec::new();
        let mut rejects = Vec::new();
        if matches!(self.inner, Inner::Json(_)) {
            // A repeated key does not upset the decoder (it would keep the last value), so
            // such messages are found before decoding and the runs between them decoded as
            // they are: no decoder is thrown away and no prefix decoded again for them.
            let mut run = 0;
            for (i, msg) in msgs.iter().enumerate() {
                if let Some((key, reason)) = json::repeated_key_reject(msg) {
                    self.isolate(&msgs[run..i], run as u32, &mut pieces, &mut rejects);
                    rejects.push(Reject {
                        index: i as u32,
                        field: Some(key),
                        reason,
                    });
                    run = i + 1;
                }
            }
            self.isolate(&msgs[run..], run as u32, &mut pieces, &mut rejects);
        } else {
            self.isolate(msgs, 0, &mut pieces, &mut rejects);
        }
        rejects.sort_by_key(|r| r.index);
        // Piece columns are wire-level; convert each to canonical form with per-row checks.
        let mut batches = Vec::with_capacity(pieces.len());
        let mut rows: Vec<u32> = Vec::with_capacity(msgs.len());
        for (start, columns) in pieces {
            let n = columns.first().map_or(0, |c| c.len());
            let (batch, row_rejects) =
                convert::to_canonical(self.source_type, &self.schema, columns, start)?;
            let mut bad = row_rejects.iter().map(|r| r.index).peekable();
            for i in 0..n as u32 {
                if bad.peek() == Some(&(start + i)) {
                    bad.next();
                } else {
                    rows.push(start + i);
                }
            }
            rejects.extend(row_rejects);
            batches.push(batch);
        }
        rejects.sort_by_key(|r| r.index);
        let batch = match batches.len() {
            0 => RecordBatch::new_empty(self.schema.clone()),
            1 => batches.swap_remove(0),
            _ => concat_batches(&self.schema, &batches)?,
        };
        debug_assert_eq!(batch.num_rows() + rejects.len(), msgs.len());
        Ok(Decoded {
            batch,
            rows: UInt32Array::from(rows),
            rejects,
        })
    }

    /// Decodes `msgs` (which start at batch index `base`) in one attempt, or splits and retries.
    fn isolate(
        &self,
        msgs: &[&[u8]],
        base: u32,
        pieces: &mut Vec<(u32, Vec<ArrayRef>)>,
        rejects: &mut Vec<Reject>,
    ) {
        if msgs.is_empty() {
            return;
        }
        let mut start = 0;
        // After a first failure, more may follow: decode the rest in chunks, so a later
        // failure re-decodes at most one chunk's prefix. A clean batch stays one piece.
        let mut chunk = msgs.len();
        while start < msgs.len() {
            let rest = &msgs[start..(start + chunk).min(msgs.len())];
            let at = base + start as u32;
            let mut attempt = self.attempt(rest.len());
            let mut failed = None;
            for (i, msg) in rest.iter().enumerate() {
                if let Err(f) = attempt.feed(msg) {
                    failed = Some((i, f));
                    break;
                }
            }
            match failed {
                // The message that failed to feed is usually the one at fault; checked alone
                // with a fresh decoder, it is a reject when it fails there too, and decoding
                // resumes after it: k bad messages cost about 2k + 1 decodes of at most 2n
                // messages, not k·log2(n). When it decodes alone, an earlier message left the
                // decoder mid-record (a truncated Avro body can): bisect up to it.
                Some((i, _)) => {
                    let culprit = &rest[i..=i];
                    let mut alone = self.attempt(1);
                    let verdict = alone.feed(culprit[0]).and_then(|()| alone.finish());
                    match verdict {
                        Err(f) => {
                            if i > 0 {
                                self.isolate(&rest[..i], at, pieces, rejects);
                            }
                            rejects.push(Reject {
                                index: at + i as u32,
                                field: f.field,
                                reason: f.reason,
                            });
                        }
                        Ok(_) => {
                            let len = i + 1;
                            let mid = len / 2;
                            self.isolate(&rest[..mid], at, pieces, rejects);
                            self.isolate(&rest[mid..=i], at + mid as u32, pieces, rejects);
                        }
                    }
                    start += i + 1;
                    if matches!(self.inner, Inner::Json(_)) {
                        chunk = JSON_RESUME_CHUNK;
                    }
                }
                None => {
                    match attempt.finish() {
                        Ok(columns) => pieces.push((at, columns)),
                        Err(f) if rest.len() == 1 => rejects.push(Reject {
                            index: at,
                            field: f.field,
                            reason: f.reason,
                        }),
                        // Failing at the end names no message: bisect.
                        Err(_) => {
                            let mid = rest.len() / 2;
                            self.isolate(&rest[..mid], at, pieces, rejects);
                            self.isolate(&rest[mid..], at + mid as u32, pieces, rejects);
                        }
                    }
                    start += rest.len();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! Decode a batch of raw messages into one Arrow `RecordBatch` of a source's canonical schema.
//!
//! Each message becomes exactly one row or one [`Reject`]; nothing is dropped. The whole batch
//! is decoded in one pass on the fast path. After any decoder error the decoder is thrown away
//! and the batch is split in halves, each decoded with a fresh decoder, until the bad messages
//! stand alone: a clean batch costs one decode, a batch with k bad messages about k·log2(n).
//! This module owns decoding and per-field conversion; it knows nothing of Kafka or tables.

mod avro;
mod convert;
mod json;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;

use crate::schema;
use crate::spec::{Format, SourceType};

pub use avro::AvroFraming;
pub use convert::{parse_decimal, parse_timestamp_micros, DecimalError};

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
        self.isolate(msgs, 0, &mut pieces, &mut rejects);
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
            1 => batches.pop().expect("one batch"),
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
        let mut attempt = self.attempt(msgs.len());
        let mut failed = None;
        for msg in msgs {
            if let Err(f) = attempt.feed(msg) {
                failed = Some(f);
                break;
            }
        }
        let result = match failed {
            Some(f) => Err(f),
            None => attempt.finish(),
        };
        match result {
            Ok(columns) => pieces.push((base, columns)),
            Err(f) if msgs.len() == 1 => rejects.push(Reject {
                index: base,
                field: f.field,
                reason: f.reason,
            }),
            Err(_) => {
                let mid = msgs.len() / 2;
                self.isolate(&msgs[..mid], base, pieces, rejects);
                self.isolate(&msgs[mid..], base + mid as u32, pieces, rejects);
            }
        }
    }
}

#[cfg(test)]
mod tests;

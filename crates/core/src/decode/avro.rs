//! Avro messages through arrow-avro's streaming decoder, plain or in the Confluent wire format.
//!
//! arrow-avro's streaming decoder needs framing: finlake feeds the single-object header
//! (magic + Rabin fingerprint of the `.avsc`) before each plain body, without copying it.
//! It can also return Ok having used only part of a message, so each message must consume all
//! its bytes and yield exactly one record.

use arrow::array::ArrayRef;
use arrow::datatypes::DataType;
use arrow_avro::codec::Tz;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{
    AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore, SINGLE_OBJECT_MAGIC,
};

use super::{Attempt, DecodeError, Failure};
use crate::schema::{self, Kind};
use crate::spec::SourceType;

/// How Avro bodies are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvroFraming {
    /// A bare Avro binary body.
    Plain,
    /// Confluent wire format with this schema id.
    Confluent(u32),
}

pub(crate) struct AvroFormat {
    avsc: String,
    framing: AvroFraming,
    prefix: Vec<u8>,
    /// Position of each source field in the decoded batch.
    projection: Vec<usize>,
}

impl AvroFormat {
    pub(crate) fn new(
        source_type: SourceType,
        avsc: &str,
        framing: AvroFraming,
    ) -> Result<Self, DecodeError> {
        let err = |message: String| DecodeError::AvroSchema {
            source_type,
            message,
        };
        let schema = AvroSchema::new(avsc.to_string());
        let fp = schema
            .fingerprint(FingerprintAlgorithm::Rabin)
            .map_err(|e| err(format!("not a valid Avro schema: {e}")))?;
        let prefix = match fp {
            Fingerprint::Rabin(v) => [SINGLE_OBJECT_MAGIC.as_slice(), &v.to_le_bytes()].concat(),
            _ => unreachable!("Rabin algorithm gives a Rabin fingerprint"),
        };
        let mut format = AvroFormat {
            avsc: avsc.to_string(),
            framing,
            prefix,
            projection: Vec::new(),
        };
        // Check the writer schema against the source type once, at start-up.
        let decoder = format.decoder(1).map_err(|e| err(e.to_string()))?;
        let decoded = decoder.schema();
        for spec in schema::source_fields(source_type) {
            let Some((idx, field)) = decoded.column_with_name(spec.name) else {
                return Err(err(format!("the .avsc has no field `{}`", spec.name)));
            };
            let ok = match spec.kind {
                Kind::Ts => matches!(field.data_type(), DataType::Timestamp(..)),
                other => field.data_type() == &schema::arrow_type(other),
            };
            if !ok {
                return Err(err(format!(
                    "field `{}` is {} in the .avsc, finlake expects {}",
                    spec.name,
                    field.data_type(),
                    schema::arrow_type(spec.kind)
                )));
            }
            format.projection.push(idx);
        }
        Ok(format)
    }

    fn decoder(&self, capacity: usize) -> Result<Decoder, arrow::error::ArrowError> {
        let schema = AvroSchema::new(self.avsc.clone());
        let store = match self.framing {
            AvroFraming::Plain => {
                let mut store = SchemaStore::new();
                store.register(schema)?;
                store
            }
            AvroFraming::Confluent(id) => {
                let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
                store.set(Fingerprint::Id(id), schema)?;
                store
            }
        };
        ReaderBuilder::new()
            .with_batch_size(capacity.max(1))
            .with_tz(Tz::Utc)
            .with_writer_schema_store(store)
            .build_decoder()
    }

    pub(crate) fn attempt(&self, capacity: usize) -> AvroAttempt<'_> {
        AvroAttempt {
            // The same writer schema built a decoder in `new`; only the capacity differs.
            #[allow(clippy::expect_used)]
            decoder: self
                .decoder(capacity)
                .expect("checked when the format was built"),
            format: self,
        }
    }
}

pub(crate) struct AvroAttempt<'a> {
    decoder: Decoder,
    format: &'a AvroFormat,
}

fn fail(reason: String) -> Failure {
    Failure {
        field: None,
        reason,
    }
}

impl Attempt for AvroAttempt<'_> {
    fn feed(&mut self, msg: &[u8]) -> Result<(), Failure> {
        match self.format.framing {
            AvroFraming::Plain => {
                let n = self
                    .decoder
                    .decode(&self.format.prefix)
                    .map_err(|e| fail(format!("invalid Avro: {e}")))?;
                if n != self.format.prefix.len() {
                    return Err(fail("decoder refused the frame header".into()));
                }
            }
            AvroFraming::Confluent(expected) => {
                if msg.len() < 5 || msg[0] != 0 {
                    return Err(fail(
                        "not in the Confluent wire format (magic byte 0 and a 4-byte schema id)"
                            .into(),
                    ));
                }
                let id = u32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]);
                if id != expected {
                    return Err(fail(format!(
                        "unknown schema id {id} (this source reads schema id {expected})"
                    )));
                }
            }
        }
        let before = self.decoder.capacity();
        let consumed = self
            .decoder
            .decode(msg)
            .map_err(|e| fail(format!("invalid Avro: {e}")))?;
        if self.decoder.capacity() + 1 != before {
            return Err(fail(format!(
                "truncated Avro: the message ends before the record does ({} bytes)",
                msg.len()
            )));
        }
        if consumed != msg.len() {
            return Err(fail(format!(
                "the message has {} bytes after its Avro record",
                msg.len() - consumed
            )));
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<ArrayRef>, Failure> {
        let batch = self
            .decoder
            .flush()
            .map_err(|e| fail(format!("invalid Avro: {e}")))?
            .ok_or_else(|| fail("no records".into()))?;
        Ok(self
            .format
            .projection
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect())
    }
}

//! JSON messages through arrow-json's tape decoder, guarded per message.
//!
//! arrow-json is a streaming decoder: it would happily read two objects from one message, or
//! continue a truncated message with the next one's bytes. So every message is fed on its own
//! and must leave the decoder at a record boundary with exactly one more record.

use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::json::reader::{Decoder, ReaderBuilder};

use super::{Attempt, Failure};
use crate::schema;
use crate::spec::SourceType;

pub(crate) struct JsonFormat {
    wire: SchemaRef,
}

impl JsonFormat {
    pub(crate) fn new(source_type: SourceType) -> Self {
        JsonFormat {
            wire: schema::json_wire_schema(source_type),
        }
    }

    pub(crate) fn attempt(&self, capacity: usize) -> JsonAttempt {
        let decoder = ReaderBuilder::new(self.wire.clone())
            // One spare row so a message holding two records is seen, not cut at the limit.
            .with_batch_size(capacity + 1)
            // Numbers in text columns keep their exact text: decimals are parsed by finlake.
            .with_coerce_primitive(true)
            .build_decoder()
            .expect("the wire schema is a flat struct arrow-json supports");
        JsonAttempt { decoder }
    }
}

pub(crate) struct JsonAttempt {
    decoder: Decoder,
}

/// The field named in an arrow-json error (`whilst decoding field 'price'`), nested with dots.
fn field_of(e: &ArrowError) -> Option<String> {
    let text = e.to_string();
    let fields: Vec<&str> = text
        .split("whilst decoding field '")
        .skip(1)
        .filter_map(|rest| rest.split('\'').next())
        .collect();
    (!fields.is_empty()).then(|| fields.join("."))
}

fn failure(e: ArrowError) -> Failure {
    let field = field_of(&e);
    let detail = e.to_string();
    let detail = detail.strip_prefix("Json error: ").unwrap_or(&detail);
    let reason = match &field {
        Some(f) => format!(
            "field `{f}`: {}",
            detail.rsplit("': ").next().unwrap_or(detail)
        ),
        None => format!("invalid JSON: {detail}"),
    };
    Failure { field, reason }
}

impl Attempt for JsonAttempt {
    fn feed(&mut self, msg: &[u8]) -> Result<(), Failure> {
        let before = self.decoder.len();
        let consumed = self.decoder.decode(msg).map_err(failure)?;
        let plain = |reason: String| Failure {
            field: None,
            reason,
        };
        if self.decoder.has_partial_record() {
            return Err(plain(
                "truncated JSON: the message ends inside a value".into(),
            ));
        }
        let records = self.decoder.len() - before;
        if consumed != msg.len() || records > 1 {
            return Err(plain(
                "the message holds more than one JSON value; one message must be one record".into(),
            ));
        }
        if records == 0 {
            return Err(plain("the message holds no JSON object".into()));
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<ArrayRef>, Failure> {
        match self.decoder.flush().map_err(failure)? {
            Some(batch) => Ok(batch.columns().to_vec()),
            None => Err(Failure {
                field: None,
                reason: "no records".into(),
            }),
        }
    }
}

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
        // The wire schema is a flat struct of primitive types, built from our declarations:
        // arrow-json accepts it whatever the messages hold (a test builds every source type).
        #[allow(clippy::expect_used)]
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

/// The reject for a message whose object gives a key twice, if it does.
pub(crate) fn repeated_key_reject(msg: &[u8]) -> Option<(String, String)> {
    duplicate_key(msg).map(|key| {
        let reason = format!(
            "field `{key}`: appears more than once in the object; which value is meant is \
             ambiguous"
        );
        (key, reason)
    })
}

/// The first top-level key that appears twice in a JSON object, if any.
///
/// arrow-json keeps the last of two equal keys; which one the producer meant is ambiguous,
/// so such a message is a reject naming the key. One pass over the bytes, no allocation on
/// the usual path: key spans live on the stack (a heap list only past 32 keys) and a key
/// with escapes is unescaped before comparing. Malformed JSON is left to the decoder.
pub(crate) fn duplicate_key(msg: &[u8]) -> Option<String> {
    const INLINE: usize = 32;
    let mut inline = [(0usize, 0usize); INLINE];
    let mut spill: Vec<(usize, usize)> = Vec::new();
    let mut count = 0usize;
    let mut escaped_keys = false;
    let (mut depth, mut i) = (0usize, 0usize);
    let mut last_string: Option<(usize, usize, bool)> = None;
    while i < msg.len() {
        match msg[i] {
            b'"' => {
                let start = i + 1;
                let mut j = start;
                let mut has_escape = false;
                while j < msg.len() && msg[j] != b'"' {
                    if msg[j] == b'\\' {
                        has_escape = true;
                        j += 1;
                    }
                    j += 1;
                }
                last_string = (depth == 1).then_some((start, j.min(msg.len()), has_escape));
                i = j + 1;
                continue;
            }
            b':' if depth == 1 => {
                if let Some((a, b, esc)) = last_string.take() {
                    escaped_keys |= esc;
                    if count < INLINE {
                        inline[count] = (a, b);
                    } else {
                        spill.push((a, b));
                    }
                    count += 1;
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                // only the first value: a second one is the decoder's error to report
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        if !msg[i].is_ascii_whitespace() && msg[i] != b':' {
            last_string = None;
        }
        i += 1;
    }
    let all = || inline[..count.min(INLINE)].iter().chain(spill.iter());
    if escaped_keys {
        // Rare: compare the keys' unescaped text (the span plus its quotes is a JSON string).
        let mut seen: Vec<String> = Vec::with_capacity(count);
        for &(a, b) in all() {
            let quoted = &msg[a - 1..(b + 1).min(msg.len())];
            let key = serde_json::from_slice::<String>(quoted)
                .unwrap_or_else(|_| String::from_utf8_lossy(&msg[a..b]).into_owned());
            if seen.contains(&key) {
                return Some(key);
            }
            seen.push(key);
        }
        return None;
    }
    for (k, &(a, b)) in all().enumerate() {
        let key = &msg[a..b];
        if all().take(k).any(|&(c, d)| &msg[c..d] == key) {
            return Some(String::from_utf8_lossy(key).into_owned());
        }
    }
    None
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

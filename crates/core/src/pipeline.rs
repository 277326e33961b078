//! The per-batch processing chain shared by the demo and the ingestor:
//! `decode -> trade_date -> transform -> check -> split`. Each stage removes the rows it rejects
//! and records why; the result is the landed rows in the table schema plus quarantine rows
//! holding each reject's raw bytes. For every input message exactly one of the two holds it.
// Data path: no unwrap/expect on anything derived from message bytes; each remaining one
// says why it cannot fail.
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, Date32Array, Int32Array, Int64Array,
    RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray, UInt32Array,
};
use arrow::compute::{filter, filter_record_batch, take};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType, UInt32Type};
use chrono::TimeZone;

use crate::decode::SourceDecoder;
use crate::error::Result;
use crate::schema::{self, Kind};
use crate::spec::SourceType;
use crate::telemetry::Metrics;
use crate::transform::{fx::mask_without, ExchangeCalendar, FxConverter, Normalizer, RowReject};

/// Where a batch came from and what to stamp on it.
#[derive(Debug, Clone)]
pub struct BatchContext<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Offset of each message.
    pub offsets: &'a [i64],
    /// The batch's correlation id.
    pub correlation_id: &'a str,
    /// Ingest time, UTC microseconds.
    pub ingested_at: i64,
    /// Ingest time of each message, when they differ (a replayed or simulated feed):
    /// overrides `ingested_at` row by row.
    pub arrivals: Option<&'a [i64]>,
    /// A correlation id per message, where its producer sent one (a Kafka header): it
    /// overrides `correlation_id` in that message's `_correlation_id`.
    pub message_ids: Option<&'a [Option<&'a str>]>,
}

impl BatchContext<'_> {
    /// The correlation id of message `index`: its own, else the batch's.
    pub fn correlation_id_of(&self, index: usize) -> &str {
        self.message_ids
            .and_then(|ids| ids.get(index).copied().flatten())
            .unwrap_or(self.correlation_id)
    }
}

/// One reject, by message index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Message index in the batch.
    pub index: u32,
    /// Stage: decode, enrich, normalize, convert, check.
    pub stage: &'static str,
    /// Rule or transform name.
    pub rule: String,
    /// Field at fault.
    pub field: Option<String>,
    /// Why.
    pub reason: String,
}

/// The result of one batch.
#[derive(Debug)]
pub struct Outcome {
    /// Landed rows, in the table schema.
    pub good: RecordBatch,
    /// For each landed row, its message index.
    pub good_index: UInt32Array,
    /// Rejects, in message order.
    pub rejects: Vec<Rejected>,
    /// Rejects as quarantine rows (with raw bytes).
    pub quarantine: RecordBatch,
}

/// The stages of one source.
pub struct Stages {
    /// The decoder.
    pub decoder: SourceDecoder,
    /// Exchange time zones, for `trade_date`.
    pub calendar: Arc<ExchangeCalendar>,
    /// Symbol to ISIN, when configured.
    pub normalizer: Option<Normalizer>,
    /// Currency conversion, when configured.
    pub fx: Option<FxConverter>,
    table_schema: SchemaRef,
}

impl Stages {
    /// Assembles the stages; the table schema follows from which transforms are on.
    pub fn new(
        decoder: SourceDecoder,
        calendar: Arc<ExchangeCalendar>,
        normalizer: Option<Normalizer>,
        fx: Option<FxConverter>,
    ) -> Self {
        let table_schema =
            schema::table_schema(decoder.source_type(), normalizer.is_some(), fx.is_some());
        Stages {
            decoder,
            calendar,
            normalizer,
            fx,
            table_schema,
        }
    }

    /// Builds the stages of source `index` of a spec, as the spec configures them: the
    /// decoder of its format (Avro with `avro_schema`, a path relative to the spec file, or the
    /// source type's built-in schema), `normalize` with its `mapping_table` and
    /// `fallback_strategy` (default `reject`), and currency conversion (`currency_conversion`,
    /// or the guide's `enrich` with `base_currency`) with its rate table, base currency
    /// (default USD) and `previous_day` fallback. Reference tables are resolved by `refdata`.
    /// The one constructor the demo, the tests and the ingestor use.
    pub fn from_spec(
        spec: &crate::spec::LoadedSpec,
        index: usize,
        refdata: &crate::transform::RefData,
    ) -> Result<Stages> {
        use crate::spec::{FallbackStrategy, Format, TransformType};
        let file = spec.file.display();
        let p = &spec.pipeline.spec;
        let src = p.sources.get(index).ok_or_else(|| {
            crate::Error::Usage(format!("{file}: the pipeline has no source #{index}"))
        })?;
        let t = src.source_type;
        let decoder = match src.format {
            Format::Json => SourceDecoder::json(t),
            format => {
                let avsc = match &src.config.avro_schema {
                    Some(rel) => {
                        let path = spec
                            .file
                            .parent()
                            .unwrap_or_else(|| std::path::Path::new("."))
                            .join(rel);
                        std::fs::read_to_string(&path).map_err(|e| crate::Error::io(&path, e))?
                    }
                    None => schema::avro_schema(t),
                };
                SourceDecoder::for_format(t, format, Some(&avsc), src.config.schema_id).map_err(
                    |e| crate::Error::Usage(format!("{file}: source `{}`: {e}", src.name)),
                )?
            }
        };
        let mut normalizer = None;
        let mut fx = None;
        for tr in &p.transformations {
            let c = &tr.config;
            match tr.transform_type {
                TransformType::Normalize => {
                    let table = c.mapping_table.as_deref().unwrap_or("symbol_mapping");
                    normalizer = Some(Normalizer {
                        name: tr.name.clone(),
                        map: Arc::new(refdata.symbol_map(table)?),
                        fallback: c.fallback_strategy.unwrap_or(FallbackStrategy::Reject),
                    });
                }
                TransformType::CurrencyConversion | TransformType::Enrich => {
                    let base = c.base_currency.as_deref().unwrap_or("USD");
                    let table = c.rate_table().unwrap_or("fx_rates");
                    let rates =
                        crate::transform::FxRates::from_batch(base, &refdata.fx_rates(table)?)?;
                    fx = Some(FxConverter {
                        name: tr.name.clone(),
                        rates: Arc::new(rates),
                        previous_day: c.rate_fallback() == Some("previous_day"),
                    });
                }
            }
        }
        Ok(Stages::new(
            decoder,
            Arc::new(refdata.calendar()?),
            normalizer,
            fx,
        ))
    }

    /// The landed table's schema.
    pub fn table_schema(&self) -> &SchemaRef {
        &self.table_schema
    }

    /// The source type.
    pub fn source_type(&self) -> SourceType {
        self.decoder.source_type()
    }

    /// Processes one batch of messages.
    pub fn process(&self, msgs: &[&[u8]], ctx: &BatchContext<'_>) -> Result<Outcome> {
        let metrics = Metrics::global();
        let timer = metrics
            .stage_seconds
            .with_label_values(&["decode"])
            .start_timer();
        let decoded = self
            .decoder
            .decode(msgs)
            .map_err(|e| crate::Error::Usage(e.to_string()))?;
        timer.observe_duration();
        let mut rejects: Vec<Rejected> = decoded
            .rejects
            .into_iter()
            .map(|r| Rejected {
                index: r.index,
                stage: "decode",
                rule: "decode".into(),
                field: r.field,
                reason: r.reason,
            })
            .collect();
        let mut batch = decoded.batch;
        let mut index = decoded.rows;

        // trade_date: the event's date in the exchange's time zone (UTC without an exchange)
        let (dates, stage_rejects) = self.trade_dates(&batch)?;
        let mut extra: Vec<ArrayRef> = vec![Arc::new(dates)];
        apply(
            &mut batch,
            &mut index,
            &mut extra,
            &mut rejects,
            "enrich",
            stage_rejects,
        )?;

        // normalize
        if let Some(norm) = &self.normalizer {
            let with_date = append_column(&batch, schema::TRADE_DATE, extra[0].clone())?;
            let (isin, r) = norm.apply(&with_date)?;
            extra.push(Arc::new(isin));
            apply(
                &mut batch,
                &mut index,
                &mut extra,
                &mut rejects,
                "normalize",
                r,
            )?;
        }
        // currency conversion
        if let Some(fx) = &self.fx {
            let (cols, r) = fx.apply(&batch)?;
            extra.extend(cols);
            apply(
                &mut batch,
                &mut index,
                &mut extra,
                &mut rejects,
                "convert",
                r,
            )?;
        }
        // basic checks: positive amounts
        let checks = self.positive_checks(&batch)?;
        apply(
            &mut batch,
            &mut index,
            &mut extra,
            &mut rejects,
            "check",
            checks,
        )?;

        rejects.sort_by_key(|r| r.index);
        let good = self.assemble(&batch, &index, extra, ctx)?;
        let quarantine = quarantine_batch(&rejects, msgs, ctx)?;
        metrics
            .messages
            .with_label_values(&["landed"])
            .inc_by(good.num_rows() as u64);
        metrics
            .messages
            .with_label_values(&["rejected"])
            .inc_by(rejects.len() as u64);
        for r in &rejects {
            metrics
                .rejects
                .with_label_values(&[r.stage, r.field.as_deref().unwrap_or("")])
                .inc();
        }
        debug_assert_eq!(good.num_rows() + rejects.len(), msgs.len());
        Ok(Outcome {
            good,
            good_index: index,
            rejects,
            quarantine,
        })
    }

    fn trade_dates(&self, batch: &RecordBatch) -> Result<(Date32Array, Vec<RowReject>)> {
        let ts = batch
            .column_by_name(schema::EVENT_TIME)
            .ok_or_else(|| missing_column(schema::EVENT_TIME))?
            .as_primitive::<TimestampMicrosecondType>();
        let mics = batch
            .column_by_name("exchange")
            .map(|c| c.as_string::<i32>().clone());
        let n = batch.num_rows();
        let mut days = Vec::with_capacity(n);
        let mut rejects = Vec::new();
        let mut last: Option<(&str, chrono_tz::Tz)> = None;
        for row in 0..n {
            let t = ts.value(row);
            let day = match &mics {
                None => t.div_euclid(86_400_000_000) as i32,
                Some(mics) => {
                    let mic = mics.value(row);
                    let tz = match last {
                        Some((m, tz)) if m == mic => Some(tz),
                        _ => self.calendar.get(mic).map(|e| e.tz),
                    };
                    match (tz, chrono::DateTime::from_timestamp_micros(t)) {
                        (Some(tz), Some(utc)) => {
                            last = Some((mic, tz));
                            crate::transform::symbols::epoch_days(
                                tz.from_utc_datetime(&utc.naive_utc()).date_naive(),
                            )
                        }
                        // Decode refuses such values; a batch built elsewhere gets a reject.
                        (Some(_), None) => {
                            rejects.push(RowReject {
                                row,
                                rule: "decode".into(),
                                field: schema::EVENT_TIME.into(),
                                reason: format!(
                                    "field `{}`: {t} microseconds since the epoch is outside the \
                                     representable range",
                                    schema::EVENT_TIME
                                ),
                            });
                            0
                        }
                        (None, _) => {
                            rejects.push(RowReject {
                                row,
                                rule: "exchange_calendar".into(),
                                field: "exchange".into(),
                                reason: format!(
                                    "field `exchange`: unknown MIC `{mic}` (not in exchange_hours)"
                                ),
                            });
                            0
                        }
                    }
                }
            };
            days.push(day);
        }
        Ok((Date32Array::from(days), rejects))
    }

    fn positive_checks(&self, batch: &RecordBatch) -> Result<Vec<RowReject>> {
        let mut out = Vec::new();
        for spec in schema::source_fields(self.source_type())
            .iter()
            .filter(|f| f.positive)
        {
            let col = batch
                .column_by_name(spec.name)
                .ok_or_else(|| missing_column(spec.name))?;
            let bad: BooleanArray = match spec.kind {
                Kind::Dec(..) => {
                    let zero = arrow::array::Decimal128Array::from(vec![0i128])
                        .with_data_type(col.data_type().clone());
                    arrow::compute::kernels::cmp::lt_eq(col, &arrow::array::Scalar::new(zero))
                }
                Kind::I64 => arrow::compute::kernels::cmp::lt_eq(col, &Int64Array::new_scalar(0)),
                _ => continue,
            }?;
            for row in bad
                .iter()
                .enumerate()
                .filter_map(|(i, b)| (b == Some(true)).then_some(i))
            {
                out.push(RowReject {
                    row,
                    rule: format!("positive_{}", spec.name),
                    field: spec.name.into(),
                    reason: format!("field `{}`: must be greater than zero", spec.name),
                });
            }
        }
        out.sort_by_key(|r| r.row);
        out.dedup_by_key(|r| r.row);
        Ok(out)
    }

    fn assemble(
        &self,
        batch: &RecordBatch,
        index: &UInt32Array,
        extra: Vec<ArrayRef>,
        ctx: &BatchContext<'_>,
    ) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        let mut extra = extra.into_iter();
        let trade_date = extra
            .next()
            .ok_or_else(|| missing_column(schema::TRADE_DATE))?;
        cols.extend(extra);
        let offsets = Int64Array::from(ctx.offsets.to_vec());
        cols.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(ctx.topic, n),
        )));
        cols.push(Arc::new(Int32Array::from_value(ctx.partition, n)));
        cols.push(take(&offsets, index, None)?);
        cols.push(match ctx.arrivals {
            Some(arrivals) => take(
                &TimestampMicrosecondArray::from(arrivals.to_vec()).with_timezone(schema::UTC),
                index,
                None,
            )?,
            None => Arc::new(
                TimestampMicrosecondArray::from_value(ctx.ingested_at, n)
                    .with_timezone(schema::UTC),
            ),
        });
        cols.push(match ctx.message_ids {
            Some(_) => Arc::new(StringArray::from_iter_values(
                index
                    .values()
                    .iter()
                    .map(|&i| ctx.correlation_id_of(i as usize)),
            )),
            None => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                ctx.correlation_id,
                n,
            ))),
        });
        cols.push(trade_date);
        Ok(RecordBatch::try_new(self.table_schema.clone(), cols)?)
    }
}

/// A column the chain itself put in place is missing: a bug, never bad data.
fn missing_column(name: &str) -> crate::Error {
    crate::Error::Arrow(arrow::error::ArrowError::SchemaError(format!(
        "internal: the batch has no `{name}` column"
    )))
}

/// Removes a stage's rejected rows from the batch, the index and the extra columns.
fn apply(
    batch: &mut RecordBatch,
    index: &mut UInt32Array,
    extra: &mut [ArrayRef],
    rejects: &mut Vec<Rejected>,
    stage: &'static str,
    stage_rejects: Vec<RowReject>,
) -> Result<()> {
    if stage_rejects.is_empty() {
        return Ok(());
    }
    let keep = mask_without(batch.num_rows(), stage_rejects.iter().map(|r| r.row));
    for r in stage_rejects {
        rejects.push(Rejected {
            index: index.value(r.row),
            stage,
            rule: r.rule,
            field: Some(r.field),
            reason: r.reason,
        });
    }
    *batch = filter_record_batch(batch, &keep)?;
    *index = filter(index, &keep)?.as_primitive::<UInt32Type>().clone();
    for col in extra.iter_mut() {
        *col = filter(col, &keep)?;
    }
    Ok(())
}

fn append_column(batch: &RecordBatch, name: &str, col: ArrayRef) -> Result<RecordBatch> {
    let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(arrow::datatypes::Field::new(
        name,
        col.data_type().clone(),
        false,
    )));
    let mut cols = batch.columns().to_vec();
    cols.push(col);
    Ok(RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(fields)),
        cols,
    )?)
}

/// Quarantine rows for rejects: lineage, stage, rule, field, reason and the raw bytes.
pub fn quarantine_batch(
    rejects: &[Rejected],
    msgs: &[&[u8]],
    ctx: &BatchContext<'_>,
) -> Result<RecordBatch> {
    let n = rejects.len();
    let mut stage = StringBuilder::with_capacity(n, n * 8);
    let mut rule = StringBuilder::with_capacity(n, n * 16);
    let mut field = StringBuilder::with_capacity(n, n * 8);
    let mut reason = StringBuilder::with_capacity(n, n * 64);
    let mut raw = BinaryBuilder::with_capacity(n, n * 128);
    let mut offsets = Vec::with_capacity(n);
    let mut ingested = Vec::with_capacity(n);
    for r in rejects {
        stage.append_value(r.stage);
        rule.append_value(&r.rule);
        field.append_option(r.field.as_deref());
        reason.append_value(&r.reason);
        raw.append_value(msgs[r.index as usize]);
        offsets.push(ctx.offsets[r.index as usize]);
        ingested.push(
            ctx.arrivals
                .and_then(|a| a.get(r.index as usize).copied())
                .unwrap_or(ctx.ingested_at),
        );
    }
    let ingest_days: Vec<i32> = ingested
        .iter()
        .map(|t| t.div_euclid(86_400_000_000) as i32)
        .collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            ctx.topic, n,
        ))),
        Arc::new(Int32Array::from_value(ctx.partition, n)),
        Arc::new(Int64Array::from(offsets)),
        Arc::new(TimestampMicrosecondArray::from(ingested).with_timezone(schema::UTC)),
        Arc::new(StringArray::from_iter_values(
            rejects
                .iter()
                .map(|r| ctx.correlation_id_of(r.index as usize)),
        )),
        Arc::new(stage.finish()),
        Arc::new(rule.finish()),
        Arc::new(field.finish()),
        Arc::new(reason.finish()),
        Arc::new(raw.finish()),
        Arc::new(Date32Array::from(ingest_days)),
    ];
    Ok(RecordBatch::try_new(schema::quarantine_schema(), cols)?)
}

/// Counts of rejects by (stage, field), for reports.
pub fn reject_counts(rejects: &[Rejected]) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for r in rejects {
        *out.entry((
            r.stage.to_string(),
            r.field.clone().unwrap_or_else(|| "-".into()),
        ))
        .or_default() += 1;
    }
    out
}

//! Writing one metric family and its samples with prometheus-client's encoder: the few calls
//! every family of the exposition makes.

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// One metric family: its descriptor, then a sample per label set.
pub(super) fn family<'s>(
    encoder: &'s mut DescriptorEncoder<'_>,
    name: &'s str,
    help: &str,
    unit: Option<&'s Unit>,
    kind: MetricType,
) -> Result<MetricEncoder<'s>, std::fmt::Error> {
    encoder.encode_descriptor(name, help, unit, kind)
}

pub(super) fn gauge(
    m: &mut MetricEncoder<'_>,
    labels: &impl EncodeLabelSet,
    value: f64,
) -> Result<(), std::fmt::Error> {
    m.encode_family(labels)?.encode_gauge(&value)
}

pub(super) fn counter(
    m: &mut MetricEncoder<'_>,
    labels: &impl EncodeLabelSet,
    value: u64,
) -> Result<(), std::fmt::Error> {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

pub(super) fn counter_f64(
    m: &mut MetricEncoder<'_>,
    labels: &impl EncodeLabelSet,
    value: f64,
) -> Result<(), std::fmt::Error> {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, f64>(&value, None)
}

/// A cluster's cluster-wide labels with one of its figures.
pub(super) type Scoped<'a, T> = (&'a [(&'static str, String)], T);

/// A gauge family with one sample per cluster, labelled with its cluster-wide labels.
pub(super) fn gauges<'a>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: impl IntoIterator<Item = Scoped<'a, f64>>,
) -> Result<(), std::fmt::Error> {
    let mut m = family(e, name, help, unit, MetricType::Gauge)?;
    for (labels, value) in values {
        gauge(&mut m, &labels, value)?;
    }
    Ok(())
}

/// A counter family with one sample per cluster, labelled with its cluster-wide labels.
pub(super) fn counters<'a>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: impl IntoIterator<Item = Scoped<'a, u64>>,
) -> Result<(), std::fmt::Error> {
    let mut m = family(e, name, help, unit, MetricType::Counter)?;
    for (labels, value) in values {
        counter(&mut m, &labels, value)?;
    }
    Ok(())
}

//! Building Prometheus metric families from values read at scrape time.
//!
//! The prometheus crate's own metric types (`IntCounterVec`, `Histogram`)
//! own their values and are updated per event. Ours live in per-reactor
//! shards elsewhere and are only read when scraped, so collectors build the
//! exposition model directly from a static description of each family.

use std::collections::HashMap;

use pollux_graph::latency::{bucket_bound_ns, FINITE_BUCKETS};
use pollux_graph::LatencyHistogram;
use prometheus::core::Desc;
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily};

pub use prometheus::proto::MetricType;

/// Nanoseconds per second, for the `_seconds` units Prometheus expects.
const NS_PER_S: f64 = 1e9;

/// The static description of one metric family: what `desc` reports and
/// what `collect` fills in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FamilySpec {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) kind: MetricType,
    pub(crate) labels: &'static [&'static str],
}

impl FamilySpec {
    /// The registry's descriptor of this family.
    ///
    /// # Panics
    /// If the name or a label is not a valid Prometheus name; the specs are
    /// constants, and the unit tests build every one of them.
    pub(crate) fn desc(&self) -> Desc {
        Desc::new(
            self.name.to_owned(),
            self.help.to_owned(),
            self.labels.iter().map(|l| (*l).to_owned()).collect(),
            HashMap::new(),
        )
        .unwrap_or_else(|e| panic!("invalid metric spec {}: {e}", self.name))
    }

    /// An empty family of this kind, to push samples into.
    pub(crate) fn family(&self) -> FamilyBuilder<'_> {
        let mut mf = MetricFamily::default();
        mf.set_name(self.name.to_owned());
        mf.set_help(self.help.to_owned());
        mf.set_field_type(self.kind);
        FamilyBuilder { spec: self, mf }
    }
}

/// A family being filled at scrape time.
pub(crate) struct FamilyBuilder<'a> {
    spec: &'a FamilySpec,
    mf: MetricFamily,
}

impl FamilyBuilder<'_> {
    fn metric(&mut self, values: &[&str]) -> &mut Metric {
        debug_assert_eq!(
            values.len(),
            self.spec.labels.len(),
            "label values for {}",
            self.spec.name
        );
        let labels = self
            .spec
            .labels
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut lp = LabelPair::default();
                lp.set_name((*name).to_owned());
                lp.set_value((*value).to_owned());
                lp
            })
            .collect();
        let metrics = self.mf.mut_metric();
        metrics.push(Metric::from_label(labels));
        metrics.last_mut().expect("just pushed")
    }

    /// Adds a counter or gauge sample (whichever the family is).
    pub(crate) fn value(&mut self, labels: &[&str], v: f64) -> &mut Self {
        let kind = self.spec.kind;
        let m = self.metric(labels);
        match kind {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(v);
                m.set_counter(c);
            }
            MetricType::GAUGE => {
                let mut g = Gauge::default();
                g.set_value(v);
                m.set_gauge(g);
            }
            other => unreachable!("{}: value() on a {other:?} family", self.spec.name),
        }
        self
    }

    /// Adds a histogram sample, converting nanoseconds to seconds.
    pub(crate) fn histogram(&mut self, labels: &[&str], h: &LatencyHistogram) -> &mut Self {
        debug_assert_eq!(self.spec.kind, MetricType::HISTOGRAM);
        let mut cumulative = 0;
        let buckets = (0..FINITE_BUCKETS)
            .map(|i| {
                cumulative += h.buckets[i];
                let mut b = Bucket::default();
                b.set_cumulative_count(cumulative);
                b.set_upper_bound(bucket_bound_ns(i) as f64 / NS_PER_S);
                b
            })
            .collect();
        // The encoder writes the +Inf bucket from the sample count, which
        // includes the overflow bucket.
        let mut hist = Histogram::default();
        hist.set_bucket(buckets);
        hist.set_sample_count(h.count());
        hist.set_sample_sum(h.sum_ns as f64 / NS_PER_S);
        self.metric(labels).set_histogram(hist);
        self
    }

    /// The finished family.
    pub(crate) fn build(self) -> MetricFamily {
        self.mf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

    const H: FamilySpec = FamilySpec {
        name: "test_latency_seconds",
        help: "Test.",
        kind: MetricType::HISTOGRAM,
        labels: &["dev"],
    };

    #[test]
    fn histogram_is_cumulative_in_seconds() {
        let mut h = LatencyHistogram::default();
        h.record(100); // <= 256 ns
        h.record(300); // <= 512 ns
        h.record(1 << 40); // overflow
        let mut f = H.family();
        f.histogram(&["a"], &h);
        let mut out = Vec::new();
        TextEncoder::new().encode(&[f.build()], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("test_latency_seconds_bucket{dev=\"a\",le=\"0.000000256\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("test_latency_seconds_bucket{dev=\"a\",le=\"0.000000512\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("test_latency_seconds_bucket{dev=\"a\",le=\"8.589934592\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("test_latency_seconds_bucket{dev=\"a\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("test_latency_seconds_count{dev=\"a\"} 3\n"));
        let sum = (100 + 300 + (1u64 << 40)) as f64 / 1e9;
        assert!(text.contains(&format!("test_latency_seconds_sum{{dev=\"a\"}} {sum}\n")));
    }
}

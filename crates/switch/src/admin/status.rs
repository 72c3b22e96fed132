//! `GET /api/status`: what the operator's page draws, as one small JSON
//! document, so that the browser never parses the Prometheus text.
//!
//! Counts are cumulative since the process started (the page turns them
//! into rates from one poll to the next); latency percentiles are estimated
//! from the flow histograms' buckets the way PromQL's `histogram_quantile`
//! does (linear within the bucket), over the process's life. They are read
//! from the same metrics `/metrics` exports, so the page and a Prometheus
//! dashboard cannot disagree.

use std::collections::BTreeMap;

use serde_json::json;

/// Flows whose latency the page charts, in the order it draws them.
pub const FLOWS: [&str; 4] = ["freeze", "receive", "unfreeze", "other"];

/// What one flow's metrics say.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FlowSummary {
    pub answered: u64,
    pub approved: u64,
    /// (upper bound in seconds, cumulative count), `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
}

/// The figures of a metrics text the page needs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TrafficSummary {
    pub flows: BTreeMap<String, FlowSummary>,
    /// Answers to wallets by response code, every flow together.
    pub codes: BTreeMap<String, u64>,
}

/// Reads the flow outcomes and flow latency histograms out of an
/// OpenMetrics text written by [`crate::metrics::Metrics::encode`].
pub fn summarize(metrics_text: &str) -> TrafficSummary {
    let mut summary = TrafficSummary::default();
    for line in metrics_text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        let labels = labels_of(labels.trim_end_matches('}'));
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        // Counts are whole numbers written as such or as `1.0`.
        let count = value as u64;
        match name {
            "switchboard_flow_outcomes_total" => {
                let (Some(flow), Some(rc)) = (labels.get("flow"), labels.get("rc")) else {
                    continue;
                };
                let f = summary.flows.entry(flow.to_string()).or_default();
                f.answered += count;
                if *rc == "00" {
                    f.approved += count;
                }
                *summary.codes.entry(rc.to_string()).or_default() += count;
            }
            "switchboard_flow_duration_seconds_bucket" => {
                let (Some(flow), Some(le)) = (labels.get("flow"), labels.get("le")) else {
                    continue;
                };
                let bound = if *le == "+Inf" {
                    f64::INFINITY
                } else {
                    match le.parse() {
                        Ok(b) => b,
                        Err(_) => continue,
                    }
                };
                let f = summary.flows.entry(flow.to_string()).or_default();
                f.buckets.push((bound, count));
            }
            _ => {}
        }
    }
    for f in summary.flows.values_mut() {
        f.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    summary
}

/// `k="v",k2="v2"`: label values here never hold a quote or a comma
/// (the metrics make them printable and quote-free).
fn labels_of(text: &str) -> BTreeMap<&str, &str> {
    text.split("\",")
        .filter_map(|pair| {
            let (k, v) = pair.split_once("=\"")?;
            Some((k, v.trim_end_matches('"')))
        })
        .collect()
}

/// The `q` quantile (0..1) of cumulative buckets, in seconds, interpolated
/// linearly within its bucket; `None` with no observation. A quantile in the
/// `+Inf` bucket is reported as the largest finite bound.
pub fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0_f64, 0_u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = (count - lower.1) as f64;
            if in_bucket == 0.0 {
                return Some(bound);
            }
            return Some(lower.0 + (bound - lower.0) * (rank - lower.1 as f64) / in_bucket);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

impl TrafficSummary {
    /// The JSON of the traffic part of `/api/status`.
    pub fn to_json(&self) -> serde_json::Value {
        let millis = |s: Option<f64>| s.map(|s| (s * 1_000_000.0).round() / 1_000.0);
        let flows: serde_json::Map<String, serde_json::Value> = FLOWS
            .iter()
            .map(|&name| {
                let f = self.flows.get(name).cloned().unwrap_or_default();
                (
                    name.to_string(),
                    json!({
                        "answered": f.answered,
                        "approved": f.approved,
                        "p50_ms": millis(quantile(&f.buckets, 0.50)),
                        "p99_ms": millis(quantile(&f.buckets, 0.99)),
                    }),
                )
            })
            .collect();
        let answered: u64 = self.flows.values().map(|f| f.answered).sum();
        let approved: u64 = self.flows.values().map(|f| f.approved).sum();
        json!({
            "answered": answered,
            "approved": approved,
            "codes": self.codes,
            "flows": flows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE switchboard_flow_outcomes counter
switchboard_flow_outcomes_total{flow=\"freeze\",rc=\"00\"} 3
switchboard_flow_outcomes_total{flow=\"freeze\",rc=\"51\"} 1
switchboard_flow_outcomes_total{flow=\"receive\",rc=\"00\"} 2
switchboard_flow_duration_seconds_bucket{le=\"0.001\",flow=\"freeze\"} 0
switchboard_flow_duration_seconds_bucket{le=\"0.002\",flow=\"freeze\"} 2
switchboard_flow_duration_seconds_bucket{le=\"0.005\",flow=\"freeze\"} 4
switchboard_flow_duration_seconds_bucket{le=\"+Inf\",flow=\"freeze\"} 4
# EOF
";

    #[test]
    fn flows_codes_and_percentiles_come_from_the_metrics() {
        let s = summarize(TEXT);
        assert_eq!(s.codes["00"], 5);
        assert_eq!(s.codes["51"], 1);
        let freeze = &s.flows["freeze"];
        assert_eq!((freeze.answered, freeze.approved), (4, 3));
        // Rank 2 of 4 is the top of the (1 ms, 2 ms] bucket.
        assert_eq!(quantile(&freeze.buckets, 0.5), Some(0.002));
        let p99 = quantile(&freeze.buckets, 0.99).unwrap();
        assert!(p99 > 0.004 && p99 <= 0.005, "{p99}");
        let json = s.to_json();
        assert_eq!(json["answered"], 6);
        assert_eq!(json["approved"], 5);
        assert_eq!(json["flows"]["freeze"]["p50_ms"], 2.0);
        assert_eq!(json["flows"]["other"]["p50_ms"], serde_json::Value::Null);
    }

    #[test]
    fn quantiles_of_nothing_and_of_the_overflow_bucket() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[(0.1, 0), (f64::INFINITY, 0)], 0.5), None);
        assert_eq!(quantile(&[(0.1, 0), (f64::INFINITY, 3)], 0.5), Some(0.1));
    }
}

//! The picture of a load run (`walletsim load --report FILE.svg`), drawn
//! from its [`LoadReport`]: throughput (offered and answered per second)
//! and latency percentiles (p50, p90, p99, max) second by second, and the
//! latency distribution of the whole run.
//!
//! SVG only: plotters writes text as SVG `<text>` elements for the viewer
//! to render, so drawing needs no font files and no system library. A
//! bitmap would need a font embedded in the binary and an image encoder.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::load::{LatencyBucket, LoadReport, Percentiles};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 1100;
const FONT: &str = "sans-serif";

/// Every line of the picture: its label in the legend and its colour.
pub const SERIES: [(&str, RGBColor); 6] = [
    ("offered", RGBColor(0xBB, 0xBB, 0xBB)),
    ("answered", RGBColor(0x1F, 0x77, 0xB4)),
    ("p50", RGBColor(0x2C, 0xA0, 0x2C)),
    ("p90", RGBColor(0xFF, 0x7F, 0x0E)),
    ("p99", RGBColor(0xD6, 0x27, 0x28)),
    ("max", RGBColor(0x94, 0x67, 0xBD)),
];

const BARS: RGBColor = RGBColor(0x1F, 0x77, 0xB4);

/// The colour of the line labelled `label`, as the SVG writes it (`#RRGGBB`).
pub fn series_colour(label: &str) -> Option<String> {
    SERIES
        .iter()
        .find(|(l, _)| *l == label)
        .map(|(_, c)| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2))
}

fn colour(label: &str) -> RGBColor {
    SERIES
        .iter()
        .find(|(l, _)| *l == label)
        .map_or(BLACK, |(_, c)| *c)
}

/// Writes the picture of `report` to `path`, which must end in `.svg`.
pub fn write(report: &LoadReport, path: &Path) -> Result<(), String> {
    let is_svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if !is_svg {
        return Err(format!(
            "--report {}: the report is drawn as SVG only; name it FILE.svg",
            path.display()
        ));
    }
    std::fs::write(path, svg(report)?).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The picture of `report` as an SVG document.
pub fn svg(report: &LoadReport) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(text)?;
        let title = format!(
            "{} to {} at {}/s for {:.1} s",
            report.kind, report.target, report.rate_target_per_s, report.duration_s
        );
        let root = root.titled(&title, (FONT, 24)).map_err(text)?;
        let panels = root.split_evenly((3, 1));
        throughput(&panels[0], report)?;
        latency_over_time(&panels[1], report)?;
        distribution(&panels[2], report)?;
        root.present().map_err(text)?;
    }
    Ok(out)
}

fn text(e: impl std::fmt::Display) -> String {
    format!("drawing the report: {e}")
}

/// The x of second `i`: its middle.
fn x_of(i: usize) -> f64 {
    i as f64 + 0.5
}

fn seconds_axis(report: &LoadReport) -> std::ops::Range<f64> {
    0.0..report.per_second.len().max(1) as f64
}

fn throughput(area: &DrawingArea<SVGBackend, Shift>, report: &LoadReport) -> Result<(), String> {
    let top = report
        .per_second
        .iter()
        .map(|s| s.offered.max(s.answered))
        .max()
        .unwrap_or(0)
        .max(1) as f64
        // Room above the lines for the legend.
        * 1.3;
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput", (FONT, 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(seconds_axis(report), 0.0..top)
        .map_err(text)?;
    chart
        .configure_mesh()
        .x_desc("seconds from the start")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("requests per second")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(text)?;
    type Count = fn(&crate::load::Second) -> u64;
    let counts: [(&str, Count); 2] = [("offered", |s| s.offered), ("answered", |s| s.answered)];
    for (label, count) in counts {
        let points = report
            .per_second
            .iter()
            .enumerate()
            .map(|(i, s)| (x_of(i), count(s) as f64));
        line(&mut chart, label, points)?;
    }
    legend(&mut chart)
}

fn latency_over_time(
    area: &DrawingArea<SVGBackend, Shift>,
    report: &LoadReport,
) -> Result<(), String> {
    let known: Vec<(usize, Percentiles)> = report
        .per_second
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.latency_us.map(|p| (i, p)))
        .collect();
    let low = known.iter().map(|(_, p)| p.p50).min().unwrap_or(100);
    let high = known.iter().map(|(_, p)| p.max).max().unwrap_or(1_000_000);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Latency by the second its requests finished (from when each was due)",
            (FONT, 18),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(
            seconds_axis(report),
            headroom(ms_range(low, high)).log_scale(),
        )
        .map_err(text)?;
    chart
        .configure_mesh()
        .x_desc("seconds from the start")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("latency, ms")
        .y_labels(12)
        .y_label_formatter(&|v| ms_text(*v))
        .draw()
        .map_err(text)?;
    type Pick = fn(&Percentiles) -> u64;
    let picks: [(&str, Pick); 4] = [
        ("p50", |p| p.p50),
        ("p90", |p| p.p90),
        ("p99", |p| p.p99),
        ("max", |p| p.max),
    ];
    for (label, pick) in picks {
        let points = known
            .iter()
            .map(|(i, p)| (x_of(*i), pick(p).max(1) as f64 / 1000.0));
        line(&mut chart, label, points)?;
    }
    legend(&mut chart)
}

fn distribution(area: &DrawingArea<SVGBackend, Shift>, report: &LoadReport) -> Result<(), String> {
    let buckets = &report.latency_distribution;
    let low = buckets.first().map_or(100, |b| b.up_to_us / 2);
    let high = buckets.last().map_or(1_000_000, |b| b.up_to_us);
    let top = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1) as f64 * 1.1;
    let caption = format!(
        "Latency of every request: p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
        ms_text(report.latency_us_p50 as f64 / 1000.0),
        ms_text(report.latency_us_p90 as f64 / 1000.0),
        ms_text(report.latency_us_p99 as f64 / 1000.0),
        ms_text(report.latency_us_p999 as f64 / 1000.0),
        ms_text(report.latency_us_max as f64 / 1000.0),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(ms_range(low, high).log_scale(), 0.0..top)
        .map_err(text)?;
    chart
        .configure_mesh()
        .x_desc("latency, ms")
        .x_labels(16)
        .y_desc("requests")
        .x_label_formatter(&|v| ms_text(*v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(text)?;
    chart
        .draw_series(bars(buckets).map(|(from, to, count)| {
            Rectangle::new([(from, 0.0), (to, count)], BARS.mix(0.7).filled())
        }))
        .map_err(text)?;
    Ok(())
}

/// Each bucket as a bar over its latencies, in ms: from the previous
/// bucket's upper bound (for the first, as far below as the next is above).
fn bars(buckets: &[LatencyBucket]) -> impl Iterator<Item = (f64, f64, f64)> + '_ {
    buckets.iter().enumerate().map(|(i, b)| {
        let to = b.up_to_us.max(1) as f64;
        let from = match i {
            0 => buckets
                .get(1)
                .map_or(to / 2.0, |next| to * to / next.up_to_us.max(1) as f64),
            _ => buckets[i - 1].up_to_us.max(1) as f64,
        };
        (from / 1000.0, to / 1000.0, b.count as f64)
    })
}

/// A range of ms around latencies from `low_us` to `high_us`, with room
/// above and below (a log scale needs it positive and not empty).
fn ms_range(low_us: u64, high_us: u64) -> std::ops::Range<f64> {
    let low = low_us.max(1) as f64 / 1000.0;
    let high = (high_us.max(low_us).max(1) as f64 / 1000.0).max(low * 2.0);
    low / 1.5..high * 1.5
}

/// `range` with room above it for the legend of four lines, on a log scale.
fn headroom(range: std::ops::Range<f64>) -> std::ops::Range<f64> {
    let decades = (range.end / range.start).log10();
    range.start..range.end * 10f64.powf(decades * 0.4)
}

/// Milliseconds as short as they read well: 0.05, 2.5, 40, 1200.
fn ms_text(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        let text = format!("{ms:.1}");
        text.trim_end_matches(".0").to_string()
    } else {
        let text = format!("{ms:.3}");
        text.trim_end_matches('0').to_string()
    }
}

type Chart<'a, Y> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>;

fn line<'a, Y>(
    chart: &mut Chart<'a, Y>,
    label: &str,
    points: impl Iterator<Item = (f64, f64)>,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64>,
{
    let colour = colour(label);
    // Offered is drawn first and wide, so that it shows as a band around
    // the answered line where the two are equal.
    let width = if label == "offered" { 6 } else { 2 };
    chart
        .draw_series(LineSeries::new(points, colour.stroke_width(width)))
        .map_err(text)?
        .label(label)
        // A filled square, not a line, so that the only lines of a colour
        // are its series.
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    Ok(())
}

fn legend<'a, Y>(chart: &mut Chart<'a, Y>) -> Result<(), String>
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Second;

    /// A run of `seconds` seconds at 100/s whose answers fall behind in
    /// the middle, with latencies that grow there.
    fn synthetic(seconds: usize) -> LoadReport {
        let per_second: Vec<Second> = (0..seconds)
            .map(|i| {
                let slow = i == seconds / 2;
                Second {
                    offered: 100,
                    answered: if slow { 40 } else { 100 },
                    unanswered: 0,
                    latency_us: Some(Percentiles {
                        p50: 800 + i as u64 * 10,
                        p90: 1_500,
                        p99: if slow { 90_000 } else { 4_000 },
                        max: if slow { 250_000 } else { 9_000 },
                    }),
                }
            })
            .collect();
        LoadReport {
            target: "127.0.0.1:5000".into(),
            kind: "receives through the switch".into(),
            rate_target_per_s: 100,
            duration_s: seconds as f64,
            latency_us_p50: 850,
            latency_us_p90: 1_500,
            latency_us_p99: 30_000,
            latency_us_p999: 200_000,
            latency_us_max: 250_000,
            per_second,
            latency_distribution: vec![
                LatencyBucket {
                    up_to_us: 724,
                    count: 120,
                },
                LatencyBucket {
                    up_to_us: 861,
                    count: 300,
                },
                LatencyBucket {
                    up_to_us: 1024,
                    count: 200,
                },
                LatencyBucket {
                    up_to_us: 262_144,
                    count: 3,
                },
            ],
            ..LoadReport::default()
        }
    }

    /// The points of the one polyline drawn in `label`'s colour.
    fn points_of(doc: &roxmltree::Document, label: &str) -> Vec<(f64, f64)> {
        let colour = series_colour(label).unwrap();
        let lines: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(&colour))
            .collect();
        assert_eq!(lines.len(), 1, "{label}: one line of {colour}");
        lines[0]
            .attribute("points")
            .unwrap()
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    fn texts(doc: &roxmltree::Document) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_string()))
            .collect()
    }

    #[test]
    fn every_series_has_a_point_per_second_and_the_axes_are_labelled() {
        let report = synthetic(12);
        let svg = svg(&report).unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        for (label, _) in SERIES {
            assert_eq!(points_of(&doc, label).len(), 12, "{label}");
        }
        let texts = texts(&doc);
        for expected in [
            "seconds from the start",
            "requests per second",
            "latency, ms",
            "requests",
            "offered",
            "answered",
            "p50",
            "p99",
            "max",
        ] {
            assert!(texts.iter().any(|t| t == expected), "{expected}: {texts:?}");
        }
        assert!(texts.iter().any(|t| t.starts_with("Throughput")));
        assert!(texts.iter().any(|t| t.contains("p99 30 ms")), "{texts:?}");
        // One bar per bucket of the distribution.
        let bars = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("opacity") == Some("0.7"))
            .count();
        assert_eq!(bars, 4);
    }

    #[test]
    fn the_slow_second_is_where_answered_dips_and_p99_peaks() {
        let svg = svg(&synthetic(9)).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        // SVG y grows downwards: the dip is the largest y, the peak the smallest.
        let ys = |label| -> Vec<f64> { points_of(&doc, label).iter().map(|p| p.1).collect() };
        let answered = ys("answered");
        let dip = answered.iter().copied().fold(f64::MIN, f64::max);
        assert_eq!(answered.iter().position(|y| *y == dip), Some(4));
        let p99 = ys("p99");
        let peak = p99.iter().copied().fold(f64::MAX, f64::min);
        assert_eq!(p99.iter().position(|y| *y == peak), Some(4));
        // The offered line is flat: 100 every second.
        let offered = points_of(&doc, "offered");
        assert!(offered.iter().all(|p| p.1 == offered[0].1));
    }

    #[test]
    fn seconds_without_answers_leave_latency_out_and_an_empty_run_still_draws() {
        let mut report = synthetic(5);
        report.per_second[2].latency_us = None;
        report.per_second[2].answered = 0;
        let doc_text = svg(&report).unwrap();
        let doc = roxmltree::Document::parse(&doc_text).unwrap();
        assert_eq!(points_of(&doc, "answered").len(), 5);
        assert_eq!(points_of(&doc, "p50").len(), 4);

        let empty = LoadReport::default();
        roxmltree::Document::parse(&svg(&empty).unwrap()).expect("an empty run's SVG");
    }

    #[test]
    fn only_svg_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("x.png");
        let e = write(&synthetic(3), &png).unwrap_err();
        assert!(e.contains("SVG only"), "{e}");
        assert!(!png.exists());
        let path = dir.path().join("x.svg");
        write(&synthetic(3), &path).unwrap();
        roxmltree::Document::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    }

    #[test]
    fn milliseconds_read_short() {
        assert_eq!(ms_text(0.05), "0.05");
        assert_eq!(ms_text(2.5), "2.5");
        assert_eq!(ms_text(40.0), "40");
        assert_eq!(ms_text(1234.4), "1234");
    }
}

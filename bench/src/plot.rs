//! A hand-written SVG of throughput and latency (p50, p99) per time bucket.

use std::fmt::Write as _;

use crate::stats::Bucket;

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 60.0;

/// A time window to shade in both panels (e.g. a fault), with its label.
pub struct Shade {
    pub start_s: f64,
    pub end_s: f64,
    pub label: String,
}

/// What the axes say.
pub struct Labels<'a> {
    pub title: &'a str,
    /// The throughput panel's unit, e.g. `workflows/s`.
    pub rate: &'a str,
    /// The time axis, e.g. `seconds since warm-up ended`.
    pub time: &'a str,
}

/// The SVG document for `buckets`, with `shades` drawn behind the lines.
pub fn svg(labels: &Labels<'_>, buckets: &[Bucket], shades: &[Shade]) -> String {
    let height = TOP + 2.0 * PANEL_HEIGHT + GAP + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="22" font-size="15">{}</text>"#,
        escape(labels.title)
    );
    let end_s = buckets
        .last()
        .map(|b| b.start_s + 1.0)
        .unwrap_or(1.0)
        .max(shades.iter().map(|s| s.end_s).fold(0.0, f64::max));
    for top in [TOP, TOP + PANEL_HEIGHT + GAP] {
        shade(&mut out, top, end_s, shades);
    }
    let throughput: Vec<(f64, f64)> = buckets
        .iter()
        .map(|b| (b.start_s, b.throughput_per_s))
        .collect();
    panel(
        &mut out,
        TOP,
        labels.rate,
        end_s,
        &[("#1f77b4", "throughput", &throughput)],
    );
    let p50: Vec<(f64, f64)> = buckets
        .iter()
        .filter(|b| b.completed > 0)
        .map(|b| (b.start_s, b.p50_ms))
        .collect();
    let p99: Vec<(f64, f64)> = buckets
        .iter()
        .filter(|b| b.completed > 0)
        .map(|b| (b.start_s, b.p99_ms))
        .collect();
    panel(
        &mut out,
        TOP + PANEL_HEIGHT + GAP,
        "latency ms",
        end_s,
        &[("#2ca02c", "p50", &p50), ("#d62728", "p99", &p99)],
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        height - 8.0,
        escape(labels.time)
    );
    out.push_str("</svg>\n");
    out
}

/// A line: its colour, its legend name and its (seconds, value) points.
type Series<'a> = (&'a str, &'a str, &'a [(f64, f64)]);

/// Grey bands for `shades` over a panel, each labelled at its top.
fn shade(out: &mut String, top: f64, end_s: f64, shades: &[Shade]) {
    let plot_width = WIDTH - LEFT - RIGHT;
    let x = |s: f64| LEFT + s.clamp(0.0, end_s) / end_s * plot_width;
    for band in shades {
        let _ = writeln!(
            out,
            r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{PANEL_HEIGHT}" fill="#f4c7c3" opacity="0.5"/><text x="{:.1}" y="{:.1}" font-size="9" fill="#a33">{}</text>"##,
            x(band.start_s),
            (x(band.end_s) - x(band.start_s)).max(1.0),
            x(band.start_s) + 2.0,
            top + PANEL_HEIGHT - 4.0,
            escape(&band.label)
        );
    }
}

/// One chart: axes, a y scale from 0 to a round maximum, and a polyline per series.
fn panel(out: &mut String, top: f64, y_label: &str, end_s: f64, series: &[Series<'_>]) {
    let plot_width = WIDTH - LEFT - RIGHT;
    let max_y = round_up(
        series
            .iter()
            .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let x = |s: f64| LEFT + s / end_s * plot_width;
    let y = |v: f64| top + PANEL_HEIGHT - v / max_y * PANEL_HEIGHT;
    let _ = writeln!(
        out,
        "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{plot_width}\" height=\"{PANEL_HEIGHT}\" fill=\"none\" stroke=\"#888\"/>"
    );
    for step in 0..=4 {
        let value = max_y * step as f64 / 4.0;
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_width,
            LEFT - 6.0,
            y(value) + 4.0,
            format_value(value),
            y0 = y(value),
        );
    }
    let ticks = 10.0_f64.min(end_s.ceil());
    for step in 0..=(ticks as u32) {
        let s = end_s * step as f64 / ticks;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(s),
            top + PANEL_HEIGHT + 16.0,
            format_value(s)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">{y_label}</text>"#,
        top + PANEL_HEIGHT / 2.0,
        top + PANEL_HEIGHT / 2.0
    );
    for (index, (color, name, points)) in series.iter().enumerate() {
        let coordinates: Vec<String> = points
            .iter()
            .map(|(s, v)| format!("{:.1},{:.1}", x(s + 0.5), y(*v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            coordinates.join(" ")
        );
        let legend_x = LEFT + 10.0 + index as f64 * 80.0;
        let _ = writeln!(
            out,
            r#"<rect x="{legend_x}" y="{:.1}" width="12" height="3" fill="{color}"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            top + 12.0,
            legend_x + 16.0,
            top + 16.0
        );
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `value` (1 for nothing).
fn round_up(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn format_value(value: f64) -> String {
    if value >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_round_up_to_one_two_or_five() {
        assert_eq!(round_up(0.0), 1.0);
        assert_eq!(round_up(7.0), 10.0);
        assert_eq!(round_up(1800.0), 2000.0);
        assert_eq!(round_up(31.0), 50.0);
        assert_eq!(round_up(200.0), 200.0);
    }

    #[test]
    fn svg_has_a_line_per_series() {
        let buckets = [
            Bucket {
                start_s: 0.0,
                completed: 10,
                throughput_per_s: 10.0,
                p50_ms: 3.0,
                p99_ms: 9.0,
            },
            Bucket {
                start_s: 1.0,
                completed: 12,
                throughput_per_s: 12.0,
                p50_ms: 4.0,
                p99_ms: 8.0,
            },
        ];
        let labels = Labels {
            title: "hello <keel>",
            rate: "workflows/s",
            time: "seconds",
        };
        let svg = svg(&labels, &buckets, &[]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("hello &lt;keel&gt;"));
        assert!(!svg.contains("#f4c7c3"));
        let shaded = svg_with_fault(&labels, &buckets);
        assert_eq!(shaded.matches("#f4c7c3").count(), 2, "one band per panel");
        assert!(shaded.contains("kill n2"));
    }

    fn svg_with_fault(labels: &Labels<'_>, buckets: &[Bucket]) -> String {
        let fault = Shade {
            start_s: 0.5,
            end_s: 1.5,
            label: "kill n2".into(),
        };
        svg(labels, buckets, &[fault])
    }
}

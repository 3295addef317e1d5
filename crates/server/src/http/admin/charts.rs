//! Charts as inline SVG, drawn on the server: numbers in, markup out, no script and nothing
//! fetched. Each chart is an image to assistive technology (`role="img"`, a `<title>`, an
//! `aria-label`) with a `<desc>` that says its numbers in words, and [`data_table`] gives the
//! same numbers as a table for those who cannot see the picture.

use super::html::esc;
use std::fmt::Write;

/// The drawing's coordinate system; the SVG scales to its container's width. Narrow enough
/// that its text stays readable on a phone (about 9 px there).
const WIDTH: f64 = 480.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
/// Height of the plot area; the legend's rows are added above it.
const PLOT_H: f64 = 170.0;
const BOTTOM: f64 = 30.0;
/// The font size of every label, and the average advance of one of its characters.
const FONT: f64 = 13.0;
const CHAR_W: f64 = 7.2;
/// How many labels the time axis carries at most.
const X_LABELS: usize = 6;
const AXIS: &str = "#5b6677";
const GRID: &str = "#e6e9ee";
const TEXT: &str = "#1d2430";

/// Where the plot area starts, below the legend.
#[derive(Clone, Copy)]
struct Frame {
    top: f64,
}

impl Frame {
    fn bottom(self) -> f64 {
        self.top + PLOT_H
    }
    fn height(self) -> f64 {
        self.bottom() + BOTTOM
    }
}

/// What an empty line chart says.
pub const NO_DATA: &str = "No data in this range";

/// One line of a [`LineChart`]: a value per bucket, None where there is nothing to show.
pub struct Line<'a> {
    pub label: &'a str,
    pub color: &'a str,
    /// An SVG `stroke-dasharray`, so that lines differ by more than their colour.
    pub dash: Option<&'a str>,
    pub values: Vec<Option<f64>>,
}

/// Lines over time buckets.
pub struct LineChart<'a> {
    /// The `id` of the `<svg>`; also prefixes the ids inside it.
    pub id: &'a str,
    pub title: &'a str,
    /// What the values count, for the description: `per 30 minutes`, `ms`.
    pub unit: &'a str,
    /// Whether a line's values add up to something meaningful (counts do, latencies not).
    pub totals: bool,
    /// One label per bucket (short: the axis uses some of them).
    pub x_labels: &'a [String],
    pub lines: &'a [Line<'a>],
}

/// One bar of a [`bar_chart`].
pub struct Bar<'a> {
    pub label: &'a str,
    pub color: &'a str,
    pub value: u64,
}

/// A round number at least `max`, for the top of the value axis: 1, 2 or 5 times a power of
/// ten, and at least 5, so that the ticks of [`divisions`] fall on whole numbers.
pub fn nice_ceiling(max: f64) -> f64 {
    if !(max.is_finite() && max > 5.0) {
        return 5.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        let candidate = step * magnitude;
        if candidate >= max {
            return candidate;
        }
    }
    10.0 * magnitude
}

/// How many steps the value axis of a [`nice_ceiling`] takes: 2 is cut in 4, 1 and 5 in 5.
fn divisions(top: f64) -> u32 {
    let leading = top / 10f64.powf(top.log10().floor());
    if (leading - 2.0).abs() < 0.01 { 4 } else { 5 }
}

/// A number as the axis and the description write it: whole numbers without decimals.
pub fn number(value: f64) -> String {
    if (value - value.round()).abs() < 0.05 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn svg_open(out: &mut String, id: &str, title: &str, desc: &str, frame: Frame) {
    let _ = write!(
        out,
        r#"<svg id="{id}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {h}" role="img" aria-label="{title}" aria-describedby="{id}-desc" font-family="system-ui, sans-serif"><title id="{id}-title">{title}</title><desc id="{id}-desc">{desc}</desc>"#,
        id = esc(id),
        title = esc(title),
        desc = esc(desc),
        h = frame.height(),
    );
}

/// Horizontal grid lines with their values, and the two axes.
fn value_axis(out: &mut String, frame: Frame, top: f64) {
    let steps = divisions(top);
    for i in 0..=steps {
        let share = f64::from(i) / f64::from(steps);
        let y = frame.bottom() - PLOT_H * share;
        let _ = write!(
            out,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="{GRID}"/><text x="{tx}" y="{ty:.1}" text-anchor="end" font-size="{FONT}" fill="{AXIS}">{label}</text>"#,
            x2 = WIDTH - RIGHT,
            tx = LEFT - 5.0,
            ty = y + 4.5,
            label = esc(&number(top * share)),
        );
    }
    let _ = write!(
        out,
        r#"<line x1="{LEFT}" y1="{t}" x2="{LEFT}" y2="{b}" stroke="{AXIS}"/><line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="{AXIS}"/>"#,
        t = frame.top,
        b = frame.bottom(),
        r = WIDTH - RIGHT,
    );
}

/// The buckets whose time the axis writes: evenly spread, no closer than the labels' width
/// allows, the first and the last (the latest) always among them.
fn labelled(n: usize, label_chars: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let room = (WIDTH - LEFT - RIGHT) / (label_chars as f64 * CHAR_W + 12.0);
    let most = (room.floor() as usize).clamp(2, X_LABELS);
    let every = n.div_ceil(most).max(1);
    let mut picks: Vec<usize> = (0..n).step_by(every).collect();
    let last = n - 1;
    match picks.last().copied() {
        Some(p) if p == last => {}
        // Too close to the one before: the latest bucket takes its place.
        Some(p) if last - p < every.div_ceil(2) && picks.len() > 1 => {
            picks.pop();
            picks.push(last);
        }
        _ => picks.push(last),
    }
    picks
}

fn empty_note(out: &mut String, frame: Frame, text: &str) {
    let _ = write!(
        out,
        r#"<text x="{x}" y="{y}" text-anchor="middle" font-size="15" fill="{AXIS}">{text}</text>"#,
        x = LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        y = frame.top + PLOT_H / 2.0,
        text = esc(text),
    );
}

fn has_data(lines: &[Line<'_>]) -> bool {
    lines
        .iter()
        .flat_map(|l| l.values.iter())
        .any(|v| v.is_some_and(|v| v != 0.0))
}

/// What a line chart shows, in words.
fn line_description(chart: &LineChart<'_>) -> String {
    if !has_data(chart.lines) {
        return format!("{NO_DATA}.");
    }
    let mut desc = String::new();
    if let (Some(first), Some(last)) = (chart.x_labels.first(), chart.x_labels.last()) {
        let _ = write!(desc, "From {first} to {last}, {}. ", chart.unit);
    }
    for line in chart.lines {
        let present = line
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i, v)));
        let peak = present
            .clone()
            .fold(None, |best: Option<(usize, f64)>, (i, v)| match best {
                Some((_, b)) if b >= v => best,
                _ => Some((i, v)),
            });
        let _ = write!(desc, "{}: ", line.label);
        match peak {
            Some((i, v)) if v > 0.0 => {
                if chart.totals {
                    let total: f64 = present.map(|(_, v)| v).sum();
                    let _ = write!(desc, "{} in all, ", number(total));
                }
                let at = chart.x_labels.get(i).map(String::as_str).unwrap_or("?");
                let _ = write!(desc, "highest {} at {at}. ", number(v));
            }
            _ => desc.push_str("none. "),
        }
    }
    desc.trim_end().to_owned()
}

/// A line chart over time buckets, with a legend, a value axis from zero, and a time axis.
/// With nothing but zeros and gaps, it says [`NO_DATA`] instead of drawing flat lines.
pub fn line_chart(chart: &LineChart<'_>) -> String {
    // The legend first: a sample of each line's stroke and its name, in as many rows as the
    // width needs; the plot goes below it.
    let mut legend = String::new();
    let (mut x, mut row) = (8.0, 0.0);
    for line in chart.lines {
        let width = 24.0 + CHAR_W * line.label.chars().count() as f64 + 14.0;
        if x > 8.0 && x + width > WIDTH - RIGHT {
            x = 8.0;
            row += 1.0;
        }
        let y = 14.0 + row * 19.0;
        let dash = line
            .dash
            .map(|d| format!(r#" stroke-dasharray="{}""#, esc(d)))
            .unwrap_or_default();
        let _ = write!(
            legend,
            r#"<line x1="{x:.1}" y1="{ly:.1}" x2="{x2:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2.5"{dash}/><text x="{tx:.1}" y="{y:.1}" font-size="{FONT}" fill="{TEXT}">{label}</text>"#,
            ly = y - 4.5,
            x2 = x + 19.0,
            color = esc(line.color),
            tx = x + 24.0,
            label = esc(line.label),
        );
        x += width;
    }
    let rows = if chart.lines.is_empty() {
        0.0
    } else {
        row + 1.0
    };
    let frame = Frame {
        top: 12.0 + rows * 19.0,
    };

    let mut out = String::with_capacity(4096);
    svg_open(
        &mut out,
        chart.id,
        chart.title,
        &line_description(chart),
        frame,
    );
    out.push_str(&legend);

    let max = chart
        .lines
        .iter()
        .flat_map(|l| l.values.iter().flatten())
        .fold(0.0_f64, |m, v| m.max(*v));
    let top = nice_ceiling(max);
    value_axis(&mut out, frame, top);

    let n = chart.x_labels.len().max(1);
    let step = (WIDTH - LEFT - RIGHT) / n as f64;
    let x_of = |i: usize| LEFT + step * (i as f64 + 0.5);
    let y_of = |v: f64| frame.bottom() - PLOT_H * (v / top);

    let label_chars = chart
        .x_labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    for i in labelled(chart.x_labels.len(), label_chars) {
        let Some(label) = chart.x_labels.get(i) else {
            continue;
        };
        // Centred under its tick, unless that would cut it at the drawing's edge.
        let x = x_of(i);
        let half = CHAR_W * label.chars().count() as f64 / 2.0;
        let (tx, anchor) = if x + half > WIDTH - 1.0 {
            (WIDTH - 1.0, "end")
        } else {
            (x, "middle")
        };
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="{b}" x2="{x:.1}" y2="{b4}" stroke="{AXIS}"/><text x="{tx:.1}" y="{ty}" text-anchor="{anchor}" font-size="{FONT}" fill="{AXIS}">{label}</text>"#,
            b = frame.bottom(),
            b4 = frame.bottom() + 4.0,
            ty = frame.bottom() + 19.0,
            label = esc(label),
        );
    }

    if !has_data(chart.lines) {
        empty_note(&mut out, frame, NO_DATA);
        out.push_str("</svg>");
        return out;
    }

    for line in chart.lines {
        // A gap (None) lifts the pen; a lone point still shows, as a dot.
        let mut d = String::new();
        let mut pen_down = false;
        let mut dots = String::new();
        for (i, value) in line.values.iter().enumerate() {
            match value {
                Some(v) => {
                    let _ = write!(
                        d,
                        "{}{:.1} {:.1} ",
                        if pen_down { "L" } else { "M" },
                        x_of(i),
                        y_of(*v)
                    );
                    let lone =
                        !pen_down && line.values.get(i + 1).is_none_or(|next| next.is_none());
                    if lone {
                        let _ = write!(
                            dots,
                            r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"#,
                            x_of(i),
                            y_of(*v),
                            esc(line.color)
                        );
                    }
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let dash = line
            .dash
            .map(|d| format!(r#" stroke-dasharray="{}""#, esc(d)))
            .unwrap_or_default();
        let _ = write!(
            out,
            r#"<path d="{}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round"{dash}><title>{}</title></path>{dots}"#,
            d.trim_end(),
            esc(line.color),
            esc(line.label),
        );
    }
    out.push_str("</svg>");
    out
}

/// A bar chart of counts by category, each bar labelled with its count and its name.
pub fn bar_chart(id: &str, title: &str, empty_text: &str, bars: &[Bar<'_>]) -> String {
    let total: u64 = bars.iter().map(|b| b.value).sum();
    let desc = if total == 0 {
        format!("{empty_text}.")
    } else {
        bars.iter()
            .map(|b| format!("{}: {}", b.label, b.value))
            .collect::<Vec<_>>()
            .join("; ")
            + "."
    };
    let frame = Frame { top: 22.0 };
    let mut out = String::with_capacity(2048);
    svg_open(&mut out, id, title, &desc, frame);
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0) as f64;
    let top = nice_ceiling(max);
    value_axis(&mut out, frame, top);
    if total == 0 {
        empty_note(&mut out, frame, empty_text);
        out.push_str("</svg>");
        return out;
    }
    let slot = (WIDTH - LEFT - RIGHT) / bars.len().max(1) as f64;
    let width = (slot * 0.6).min(70.0);
    for (i, bar) in bars.iter().enumerate() {
        let h = PLOT_H * (bar.value as f64 / top);
        let x = LEFT + slot * i as f64 + (slot - width) / 2.0;
        let y = frame.bottom() - h;
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{h:.1}" fill="{color}"><title>{label}: {value}</title></rect><text x="{cx:.1}" y="{vy:.1}" text-anchor="middle" font-size="{FONT}" font-weight="600" fill="{TEXT}">{value}</text><text x="{cx:.1}" y="{ly}" text-anchor="middle" font-size="{FONT}" fill="{TEXT}">{label}</text>"#,
            color = esc(bar.color),
            label = esc(bar.label),
            value = bar.value,
            cx = x + width / 2.0,
            vy = y - 5.0,
            ly = frame.bottom() + 19.0,
        );
    }
    out.push_str("</svg>");
    out
}

/// The numbers of a line chart as a table, hidden from sight but not from screen readers (in
/// a clipped box: a table itself grows to fit its cells whatever its width).
/// Buckets where every line is empty or zero are left out (the caption says so).
pub fn data_table(chart: &LineChart<'_>, full_labels: &[String]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<div class="vh"><table id="{}-data"><caption>{} ({}; buckets with nothing are left out)</caption><thead><tr><th scope="col">From</th>"#,
        esc(chart.id),
        esc(chart.title),
        esc(chart.unit),
    );
    for line in chart.lines {
        let _ = write!(out, r#"<th scope="col">{}</th>"#, esc(line.label));
    }
    out.push_str("</tr></thead><tbody>");
    let mut rows = 0;
    for (i, label) in full_labels.iter().enumerate() {
        let values: Vec<Option<f64>> = chart
            .lines
            .iter()
            .map(|l| l.values.get(i).copied().flatten())
            .collect();
        if !values.iter().any(|v| v.is_some_and(|v| v != 0.0)) {
            continue;
        }
        rows += 1;
        let _ = write!(out, r#"<tr><th scope="row">{}</th>"#, esc(label));
        for v in values {
            let _ = write!(
                out,
                "<td>{}</td>",
                v.map(number).unwrap_or_else(|| "–".to_owned())
            );
        }
        out.push_str("</tr>");
    }
    if rows == 0 {
        let _ = write!(
            out,
            r#"<tr><td colspan="{}">{NO_DATA}</td></tr>"#,
            chart.lines.len() + 1
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("12:{i:02}")).collect()
    }

    fn chart<'a>(x: &'a [String], lines: &'a [Line<'a>]) -> LineChart<'a> {
        LineChart {
            id: "chart-activity",
            title: "Sign-ins & tokens",
            unit: "per minute",
            totals: true,
            x_labels: x,
            lines,
        }
    }

    #[test]
    fn a_line_chart_is_an_accessible_image_with_axes_and_a_legend() {
        let x = labels(10);
        let lines = [
            Line {
                label: "Sign-ins",
                color: "#1b5fbf",
                dash: None,
                values: vec![
                    Some(0.0),
                    Some(3.0),
                    Some(1.0),
                    Some(0.0),
                    Some(0.0),
                    Some(0.0),
                    Some(0.0),
                    Some(0.0),
                    Some(0.0),
                    Some(7.0),
                ],
            },
            Line {
                label: "Tokens",
                color: "#14532d",
                dash: Some("6 3"),
                values: vec![Some(0.0); 10],
            },
        ];
        let svg = line_chart(&chart(&x, &lines));
        assert!(svg.starts_with(r#"<svg id="chart-activity" "#), "{svg}");
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains(r#"role="img""#));
        assert!(svg.contains(r#"aria-label="Sign-ins &amp; tokens""#));
        assert!(svg.contains("<title id=\"chart-activity-title\">Sign-ins &amp; tokens</title>"));
        assert!(svg.contains(r#"aria-describedby="chart-activity-desc""#));
        // The description says the numbers.
        assert!(
            svg.contains("Sign-ins: 11 in all, highest 7 at 12:09."),
            "{svg}"
        );
        assert!(svg.contains("Tokens: none."));
        // The value axis goes from 0 to a round 10; the time axis names the first and last
        // buckets.
        assert!(svg.contains(">0</text>"));
        assert!(svg.contains(">10</text>"));
        assert!(svg.contains(">12:00</text>"));
        assert!(svg.contains(">12:09</text>"));
        // Legend and lines.
        assert!(svg.contains(">Sign-ins</text>"));
        assert!(svg.contains(r#"stroke-dasharray="6 3""#));
        assert_eq!(svg.matches("<path ").count(), 2);
        assert!(!svg.contains(NO_DATA));
    }

    #[test]
    fn an_empty_line_chart_says_so() {
        let x = labels(4);
        let lines = [Line {
            label: "Sign-ins",
            color: "#1b5fbf",
            dash: None,
            values: vec![None, Some(0.0), None, None],
        }];
        let svg = line_chart(&chart(&x, &lines));
        assert!(svg.contains(&format!(">{NO_DATA}</text>")), "{svg}");
        assert!(svg.contains(&format!(
            "<desc id=\"chart-activity-desc\">{NO_DATA}.</desc>"
        )));
        assert!(!svg.contains("<path "));
        // The axes are still drawn.
        assert!(svg.contains(">12:00</text>"));
        let none = line_chart(&chart(&[], &[]));
        assert!(none.contains(NO_DATA));
    }

    #[test]
    fn gaps_lift_the_pen_and_lone_points_are_dots() {
        let x = labels(5);
        let lines = [Line {
            label: "Average",
            color: "#333",
            dash: None,
            values: vec![Some(10.0), Some(20.0), None, Some(5.0), None],
        }];
        let svg = line_chart(&LineChart {
            totals: false,
            unit: "ms",
            ..chart(&x, &lines)
        });
        let d = svg
            .split(r#"<path d=""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert_eq!(d.matches('L').count(), 1, "{d}");
        assert_eq!(svg.matches("<circle ").count(), 1);
        // No total for values that do not add up.
        assert!(svg.contains("Average: highest 20 at 12:01."), "{svg}");
        assert!(!svg.contains("in all"));
    }

    #[test]
    fn text_in_charts_is_escaped() {
        let x = vec!["<b>".to_owned()];
        let lines = [Line {
            label: "a<script>\"",
            color: "\"><script>",
            dash: Some("\"/>"),
            values: vec![Some(1.0)],
        }];
        let svg = line_chart(&LineChart {
            id: "x\"y",
            title: "<t>",
            ..chart(&x, &lines)
        });
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(!svg.contains("<b>"));
        assert!(!svg.contains("<t>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains(r#"id="x&quot;y""#));
        let bars = bar_chart(
            "b",
            "<t>",
            "none",
            &[Bar {
                label: "<x>",
                color: "red",
                value: 2,
            }],
        );
        assert!(!bars.contains("<x>") && bars.contains("&lt;x&gt;"));
        let table = data_table(&chart(&x, &lines), &x);
        assert!(!table.contains("<script>") && !table.contains("<b>"));
    }

    #[test]
    fn a_bar_chart_labels_every_bar() {
        let bars = [
            Bar {
                label: "active",
                color: "#2f855a",
                value: 12,
            },
            Bar {
                label: "failing",
                color: "#b7791f",
                value: 0,
            },
            Bar {
                label: "revoked",
                color: "#b42318",
                value: 3,
            },
        ];
        let svg = bar_chart("chart-states", "Grants by state", "No grants yet", &bars);
        assert!(svg.starts_with(r#"<svg id="chart-states" "#));
        assert!(svg.contains(r#"role="img""#));
        assert!(svg.contains("<title id=\"chart-states-title\">Grants by state</title>"));
        assert!(
            svg.contains(
                "<desc id=\"chart-states-desc\">active: 12; failing: 0; revoked: 3.</desc>"
            )
        );
        assert_eq!(svg.matches("<rect ").count(), 3);
        assert!(svg.contains(">active</text>") && svg.contains(">12</text>"));
        assert!(svg.contains(">20</text>"), "axis to a round 20: {svg}");
        let empty = bar_chart("chart-states", "Grants by state", "No grants yet", &[]);
        assert!(empty.contains(">No grants yet</text>"));
        assert!(!empty.contains("<rect "));
    }

    #[test]
    fn the_data_table_has_the_numbers_of_the_buckets_with_any() {
        let x = labels(3);
        let full: Vec<String> = (0..3)
            .map(|i| format!("2025-03-01 12:{i:02} UTC"))
            .collect();
        let lines = [
            Line {
                label: "Refreshes",
                color: "#000",
                dash: None,
                values: vec![Some(2.0), Some(0.0), Some(4.0)],
            },
            Line {
                label: "Average ms",
                color: "#000",
                dash: None,
                values: vec![Some(12.5), None, None],
            },
        ];
        let table = data_table(&chart(&x, &lines), &full);
        assert!(table.starts_with(r#"<div class="vh"><table id="chart-activity-data">"#));
        assert!(table.ends_with("</table></div>"));
        assert!(table.contains(r#"<th scope="col">Refreshes</th>"#));
        assert!(
            table.contains(
                r#"<tr><th scope="row">2025-03-01 12:00 UTC</th><td>2</td><td>12.5</td></tr>"#
            ),
            "{table}"
        );
        assert!(
            table.contains(
                r#"<tr><th scope="row">2025-03-01 12:02 UTC</th><td>4</td><td>–</td></tr>"#
            )
        );
        assert!(!table.contains("12:01 UTC"));
        let empty = data_table(&chart(&x, &[]), &full);
        assert!(empty.contains(NO_DATA));
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 5.0);
        assert_eq!(nice_ceiling(1.0), 5.0);
        assert_eq!(nice_ceiling(5.0), 5.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(nice_ceiling(480.0), 500.0);
        assert_eq!(nice_ceiling(f64::NAN), 5.0);
        assert_eq!(divisions(5.0), 5);
        assert_eq!(divisions(20.0), 4);
        assert_eq!(divisions(100.0), 5);
        assert_eq!(number(3.0), "3");
        assert_eq!(number(2.25), "2.2");
    }

    #[test]
    fn time_labels_include_the_first_and_the_latest_bucket() {
        // `HH:MM`: six fit.
        assert_eq!(labelled(0, 5), Vec::<usize>::new());
        assert_eq!(labelled(1, 5), [0]);
        assert_eq!(labelled(4, 5), [0, 1, 2, 3]);
        assert_eq!(labelled(60, 5), [0, 10, 20, 30, 40, 50, 59]);
        assert_eq!(labelled(48, 5), [0, 8, 16, 24, 32, 40, 47]);
        // `MM-DD HH:MM`: four fit, and the latest.
        assert_eq!(labelled(28, 11), [0, 7, 14, 21, 27]);
    }
}

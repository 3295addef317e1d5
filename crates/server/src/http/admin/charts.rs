//! Charts as inline SVG, drawn on the server: numbers in, markup out, no script and nothing
//! fetched. Each chart is an image to assistive technology (`role="img"`, a `<title>`, an
//! `aria-label`) with a `<desc>` that says its numbers in words, and [`data_table`] gives the
//! same numbers as a table for those who cannot see the picture.

use super::html::esc;
use std::fmt::Write;

/// The drawing's coordinate system; the SVG scales to its container's width. Narrow enough
/// that its text stays readable on a phone (about 12 px at 375 px) and at three charts a row
/// on a wide screen (about 13 px).
const WIDTH: f64 = 400.0;
const LEFT: f64 = 46.0;
const RIGHT: f64 = 12.0;
/// Height of the plot area; the legend's rows and the unit are added above it.
const PLOT_H: f64 = 160.0;
const BOTTOM: f64 = 30.0;
/// The font size of every label, and the advance of one of its characters at most (digits
/// of the common sans-serif fonts are about 0.55 to 0.64 of the size): labels are placed so
/// that they would not touch even at the widest.
const FONT: f64 = 14.0;
const CHAR_W: f64 = 0.64 * FONT;
/// Space kept between two labels of the time axis.
const TICK_GAP: f64 = 10.0;
const AXIS: &str = "#5b6677";
const GRID: &str = "#e6e9ee";
const TEXT: &str = "#1d2430";

/// Where the plot area starts (below the legend) and how much room its labels take below.
#[derive(Clone, Copy)]
struct Frame {
    top: f64,
    below: f64,
}

impl Frame {
    fn bottom(self) -> f64 {
        self.top + PLOT_H
    }
    fn height(self) -> f64 {
        self.bottom() + self.below
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
    /// The value axis's unit, written above it: `per minute`, `ms`.
    pub axis_unit: &'a str,
    /// Whether a line's values add up to something meaningful (counts do, latencies not).
    pub totals: bool,
    /// One label per bucket, for the description (`12:09`, `Dec 5 18:00`).
    pub x_labels: &'a [String],
    /// The buckets the time axis may label, and how: as many as fit without touching are
    /// drawn, the latest first.
    pub ticks: &'a [(usize, String)],
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

/// A tick label placed on the time axis: its bucket's x, where its text is anchored and how,
/// and where the text starts and ends (all in the drawing's units).
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    pub bucket: usize,
    pub x: f64,
    pub text_x: f64,
    pub anchor: &'static str,
    pub left: f64,
    pub right: f64,
    pub label: String,
}

/// The estimated width of a label, at its widest.
fn label_width(label: &str) -> f64 {
    CHAR_W * label.chars().count() as f64
}

/// The tick labels that fit over `buckets` buckets: each centred under its bucket (or kept
/// inside the drawing at its edges), taken from the latest back, and left out when it would
/// come closer than [`TICK_GAP`] to one already placed.
pub fn fit_ticks(candidates: &[(usize, String)], buckets: usize) -> Vec<Tick> {
    let step = (WIDTH - LEFT - RIGHT) / buckets.max(1) as f64;
    let mut sorted: Vec<&(usize, String)> =
        candidates.iter().filter(|(i, _)| *i < buckets).collect();
    sorted.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
    let mut placed: Vec<Tick> = Vec::new();
    for (bucket, label) in sorted {
        let x = LEFT + step * (*bucket as f64 + 0.5);
        let w = label_width(label);
        let (text_x, anchor, left) = if x + w / 2.0 > WIDTH - 1.0 {
            (WIDTH - 1.0, "end", WIDTH - 1.0 - w)
        } else if x - w / 2.0 < 1.0 {
            (1.0, "start", 1.0)
        } else {
            (x, "middle", x - w / 2.0)
        };
        let right = left + w;
        if placed
            .last()
            .is_some_and(|next| right + TICK_GAP > next.left)
        {
            continue;
        }
        placed.push(Tick {
            bucket: *bucket,
            x,
            text_x,
            anchor,
            left,
            right,
            label: label.clone(),
        });
    }
    placed.reverse();
    placed
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

/// The legend: a sample of each line's stroke and its name, in as many rows as the width
/// needs. Answers the markup and the number of rows.
fn legend(lines: &[Line<'_>]) -> (String, f64) {
    let mut out = String::new();
    let (mut x, mut row) = (8.0, 0.0);
    for line in lines {
        let width = 24.0 + label_width(line.label) + 14.0;
        if x > 8.0 && x + width > WIDTH - RIGHT {
            x = 8.0;
            row += 1.0;
        }
        let y = 15.0 + row * 20.0;
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="{ly:.1}" x2="{x2:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2.5"{dash}/><text x="{tx:.1}" y="{y:.1}" font-size="{FONT}" fill="{TEXT}">{label}</text>"#,
            ly = y - 4.5,
            x2 = x + 19.0,
            color = esc(line.color),
            dash = dash_attribute(line.dash),
            tx = x + 24.0,
            label = esc(line.label),
        );
        x += width;
    }
    let rows = if lines.is_empty() { 0.0 } else { row + 1.0 };
    (out, rows)
}

fn dash_attribute(dash: Option<&str>) -> String {
    dash.map(|d| format!(r#" stroke-dasharray="{}""#, esc(d)))
        .unwrap_or_default()
}

/// The value axis's unit above its top value, and the time axis's ticks with the labels that
/// fit.
fn time_axis(out: &mut String, chart: &LineChart<'_>, frame: Frame, buckets: usize) {
    let _ = write!(
        out,
        r#"<text x="4" y="{y:.1}" font-size="{FONT}" fill="{AXIS}">{unit}</text>"#,
        y = frame.top - 9.0,
        unit = esc(chart.axis_unit),
    );
    for tick in fit_ticks(chart.ticks, buckets) {
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="{b}" x2="{x:.1}" y2="{b4}" stroke="{AXIS}"/><text class="tick" x="{tx:.1}" y="{ty}" text-anchor="{anchor}" font-size="{FONT}" fill="{AXIS}">{label}</text>"#,
            x = tick.x,
            b = frame.bottom(),
            b4 = frame.bottom() + 4.0,
            tx = tick.text_x,
            ty = frame.bottom() + 20.0,
            anchor = tick.anchor,
            label = esc(&tick.label),
        );
    }
}

/// One line as a path: a gap (None) lifts the pen; a lone point still shows, as a dot.
fn line_path(
    out: &mut String,
    line: &Line<'_>,
    x_of: impl Fn(usize) -> f64,
    y_of: impl Fn(f64) -> f64,
) {
    let mut d = String::new();
    let mut pen_down = false;
    let mut dots = String::new();
    for (i, value) in line.values.iter().enumerate() {
        let Some(v) = value else {
            pen_down = false;
            continue;
        };
        let (x, y) = (x_of(i), y_of(*v));
        let _ = write!(d, "{}{x:.1} {y:.1} ", if pen_down { "L" } else { "M" });
        let lone = !pen_down && line.values.get(i + 1).is_none_or(|next| next.is_none());
        if lone {
            let _ = write!(
                dots,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{}"/>"#,
                esc(line.color)
            );
        }
        pen_down = true;
    }
    let _ = write!(
        out,
        r#"<path d="{}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round"{}><title>{}</title></path>{dots}"#,
        d.trim_end(),
        esc(line.color),
        dash_attribute(line.dash),
        esc(line.label),
    );
}

/// A line chart over time buckets, with a legend, a value axis from zero with its unit, and a
/// time axis whose labels never overlap. With nothing but zeros and gaps, it says [`NO_DATA`]
/// instead of drawing flat lines.
pub fn line_chart(chart: &LineChart<'_>) -> String {
    let (legend, rows) = legend(chart.lines);
    // Room for the legend's rows, then for the value axis's unit.
    let frame = Frame {
        top: 28.0 + rows * 20.0,
        below: BOTTOM,
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
    time_axis(&mut out, chart, frame, n);
    if !has_data(chart.lines) {
        empty_note(&mut out, frame, NO_DATA);
    } else {
        let step = (WIDTH - LEFT - RIGHT) / n as f64;
        for line in chart.lines {
            line_path(
                &mut out,
                line,
                |i| LEFT + step * (i as f64 + 0.5),
                |v| frame.bottom() - PLOT_H * (v / top),
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// A bar's name in as few lines as fit its slot: split at spaces when it is wider.
fn bar_label_lines(label: &str, slot: f64) -> Vec<&str> {
    if label_width(label) <= slot - 6.0 {
        return vec![label];
    }
    label.split(' ').filter(|w| !w.is_empty()).collect()
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
    let slot = (WIDTH - LEFT - RIGHT) / bars.len().max(1) as f64;
    let names: Vec<Vec<&str>> = bars
        .iter()
        .map(|b| bar_label_lines(b.label, slot))
        .collect();
    let lines = names.iter().map(Vec::len).max().unwrap_or(1).max(1) as f64;
    let frame = Frame {
        top: 22.0,
        below: BOTTOM + 17.0 * (lines - 1.0),
    };
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
    let width = (slot * 0.6).min(70.0);
    for ((i, bar), name) in bars.iter().enumerate().zip(&names) {
        let h = PLOT_H * (bar.value as f64 / top);
        let x = LEFT + slot * i as f64 + (slot - width) / 2.0;
        let y = frame.bottom() - h;
        let cx = x + width / 2.0;
        let mut text = String::new();
        for (n, word) in name.iter().enumerate() {
            let _ = write!(
                text,
                r#"<tspan x="{cx:.1}" y="{:.1}">{}</tspan>"#,
                frame.bottom() + 20.0 + 17.0 * n as f64,
                esc(word)
            );
        }
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{h:.1}" fill="{color}"><title>{label}: {value}</title></rect><text x="{cx:.1}" y="{vy:.1}" text-anchor="middle" font-size="{FONT}" font-weight="600" fill="{TEXT}">{value}</text><text class="bar-label" text-anchor="middle" font-size="{FONT}" fill="{TEXT}">{text}</text>"#,
            color = esc(bar.color),
            label = esc(bar.label),
            value = bar.value,
            vy = y - 5.0,
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

    /// Every fifth bucket and the last, as the activity page offers them.
    fn ticks(x: &[String]) -> Vec<(usize, String)> {
        x.iter()
            .enumerate()
            .filter(|(i, _)| i % 5 == 0 || *i + 1 == x.len())
            .map(|(i, l)| (i, l.clone()))
            .collect()
    }

    fn chart<'a>(
        x: &'a [String],
        ticks: &'a [(usize, String)],
        lines: &'a [Line<'a>],
    ) -> LineChart<'a> {
        LineChart {
            id: "chart-activity",
            title: "Sign-ins & tokens",
            unit: "per minute",
            axis_unit: "per minute",
            totals: true,
            x_labels: x,
            ticks,
            lines,
        }
    }

    #[test]
    fn a_line_chart_is_an_accessible_image_with_axes_and_a_legend() {
        let x = labels(10);
        let t = ticks(&x);
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
        let svg = line_chart(&chart(&x, &t, &lines));
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
        let t = ticks(&x);
        let lines = [Line {
            label: "Sign-ins",
            color: "#1b5fbf",
            dash: None,
            values: vec![None, Some(0.0), None, None],
        }];
        let svg = line_chart(&chart(&x, &t, &lines));
        assert!(svg.contains(&format!(">{NO_DATA}</text>")), "{svg}");
        assert!(svg.contains(&format!(
            "<desc id=\"chart-activity-desc\">{NO_DATA}.</desc>"
        )));
        assert!(!svg.contains("<path "));
        // The axes are still drawn.
        assert!(svg.contains(">12:00</text>"));
        let none = line_chart(&chart(&[], &[], &[]));
        assert!(none.contains(NO_DATA));
    }

    #[test]
    fn gaps_lift_the_pen_and_lone_points_are_dots() {
        let x = labels(5);
        let t = ticks(&x);
        let lines = [Line {
            label: "Average",
            color: "#333",
            dash: None,
            values: vec![Some(10.0), Some(20.0), None, Some(5.0), None],
        }];
        let svg = line_chart(&LineChart {
            totals: false,
            unit: "ms",
            ..chart(&x, &t, &lines)
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
        let t = ticks(&x);
        let lines = [Line {
            label: "a<script>\"",
            color: "\"><script>",
            dash: Some("\"/>"),
            values: vec![Some(1.0)],
        }];
        let svg = line_chart(&LineChart {
            id: "x\"y",
            title: "<t>",
            ..chart(&x, &t, &lines)
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
        let table = data_table(&chart(&x, &t, &lines), &x);
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
        assert!(svg.contains(">active</tspan>") && svg.contains(">12</text>"));
        // A name wider than its slot is cut at its spaces, a word a line.
        let wide = bar_chart(
            "b",
            "t",
            "none",
            &[
                Bar {
                    label: "active",
                    color: "#000",
                    value: 1,
                },
                Bar {
                    label: "failing",
                    color: "#000",
                    value: 1,
                },
                Bar {
                    label: "needs consent",
                    color: "#000",
                    value: 1,
                },
                Bar {
                    label: "revoked",
                    color: "#000",
                    value: 1,
                },
            ],
        );
        assert!(wide.contains(">needs</tspan><tspan"), "{wide}");
        assert!(wide.contains(">consent</tspan></text>"));
        assert!(svg.contains(">20</text>"), "axis to a round 20: {svg}");
        let empty = bar_chart("chart-states", "Grants by state", "No grants yet", &[]);
        assert!(empty.contains(">No grants yet</text>"));
        assert!(!empty.contains("<rect "));
    }

    #[test]
    fn the_data_table_has_the_numbers_of_the_buckets_with_any() {
        let x = labels(3);
        let t = ticks(&x);
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
        let table = data_table(&chart(&x, &t, &lines), &full);
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
        let empty = data_table(&chart(&x, &t, &[]), &full);
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

    /// Whether two placed ticks overlap, or come closer than the gap.
    fn crowded(ticks: &[Tick]) -> bool {
        ticks.windows(2).any(|p| p[0].right + TICK_GAP > p[1].left)
    }

    #[test]
    fn time_labels_never_overlap_and_the_latest_is_kept() {
        // The hour: every 10 minutes and the latest, 4 minutes after the last round one.
        let mut hour: Vec<(usize, String)> = (0..6)
            .map(|i| {
                let minutes = 9 * 60 + 30 + i * 10;
                (i * 10, format!("{:02}:{:02}", minutes / 60, minutes % 60))
            })
            .collect();
        hour.push((59, "10:29".to_owned()));
        let placed = fit_ticks(&hour, 60);
        assert!(!crowded(&placed), "{placed:?}");
        assert_eq!(placed.last().unwrap().label, "10:29");
        assert_eq!(placed.last().unwrap().anchor, "end");
        assert!(placed.last().unwrap().right <= WIDTH);
        // Too close to the latest: 09:30 + 50 min is left out, the others stay.
        assert_eq!(placed.len(), 6, "{placed:?}");
        assert!(placed.iter().all(|t| t.left >= 0.0));

        // The week: one label a day, as many as fit, never touching.
        let week: Vec<(usize, String)> = (0..7)
            .map(|d| (d * 4 + 2, format!("Dec {}", d + 1)))
            .collect();
        let placed = fit_ticks(&week, 28);
        assert!(!crowded(&placed), "{placed:?}");
        assert!(placed.len() >= 3, "{placed:?}");
        assert_eq!(placed.last().unwrap().label, "Dec 7");

        // Long labels on few buckets: they thin out rather than overlap.
        let wide: Vec<(usize, String)> = (0..28).map(|i| (i, format!("12-{i:02} 18:00"))).collect();
        let placed = fit_ticks(&wide, 28);
        assert!(!crowded(&placed), "{placed:?}");
        assert!(placed.len() >= 2);
        assert!(fit_ticks(&[], 10).is_empty());
        // Candidates outside the buckets are ignored.
        assert!(fit_ticks(&[(5, "x".to_owned())], 3).is_empty());
    }
}

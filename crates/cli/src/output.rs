//! How the listings print: an aligned table for people, or with `--json` one JSON object per
//! line for scripts (stdout carries nothing else; notes for people go to stderr).

use serde_json::Value;
use std::fmt::Write;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A time as the listings print it (RFC 3339, UTC).
pub fn when(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Like [`when`], or JSON null.
pub fn when_json(t: Option<OffsetDateTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(when(t)))
}

/// Rows under a header, each column as wide as its widest cell, two spaces apart; the last
/// column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// One compact JSON object per line.
pub fn json_lines<'a>(values: impl IntoIterator<Item = &'a Value>) -> String {
    let mut out = String::new();
    for value in values {
        out.push_str(&value.to_string());
        out.push('\n');
    }
    out
}

/// A listing in the chosen form.
pub fn listing(json: bool, header: &[&str], rows: &[Vec<String>], objects: &[Value]) -> String {
    if json {
        json_lines(objects)
    } else {
        table(header, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_on_the_widest_cell() {
        let text = table(
            &["ID", "NAME"],
            &[
                vec!["1".into(), "short".into()],
                vec!["1234".into(), "é".into()],
            ],
        );
        assert_eq!(text, "ID    NAME\n1     short\n1234  é\n");
        assert_eq!(table(&["A", "B"], &[]), "A  B\n");
    }

    #[test]
    fn json_lines_are_one_object_a_line() {
        let values = [json!({"a": 1}), json!({"b": "x\ny"})];
        assert_eq!(json_lines(&values), "{\"a\":1}\n{\"b\":\"x\\ny\"}\n");
    }
}

//! Google's partial-response syntax (`fields=nextPageToken,files(id,name)`, `files/id`, `*`):
//! parsed into a selection tree and applied to a JSON answer. Names the answer does not have
//! are simply left out, as Google leaves out fields a resource has no value for.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Selection {
    /// The whole value.
    All,
    /// Only these members (`*` among them stands for every member).
    Some(BTreeMap<String, Selection>),
}

impl Selection {
    fn merge(self, other: Selection) -> Selection {
        match (self, other) {
            (Selection::Some(mut a), Selection::Some(b)) => {
                for (k, v) in b {
                    let merged = match a.remove(&k) {
                        Some(old) => old.merge(v),
                        None => v,
                    };
                    a.insert(k, merged);
                }
                Selection::Some(a)
            }
            _ => Selection::All,
        }
    }

    /// Parses a `fields` parameter; the error names what could not be read.
    pub(crate) fn parse(s: &str) -> Result<Selection, String> {
        let mut p = Parser {
            chars: s.chars().collect(),
            pos: 0,
        };
        let sel = p.list()?;
        p.skip_ws();
        if p.pos != p.chars.len() {
            return Err(format!("Invalid field selection {s}"));
        }
        Ok(sel)
    }

    /// The parts of `value` this selection names.
    pub(crate) fn apply(&self, value: &Value) -> Value {
        let Selection::Some(members) = self else {
            return value.clone();
        };
        match value {
            Value::Object(o) => {
                let mut out = Map::new();
                for (k, sel) in members {
                    if k == "*" {
                        for (name, v) in o {
                            if !out.contains_key(name) {
                                out.insert(name.clone(), sel.apply(v));
                            }
                        }
                    } else if let Some(v) = o.get(k) {
                        out.insert(k.clone(), sel.apply(v));
                    }
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| self.apply(v)).collect()),
            other => other.clone(),
        }
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn error(&self) -> String {
        let seen: String = self.chars.iter().take(self.pos + 1).collect();
        format!("Invalid field selection {seen}")
    }

    /// `item ("," item)*`
    fn list(&mut self) -> Result<Selection, String> {
        let mut sel = self.item()?;
        loop {
            self.skip_ws();
            if self.peek() != Some(',') {
                return Ok(sel);
            }
            self.pos += 1;
            sel = sel.merge(self.item()?);
        }
    }

    /// `name ("/" name)* ["(" list ")"]`
    fn item(&mut self) -> Result<Selection, String> {
        let mut path = vec![self.name()?];
        loop {
            self.skip_ws();
            if self.peek() != Some('/') {
                break;
            }
            self.pos += 1;
            path.push(self.name()?);
        }
        self.skip_ws();
        let mut leaf = Selection::All;
        if self.peek() == Some('(') {
            self.pos += 1;
            leaf = self.list()?;
            self.skip_ws();
            if self.peek() != Some(')') {
                return Err(self.error());
            }
            self.pos += 1;
        }
        let mut sel = leaf;
        for name in path.into_iter().rev() {
            sel = Selection::Some(BTreeMap::from([(name, sel)]));
        }
        Ok(sel)
    }

    fn name(&mut self) -> Result<String, String> {
        self.skip_ws();
        if self.peek() == Some('*') {
            self.pos += 1;
            return Ok("*".to_owned());
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error());
        }
        Ok(self
            .chars
            .get(start..self.pos)
            .unwrap_or_default()
            .iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects_nested_members() {
        let list = json!({
            "kind": "drive#fileList",
            "nextPageToken": "t",
            "files": [{"id": "1", "name": "a", "size": "3"}, {"id": "2", "name": "b"}],
        });
        let sel = Selection::parse("nextPageToken, files(id,name)").unwrap();
        assert_eq!(
            sel.apply(&list),
            json!({"nextPageToken": "t", "files": [{"id": "1", "name": "a"}, {"id": "2", "name": "b"}]})
        );
        let sel = Selection::parse("files/id,files/size").unwrap();
        assert_eq!(
            sel.apply(&list),
            json!({"files": [{"id": "1", "size": "3"}, {"id": "2"}]})
        );
        assert_eq!(Selection::parse("*").unwrap().apply(&list), list);
        assert_eq!(
            Selection::parse("files(*)").unwrap().apply(&list)["files"],
            list["files"]
        );
        assert_eq!(
            Selection::parse("kind,nothing").unwrap().apply(&list),
            json!({"kind": "drive#fileList"})
        );
    }

    #[test]
    fn rejects_malformed_selections() {
        for bad in ["files(id", "files)", ",", "a,,b", "files()", "a b", "a/"] {
            assert!(Selection::parse(bad).is_err(), "{bad}");
        }
    }
}

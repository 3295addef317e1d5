//! The part of Drive's search syntax (`q`) that apps keeping data in appDataFolder use:
//! `name = 'x'` (also `!=`, `contains`), `mimeType = 'x'`, `'<id>' in parents`,
//! `trashed = false`, `starred = true`, `createdTime`/`modifiedTime` comparisons with RFC 3339
//! times, `appProperties has { key='k' and value='v' }` (and `properties`), combined with
//! `and`, `or`, `not` and parentheses. Anything else is a malformed query, which Google answers
//! with 400 `invalid` at location `q`.

use crate::state::FileMeta;
use std::cmp::Ordering;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    LBrace,
    RBrace,
    Op(CmpOp),
    Str(String),
    Word(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::Ne => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Le => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::Ge => ord != Ordering::Less,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TextField {
    Name,
    MimeType,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TimeField {
    Created,
    Modified,
}

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    /// `name = 'x'`, `name != 'x'`.
    TextIs(TextField, bool, String),
    /// `name contains 'x'`.
    Contains(TextField, String),
    /// `trashed = true` (`starred` likewise); the bool pair is (is trashed field, expected).
    Flag(bool, bool),
    Time(TimeField, CmpOp, i64),
    InParents(String),
    /// `appProperties has { key='k' and value='v' }`; the bool says `appProperties`.
    Has(bool, String, String),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cond(Cond),
}

/// A parsed `q`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query(Expr);

impl Query {
    /// Parses `q`; the folder aliases (`appDataFolder`, `root`) in `'<id>' in parents` are
    /// resolved through `alias`.
    pub(crate) fn parse(q: &str, alias: impl Fn(&str) -> Option<String>) -> Option<Query> {
        let tokens = tokenize(q)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            alias: &alias,
        };
        let expr = p.or()?;
        (p.pos == p.tokens.len()).then_some(Query(expr))
    }

    pub(crate) fn matches(&self, f: &FileMeta) -> bool {
        self.0.matches(f)
    }
}

impl Expr {
    fn matches(&self, f: &FileMeta) -> bool {
        match self {
            Expr::And(a, b) => a.matches(f) && b.matches(f),
            Expr::Or(a, b) => a.matches(f) || b.matches(f),
            Expr::Not(a) => !a.matches(f),
            Expr::Cond(c) => c.matches(f),
        }
    }
}

impl Cond {
    fn matches(&self, f: &FileMeta) -> bool {
        let text = |field: &TextField| match field {
            TextField::Name => f.name.as_str(),
            TextField::MimeType => f.mime.as_str(),
        };
        match self {
            Cond::TextIs(field, eq, v) => (text(field) == v) == *eq,
            // Google matches name prefixes (of the name or of its words), not any substring.
            Cond::Contains(TextField::Name, v) => {
                let v = v.to_lowercase();
                let name = f.name.to_lowercase();
                name.starts_with(&v)
                    || name
                        .split(|c: char| !c.is_alphanumeric())
                        .any(|w| !w.is_empty() && w.starts_with(&v))
            }
            Cond::Contains(TextField::MimeType, v) => f.mime.contains(v.as_str()),
            Cond::Flag(trashed, expected) => {
                (if *trashed { f.trashed } else { f.starred }) == *expected
            }
            Cond::Time(field, op, t) => {
                let at = match field {
                    TimeField::Created => f.created,
                    TimeField::Modified => f.modified,
                };
                op.holds(at.cmp(t))
            }
            Cond::InParents(id) => f.parent == *id,
            Cond::Has(app, k, v) => {
                let map = if *app {
                    &f.app_properties
                } else {
                    &f.properties
                };
                map.get(k) == Some(v)
            }
        }
    }
}

fn tokenize(q: &str) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = q.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | '{' | '}' => {
                chars.next();
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    '{' => Token::LBrace,
                    _ => Token::RBrace,
                });
            }
            '=' => {
                chars.next();
                out.push(Token::Op(CmpOp::Eq));
            }
            '!' | '<' | '>' => {
                chars.next();
                let eq = chars.next_if_eq(&'=').is_some();
                out.push(Token::Op(match (c, eq) {
                    ('!', true) => CmpOp::Ne,
                    ('<', false) => CmpOp::Lt,
                    ('<', true) => CmpOp::Le,
                    ('>', false) => CmpOp::Gt,
                    ('>', true) => CmpOp::Ge,
                    _ => return None,
                }));
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        '\\' => s.push(chars.next()?),
                        '\'' => break,
                        other => s.push(other),
                    }
                }
                out.push(Token::Str(s));
            }
            c if c.is_ascii_alphabetic() => {
                let mut w = String::new();
                while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    w.push(c);
                }
                out.push(Token::Word(w));
            }
            _ => return None,
        }
    }
    Some(out)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    alias: &'a dyn Fn(&str) -> Option<String>,
}

impl Parser<'_> {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn expect(&mut self, t: &Token) -> Option<()> {
        (self.next()? == *t).then_some(())
    }

    fn expect_word(&mut self, word: &str) -> Option<()> {
        match self.next()? {
            Token::Word(w) if w.eq_ignore_ascii_case(word) => Some(()),
            _ => None,
        }
    }

    fn string(&mut self) -> Option<String> {
        match self.next()? {
            Token::Str(s) => Some(s),
            _ => None,
        }
    }

    fn or(&mut self) -> Option<Expr> {
        let mut q = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            q = Expr::Or(Box::new(q), Box::new(self.and()?));
        }
        Some(q)
    }

    fn and(&mut self) -> Option<Expr> {
        let mut q = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            q = Expr::And(Box::new(q), Box::new(self.unary()?));
        }
        Some(q)
    }

    fn unary(&mut self) -> Option<Expr> {
        if self.peek_word("not") {
            self.pos += 1;
            return Some(Expr::Not(Box::new(self.unary()?)));
        }
        if self.tokens.get(self.pos) == Some(&Token::Open) {
            self.pos += 1;
            let q = self.or()?;
            self.expect(&Token::Close)?;
            return Some(q);
        }
        self.cond().map(Expr::Cond)
    }

    fn cond(&mut self) -> Option<Cond> {
        match self.next()? {
            Token::Str(id) => {
                self.expect_word("in")?;
                self.expect_word("parents")?;
                Some(Cond::InParents((self.alias)(&id).unwrap_or(id)))
            }
            Token::Word(field) => match field.as_str() {
                "name" | "mimeType" => {
                    let f = if field == "name" {
                        TextField::Name
                    } else {
                        TextField::MimeType
                    };
                    match self.next()? {
                        Token::Op(CmpOp::Eq) => Some(Cond::TextIs(f, true, self.string()?)),
                        Token::Op(CmpOp::Ne) => Some(Cond::TextIs(f, false, self.string()?)),
                        Token::Word(w) if w.eq_ignore_ascii_case("contains") => {
                            Some(Cond::Contains(f, self.string()?))
                        }
                        _ => None,
                    }
                }
                "trashed" | "starred" => {
                    let eq = match self.next()? {
                        Token::Op(CmpOp::Eq) => true,
                        Token::Op(CmpOp::Ne) => false,
                        _ => return None,
                    };
                    let value = match self.next()? {
                        Token::Word(w) if w.eq_ignore_ascii_case("true") => true,
                        Token::Word(w) if w.eq_ignore_ascii_case("false") => false,
                        _ => return None,
                    };
                    Some(Cond::Flag(field == "trashed", value == eq))
                }
                "createdTime" | "modifiedTime" => {
                    let f = if field == "createdTime" {
                        TimeField::Created
                    } else {
                        TimeField::Modified
                    };
                    let Token::Op(op) = self.next()? else {
                        return None;
                    };
                    Some(Cond::Time(f, op, parse_time(&self.string()?)?))
                }
                "appProperties" | "properties" => {
                    self.expect_word("has")?;
                    self.expect(&Token::LBrace)?;
                    self.expect_word("key")?;
                    self.expect(&Token::Op(CmpOp::Eq))?;
                    let key = self.string()?;
                    self.expect_word("and")?;
                    self.expect_word("value")?;
                    self.expect(&Token::Op(CmpOp::Eq))?;
                    let value = self.string()?;
                    self.expect(&Token::RBrace)?;
                    Some(Cond::Has(field == "appProperties", key, value))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// An RFC 3339 time; without an offset it is UTC, as Drive reads it. Unix milliseconds.
fn parse_time(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok().or_else(|| {
        PrimitiveDateTime::parse(
            s,
            format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
            ),
        )
        .ok()
        .map(PrimitiveDateTime::assume_utc)
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Space;

    fn file(name: &str, parent: &str) -> FileMeta {
        FileMeta {
            id: "1x".into(),
            name: name.into(),
            mime: "application/json".into(),
            space: Space::AppData,
            parent: parent.into(),
            created: 1_700_000_000_000,
            modified: 1_700_000_500_000,
            version: 1,
            seq: 0,
            trashed: false,
            starred: false,
            description: None,
            app_properties: [("k".to_owned(), "v".to_owned())].into(),
            properties: Default::default(),
            size: 0,
            md5: String::new(),
            sha256: String::new(),
            blob: None,
        }
    }

    fn q(s: &str) -> Option<Query> {
        Query::parse(s, |a| (a == "appDataFolder").then(|| "0Afolder".to_owned()))
    }

    #[test]
    fn evaluates_the_usual_queries() {
        let f = file("settings.json", "0Afolder");
        for yes in [
            "name = 'settings.json'",
            "'appDataFolder' in parents and trashed = false",
            "'0Afolder' in parents",
            "name contains 'sett' and not name = 'x'",
            "(name = 'a' or name = 'settings.json') AND trashed != true",
            "modifiedTime > '2023-11-14T22:13:00' and createdTime <= '2023-11-14T22:13:20.000Z'",
            "mimeType = 'application/json' and appProperties has { key='k' and value='v' }",
        ] {
            assert!(q(yes).unwrap().matches(&f), "{yes}");
        }
        for no in [
            "name = 'other'",
            "'root' in parents",
            "trashed = true",
            "name contains 'ings'",
            "modifiedTime < '2023-01-01T00:00:00Z'",
            "appProperties has { key='k' and value='w' }",
        ] {
            assert!(!q(no).unwrap().matches(&f), "{no}");
        }
        let quoted = file("it's", "p");
        assert!(q(r"name = 'it\'s'").unwrap().matches(&quoted));
    }

    #[test]
    fn rejects_malformed_queries() {
        for bad in [
            "name = ",
            "name = 'x",
            "name == 'x'",
            "size > '3'",
            "trashed = 'no'",
            "name = 'x' and",
            "('a' in parents",
            "'a' in children",
            "modifiedTime > 'yesterday'",
            "name = 'x' 'y'",
            "name ~ 'x'",
            "",
        ] {
            assert!(q(bad).is_none(), "{bad}");
        }
    }
}

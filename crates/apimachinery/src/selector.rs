//! Label and field selectors, upstream grammar (`k8s.io/apimachinery/pkg/labels` and
//! `pkg/fields`): `app=web,tier!=db,env in (a,b),!canary,release` and `spec.nodeName=n1`.

use std::collections::BTreeMap;

use serde_json::Value;

/// A selector operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl Requirement {
    fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        let v = label(&self.key);
        match self.op {
            Op::Equals | Op::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Op::NotEquals | Op::NotIn => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt | Op::Lt => {
                let (Some(v), Some(bound)) = (
                    v.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Op::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
    /// A `metav1.LabelSelector` that is null selects nothing (used by e.g. PDBs); the parsed
    /// string form never sets this.
    pub nothing: bool,
}

/// A selector string that does not parse; the message is upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

impl LabelSelector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// Whether the labels `label(key)` looks up satisfy every requirement.
    pub fn matches_with<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(&label))
    }

    /// Whether this selector matches everything.
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Matches the labels of a JSON object's `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(&labels_of(obj))
    }

    /// Parses the string form (`?labelSelector=`).
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let mut p = Parser {
            chars: s.chars().collect(),
            pos: 0,
        };
        let mut requirements = Vec::new();
        p.skip_ws();
        if p.at_end() {
            return Ok(LabelSelector::default());
        }
        loop {
            requirements.push(p.requirement()?);
            p.skip_ws();
            if p.at_end() {
                break;
            }
            if !p.eat(',') {
                return Err(SelectorError(format!(
                    "found '{}', expected: ',' or 'end of string'",
                    p.peek_token()
                )));
            }
        }
        for r in &requirements {
            validate_key(&r.key)?;
            for v in &r.values {
                validate_value(v)?;
            }
        }
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `metav1.LabelSelector` (`matchLabels` + `matchExpressions`). `null` selects
    /// nothing; `{}` selects everything.
    pub fn from_json(v: &Value) -> Result<LabelSelector, SelectorError> {
        if v.is_null() {
            return Ok(LabelSelector {
                requirements: Vec::new(),
                nothing: true,
            });
        }
        let mut requirements = Vec::new();
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                requirements.push(Requirement {
                    key: k.clone(),
                    op: Op::Equals,
                    values: vec![val.as_str().unwrap_or_default().to_string()],
                });
            }
        }
        if let Some(exprs) = v.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                    "In" => Op::In,
                    "NotIn" => Op::NotIn,
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::DoesNotExist,
                    other => {
                        return Err(SelectorError(format!(
                            "\"{other}\" is not a valid label selector operator"
                        )));
                    }
                };
                if matches!(op, Op::In | Op::NotIn) && values.is_empty() {
                    return Err(SelectorError(
                        "for 'in', 'notin' operators, values set can't be empty".into(),
                    ));
                }
                requirements.push(Requirement { key, op, values });
            }
        }
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// The string form, upstream style (`a=b,c in (d,e)`).
    pub fn to_selector_string(&self) -> String {
        self.requirements
            .iter()
            .map(|r| match r.op {
                Op::Equals => format!("{}={}", r.key, r.values.join(",")),
                Op::NotEquals => format!("{}!={}", r.key, r.values.join(",")),
                Op::In => format!("{} in ({})", r.key, r.values.join(",")),
                Op::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
                Op::Gt => format!("{}>{}", r.key, r.values.join(",")),
                Op::Lt => format!("{}<{}", r.key, r.values.join(",")),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `metadata.labels` of an object as a map.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn name_part_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn validate_key(k: &str) -> Result<(), SelectorError> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                let b = l.as_bytes();
                !b.is_empty()
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
                    && b.iter()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            })
    });
    if prefix_ok && name_part_ok(name) {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "key: Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )))
    }
}

fn validate_value(v: &str) -> Result<(), SelectorError> {
    if v.is_empty() || name_part_ok(v) {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "values[0][{v}]: Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )))
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn eat_str(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        if self.chars[self.pos..].iter().take(n).copied().eq(s.chars()) {
            self.pos += n;
            true
        } else {
            false
        }
    }
    fn peek_token(&self) -> String {
        self.chars[self.pos..]
            .iter()
            .take_while(|c| !c.is_whitespace() && **c != ',')
            .collect()
    }
    fn word(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || matches!(c, ',' | '=' | '!' | '(' | ')' | '<' | '>') {
                break;
            }
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }
    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        self.skip_ws();
        if self.eat('!') {
            self.skip_ws();
            let key = self.word();
            if key.is_empty() {
                return Err(SelectorError(
                    "found '', expected: identifier after '!'".into(),
                ));
            }
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
                values: Vec::new(),
            });
        }
        let key = self.word();
        if key.is_empty() {
            return Err(SelectorError(format!(
                "found '{}', expected: !, identifier, or 'end of string'",
                self.peek_token()
            )));
        }
        self.skip_ws();
        if self.at_end() || self.peek() == Some(',') {
            return Ok(Requirement {
                key,
                op: Op::Exists,
                values: Vec::new(),
            });
        }
        let op = if self.eat_str("==") || self.eat('=') {
            Op::Equals
        } else if self.eat_str("!=") {
            Op::NotEquals
        } else if self.eat('>') {
            Op::Gt
        } else if self.eat('<') {
            Op::Lt
        } else {
            let w = self.word();
            match w.as_str() {
                "in" => Op::In,
                "notin" => Op::NotIn,
                _ => {
                    return Err(SelectorError(format!(
                        "found '{w}', expected: in, notin, =, ==, !=, gt, lt"
                    )));
                }
            }
        };
        self.skip_ws();
        let values = match op {
            Op::In | Op::NotIn => {
                if !self.eat('(') {
                    return Err(SelectorError(format!(
                        "found '{}', expected: '('",
                        self.peek_token()
                    )));
                }
                let mut vals = Vec::new();
                loop {
                    self.skip_ws();
                    let v = self.word();
                    vals.push(v);
                    self.skip_ws();
                    if self.eat(')') {
                        break;
                    }
                    if !self.eat(',') {
                        return Err(SelectorError(format!(
                            "found '{}', expected: ',', or ')'",
                            self.peek_token()
                        )));
                    }
                }
                let vals: Vec<String> = vals.into_iter().collect();
                if vals.len() == 1 && vals[0].is_empty() {
                    vec![String::new()]
                } else {
                    vals
                }
            }
            _ => {
                let v = self.word();
                if matches!(op, Op::Gt | Op::Lt) && v.parse::<i64>().is_err() {
                    return Err(SelectorError(format!(
                        "for 'Gt', 'Lt' operators, the value must be an integer: {v}"
                    )));
                }
                vec![v]
            }
        };
        Ok(Requirement { key, op, values })
    }
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub value: String,
    pub equals: bool,
}

/// A parsed field selector (`a=b,c!=d`); the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses `?fieldSelector=` (with upstream's `\,` `\=` `\\` escapes).
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        for part in split_unescaped(s, ',') {
            let (field, value, equals) = if let Some(i) = find_unescaped(&part, "!=") {
                (&part[..i], &part[i + 2..], false)
            } else if let Some(i) = find_unescaped(&part, "==") {
                (&part[..i], &part[i + 2..], true)
            } else if let Some(i) = find_unescaped(&part, "=") {
                (&part[..i], &part[i + 1..], true)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            terms.push(FieldTerm {
                field: field.trim().to_string(),
                value: unescape(value),
                equals,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Whether the attributes `get(field)` satisfy every term (a missing field is "").
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.terms.iter().all(|t| {
            let v = get(&t.field).unwrap_or("");
            (v == t.value) == t.equals
        })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value required for `field` by an `=` term, if any.
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equals && t.field == field)
            .map(|t| t.value.as_str())
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    out.push(cur);
    out
}

fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        // Bytes, not `&s[i..]`: after a multi-byte character (or an escape before one) `i` is
        // not a char boundary. `pat` is ASCII, so a match always starts on one.
        if bytes[i..].starts_with(pat.as_bytes()) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let s = LabelSelector::parse("app=web, tier!=db,env in (a, b),!canary,release,x notin (y)")
            .expect("parse");
        assert_eq!(s.requirements.len(), 6);
        let l = labels(&[("app", "web"), ("env", "b"), ("release", "1")]);
        assert!(s.matches(&l));
        let l2 = labels(&[
            ("app", "web"),
            ("env", "b"),
            ("release", "1"),
            ("canary", ""),
        ]);
        assert!(!s.matches(&l2));
        assert!(LabelSelector::parse("").expect("empty").is_empty());
        assert!(
            LabelSelector::parse("a==b")
                .expect("==")
                .matches(&labels(&[("a", "b")]))
        );
        assert!(
            LabelSelector::parse("n>3")
                .expect(">")
                .matches(&labels(&[("n", "4")]))
        );
    }

    #[test]
    fn rejects_garbage_like_upstream() {
        assert!(LabelSelector::parse("a=b,,").is_err());
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("a in (b").is_err());
        assert!(LabelSelector::parse("=b").is_err());
        assert!(LabelSelector::parse("a b").is_err());
        assert!(LabelSelector::parse("a>b").is_err());
    }

    #[test]
    fn label_selector_object_form() {
        let v = serde_json::json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe"]}]});
        let s = LabelSelector::from_json(&v).expect("sel");
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(
            !LabelSelector::from_json(&Value::Null)
                .expect("null")
                .matches(&labels(&[]))
        );
        assert!(
            LabelSelector::from_json(&serde_json::json!({}))
                .expect("{}")
                .is_empty()
        );
        assert_eq!(s.to_selector_string(), "app=web,tier in (fe)");
    }

    #[test]
    fn field_selectors() {
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed").expect("parse");
        let attrs = [("spec.nodeName", "n1"), ("status.phase", "Running")];
        assert!(f.matches(|k| attrs.iter().find(|(a, _)| *a == k).map(|(_, v)| *v)));
        let g = FieldSelector::parse("metadata.name=a\\,b").expect("escaped");
        assert_eq!(g.terms[0].value, "a,b");
        assert!(FieldSelector::parse("nonsense").is_err());
        assert_eq!(f.required_value("spec.nodeName"), Some("n1"));
    }

    /// Multi-byte characters anywhere (also right after an escape) used to panic the request
    /// (slicing inside a character); found by the apiserver fuzz target.
    #[test]
    fn field_selectors_with_multibyte_characters() {
        let f = FieldSelector::parse("metadata.name=é,spec.x!=ü").expect("parse");
        assert_eq!(
            (f.terms[0].value.as_str(), f.terms[1].value.as_str()),
            ("é", "ü")
        );
        assert!(!f.terms[1].equals);
        let g = FieldSelector::parse("metadata.name=\\é=x").expect("escape before é");
        assert_eq!(g.terms[0].field, "metadata.name");
        for s in ["é", "\\é", "é\\", "a\\ééé=b", "ééé!=b", "\u{5d0}x=y"] {
            let _ = FieldSelector::parse(s);
        }
    }
}

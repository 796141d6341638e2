//! The JSONPath subset CRD `additionalPrinterColumns` (and field selectors on custom resources)
//! use, evaluated the way k8s.io/client-go/util/jsonpath does:
//!
//! - fields: `.spec.replicas`, `.metadata.labels['app.kubernetes.io/name']`, `["key"]`;
//! - array indices and slices: `[0]`, `[-1]`, `[1:3]`, `[*]`, and `.*` over map values;
//! - filters: `[?(@.type=="Ready")]`, `[?(@.status.ready)]`, with `==`, `!=`, `<`, `<=`, `>`,
//!   `>=` against string, number or boolean literals or another `@` path;
//! - recursive descent: `..name`;
//! - optional surrounding braces (`{.spec.replicas}`).
//!
//! A path that does not parse is an error; a path that finds nothing yields no results.

use serde_json::Value;

/// One step of a parsed path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Wildcard,
    Recursive,
    Index(i64),
    Slice(Option<i64>, Option<i64>),
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Path(Vec<Step>),
    Literal(Value),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Operand,
    /// `None`: existence test of `left`.
    op: Option<(String, Operand)>,
}

/// A parsed JSONPath.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

impl JsonPath {
    /// Parses `path` (`.spec.replicas`, `{.status.conditions[?(@.type=="Ready")].status}`).
    pub fn parse(path: &str) -> Result<JsonPath, String> {
        let mut p = path.trim();
        if let Some(inner) = p.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
            p = inner.trim();
        }
        if let Some(rest) = p.strip_prefix('$') {
            p = rest;
        }
        let chars: Vec<char> = p.chars().collect();
        let mut pos = 0;
        let steps = parse_steps(&chars, &mut pos, false)?;
        if pos != chars.len() {
            return Err(format!("unexpected {:?} in JSONPath {path:?}", chars[pos]));
        }
        Ok(JsonPath { steps })
    }

    /// Every value the path finds in `root`, in document order.
    pub fn find<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        eval(&self.steps, vec![root])
    }

    /// The first value found, if any.
    pub fn first<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.find(root).into_iter().next()
    }
}

fn parse_ident(chars: &[char], pos: &mut usize) -> String {
    let start = *pos;
    while *pos < chars.len()
        && (chars[*pos].is_alphanumeric() || matches!(chars[*pos], '_' | '-' | '/'))
    {
        *pos += 1;
    }
    chars[start..*pos].iter().collect()
}

fn skip_ws(chars: &[char], pos: &mut usize) {
    while *pos < chars.len() && chars[*pos].is_whitespace() {
        *pos += 1;
    }
}

fn parse_quoted(chars: &[char], pos: &mut usize) -> Result<String, String> {
    let quote = chars[*pos];
    *pos += 1;
    let mut out = String::new();
    while *pos < chars.len() {
        let c = chars[*pos];
        if c == '\\' && *pos + 1 < chars.len() {
            out.push(chars[*pos + 1]);
            *pos += 2;
            continue;
        }
        if c == quote {
            *pos += 1;
            return Ok(out);
        }
        out.push(c);
        *pos += 1;
    }
    Err("unterminated quoted string in JSONPath".into())
}

fn parse_int(chars: &[char], pos: &mut usize) -> Option<i64> {
    let start = *pos;
    if *pos < chars.len() && chars[*pos] == '-' {
        *pos += 1;
    }
    while *pos < chars.len() && chars[*pos].is_ascii_digit() {
        *pos += 1;
    }
    let s: String = chars[start..*pos].iter().collect();
    s.parse().ok()
}

/// Parses steps until the end, or (inside a filter) until an operator or `)`.
fn parse_steps(chars: &[char], pos: &mut usize, in_filter: bool) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    while *pos < chars.len() {
        match chars[*pos] {
            '.' => {
                *pos += 1;
                if *pos < chars.len() && chars[*pos] == '.' {
                    *pos += 1;
                    steps.push(Step::Recursive);
                }
                if *pos < chars.len() && chars[*pos] == '*' {
                    *pos += 1;
                    steps.push(Step::Wildcard);
                    continue;
                }
                if *pos < chars.len() && chars[*pos] == '[' {
                    continue;
                }
                let name = parse_ident(chars, pos);
                if name.is_empty() {
                    if *pos == chars.len() && steps.is_empty() {
                        // `.` alone: the root.
                        continue;
                    }
                    return Err("empty field name in JSONPath".into());
                }
                steps.push(Step::Field(name));
            }
            '[' => {
                *pos += 1;
                skip_ws(chars, pos);
                let Some(&c) = chars.get(*pos) else {
                    return Err("unterminated [ in JSONPath".into());
                };
                match c {
                    '\'' | '"' => {
                        let name = parse_quoted(chars, pos)?;
                        steps.push(Step::Field(name));
                    }
                    '*' => {
                        *pos += 1;
                        steps.push(Step::Wildcard);
                    }
                    '?' => {
                        *pos += 1;
                        skip_ws(chars, pos);
                        if chars.get(*pos) != Some(&'(') {
                            return Err("expected ( after ? in JSONPath filter".into());
                        }
                        *pos += 1;
                        let filter = parse_filter(chars, pos)?;
                        skip_ws(chars, pos);
                        if chars.get(*pos) != Some(&')') {
                            return Err("expected ) closing JSONPath filter".into());
                        }
                        *pos += 1;
                        steps.push(Step::Filter(filter));
                    }
                    _ => {
                        let start = parse_int(chars, pos);
                        skip_ws(chars, pos);
                        if chars.get(*pos) == Some(&':') {
                            *pos += 1;
                            skip_ws(chars, pos);
                            let end = parse_int(chars, pos);
                            steps.push(Step::Slice(start, end));
                        } else {
                            match start {
                                Some(i) => steps.push(Step::Index(i)),
                                None => return Err("invalid array index in JSONPath".into()),
                            }
                        }
                    }
                }
                skip_ws(chars, pos);
                if chars.get(*pos) != Some(&']') {
                    return Err("expected ] in JSONPath".into());
                }
                *pos += 1;
            }
            c if in_filter && (c == ')' || c.is_whitespace() || "=!<>".contains(c)) => break,
            c => return Err(format!("unexpected {c:?} in JSONPath")),
        }
    }
    Ok(steps)
}

fn parse_operand(chars: &[char], pos: &mut usize) -> Result<Operand, String> {
    skip_ws(chars, pos);
    match chars.get(*pos) {
        Some('@') => {
            *pos += 1;
            Ok(Operand::Path(parse_steps(chars, pos, true)?))
        }
        Some('\'') | Some('"') => Ok(Operand::Literal(Value::String(parse_quoted(chars, pos)?))),
        Some(_) => {
            let start = *pos;
            while *pos < chars.len() && !chars[*pos].is_whitespace() && chars[*pos] != ')' {
                *pos += 1;
            }
            let word: String = chars[start..*pos].iter().collect();
            match word.as_str() {
                "true" => Ok(Operand::Literal(Value::Bool(true))),
                "false" => Ok(Operand::Literal(Value::Bool(false))),
                "nil" | "null" => Ok(Operand::Literal(Value::Null)),
                _ => serde_json::from_str::<serde_json::Number>(&word)
                    .map(|n| Operand::Literal(Value::Number(n)))
                    .map_err(|_| format!("unrecognized literal {word:?} in JSONPath filter")),
            }
        }
        None => Err("unterminated JSONPath filter".into()),
    }
}

fn parse_filter(chars: &[char], pos: &mut usize) -> Result<Filter, String> {
    let left = parse_operand(chars, pos)?;
    skip_ws(chars, pos);
    let mut op = String::new();
    while *pos < chars.len() && "=!<>".contains(chars[*pos]) {
        op.push(chars[*pos]);
        *pos += 1;
    }
    if op.is_empty() {
        return Ok(Filter { left, op: None });
    }
    if !matches!(op.as_str(), "==" | "!=" | "<" | "<=" | ">" | ">=") {
        return Err(format!("unrecognized operator {op:?} in JSONPath filter"));
    }
    let right = parse_operand(chars, pos)?;
    Ok(Filter {
        left,
        op: Some((op, right)),
    })
}

fn descendants<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(v);
    match v {
        Value::Object(m) => m.values().for_each(|c| descendants(c, out)),
        Value::Array(a) => a.iter().for_each(|c| descendants(c, out)),
        _ => {}
    }
}

fn eval<'a>(steps: &[Step], mut cur: Vec<&'a Value>) -> Vec<&'a Value> {
    for step in steps {
        let mut next = Vec::new();
        for v in cur {
            match step {
                Step::Field(name) => {
                    if let Some(c) = v.get(name.as_str()) {
                        next.push(c);
                    }
                }
                Step::Wildcard => match v {
                    Value::Object(m) => next.extend(m.values()),
                    Value::Array(a) => next.extend(a.iter()),
                    _ => {}
                },
                Step::Recursive => descendants(v, &mut next),
                Step::Index(i) => {
                    if let Value::Array(a) = v {
                        let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                        if idx >= 0
                            && let Some(c) = a.get(idx as usize)
                        {
                            next.push(c);
                        }
                    }
                }
                Step::Slice(start, end) => {
                    if let Value::Array(a) = v {
                        let len = a.len() as i64;
                        let norm = |x: i64| if x < 0 { (len + x).max(0) } else { x.min(len) };
                        let s = norm(start.unwrap_or(0));
                        let e = norm(end.unwrap_or(len));
                        if s < e {
                            next.extend(a[s as usize..e as usize].iter());
                        }
                    }
                }
                Step::Filter(f) => {
                    let items: Vec<&Value> = match v {
                        Value::Array(a) => a.iter().collect(),
                        Value::Object(m) => m.values().collect(),
                        _ => Vec::new(),
                    };
                    next.extend(items.into_iter().filter(|item| matches(f, item)));
                }
            }
        }
        cur = next;
    }
    cur
}

fn operand<'a>(o: &'a Operand, item: &'a Value) -> Option<&'a Value> {
    match o {
        Operand::Literal(v) => Some(v),
        Operand::Path(steps) => eval(steps, vec![item]).into_iter().next(),
    }
}

fn matches(f: &Filter, item: &Value) -> bool {
    let Some(left) = operand(&f.left, item) else {
        return false;
    };
    let Some((op, right)) = &f.op else {
        return true;
    };
    let Some(right) = operand(right, item) else {
        return false;
    };
    match (left.as_f64(), right.as_f64()) {
        (Some(a), Some(b)) => match op.as_str() {
            "==" => a == b,
            "!=" => a != b,
            "<" => a < b,
            "<=" => a <= b,
            ">" => a > b,
            ">=" => a >= b,
            _ => false,
        },
        _ => match op.as_str() {
            "==" => left == right,
            "!=" => left != right,
            _ => match (left.as_str(), right.as_str()) {
                (Some(a), Some(b)) => match op.as_str() {
                    "<" => a < b,
                    "<=" => a <= b,
                    ">" => a > b,
                    ">=" => a >= b,
                    _ => false,
                },
                _ => false,
            },
        },
    }
}

/// How client-go's jsonpath prints one result as text: strings raw, maps and lists as JSON,
/// numbers and booleans as Go's `fmt.Print` does.
pub fn to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_number(n),
        other => other.to_string(),
    }
}

/// A JSON number as Go prints the value unstructured decoding gives it (int64 or float64).
pub(crate) fn go_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    // Go's %v for float64 is %g with the shortest representation, exponent when large/small.
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        let s = format!("{f:e}");
        // Rust: 1e21, Go: 1e+21
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e:0>2}"),
            Some((m, e)) => format!("{m}e-{:0>2}", e.trim_start_matches('-')),
            None => s,
        }
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn find(path: &str, v: &Value) -> Vec<Value> {
        JsonPath::parse(path)
            .expect(path)
            .find(v)
            .into_iter()
            .cloned()
            .collect()
    }

    #[test]
    fn fields_indices_and_filters() {
        let obj = json!({
            "metadata": {"name": "x", "labels": {"app.kubernetes.io/name": "web"}},
            "spec": {"replicas": 3, "ports": [{"port": 80}, {"port": 443}]},
            "status": {"conditions": [
                {"type": "Available", "status": "False"},
                {"type": "Ready", "status": "True"}
            ]}
        });
        assert_eq!(find(".spec.replicas", &obj), vec![json!(3)]);
        assert_eq!(find("{.spec.replicas}", &obj), vec![json!(3)]);
        assert_eq!(find("$.spec.replicas", &obj), vec![json!(3)]);
        assert_eq!(
            find(".status.conditions[?(@.type==\"Ready\")].status", &obj),
            vec![json!("True")]
        );
        assert_eq!(
            find(".status.conditions[?(@.type=='Ready')].status", &obj),
            vec![json!("True")]
        );
        assert_eq!(
            find(".status.conditions[?(@.type != \"Ready\")].type", &obj),
            vec![json!("Available")]
        );
        assert_eq!(
            find(".spec.ports[*].port", &obj),
            vec![json!(80), json!(443)]
        );
        assert_eq!(find(".spec.ports[1].port", &obj), vec![json!(443)]);
        assert_eq!(find(".spec.ports[-1].port", &obj), vec![json!(443)]);
        assert_eq!(find(".spec.ports[0:1].port", &obj), vec![json!(80)]);
        assert_eq!(
            find(".spec.ports[?(@.port>100)].port", &obj),
            vec![json!(443)]
        );
        assert_eq!(
            find(".metadata.labels['app.kubernetes.io/name']", &obj),
            vec![json!("web")]
        );
        assert_eq!(find("..port", &obj), vec![json!(80), json!(443)]);
        assert!(find(".spec.nope", &obj).is_empty());
        assert!(find(".spec.replicas.deeper", &obj).is_empty());
    }

    #[test]
    fn bad_paths_are_errors() {
        for p in [
            ".spec[",
            ".spec[?(@.a==)]",
            "spec..",
            ".a[x]",
            ".a[?(@.a=~1)]",
            ".a b",
        ] {
            assert!(JsonPath::parse(p).is_err(), "{p}");
        }
    }

    #[test]
    fn text_like_go() {
        assert_eq!(to_text(&json!("s")), "s");
        assert_eq!(to_text(&json!(3)), "3");
        assert_eq!(to_text(&json!(1.5)), "1.5");
        assert_eq!(to_text(&json!(true)), "true");
        assert_eq!(to_text(&json!({"a": 1})), "{\"a\":1}");
        assert_eq!(to_text(&json!(1e21)), "1e+21");
    }
}

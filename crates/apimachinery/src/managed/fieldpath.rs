//! Field paths and field sets, upstream's `sigs.k8s.io/structured-merge-diff/fieldpath`:
//! path elements (`f:`, `k:`, `v:`, `i:`), their order, their human form
//! (`.spec.containers[name="nginx"].image`) and the `fieldsV1` encoding of a set.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// Deepest nesting (JSON levels, or field-set levels) any function here walks into. Deeper
/// input is refused instead of risking the stack.
pub const MAX_DEPTH: usize = 128;

/// One step of a field path.
#[derive(Debug, Clone)]
pub enum PathElement {
    /// A field of an object (`f:<name>`, `.name`).
    Field(String),
    /// An item of a map-list, by its key fields sorted by name (`k:{...}`, `[name="x"]`).
    Key(Vec<(String, Value)>),
    /// An item of a set-list, by value (`v:<json>`, `[="x"]`).
    Value(Value),
    /// An item of a list by position (`i:<n>`, `[n]`); upstream only produces it for lists
    /// that are neither atomic nor associative, which built-in types do not have.
    Index(i64),
}

impl PathElement {
    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The `fieldsV1` key of this element: `f:name`, `k:{"name":"x"}`, `v:"x"`, `i:0`.
    pub fn to_fields_v1_key(&self) -> String {
        match self {
            PathElement::Field(name) => {
                let mut out = String::with_capacity(name.len() + 2);
                out.push_str("f:");
                out.push_str(name);
                out
            }
            PathElement::Key(fields) => {
                let mut out = String::from("k:{");
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    go_json_string(name, &mut out);
                    out.push(':');
                    go_json(value, &mut out);
                }
                out.push('}');
                out
            }
            PathElement::Value(v) => {
                let mut out = String::from("v:");
                go_json(v, &mut out);
                out
            }
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `fieldsV1` key. `Ok(None)` for a well-formed key of an unknown type, which
    /// upstream skips.
    pub fn from_fields_v1_key(s: &str) -> Result<Option<PathElement>, String> {
        let b = s.as_bytes();
        if b.len() < 2 {
            return Err("key must be 2 characters long:".to_string());
        }
        if b[1] != b':' {
            return Err(format!("missing colon: {s}"));
        }
        // b[0] and b[1] are ASCII here or b[1] would not be ':', so 2 is a char boundary
        // whenever b[0] is ASCII; a non-ASCII b[0] is an unknown type.
        if !b[0].is_ascii() {
            return Ok(None);
        }
        let rest = &s[2..];
        match b[0] {
            b'f' => Ok(Some(PathElement::Field(rest.to_string()))),
            b'v' => serde_json::from_str::<Value>(rest)
                .map(|v| Some(PathElement::Value(v)))
                .map_err(|e| e.to_string()),
            b'k' => {
                let v: Value = serde_json::from_str(rest).map_err(|e| e.to_string())?;
                match v {
                    Value::Object(m) => {
                        let mut fields: Vec<(String, Value)> = m.into_iter().collect();
                        fields.sort_by(|a, b| a.0.cmp(&b.0));
                        Ok(Some(PathElement::Key(fields)))
                    }
                    other => Err(format!("expected a JSON object in key, got {other}")),
                }
            }
            b'i' => rest
                .parse::<i64>()
                .map(|i| Some(PathElement::Index(i)))
                .map_err(|e| format!("strconv.Atoi: parsing \"{rest}\": {e}")),
            _ => Ok(None),
        }
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PathElement {}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PathElement {
    /// Upstream's `PathElement.Compare`: fields, then keys, then values, then indices.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.as_bytes().cmp(b.as_bytes()),
            (PathElement::Key(a), PathElement::Key(b)) => compare_field_lists(a, b),
            (PathElement::Value(a), PathElement::Value(b)) => compare_values(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl fmt::Display for PathElement {
    /// Upstream's `PathElement.String`: `.name`, `[k=v,k2=v2]`, `[=v]`, `[i]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", value_to_string(v)))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={}]", value_to_string(v)),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path from the object root, printed upstream style (`.spec.replicas`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Path(pub Vec<PathElement>);

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for pe in &self.0 {
            write!(f, "{pe}")?;
        }
        Ok(())
    }
}

/// A set of field paths (upstream `fieldpath.Set`): `members` are paths ending here,
/// `children` hold the longer paths. Children are never empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    /// A set of the given paths.
    pub fn from_paths<I: IntoIterator<Item = Vec<PathElement>>>(paths: I) -> FieldSet {
        let mut s = FieldSet::new();
        for p in paths {
            s.insert(&p);
        }
        s
    }

    /// Whether the set holds no path.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds a path (ignored when empty).
    pub fn insert(&mut self, path: &[PathElement]) {
        let Some((last, prefix)) = path.split_last() else {
            return;
        };
        let mut node = self;
        for pe in prefix {
            // Clone the element only for a new child: most inserts share their prefix.
            if !node.children.contains_key(pe) {
                node.children.insert(pe.clone(), FieldSet::default());
            }
            let Some(child) = node.children.get_mut(pe) else {
                return;
            };
            node = child;
        }
        if !node.members.contains(last) {
            node.members.insert(last.clone());
        }
    }

    /// Adds a path of one element.
    pub(crate) fn insert_member(&mut self, pe: PathElement) {
        self.members.insert(pe);
    }

    /// Adds `set`'s paths under `pe` (nothing when `set` is empty).
    pub(crate) fn attach_child(&mut self, pe: &PathElement, set: FieldSet) {
        if set.is_empty() {
            return;
        }
        match self.children.get_mut(pe) {
            Some(mine) => mine.absorb(set),
            None => {
                self.children.insert(pe.clone(), set);
            }
        }
    }

    /// [`FieldSet::union_in_place`] taking `other` by value: its elements move instead of
    /// being copied.
    pub fn absorb(&mut self, other: FieldSet) {
        if self.members.is_empty() && self.children.is_empty() {
            *self = other;
            return;
        }
        self.members.extend(other.members);
        for (pe, c) in other.children {
            match self.children.get_mut(&pe) {
                Some(mine) => mine.absorb(c),
                None => {
                    if !c.is_empty() {
                        self.children.insert(pe, c);
                    }
                }
            }
        }
    }

    /// Whether `path` itself is in the set.
    pub fn has(&self, path: &[PathElement]) -> bool {
        let Some((last, prefix)) = path.split_last() else {
            return false;
        };
        let mut node = self;
        for pe in prefix {
            match node.children.get(pe) {
                Some(c) => node = c,
                None => return false,
            }
        }
        node.members.contains(last)
    }

    /// The paths under `pe`, without the `pe` prefix.
    pub fn with_prefix(&self, pe: &PathElement) -> FieldSet {
        self.children.get(pe).cloned().unwrap_or_default()
    }

    /// The child set under `pe`, if any.
    pub(crate) fn child(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    /// Whether `pe` is a member at this level.
    pub(crate) fn has_member(&self, pe: &PathElement) -> bool {
        self.members.contains(pe)
    }

    /// Paths in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_in_place(other);
        out
    }

    /// [`FieldSet::difference`], in place.
    pub fn subtract(&mut self, other: &FieldSet) {
        if other.members.is_empty() && other.children.is_empty() {
            return;
        }
        self.members.retain(|m| !other.members.contains(m));
        self.children.retain(|pe, c| {
            if let Some(oc) = other.children.get(pe) {
                c.subtract(oc);
            }
            !c.is_empty()
        });
    }

    /// [`FieldSet::recursive_difference`], in place.
    pub fn subtract_recursive(&mut self, other: &FieldSet) {
        if other.members.is_empty() && other.children.is_empty() {
            return;
        }
        self.members.retain(|m| !other.members.contains(m));
        self.children.retain(|pe, c| {
            if other.members.contains(pe) {
                return false;
            }
            if let Some(oc) = other.children.get(pe) {
                c.subtract_recursive(oc);
            }
            !c.is_empty()
        });
    }

    /// [`FieldSet::union`], in place.
    pub fn union_in_place(&mut self, other: &FieldSet) {
        for m in &other.members {
            self.members.insert(m.clone());
        }
        for (pe, c) in &other.children {
            match self.children.get_mut(pe) {
                Some(mine) => mine.union_in_place(c),
                None => {
                    if !c.is_empty() {
                        self.children.insert(pe.clone(), c.clone());
                    }
                }
            }
        }
    }

    /// Paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            if let Some(oc) = other.children.get(pe) {
                let i = c.intersection(oc);
                if !i.is_empty() {
                    children.insert(pe.clone(), i);
                }
            }
        }
        FieldSet { members, children }
    }

    /// Paths of `self` not in `other` (a member of `other` does not remove `self`'s longer
    /// paths under it).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            let d = match other.children.get(pe) {
                Some(oc) => c.difference(oc),
                None => c.clone(),
            };
            if !d.is_empty() {
                children.insert(pe.clone(), d);
            }
        }
        FieldSet { members, children }
    }

    /// Paths of `self` neither in `other` nor under a member of `other`.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            if other.members.contains(pe) {
                continue;
            }
            let d = match other.children.get(pe) {
                Some(oc) => c.recursive_difference(oc),
                None => c.clone(),
            };
            if !d.is_empty() {
                children.insert(pe.clone(), d);
            }
        }
        FieldSet { members, children }
    }

    /// Upstream's `EnsureNamedFieldsAreMembers` for a schema where every object field is a
    /// named field: each field that has longer paths under it becomes a member too.
    pub fn ensure_named_fields_are_members(&self) -> FieldSet {
        let mut members = self.members.clone();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            if matches!(pe, PathElement::Field(_)) && !c.is_empty() {
                members.insert(pe.clone());
            }
            children.insert(pe.clone(), c.ensure_named_fields_are_members());
        }
        FieldSet { members, children }
    }

    /// Every path, in upstream's iteration order (members of a level, then its children).
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_paths(&mut prefix, &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Path>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(Path(p));
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` object. Its keys are inserted in upstream order (`.` first, then the
    /// elements sorted); whether a `serde_json::Map` keeps that order depends on serde_json's
    /// `preserve_order` feature, see [`FieldSet::to_fields_v1_string`] for exact bytes.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.emit_value(false))
    }

    fn emit_value(&self, include_self: bool) -> Map<String, Value> {
        let mut m = Map::new();
        if include_self && !(self.members.is_empty() && self.children.is_empty()) {
            m.insert(".".to_string(), Value::Object(Map::new()));
        }
        for (pe, child, member) in self.merged_entries() {
            let v = match child {
                Some(c) => Value::Object(c.emit_value(member)),
                None => Value::Object(Map::new()),
            };
            m.insert(pe.to_fields_v1_key(), v);
        }
        m
    }

    /// Members and children of this level in element order, each with its child set (if
    /// any) and whether it is also a member.
    fn merged_entries(&self) -> Vec<(&PathElement, Option<&FieldSet>, bool)> {
        let mut out = Vec::with_capacity(self.members.len() + self.children.len());
        let mut mi = self.members.iter().peekable();
        let mut ci = self.children.iter().peekable();
        loop {
            match (mi.peek(), ci.peek()) {
                (Some(m), Some((c, _))) => match (*m).cmp(*c) {
                    Ordering::Less => {
                        out.push((*m, None, true));
                        mi.next();
                    }
                    Ordering::Greater => {
                        if let Some((c, set)) = ci.next() {
                            out.push((c, Some(set), false));
                        }
                    }
                    Ordering::Equal => {
                        mi.next();
                        if let Some((c, set)) = ci.next() {
                            out.push((c, Some(set), true));
                        }
                    }
                },
                (Some(m), None) => {
                    out.push((*m, None, true));
                    mi.next();
                }
                (None, Some(_)) => {
                    if let Some((c, set)) = ci.next() {
                        out.push((c, Some(set), false));
                    }
                }
                (None, None) => break,
            }
        }
        out
    }

    /// The `fieldsV1` JSON exactly as upstream writes it: `.` first, elements in order,
    /// Go's JSON escaping.
    pub fn to_fields_v1_string(&self) -> String {
        let mut out = String::from("{");
        self.emit_string(false, &mut out);
        out.push('}');
        out
    }

    fn emit_string(&self, include_self: bool, out: &mut String) {
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !first {
                out.push(',');
            }
            first = false;
        };
        if include_self && !(self.members.is_empty() && self.children.is_empty()) {
            sep(out);
            out.push_str("\".\":{}");
        }
        for (pe, child, member) in self.merged_entries() {
            sep(out);
            go_json_string(&pe.to_fields_v1_key(), out);
            out.push(':');
            out.push('{');
            if let Some(c) = child {
                c.emit_string(member, out);
            }
            out.push('}');
        }
    }

    /// Parses a `fieldsV1` object (upstream `FieldsToSet`): `{}` under a key makes it a
    /// member, `.` marks a key with children as a member too, keys of unknown types are
    /// skipped.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        match read_v1(v, 0)? {
            (Some(s), _) => Ok(s),
            (None, _) => Ok(FieldSet::new()),
        }
    }

    /// Parses `fieldsV1` JSON text.
    pub fn parse_fields_v1(s: &str) -> Result<FieldSet, String> {
        let v: Value = serde_json::from_str(s).map_err(|e| e.to_string())?;
        FieldSet::from_fields_v1(&v)
    }
}

/// Upstream `readIterV1`: the children of a node and whether the node is a member.
fn read_v1(v: &Value, depth: usize) -> Result<(Option<FieldSet>, bool), String> {
    if depth > MAX_DEPTH {
        return Err(format!("fieldsV1 nested deeper than {MAX_DEPTH} levels"));
    }
    let obj = match v {
        Value::Object(m) => m,
        Value::Null => return Ok((None, true)),
        other => {
            return Err(format!(
                "ReadMapCB: expect {{ or n, but found {}",
                other.to_string().chars().next().unwrap_or(' ')
            ));
        }
    };
    let mut children: Option<FieldSet> = None;
    let mut is_member = false;
    for (key, val) in obj {
        if key == "." {
            is_member = true;
            continue;
        }
        let pe = match PathElement::from_fields_v1_key(key) {
            Ok(Some(pe)) => pe,
            Ok(None) => continue,
            Err(e) => return Err(format!("parsing key as path element: {e}")),
        };
        let (grand, child_member) = read_v1(val, depth + 1)?;
        if child_member {
            children
                .get_or_insert_with(FieldSet::new)
                .members
                .insert(pe.clone());
        }
        if let Some(g) = grand {
            let node = children.get_or_insert_with(FieldSet::new);
            // Duplicates keep the last occurrence, like upstream.
            if g.is_empty() {
                node.children.remove(&pe);
            } else {
                node.children.insert(pe, g);
            }
        }
    }
    if children.is_none() {
        is_member = true;
    }
    Ok((children, is_member))
}

fn compare_field_lists(a: &[(String, Value)], b: &[(String, Value)]) -> Ordering {
    let mut i = 0;
    loop {
        match (a.get(i), b.get(i)) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((an, av)), Some((bn, bv))) => {
                let c = an.as_bytes().cmp(bn.as_bytes());
                if c != Ordering::Equal {
                    return c;
                }
                let c = compare_values(av, bv);
                if c != Ordering::Equal {
                    return c;
                }
            }
        }
        i += 1;
    }
}

enum Num {
    Int(i128),
    Float(f64),
}

fn num(n: &serde_json::Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::Int(i128::from(i))
    } else if let Some(u) = n.as_u64() {
        Num::Int(i128::from(u))
    } else {
        Num::Float(n.as_f64().unwrap_or(0.0))
    }
}

fn float_cmp(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

/// Upstream's `value.Compare`: a total order over values of any type (numbers, then
/// strings, booleans, lists, maps, null); ints and floats compare numerically.
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (num(x), num(y)) {
            (Num::Int(i), Num::Int(j)) => i.cmp(&j),
            (Num::Int(i), Num::Float(g)) => float_cmp(i as f64, g),
            (Num::Float(f), Num::Int(j)) => float_cmp(f, j as f64),
            (Num::Float(f), Num::Float(g)) => float_cmp(f, g),
        },
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                let c = compare_values(p, q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (None, _) => return Ordering::Greater,
                    (_, None) => return Ordering::Less,
                    (Some(p), Some(q)) => {
                        let c = compare_values(p, q);
                        if c != Ordering::Equal {
                            return c;
                        }
                    }
                }
            }
            Ordering::Equal
        }
        (Value::Null, Value::Null) => Ordering::Equal,
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Upstream's `value.Equals`: deep equality with numbers compared numerically.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| values_equal(p, q))
        }
        _ => compare_values(a, b) == Ordering::Equal,
    }
}

/// Upstream's `value.ToString`, used in path elements: strings Go-quoted, numbers as Go's
/// `%v`, lists `[a,b]`, maps `k=v` pairs.
pub fn value_to_string(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match num(n) {
            Num::Int(i) => i.to_string(),
            Num::Float(f) => go_float_g(f),
        },
        Value::String(s) => go_quote(s),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(value_to_string).collect();
            format!("[{}]", parts.join(","))
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            keys.iter()
                .map(|k| format!("{k}={}", m.get(*k).map(value_to_string).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("")
        }
    }
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c == ' ' || (!c.is_control() && !c.is_whitespace()) => out.push(c),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// The shortest decimal digits of `f` (no sign) and the position of the decimal point.
fn shortest_digits(f: f64) -> (String, i32) {
    let s = format!("{:e}", f.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((s.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    (digits, exp + 1)
}

fn fixed_from_digits(digits: &str, dp: i32) -> String {
    let len = digits.len() as i32;
    if dp <= 0 {
        format!("0.{}{}", "0".repeat((-dp) as usize), digits)
    } else if dp >= len {
        format!("{}{}", digits, "0".repeat((dp - len) as usize))
    } else {
        let (a, b) = digits.split_at(dp as usize);
        format!("{a}.{b}")
    }
}

fn exp_from_digits(digits: &str, dp: i32) -> String {
    let (first, rest) = digits.split_at(1.min(digits.len()));
    let exp = dp - 1;
    let sign = if exp < 0 { '-' } else { '+' };
    let mut out = first.to_string();
    if !rest.is_empty() {
        out.push('.');
        out.push_str(rest);
    }
    format!("{out}e{sign}{:02}", exp.abs())
}

/// Go's `%v` for a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`).
fn go_float_g(f: f64) -> String {
    if !f.is_finite() {
        return f.to_string();
    }
    if f == 0.0 {
        return "0".to_string();
    }
    let (digits, dp) = shortest_digits(f);
    let exp = dp - 1;
    // Shortest 'g' switches to the exponent form outside [1e-4, 1e6), like Go.
    let body = if !(-4..6).contains(&exp) {
        exp_from_digits(&digits, dp)
    } else {
        fixed_from_digits(&digits, dp)
    };
    if f < 0.0 { format!("-{body}") } else { body }
}

/// Go's `encoding/json` rendering of a float64.
fn go_json_float(f: f64) -> String {
    if !f.is_finite() {
        return "null".to_string();
    }
    if f == 0.0 {
        return "0".to_string();
    }
    let (digits, dp) = shortest_digits(f);
    let abs = f.abs();
    let body = if !(1e-6..1e21).contains(&abs) {
        // Go writes e-07 and then trims it to e-7; exponents always carry a sign.
        let s = exp_from_digits(&digits, dp);
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, n) = e.split_at(1);
                format!("{m}e{sign}{}", n.trim_start_matches('0').max("0"))
            }
            None => s,
        }
    } else {
        fixed_from_digits(&digits, dp)
    };
    if f < 0.0 { format!("-{body}") } else { body }
}

/// Appends `s` as a JSON string the way Go's `encoding/json` writes it (HTML-safe).
pub fn go_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `v` as compact JSON the way Go's `encoding/json` writes a decoded value: map keys
/// sorted, HTML-safe strings, Go's float format. Recursion stops at [`MAX_DEPTH`] (deeper
/// parts are written as `null`).
pub fn go_json(v: &Value, out: &mut String) {
    go_json_depth(v, out, 0);
}

fn go_json_depth(v: &Value, out: &mut String, depth: usize) {
    if depth > MAX_DEPTH {
        out.push_str("null");
        return;
    }
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match num(n) {
            Num::Int(i) => out.push_str(&i.to_string()),
            Num::Float(f) => out.push_str(&go_json_float(f)),
        },
        Value::String(s) => go_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_depth(item, out, depth + 1);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_string(k, out);
                out.push(':');
                if let Some(val) = m.get(*k) {
                    go_json_depth(val, out, depth + 1);
                }
            }
            out.push('}');
        }
    }
}

/// Whether `v` nests deeper than `limit` levels (stops looking at the limit).
pub fn too_deep(v: &Value, limit: usize) -> bool {
    fn walk(v: &Value, left: usize) -> bool {
        match v {
            Value::Array(items) => {
                if left == 0 {
                    return !items.is_empty();
                }
                items.iter().any(|i| walk(i, left - 1))
            }
            Value::Object(m) => {
                if left == 0 {
                    return !m.is_empty();
                }
                m.values().any(|i| walk(i, left - 1))
            }
            _ => false,
        }
    }
    walk(v, limit)
}

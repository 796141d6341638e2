//! Upstream's `typed` package over plain JSON: field sets of objects, comparison, merging and
//! removal of items, with list semantics from a [`Schema`].
//!
//! kumo has no OpenAPI models here, so the "schema" is: objects are structs whose fields are
//! named fields (granular) unless [`Schema::atomic_map`] says otherwise, lists follow
//! [`crate::patchmeta::list_meta`] (atomic when unknown), everything else is a scalar leaf.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::fieldpath::{FieldSet, Path, PathElement, values_equal};
use crate::patchmeta::{ListKind, ListMeta};

/// How list semantics are looked up: field names from the object root, list indices left
/// out (the shape [`crate::patchmeta::list_meta`] takes).
pub type ListResolver<'a> = &'a dyn Fn(&[&str]) -> Option<ListMeta>;

/// The schema facts the walkers need.
pub(crate) struct Schema<'a> {
    pub lists: ListResolver<'a>,
    /// A built-in group: the small table of atomic structs/maps and key defaults apply.
    pub builtin: bool,
}

/// Upstream `+structType=atomic` / `+mapType=atomic` fields of the built-in types that
/// matter in practice (label selectors, node selectors, env value sources).
const ATOMIC_MAP_FIELDS: &[&str] = &[
    "selector",
    "labelSelector",
    "namespaceSelector",
    "podSelector",
    "nodeSelector",
    "configMapKeyRef",
    "secretKeyRef",
    "fieldRef",
    "resourceFieldRef",
];

impl Schema<'_> {
    fn list_kind(&self, names: &[&str]) -> ListKind {
        (self.lists)(names)
            .map(|m| m.kind)
            .unwrap_or(ListKind::Atomic)
    }

    /// Whether the list at `names` is known to be granular (a set or a map).
    fn granular_list(&self, names: &[&str]) -> bool {
        !matches!(self.list_kind(names), ListKind::Atomic)
    }

    /// Whether the object at `names` is replaced as a whole.
    fn atomic_map(&self, names: &[&str]) -> bool {
        if !self.builtin {
            return false;
        }
        match names {
            [
                ..,
                "nodeAffinity",
                "requiredDuringSchedulingIgnoredDuringExecution",
            ] => true,
            [.., last] => ATOMIC_MAP_FIELDS.contains(last),
            [] => false,
        }
    }

    /// The default of a missing key field (upstream reads it from the OpenAPI defaults; the
    /// one built-in case is `protocol`, defaulted to `TCP` on every port list).
    fn key_default(&self, field: &str) -> Option<Value> {
        (self.builtin && field == "protocol").then(|| Value::String("TCP".to_string()))
    }

    /// The path element of a list item, upstream `listItemToPathElement`.
    fn item_pe(&self, kind: &ListKind, item: &Value) -> Result<PathElement, String> {
        match kind {
            ListKind::Map(keys) => {
                let m =
                    match item {
                        Value::Null => {
                            return Err("associative list with keys may not have a null element"
                                .to_string());
                        }
                        Value::Object(m) => m,
                        _ => {
                            return Err("associative list with keys may not have non-map elements"
                                .to_string());
                        }
                    };
                let mut fields = Vec::with_capacity(keys.len());
                for k in keys {
                    if let Some(v) = m.get(*k) {
                        fields.push((k.to_string(), v.clone()));
                    } else if let Some(d) = self.key_default(k) {
                        fields.push((k.to_string(), d));
                    } else {
                        return Err(format!(
                            "associative list with keys has an element that omits key field \"{k}\" (and doesn't have default value)"
                        ));
                    }
                }
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                fields.dedup_by(|a, b| a.0 == b.0);
                Ok(PathElement::Key(fields))
            }
            ListKind::Set => match item {
                Value::Object(_) => Err(
                    "associative list without keys has an element that's a map type".to_string(),
                ),
                Value::Array(_) => {
                    Err("not supported: associative list with lists as elements".to_string())
                }
                Value::Null => Err(
                    "associative list without keys has an element that's an explicit null"
                        .to_string(),
                ),
                v => Ok(PathElement::Value(v.clone())),
            },
            ListKind::Atomic => Err("atomic list items have no path element".to_string()),
        }
    }
}

/// What a value is, for the walkers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Map,
    List,
    Leaf,
}

/// The shape a node takes: from whichever side is a container, `null` taking the other
/// side's shape (upstream: `null` is a valid empty map or list).
fn shape_of(v: Option<&Value>) -> Option<Shape> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::Object(_)) => Some(Shape::Map),
        Some(Value::Array(_)) => Some(Shape::List),
        Some(_) => Some(Shape::Leaf),
    }
}

/// One validation error, rendered `<path>: <message>` like upstream's `ValidationError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValidationError {
    pub path: String,
    pub message: String,
}

/// Upstream's `ValidationErrors.Error()`.
pub(crate) fn render_errors(errs: &[ValidationError]) -> String {
    let one = |e: &ValidationError| {
        if e.path.is_empty() {
            e.message.clone()
        } else {
            format!("{}: {}", e.path, e.message)
        }
    };
    if errs.len() == 1 {
        return one(&errs[0]);
    }
    let mut lines = vec!["errors:".to_string()];
    lines.extend(errs.iter().map(|e| format!("  {}", one(e))));
    lines.join("\n")
}

struct Walk<'s, 'a> {
    schema: &'s Schema<'s>,
    names: Vec<&'a str>,
    path: Vec<PathElement>,
}

impl<'s, 'a> Walk<'s, 'a> {
    fn new(schema: &'s Schema<'s>) -> Walk<'s, 'a> {
        Walk {
            schema,
            names: Vec::new(),
            path: Vec::new(),
        }
    }

    fn path_string(&self) -> String {
        Path(self.path.clone()).to_string()
    }
}

/// Upstream `ToFieldSet`. With `strict`, list items without a path element and duplicate
/// items are errors (the checks upstream's typed conversion does on an applied object);
/// otherwise they are skipped.
pub(crate) fn to_field_set(
    v: &Value,
    schema: &Schema<'_>,
    strict: bool,
) -> Result<FieldSet, Vec<ValidationError>> {
    let mut set = FieldSet::new();
    let mut errs = Vec::new();
    let mut w = Walk::new(schema);
    set_walk(v, &mut w, &mut set, &mut errs, strict);
    if errs.is_empty() { Ok(set) } else { Err(errs) }
}

/// The field set of an object that is already stored (lenient).
pub(crate) fn field_set_lenient(v: &Value, schema: &Schema<'_>) -> FieldSet {
    to_field_set(v, schema, false).unwrap_or_default()
}

fn set_walk<'a>(
    v: &'a Value,
    w: &mut Walk<'_, 'a>,
    set: &mut FieldSet,
    errs: &mut Vec<ValidationError>,
    strict: bool,
) {
    match v {
        Value::Object(m) => {
            if w.schema.atomic_map(&w.names) {
                set.insert(&w.path);
                return;
            }
            for (k, child) in m {
                w.names.push(k);
                w.path.push(PathElement::Field(k.clone()));
                set_walk(child, w, set, errs, strict);
                w.path.pop();
                w.names.pop();
            }
        }
        Value::Array(items) => {
            let kind = w.schema.list_kind(&w.names);
            if kind == ListKind::Atomic {
                set.insert(&w.path);
                return;
            }
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                let pe = match w.schema.item_pe(&kind, item) {
                    Ok(pe) => pe,
                    Err(e) => {
                        if strict {
                            errs.push(ValidationError {
                                path: w.path_string(),
                                message: format!("element {i}: {e}"),
                            });
                        }
                        continue;
                    }
                };
                if !seen.insert(pe.clone()) {
                    if strict {
                        errs.push(ValidationError {
                            path: w.path_string(),
                            message: format!("duplicate entries for key {pe}"),
                        });
                    }
                    continue;
                }
                w.path.push(pe);
                set_walk(item, w, set, errs, strict);
                set.insert(&w.path);
                w.path.pop();
            }
        }
        Value::Null => {
            // A null granular list owns nothing (upstream: a null list is an empty list);
            // any other null is a leaf.
            if !w.schema.granular_list(&w.names) {
                set.insert(&w.path);
            }
        }
        _ => set.insert(&w.path),
    }
}

/// Upstream `typed.Comparison`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Comparison {
    pub removed: FieldSet,
    pub modified: FieldSet,
    pub added: FieldSet,
}

impl Comparison {
    /// Upstream `ExcludeFields`.
    pub fn exclude(mut self, fields: &FieldSet) -> Comparison {
        if fields.is_empty() {
            return self;
        }
        self.removed.subtract_recursive(fields);
        self.modified.subtract_recursive(fields);
        self.added.subtract_recursive(fields);
        self
    }
}

/// Upstream `TypedValue.Compare`: leaves added, removed or modified, plus the paths of maps
/// and list items that appear or disappear as a whole. `metadata.managedFields` is left out
/// on both sides (upstream compares objects with their managed fields stripped).
///
/// The sets are built bottom-up: each level's comparison is made relative to the level and
/// hung under its path element, so no path is walked from the root again per leaf.
pub(crate) fn compare(lhs: &Value, rhs: &Value, schema: &Schema<'_>) -> Comparison {
    let mut c = Comparison::default();
    let mut names = Vec::new();
    let (l, r) = (Some(lhs), Some(rhs));
    // The root has no path element: only its contents count.
    match (shape_of(l), shape_of(r)) {
        (Some(a), Some(b)) if a != b => {
            cmp_contents_one_side(l, true, schema, &mut names, &mut c);
            cmp_contents_one_side(r, false, schema, &mut names, &mut c);
        }
        (Some(Shape::Map), _) | (None, Some(Shape::Map)) => {
            cmp_map_contents(lhs.as_object(), rhs.as_object(), schema, &mut names, &mut c);
        }
        (Some(Shape::List), _) | (None, Some(Shape::List)) => {
            let kind = schema.list_kind(&names);
            if kind != ListKind::Atomic {
                cmp_list_contents(
                    lhs.as_array(),
                    rhs.as_array(),
                    &kind,
                    schema,
                    &mut names,
                    &mut c,
                );
            }
        }
        _ => {}
    }
    c
}

fn cmp_leaf(l: Option<&Value>, r: Option<&Value>, pe: PathElement, c: &mut Comparison) {
    match (l, r) {
        (None, None) => {}
        (None, Some(_)) => c.added.insert_member(pe),
        (Some(_), None) => c.removed.insert_member(pe),
        (Some(a), Some(b)) => {
            if !values_equal(a, b) {
                c.modified.insert_member(pe);
            }
        }
    }
}

impl Comparison {
    /// Hangs `sub` (a comparison relative to `pe`) under `pe`.
    fn attach(&mut self, pe: &PathElement, sub: Comparison) {
        self.removed.attach_child(pe, sub.removed);
        self.modified.attach_child(pe, sub.modified);
        self.added.attach_child(pe, sub.added);
    }
}

/// Compares the node at `pe` (a child of the level `c` is relative to); `names` is the
/// field-name path of the level.
fn cmp_node<'a>(
    pe: PathElement,
    l: Option<&'a Value>,
    r: Option<&'a Value>,
    schema: &Schema<'_>,
    names: &mut Vec<&'a str>,
    c: &mut Comparison,
) {
    match (l, r) {
        (None, None) => return,
        // Equal values (strictly: `values_equal` may call more of them equal) hold no change.
        (Some(a), Some(b)) if a == b => return,
        _ => {}
    }
    let ls = shape_of(l);
    let rs = shape_of(r);
    let shape = match (ls, rs) {
        (Some(a), Some(b)) if a != b => {
            // Type change: the leaf changed, the old container's contents went away and
            // the new container's contents arrived.
            let mut sub = Comparison::default();
            cmp_contents_one_side(l, true, schema, names, &mut sub);
            cmp_contents_one_side(r, false, schema, names, &mut sub);
            c.attach(&pe, sub);
            c.modified.insert_member(pe);
            return;
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => Shape::Leaf,
    };
    let mut sub = Comparison::default();
    match shape {
        Shape::Leaf => return cmp_leaf(l, r, pe, c),
        Shape::Map => {
            let lm = l.and_then(Value::as_object);
            let rm = r.and_then(Value::as_object);
            let bare = |m: Option<&Map<String, Value>>| {
                m.is_none_or(|m| m.keys().all(|k| left_out(names, k)))
            };
            if bare(lm) && bare(rm) {
                // Empty maps (`metadata` with nothing but managed fields counts as empty).
                let empty = Value::Object(Map::new());
                let strip = |v: Option<&'a Value>| {
                    if v.is_some_and(Value::is_object) {
                        Some(&empty)
                    } else {
                        v
                    }
                };
                return cmp_leaf(strip(l), strip(r), pe, c);
            }
            if schema.atomic_map(names) {
                return cmp_leaf(l, r, pe, c);
            }
            cmp_map_contents(lm, rm, schema, names, &mut sub);
        }
        Shape::List => {
            let ll = l.and_then(Value::as_array);
            let rl = r.and_then(Value::as_array);
            let empty = ll.is_none_or(Vec::is_empty) && rl.is_none_or(Vec::is_empty);
            let kind = schema.list_kind(names);
            if empty || kind == ListKind::Atomic {
                return cmp_leaf(l, r, pe, c);
            }
            cmp_list_contents(ll, rl, &kind, schema, names, &mut sub);
        }
    }
    c.attach(&pe, sub);
    if l.is_none() {
        c.added.insert_member(pe);
    } else if r.is_none() {
        c.removed.insert_member(pe);
    }
}

/// Whether the field `key` of the map at `names` is `metadata.managedFields`, which the
/// comparison leaves out.
fn left_out(names: &[&str], key: &str) -> bool {
    key == "managedFields" && names == ["metadata"]
}

/// The fields of two maps at `names`, into `c` (relative to the map).
fn cmp_map_contents<'a>(
    lm: Option<&'a Map<String, Value>>,
    rm: Option<&'a Map<String, Value>>,
    schema: &Schema<'_>,
    names: &mut Vec<&'a str>,
    c: &mut Comparison,
) {
    for k in union_keys(lm, rm) {
        if left_out(names, k) {
            continue;
        }
        names.push(k);
        let pe = PathElement::Field(k.to_string());
        cmp_node(
            pe,
            lm.and_then(|m| m.get(k)),
            rm.and_then(|m| m.get(k)),
            schema,
            names,
            c,
        );
        names.pop();
    }
}

/// The items of two granular lists at `names`, into `c` (relative to the list).
fn cmp_list_contents<'a>(
    ll: Option<&'a Vec<Value>>,
    rl: Option<&'a Vec<Value>>,
    kind: &ListKind,
    schema: &Schema<'_>,
    names: &mut Vec<&'a str>,
    c: &mut Comparison,
) {
    let lidx = index_items(ll, kind, schema);
    let ridx = index_items(rl, kind, schema);
    for (pe, rv) in ridx.order {
        let lv = lidx.first.get(&pe).copied();
        cmp_node(pe, lv, Some(rv), schema, names, c);
    }
    for (pe, lv) in lidx.order {
        if ridx.first.contains_key(&pe) {
            continue;
        }
        cmp_node(pe, Some(lv), None, schema, names, c);
    }
}

/// The contents of a container present on one side only, as removed (`lhs`) or added, into
/// `c` (relative to the container).
fn cmp_contents_one_side<'a>(
    v: Option<&'a Value>,
    lhs: bool,
    schema: &Schema<'_>,
    names: &mut Vec<&'a str>,
    c: &mut Comparison,
) {
    match v {
        Some(Value::Object(m)) if !m.is_empty() && !schema.atomic_map(names) => {
            for (k, child) in m {
                if left_out(names, k) {
                    continue;
                }
                names.push(k);
                let pe = PathElement::Field(k.clone());
                if lhs {
                    cmp_node(pe, Some(child), None, schema, names, c);
                } else {
                    cmp_node(pe, None, Some(child), schema, names, c);
                }
                names.pop();
            }
        }
        Some(Value::Array(items)) if !items.is_empty() => {
            let kind = schema.list_kind(names);
            if kind == ListKind::Atomic {
                return;
            }
            let idx = index_items(Some(items), &kind, schema);
            for (pe, item) in idx.order {
                if lhs {
                    cmp_node(pe, Some(item), None, schema, names, c);
                } else {
                    cmp_node(pe, None, Some(item), schema, names, c);
                }
            }
        }
        _ => {}
    }
}

fn union_keys<'a>(
    l: Option<&'a Map<String, Value>>,
    r: Option<&'a Map<String, Value>>,
) -> Vec<&'a str> {
    let (Some(l), Some(r)) = (l, r) else {
        return l
            .or(r)
            .into_iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
    };
    let mut keys: Vec<&'a str> = l.keys().map(String::as_str).collect();
    keys.extend(r.keys().filter(|k| !l.contains_key(*k)).map(String::as_str));
    keys
}

/// The items of a granular list by path element: unique items in order, the first item of
/// each element, and items whose element could not be computed or repeat one.
struct ItemIndex<'a> {
    order: Vec<(PathElement, &'a Value)>,
    /// The position in the list of each item of `order`.
    positions: Vec<usize>,
    first: BTreeMap<PathElement, &'a Value>,
    /// `(position, item)` of items without a usable element, and of repeats.
    extra: Vec<(usize, &'a Value, Option<PathElement>)>,
}

fn index_items<'a>(
    list: Option<&'a Vec<Value>>,
    kind: &ListKind,
    schema: &Schema<'_>,
) -> ItemIndex<'a> {
    let mut idx = ItemIndex {
        order: Vec::new(),
        positions: Vec::new(),
        first: BTreeMap::new(),
        extra: Vec::new(),
    };
    for (i, item) in list.into_iter().flatten().enumerate() {
        match schema.item_pe(kind, item) {
            Ok(pe) => {
                if idx.first.contains_key(&pe) {
                    idx.extra.push((i, item, Some(pe)));
                } else {
                    idx.first.insert(pe.clone(), item);
                    idx.order.push((pe, item));
                    idx.positions.push(i);
                }
            }
            Err(_) => idx.extra.push((i, item, None)),
        }
    }
    idx
}

/// Upstream `TypedValue.Merge` with its keep-right-hand-side rule: `rhs` (the applied
/// configuration) wins on every leaf, maps merge field by field, granular lists merge item by
/// item in upstream's order. `None` means the field is left out; a `null` leaf from `rhs`
/// leaves the field out too (upstream's typed objects turn it into an unset field).
pub(crate) fn merge(lhs: &Value, rhs: &Value, schema: &Schema<'_>) -> Value {
    let mut w = Walk::new(schema);
    merge_node(Some(lhs), Some(rhs), &mut w).unwrap_or_else(|| Value::Object(Map::new()))
}

fn merge_leaf(l: Option<&Value>, r: Option<&Value>) -> Option<Value> {
    match r {
        Some(Value::Null) => None,
        Some(v) => Some(v.clone()),
        None => l.cloned(),
    }
}

fn merge_node<'a>(
    l: Option<&'a Value>,
    r: Option<&'a Value>,
    w: &mut Walk<'_, 'a>,
) -> Option<Value> {
    let ls = shape_of(l);
    let rs = shape_of(r);
    let shape = match (ls, rs) {
        (Some(a), Some(b)) if a != b => return merge_leaf(l, r),
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => Shape::Leaf,
    };
    match shape {
        Shape::Leaf => merge_leaf(l, r),
        Shape::Map => {
            let lm = l.and_then(Value::as_object);
            let rm = r.and_then(Value::as_object);
            let empty = lm.is_none_or(Map::is_empty) && rm.is_none_or(Map::is_empty);
            if empty || w.schema.atomic_map(&w.names) {
                return merge_leaf(l, r);
            }
            let mut out = Map::new();
            for k in union_keys(lm, rm) {
                w.names.push(k);
                w.path.push(PathElement::Field(k.to_string()));
                let merged = merge_node(lm.and_then(|m| m.get(k)), rm.and_then(|m| m.get(k)), w);
                w.path.pop();
                w.names.pop();
                if let Some(v) = merged {
                    out.insert(k.to_string(), v);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Shape::List => {
            let ll = l.and_then(Value::as_array);
            let rl = r.and_then(Value::as_array);
            let empty = ll.is_none_or(Vec::is_empty) && rl.is_none_or(Vec::is_empty);
            let kind = w.schema.list_kind(&w.names);
            if empty || kind == ListKind::Atomic {
                return merge_leaf(l, r);
            }
            let out = merge_list_items(ll, rl, &kind, w);
            (!out.is_empty()).then_some(Value::Array(out))
        }
    }
}

/// Upstream's `visitListItems` ordering: shared items keep the applied order, items only in
/// the live list stay where they were, new items are placed as they come in the applied list.
/// Repeated live items stay unless the applied list names them; live items without a key
/// stay in place.
fn merge_list_items<'a>(
    ll: Option<&'a Vec<Value>>,
    rl: Option<&'a Vec<Value>>,
    kind: &ListKind,
    w: &mut Walk<'_, 'a>,
) -> Vec<Value> {
    let lidx = index_items(ll, kind, w.schema);
    let ridx = index_items(rl, kind, w.schema);
    let mut out = Vec::new();

    // Live items that have no element of their own (or repeat one) travel with the item
    // before them.
    let order_pos: BTreeMap<&PathElement, usize> = lidx
        .order
        .iter()
        .enumerate()
        .map(|(n, (pe, _))| (pe, n))
        .collect();
    let mut trailing: BTreeMap<usize, Vec<&'a Value>> = BTreeMap::new();
    let mut leading: Vec<&'a Value> = Vec::new();
    for (i, item, pe) in &lidx.extra {
        if let Some(pe) = pe
            && ridx.first.contains_key(pe)
        {
            // The applied list names this repeated item: it is replaced.
            continue;
        }
        match lidx.positions.partition_point(|p| p < i) {
            0 => leading.push(item),
            n => trailing.entry(n - 1).or_default().push(item),
        }
    }
    out.extend(leading.into_iter().cloned());

    let shared: Vec<&PathElement> = ridx
        .order
        .iter()
        .map(|(pe, _)| pe)
        .filter(|pe| lidx.first.contains_key(*pe))
        .collect();
    let mut shared_iter = shared.into_iter();
    let mut next_shared = shared_iter.next();
    let (llen, rlen) = (lidx.order.len(), ridx.order.len());
    let (mut li, mut ri) = (0usize, 0usize);
    while li < llen || ri < rlen {
        let (before_l, before_r) = (li, ri);
        if li < llen && ri < rlen {
            let pe = &lidx.order[li].0;
            if *pe == ridx.order[ri].0 {
                push_merged(
                    pe,
                    Some(lidx.order[li].1),
                    Some(ridx.order[ri].1),
                    w,
                    &mut out,
                );
                if let Some(t) = trailing.get(&li) {
                    out.extend(t.iter().map(|v| (*v).clone()));
                }
                li += 1;
                ri += 1;
                next_shared = shared_iter.next();
                continue;
            }
            if ridx.first.contains_key(pe) && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < llen {
            let (pe, lv) = &lidx.order[li];
            if !ridx.first.contains_key(pe) {
                push_merged(pe, Some(lv), None, w, &mut out);
                if let Some(t) = trailing.get(&li) {
                    out.extend(t.iter().map(|v| (*v).clone()));
                }
                li += 1;
                continue;
            }
        }
        if ri < rlen {
            let (pe, rv) = &ridx.order[ri];
            let lv = lidx.first.get(pe).copied();
            push_merged(pe, lv, Some(rv), w, &mut out);
            if let Some(n) = order_pos.get(pe)
                && let Some(t) = trailing.get(n)
            {
                out.extend(t.iter().map(|v| (*v).clone()));
            }
            ri += 1;
            if next_shared.is_some_and(|n| n == pe) {
                next_shared = shared_iter.next();
            }
        }
        if (li, ri) == (before_l, before_r) {
            // Cannot happen with unique elements; never loop forever on odd input.
            li += 1;
        }
    }
    out
}

fn push_merged<'a>(
    pe: &PathElement,
    lv: Option<&'a Value>,
    rv: Option<&'a Value>,
    w: &mut Walk<'_, 'a>,
    out: &mut Vec<Value>,
) {
    w.path.push(pe.clone());
    if let Some(v) = merge_node(lv, rv, w) {
        out.push(v);
    }
    w.path.pop();
}

/// Upstream `RemoveItems`: drops every path of `set` (with everything under it). A map or
/// list emptied by the removal is left out of its parent, as upstream's typed objects do.
pub(crate) fn remove_items(v: &Value, set: &FieldSet, schema: &Schema<'_>) -> Value {
    let mut w = Walk::new(schema);
    match remove_node(v, set, &mut w) {
        Some(out) => out,
        None => match v {
            Value::Object(_) => Value::Object(Map::new()),
            other => other.clone(),
        },
    }
}

fn remove_node<'a>(v: &'a Value, set: &FieldSet, w: &mut Walk<'_, 'a>) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.is_empty() || w.schema.atomic_map(&w.names) {
                return Some(v.clone());
            }
            let mut out = Map::new();
            for (k, child) in m {
                let pe = PathElement::Field(k.clone());
                if set.has_member(&pe) {
                    continue;
                }
                match set.child(&pe) {
                    Some(sub) if !sub.is_empty() => {
                        w.names.push(k);
                        let r = remove_node(child, sub, w);
                        w.names.pop();
                        if let Some(r) = r {
                            out.insert(k.clone(), r);
                        }
                    }
                    _ => {
                        out.insert(k.clone(), child.clone());
                    }
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => {
            let kind = w.schema.list_kind(&w.names);
            if items.is_empty() || kind == ListKind::Atomic {
                return Some(v.clone());
            }
            let mut out = Vec::new();
            for item in items {
                let Ok(pe) = w.schema.item_pe(&kind, item) else {
                    out.push(item.clone());
                    continue;
                };
                if set.has_member(&pe) {
                    continue;
                }
                match set.child(&pe) {
                    Some(sub) if !sub.is_empty() => {
                        if let Some(r) = remove_node(item, sub, w) {
                            out.push(r);
                        }
                    }
                    _ => out.push(item.clone()),
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        other => Some(other.clone()),
    }
}

/// Copies the value at each member path of `fields` (paths of object fields only) from `src`
/// into `dst`, removing it from `dst` where `src` has none: how a strategy resets the fields
/// a request may not change.
pub(crate) fn reset_paths(dst: &mut Value, src: Option<&Value>, fields: &FieldSet) {
    for path in fields.paths() {
        let names: Option<Vec<&str>> = path
            .0
            .iter()
            .map(|pe| match pe {
                PathElement::Field(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        let Some(names) = names else { continue };
        let Some((last, parents)) = names.split_last() else {
            continue;
        };
        let from = src.and_then(|s| {
            let mut cur = s;
            for n in &names {
                cur = cur.get(*n)?;
            }
            Some(cur.clone())
        });
        set_at(dst, parents, last, from);
    }
}

/// Sets (`Some`) or removes (`None`) `dst[parents...][last]`, creating missing parents only
/// when setting.
fn set_at(dst: &mut Value, parents: &[&str], last: &str, value: Option<Value>) {
    let Value::Object(m) = dst else { return };
    match parents.split_first() {
        None => match value {
            Some(v) => {
                m.insert(last.to_string(), v);
            }
            None => {
                m.remove(last);
            }
        },
        Some((first, rest)) => {
            if !m.contains_key(*first) {
                if value.is_none() {
                    return;
                }
                m.insert((*first).to_string(), Value::Object(Map::new()));
            }
            if let Some(next) = m.get_mut(*first) {
                set_at(next, rest, last, value);
            }
        }
    }
}

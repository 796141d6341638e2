//! Server-side `meta.k8s.io/v1` Table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).
//!
//! Built-in kinds get upstream's printer columns and cell formatting
//! (`pkg/printers/internalversion/printers.go`, printed as the apiserver does, with every
//! column: kubectl hides `priority > 0` columns unless `-o wide`). Kinds without a printer get
//! upstream's default `NAME`, `CREATED AT`; custom resources get `NAME` plus the CRD's
//! `additionalPrinterColumns` (or `AGE`).

pub mod format;
mod printers;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::openapi::field_doc;
use crate::resource::ResourceDef;

/// What each row's `object` carries (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `meta.k8s.io/v1` `PartialObjectMetadata` (upstream's default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter (absent → `Metadata`).
    pub fn parse(v: Option<&str>) -> Result<IncludeObject, String> {
        match v {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(format!(
                "includeObject: Unsupported value: \"{other}\": supported values: \"Metadata\", \"None\", \"Object\""
            )),
        }
    }
}

/// One column of a Table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
}

impl Column {
    pub(crate) fn new(name: &str, type_: &str, description: impl Into<String>) -> Column {
        Column {
            name: name.to_string(),
            type_: type_.to_string(),
            format: String::new(),
            description: description.into(),
            priority: 0,
        }
    }

    /// The `Name` column every printer starts with.
    pub(crate) fn name() -> Column {
        let mut c = Column::new("Name", "string", field_doc("ObjectMeta", "name"));
        c.format = "name".into();
        c
    }

    /// The `Age` column.
    pub(crate) fn age() -> Column {
        Column::new(
            "Age",
            "string",
            field_doc("ObjectMeta", "creationTimestamp"),
        )
    }

    pub(crate) fn wide(mut self) -> Column {
        self.priority = 1;
        self
    }

    pub(crate) fn with_format(mut self, format: &str) -> Column {
        self.format = format.to_string();
        self
    }

    fn to_value(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// One printed row: its cells and (pods) row conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub cells: Vec<Value>,
    pub conditions: Vec<Value>,
}

impl Row {
    pub(crate) fn new(cells: Vec<Value>) -> Row {
        Row {
            cells,
            conditions: Vec::new(),
        }
    }
}

/// The column definitions of `def`'s Table.
pub fn columns(def: &ResourceDef) -> Vec<Column> {
    if let Some(cols) = printers::columns(def) {
        return cols;
    }
    if def.custom {
        return custom_columns(def);
    }
    default_columns()
}

/// One object's row.
pub fn row(def: &ResourceDef, obj: &Value, now: Timestamp) -> Row {
    if let Some(r) = printers::row(def, obj, now) {
        return r;
    }
    if def.custom {
        return custom_row(def, obj, now);
    }
    default_row(obj)
}

/// The Table of `objects` (list metadata is left for the caller to set).
pub fn table_for(
    def: &ResourceDef,
    objects: &[Value],
    now: Timestamp,
    include_object: IncludeObject,
) -> Value {
    let cols: Vec<Value> = columns(def).iter().map(Column::to_value).collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let r = row(def, obj, now);
            let mut m = Map::new();
            m.insert("cells".into(), Value::Array(r.cells));
            if !r.conditions.is_empty() {
                m.insert("conditions".into(), Value::Array(r.conditions));
            }
            m.insert("object".into(), row_object(obj, include_object));
            Value::Object(m)
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": cols,
        "rows": rows,
    })
}

/// A row's `object` as `includeObject` asks.
pub fn row_object(obj: &Value, include_object: IncludeObject) -> Value {
    match include_object {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

fn default_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new(
            "Created At",
            "date",
            field_doc("ObjectMeta", "creationTimestamp"),
        ),
    ]
}

/// Upstream's default convertor: name and the creation time in RFC 3339 (UTC).
fn default_row(obj: &Value) -> Row {
    let created = format::parse_time(obj.pointer("/metadata/creationTimestamp"))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
    Row::new(vec![
        json!(format::s(obj, "/metadata/name")),
        json!(created),
    ])
}

/// The columns CRDs get by default when they list no `additionalPrinterColumns`.
fn custom_printer_columns(def: &ResourceDef) -> Vec<crate::resource::PrinterColumn> {
    match def.crd.as_ref() {
        Some(c) if !c.printer_columns.is_empty() => c.printer_columns.clone(),
        _ => vec![crate::resource::PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            format: String::new(),
            description: field_doc("ObjectMeta", "creationTimestamp"),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        }],
    }
}

fn custom_columns(def: &ResourceDef) -> Vec<Column> {
    let mut cols = vec![Column::name()];
    for c in custom_printer_columns(def) {
        let description = if c.description.is_empty() {
            format!(
                "Custom resource definition column (in JSONPath format): {}",
                c.json_path
            )
        } else {
            c.description.clone()
        };
        cols.push(Column {
            name: c.name.clone(),
            type_: c.type_.clone(),
            format: c.format.clone(),
            description,
            priority: c.priority,
        });
    }
    cols
}

/// apiextensions' `cellForJSONValue`.
fn cell_for_json(type_: &str, v: &Value, now: Timestamp) -> Value {
    match (type_, v) {
        ("integer", Value::Number(n)) => n
            .as_i64()
            .map(|i| json!(i))
            .or_else(|| n.as_f64().map(|f| json!(f as i64)))
            .unwrap_or(Value::Null),
        ("number", Value::Number(n)) => n.as_f64().map(|f| json!(f)).unwrap_or(Value::Null),
        ("boolean", Value::Bool(b)) => json!(b),
        ("string", Value::String(s)) => json!(s),
        ("date", Value::String(s)) => match s.parse::<Timestamp>() {
            Ok(t) => json!(format::between(t, now)),
            Err(_) => json!("<invalid>"),
        },
        _ => Value::Null,
    }
}

fn custom_row(def: &ResourceDef, obj: &Value, now: Timestamp) -> Row {
    let mut cells = vec![json!(format::s(obj, "/metadata/name"))];
    for c in custom_printer_columns(def) {
        let found = crate::jsonpath::JsonPath::parse(&c.json_path)
            .ok()
            .and_then(|p| p.first(obj).cloned());
        let cell = match found {
            None | Some(Value::Null) => Value::Null,
            Some(v) if c.type_ == "string" => json!(crate::jsonpath::to_text(&v)),
            Some(v) => cell_for_json(&c.type_, &v, now),
        };
        cells.push(cell);
    }
    Row::new(cells)
}

#[cfg(test)]
mod tests;

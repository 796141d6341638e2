//! Cell formatting helpers shared by the printers, as upstream's printers format them.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// apimachinery's `duration.HumanDuration` of a signed duration in nanoseconds: `5s`,
/// `3m2s`, `2d3h`, `<invalid>` for more than a second in the future.
pub fn human_duration_nanos(d: i128) -> String {
    let seconds = d / NANOS_PER_SECOND;
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d / (60 * NANOS_PER_SECOND);
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d / (3600 * NANOS_PER_SECOND);
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{h}h", hours / 24);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{dy}d", hours / 24 / 365);
    }
    format!("{}y", hours / 24 / 365)
}

/// `duration.HumanDuration` of a number of seconds.
pub fn human_duration_seconds(seconds: i64) -> String {
    human_duration_nanos(i128::from(seconds) * NANOS_PER_SECOND)
}

/// Parses an RFC 3339 timestamp (`metav1.Time` / `MicroTime`).
pub fn parse_time(v: Option<&Value>) -> Option<Timestamp> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse::<Timestamp>().ok())
}

fn nanos_between(from: Timestamp, to: Timestamp) -> i128 {
    to.as_nanosecond() - from.as_nanosecond()
}

/// `translateTimestampSince`: how long ago `ts` was, `<unknown>` when unset.
pub fn since(ts: Option<&Value>, now: Timestamp) -> String {
    match parse_time(ts) {
        Some(t) => human_duration_nanos(nanos_between(t, now)),
        None => "<unknown>".into(),
    }
}

/// `translateTimestampUntil`.
pub fn until(ts: Option<&Value>, now: Timestamp) -> String {
    match parse_time(ts) {
        Some(t) => human_duration_nanos(nanos_between(now, t)),
        None => "<unknown>".into(),
    }
}

/// The human duration between two timestamps.
pub fn between(from: Timestamp, to: Timestamp) -> String {
    human_duration_nanos(nanos_between(from, to))
}

/// The AGE cell: time since `metadata.creationTimestamp`.
pub fn age(obj: &Value, now: Timestamp) -> String {
    since(obj.pointer("/metadata/creationTimestamp"), now)
}

/// A string field, "" when absent.
pub fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// An integer field, 0 when absent.
pub fn i(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// A boolean field, false when absent.
pub fn b(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).and_then(Value::as_bool).unwrap_or(false)
}

/// An array field, empty when absent.
pub fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The number of entries of a map (or list) field.
pub fn count(v: &Value, pointer: &str) -> i64 {
    match v.pointer(pointer) {
        Some(Value::Object(m)) => m.len() as i64,
        Some(Value::Array(a)) => a.len() as i64,
        _ => 0,
    }
}

/// `labels.FormatLabels`: `a=b,c=d` sorted by key, `<none>` when empty.
pub fn format_labels(v: Option<&Value>) -> String {
    let Some(Value::Object(m)) = v else {
        return "<none>".into();
    };
    if m.is_empty() {
        return "<none>".into();
    }
    let mut pairs: Vec<(&String, String)> = m
        .iter()
        .map(|(k, v)| {
            (
                k,
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A label selector that `metav1.LabelSelectorAsSelector` refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidSelector;

/// `metav1.LabelSelectorAsSelector(sel).String()`: requirements sorted by key, `Err` for an
/// invalid selector. `None` (nil selector) and an empty selector both print as "".
pub fn selector_string(sel: Option<&Value>) -> Result<String, InvalidSelector> {
    let Some(sel) = sel.filter(|v| !v.is_null()) else {
        return Ok(String::new());
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(Value::Object(m)) = sel.get("matchLabels") {
        for (k, v) in m {
            let v = v.as_str().ok_or(InvalidSelector)?;
            reqs.push((k.clone(), format!("{k}={v}")));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let key = e
            .get("key")
            .and_then(Value::as_str)
            .ok_or(InvalidSelector)?;
        let values: BTreeSet<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let joined = values.iter().copied().collect::<Vec<_>>().join(",");
        let text = match e.get("operator").and_then(Value::as_str) {
            Some("In") if !values.is_empty() => format!("{key} in ({joined})"),
            Some("NotIn") if !values.is_empty() => format!("{key} notin ({joined})"),
            Some("Exists") if values.is_empty() => key.to_string(),
            Some("DoesNotExist") if values.is_empty() => format!("!{key}"),
            _ => return Err(InvalidSelector),
        };
        reqs.push((key.to_string(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(","))
}

/// `metav1.FormatLabelSelector`: `<none>` for an empty selector, `<error>` for an invalid one.
pub fn format_label_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        Ok(s) if s.is_empty() => "<none>".into(),
        Ok(s) => s,
        Err(InvalidSelector) => "<error>".into(),
    }
}

/// `intstr.IntOrString.String()`.
pub fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// A quantity as printed. kumo keeps quantities as their JSON strings.
pub fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".into(),
    }
}

/// `layoutContainerCells`: container names and images joined by commas.
pub fn containers(list: &[Value]) -> (String, String) {
    let names: Vec<&str> = list
        .iter()
        .map(|c| c.get("name").and_then(Value::as_str).unwrap_or(""))
        .collect();
    let images: Vec<&str> = list
        .iter()
        .map(|c| c.get("image").and_then(Value::as_str).unwrap_or(""))
        .collect();
    (names.join(","), images.join(","))
}

/// `helper.GetAccessModesAsString`.
pub fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    let mut out = Vec::new();
    for (mode, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if has(mode) {
            out.push(short);
        }
    }
    out.join(",")
}

/// `listWithMoreString`.
pub fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count.saturating_sub(max));
    }
    if ret.is_empty() {
        return "<unset>".into();
    }
    ret
}

/// `printBoolPtr`: `True`, `False` or `<unset>`.
pub fn bool_ptr(v: Option<&Value>) -> String {
    match v.and_then(Value::as_bool) {
        Some(true) => "True".into(),
        Some(false) => "False".into(),
        None => "<unset>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn human_duration_matches_upstream_tests() {
        // apimachinery's duration_test.go: TestHumanDuration and TestHumanDurationBoundaries.
        const MS: i128 = 1_000_000;
        const S: i128 = 1_000 * MS;
        const M: i128 = 60 * S;
        const H: i128 = 60 * M;
        const D: i128 = 24 * H;
        let cases: &[(i128, &str)] = &[
            (S, "1s"),
            (70 * S, "70s"),
            (190 * S, "3m10s"),
            (70 * M, "70m"),
            (47 * H, "47h"),
            (49 * H, "2d1h"),
            ((8 * 24 + 2) * H, "8d"),
            (367 * D, "367d"),
            ((365 * 2 * 24 + 25) * H, "2y1d"),
            ((365 * 8 * 24 + 2) * H, "8y"),
            (-2 * S, "<invalid>"),
            (-2 * S + 1, "0s"),
            (0, "0s"),
            (S - MS, "0s"),
            (2 * M - MS, "119s"),
            (2 * M, "2m"),
            (2 * M + S, "2m1s"),
            (10 * M - MS, "9m59s"),
            (10 * M, "10m"),
            (10 * M + S, "10m"),
            (3 * H - MS, "179m"),
            (3 * H, "3h"),
            (3 * H + M, "3h1m"),
            (8 * H - MS, "7h59m"),
            (8 * H, "8h"),
            (8 * H + 59 * M, "8h"),
            (2 * D - MS, "47h"),
            (2 * D, "2d"),
            (2 * D + H, "2d1h"),
            (8 * D - MS, "7d23h"),
            (8 * D, "8d"),
            (8 * D + 23 * H, "8d"),
            (2 * 365 * D - MS, "729d"),
            (2 * 365 * D, "2y"),
            (2 * 365 * D + 23 * H, "2y"),
            (2 * 365 * D + 23 * H + 59 * M, "2y"),
            (2 * 365 * D + 24 * H - MS, "2y"),
            (2 * 365 * D + 24 * H, "2y1d"),
            (3 * 365 * D, "3y"),
            (7 * 365 * D, "7y"),
            (8 * 365 * D - MS, "7y364d"),
            (8 * 365 * D, "8y"),
            (8 * 365 * D + 364 * D, "8y"),
            (9 * 365 * D, "9y"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration_nanos(*d), *want, "{d}ns");
        }
        assert_eq!(human_duration_seconds(5), "5s");
    }

    #[test]
    fn labels_and_selectors() {
        assert_eq!(format_labels(Some(&json!({"b": "2", "a": "1"}))), "a=1,b=2");
        assert_eq!(format_labels(Some(&json!({}))), "<none>");
        assert_eq!(format_labels(None), "<none>");
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["b", "a"]},
            {"key": "env", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "Exists"},
            {"key": "x", "operator": "NotIn", "values": ["1"]}
        ]});
        assert_eq!(
            format_label_selector(Some(&sel)),
            "app=web,!env,tier in (a,b),x notin (1),zone"
        );
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(
            format_label_selector(Some(
                &json!({"matchExpressions": [{"key": "a", "operator": "Bad"}]})
            )),
            "<error>"
        );
    }

    #[test]
    fn since_unknown_and_future() {
        let now: Timestamp = "2024-01-01T00:00:10Z".parse().expect("ts");
        assert_eq!(since(Some(&json!("2024-01-01T00:00:05Z")), now), "5s");
        assert_eq!(since(None, now), "<unknown>");
        assert_eq!(
            since(Some(&json!("2024-01-01T00:01:10Z")), now),
            "<invalid>"
        );
        assert_eq!(until(Some(&json!("2024-01-01T00:01:10Z")), now), "60s");
    }
}

//! Resource quantities (`500m`, `2`, `128Mi`, `1.5G`, `1e3`) as the kubelet needs them: CPU in
//! millicores, everything else in base units, and back to the strings Node status carries.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Parses a quantity into base units (cores for CPU, bytes for memory). `None` when malformed.
pub fn parse(q: &str) -> Option<f64> {
    let s = q.trim();
    if s.is_empty() {
        return None;
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        e if e.starts_with('e') || e.starts_with('E') => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// Rounds up, ignoring binary floating-point noise (`0.7 * 1000` is `700.0000000000001`).
pub fn ceil(v: f64) -> u64 {
    let r = v.round();
    let v = if (v - r).abs() < 1e-6 { r } else { v.ceil() };
    v.max(0.0) as u64
}

/// CPU quantity in millicores (rounded up, like upstream's `MilliValue`).
pub fn cpu_millis(q: &Quantity) -> u64 {
    parse(&q.0).map_or(0, |v| ceil(v * 1000.0))
}

/// Any other quantity in base units (rounded up).
pub fn value(q: &Quantity) -> u64 {
    parse(&q.0).map_or(0, ceil)
}

/// A resource map entry in base units (`cpu` in millicores).
pub fn resource(map: Option<&BTreeMap<String, Quantity>>, name: &str) -> Option<u64> {
    let q = map?.get(name)?;
    Some(if name == "cpu" {
        cpu_millis(q)
    } else {
        value(q)
    })
}

/// Effective request of a container: the request, else the limit (the apiserver defaults
/// requests from limits, but pods created elsewhere may not have it).
pub fn container_request(c: &Container, name: &str) -> u64 {
    let r = c.resources.as_ref();
    resource(r.and_then(|r| r.requests.as_ref()), name)
        .or_else(|| resource(r.and_then(|r| r.limits.as_ref()), name))
        .unwrap_or(0)
}

/// A container's limit of `name`, if it has one.
pub fn container_limit(c: &Container, name: &str) -> Option<u64> {
    resource(c.resources.as_ref().and_then(|r| r.limits.as_ref()), name)
}

/// Millicores as a quantity string (`2`, `1500m`).
pub fn format_cpu(millis: u64) -> Quantity {
    if millis.is_multiple_of(1000) {
        Quantity((millis / 1000).to_string())
    } else {
        Quantity(format!("{millis}m"))
    }
}

/// Bytes as upstream prints node memory: `Ki` when it divides evenly, else plain bytes.
pub fn format_bytes(bytes: u64) -> Quantity {
    if bytes.is_multiple_of(1024) {
        Quantity(format!("{}Ki", bytes / 1024))
    } else {
        Quantity(bytes.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("128Mi"), Some(134_217_728.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("x"), None);
        assert_eq!(cpu_millis(&Quantity("100m".into())), 100);
        assert_eq!(cpu_millis(&Quantity("1.5".into())), 1500);
        assert_eq!(cpu_millis(&Quantity("700m".into())), 700);
        assert_eq!(cpu_millis(&Quantity("0.7".into())), 700);
        assert_eq!(cpu_millis(&Quantity("1.0001".into())), 1001);
        assert_eq!(format_cpu(2000).0, "2");
        assert_eq!(format_cpu(1500).0, "1500m");
        assert_eq!(format_bytes(2048).0, "2Ki");
    }
}

//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`, `1k`) as integers, the way the
//! scheduler reads them: CPU in millicores (`MilliValue`), everything else in whole units
//! rounded up (`Value`).

/// A parsed quantity as the exact rational `num / den`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ratio {
    num: i128,
    den: i128,
}

fn pow(base: i128, exp: u32) -> Option<i128> {
    base.checked_pow(exp)
}

fn parse(s: &str) -> Option<Ratio> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (neg, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(num_end);
    if number.is_empty() || number == "." {
        return None;
    }
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    let digits = format!("{int_part}{frac_part}");
    let mut num: i128 = digits.parse().ok()?;
    let mut den: i128 = pow(10, u32::try_from(frac_part.len()).ok()?)?;
    let (mul, div): (i128, i128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (pow(10, 12)?, 1),
        "P" => (pow(10, 15)?, 1),
        "E" => (pow(10, 18)?, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        other => {
            let exp = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))?;
            let e: i32 = exp.parse().ok()?;
            if e.unsigned_abs() > 30 {
                return None;
            }
            if e >= 0 {
                (pow(10, e.unsigned_abs())?, 1)
            } else {
                (1, pow(10, e.unsigned_abs())?)
            }
        }
    };
    num = num.checked_mul(mul)?;
    den = den.checked_mul(div)?;
    if neg {
        num = -num;
    }
    Some(Ratio { num, den })
}

fn ceil_div(num: i128, den: i128) -> i128 {
    let q = num / den;
    if num % den != 0 && (num > 0) == (den > 0) {
        q + 1
    } else {
        q
    }
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v > 0 { i64::MAX } else { i64::MIN })
}

/// `Quantity.MilliValue()`: the quantity × 1000, rounded up. `None` if it does not parse.
pub fn milli_value(s: &str) -> Option<i64> {
    let r = parse(s)?;
    Some(clamp(ceil_div(r.num.checked_mul(1000)?, r.den)))
}

/// `Quantity.Value()`: the quantity rounded up to an integer. `None` if it does not parse.
pub fn value(s: &str) -> Option<i64> {
    let r = parse(s)?;
    Some(clamp(ceil_div(r.num, r.den)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory() {
        assert_eq!(milli_value("100m"), Some(100));
        assert_eq!(milli_value("1"), Some(1000));
        assert_eq!(milli_value("1.5"), Some(1500));
        assert_eq!(milli_value("0.1"), Some(100));
        assert_eq!(milli_value("1u"), Some(1)); // rounded up
        assert_eq!(value("1Gi"), Some(1 << 30));
        assert_eq!(value("1.5Gi"), Some(3 << 29));
        assert_eq!(value("128974848"), Some(128_974_848));
        assert_eq!(value("129e6"), Some(129_000_000));
        assert_eq!(value("123Mi"), Some(123 << 20));
        assert_eq!(value("1k"), Some(1000));
        assert_eq!(value("500m"), Some(1)); // Value() rounds up
        assert_eq!(value("110"), Some(110));
        assert_eq!(value("abc"), None);
        assert_eq!(value("1Xi"), None);
    }
}

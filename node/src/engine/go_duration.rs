//! Go's duration syntax (`time.ParseDuration`: `1h30m`, `90s`, `1.5h`, `250ms`, `-2m`), which
//! Temporal reads in cron `@every`, schedule specs and list queries, plus Temporal's `d` (24h).

/// Nanoseconds of a Go duration string. Errors say what was wrong, for the caller to wrap.
pub fn parse_ns(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a duration like 1h30m");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (whole, after) = rest.split_at(digits(rest));
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => after.split_at(digits(after)),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(bad());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            "" => return Err(format!("{}: the unit is missing", bad())),
            _ => return Err(format!("{}: unknown unit {unit:?}", bad())),
        };
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(bad)?;
        if !fraction.is_empty() {
            let fraction = fraction.get(..18).unwrap_or(fraction);
            let numerator: i128 = fraction.parse().map_err(|_| bad())?;
            let denominator = u32::try_from(fraction.len())
                .ok()
                .and_then(|len| 10_i128.checked_pow(len))
                .ok_or_else(bad)?;
            let part = numerator.checked_mul(scale).ok_or_else(bad)? / denominator;
            value = value.checked_add(part).ok_or_else(bad)?;
        }
        total = total.checked_add(value).ok_or_else(bad)?;
        rest = after;
    }
    i64::try_from(if negative { -total } else { total }).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::parse_ns;

    const SEC: i64 = 1_000_000_000;

    #[test]
    fn durations_read_as_go_reads_them() {
        for (text, ns) in [
            ("1h2m", 3_720 * SEC),
            ("1.5s", 1_500_000_000),
            ("300ms", 300_000_000),
            ("2d", 172_800 * SEC),
            ("10µs", 10_000),
            ("-1m", -60 * SEC),
            ("+90s", 90 * SEC),
            (".5h", 1_800 * SEC),
            ("0", 0),
        ] {
            assert_eq!(parse_ns(text), Ok(ns), "{text:?}");
        }
        for bad in ["", "h", "1", "1x", "1.s.", "9999999999999999999h", "-"] {
            assert!(parse_ns(bad).is_err(), "{bad:?} parsed");
        }
    }
}

//! Cron schedules of workflows, read as Temporal reads them (robfig/cron's standard parser):
//! five fields (minute, hour, day of month, month, day of week) with `*`, `?`, ranges, lists,
//! steps and month and weekday names; the descriptors `@yearly`, `@annually`, `@monthly`,
//! `@weekly`, `@daily`, `@midnight`, `@hourly` and `@every DURATION`. Times are UTC; a
//! `CRON_TZ=`/`TZ=` prefix naming another zone is refused rather than misread.

const NS_PER_SEC: i64 = 1_000_000_000;

/// A parsed cron schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronSchedule {
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// Bit sets of the allowed values of each field.
    Fields {
        minute: u64,
        hour: u64,
        day_of_month: u64,
        month: u64,
        day_of_week: u64,
        /// Day of month or day of week was `*` or `?`: both must match (else either may).
        any_day: bool,
    },
    /// `@every`: a fixed delay in whole seconds.
    Every(i64),
}

struct Field {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: Field = Field {
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DAY_OF_WEEK: Field = Field {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl CronSchedule {
    /// Parses `spec`; the error says what is wrong with it.
    pub fn parse(spec: &str) -> Result<CronSchedule, String> {
        let mut spec = spec.trim();
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = spec.strip_prefix(prefix) {
                let (zone, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                if !matches!(zone, "UTC" | "Etc/UTC" | "GMT") {
                    return Err(format!(
                        "time zone {zone:?}: Keel reads cron schedules in UTC only"
                    ));
                }
                spec = rest.trim();
            }
        }
        if let Some(descriptor) = spec.strip_prefix('@') {
            return Self::descriptor(descriptor);
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        let [minute, hour, day_of_month, month, day_of_week] = fields[..] else {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        };
        let (day_of_month, dom_star) = parse_field(day_of_month, &DAY_OF_MONTH)?;
        let (day_of_week, dow_star) = parse_field(day_of_week, &DAY_OF_WEEK)?;
        Ok(CronSchedule {
            kind: Kind::Fields {
                minute: parse_field(minute, &MINUTE)?.0,
                hour: parse_field(hour, &HOUR)?.0,
                day_of_month,
                month: parse_field(month, &MONTH)?.0,
                day_of_week,
                any_day: dom_star || dow_star,
            },
        })
    }

    fn descriptor(descriptor: &str) -> Result<CronSchedule, String> {
        let fields = match descriptor {
            "yearly" | "annually" => "0 0 1 1 *",
            "monthly" => "0 0 1 * *",
            "weekly" => "0 0 * * 0",
            "daily" | "midnight" => "0 0 * * *",
            "hourly" => "0 * * * *",
            other => {
                let Some(duration) = other.strip_prefix("every ") else {
                    return Err(format!("unknown descriptor @{other}"));
                };
                let seconds = super::go_duration::parse_ns(duration.trim())? / NS_PER_SEC;
                return Ok(CronSchedule {
                    kind: Kind::Every(seconds.max(1)),
                });
            }
        };
        Self::parse(fields)
    }

    /// The first scheduled time after `after_ns` (whole seconds, as robfig/cron).
    pub fn next(&self, after_ns: i64) -> Option<i64> {
        let second = after_ns.div_euclid(NS_PER_SEC);
        match &self.kind {
            Kind::Every(delay) => Some((second + delay) * NS_PER_SEC),
            Kind::Fields {
                minute,
                hour,
                day_of_month,
                month,
                day_of_week,
                any_day,
            } => {
                // The first whole minute at or after the next second.
                let first_minute = (second + 1 + 59).div_euclid(60);
                let first_day = first_minute.div_euclid(1440);
                // Any valid schedule fires within five years (Feb 29 within eight).
                for day in first_day..first_day + 366 * 8 {
                    let (_, m, d) = civil_from_days(day);
                    let weekday = (day + 4).rem_euclid(7) as u32;
                    let dom_match = bit(*day_of_month, d);
                    let dow_match = bit(*day_of_week, weekday);
                    let day_match = if *any_day {
                        dom_match && dow_match
                    } else {
                        dom_match || dow_match
                    };
                    if !bit(*month, m) || !day_match {
                        continue;
                    }
                    for h in (0..24).filter(|h| bit(*hour, *h)) {
                        for mi in (0..60).filter(|mi| bit(*minute, *mi)) {
                            let at = day * 1440 + i64::from(h) * 60 + i64::from(mi);
                            if at >= first_minute {
                                return Some(at * 60 * NS_PER_SEC);
                            }
                        }
                    }
                }
                None
            }
        }
    }

    /// Temporal's backoff before the next run of a cron workflow whose current run became
    /// due at `scheduled_ns` and closes at `now_ns`: to the first scheduled time after the run
    /// was due that is not before now, in whole seconds (rounded up). None if there is none.
    pub fn backoff_ms(&self, scheduled_ns: i64, now_ns: i64) -> Option<i64> {
        let mut next = self.next(scheduled_ns)?;
        while next < now_ns {
            next = self.next(next)?;
        }
        let ns = next - now_ns;
        Some((ns + NS_PER_SEC - 1) / NS_PER_SEC * 1000)
    }
}

fn bit(set: u64, value: u32) -> bool {
    set & (1 << value) != 0
}

/// One field: a comma-separated list of ranges. Also says whether it was `*` or `?`.
fn parse_field(text: &str, field: &Field) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for range in text.split(',') {
        let (range_bits, range_star) = parse_range(range, field)?;
        bits |= range_bits;
        star |= range_star;
    }
    Ok((bits, star))
}

fn parse_range(text: &str, field: &Field) -> Result<(u64, bool), String> {
    let (range, step) = match text.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (text, None),
    };
    let mut star = false;
    let (start, mut end, single) = if range == "*" || range == "?" {
        star = true;
        (field.min, field.max, false)
    } else {
        match range.split_once('-') {
            Some((low, high)) => (value(low, field)?, value(high, field)?, false),
            None => {
                let v = value(range, field)?;
                (v, v, true)
            }
        }
    };
    let step = match step {
        Some(step) => {
            let step: u32 = step
                .parse()
                .map_err(|_| format!("bad step {step:?} in {text:?}"))?;
            if single {
                end = field.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
        None => 1,
    };
    if step == 0 {
        return Err(format!("step of zero in {text:?}"));
    }
    if start < field.min || end > field.max || start > end {
        return Err(format!(
            "{text:?} is outside {}-{} or backwards",
            field.min, field.max
        ));
    }
    let bits = (start..=end)
        .step_by(step as usize)
        .fold(0u64, |bits, v| bits | (1 << v));
    Ok((bits, star))
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = field.names.iter().position(|n| *n == lower) {
        return Ok(index as u32 + if field.names.len() == 12 { 1 } else { 0 });
    }
    text.parse()
        .map_err(|_| format!("{text:?} is not a number or a name"))
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-22T13:50:15Z.
    const NOW: i64 = 1_795_355_415 * NS_PER_SEC;

    fn at(spec: &str, after: i64) -> i64 {
        CronSchedule::parse(spec)
            .unwrap_or_else(|e| panic!("{spec}: {e}"))
            .next(after)
            .unwrap_or_else(|| panic!("{spec} never fires"))
            / NS_PER_SEC
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(NOW / NS_PER_SEC / 86_400), (2026, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn next_times_follow_the_fields() {
        let now = NOW / NS_PER_SEC;
        assert_eq!(at("* * * * *", NOW), now - 15 + 60);
        assert_eq!(at("*/15 * * * *", NOW), now - 15 - 50 * 60 + 60 * 60);
        assert_eq!(at("0 0 * * *", NOW), 1_795_392_000);
        assert_eq!(at("@daily", NOW), 1_795_392_000);
        // 2026-11-22 is a Sunday: the next Monday 09:30.
        assert_eq!(at("30 9 * * mon", NOW), 1_795_392_000 + 9 * 3600 + 1800);
        assert_eq!(at("0 0 1 jan *", NOW), 1_798_761_600);
        assert_eq!(at("@every 90s", NOW), now + 90);
        // A time exactly on the schedule moves to the next one.
        assert_eq!(at("* * * * *", (now - 15) * NS_PER_SEC), now - 15 + 60);
    }

    #[test]
    fn day_of_month_or_week_when_both_are_restricted() {
        // The 1st of the month or any Sunday: today is Sunday the 22nd.
        let today_noon = 1_795_305_600 + 12 * 3600;
        assert_eq!(at("0 12 1 * 0", NOW - 3 * 3600 * NS_PER_SEC), today_noon);
        // The 1st of the month and (because of *) any weekday: December 1st.
        assert_eq!(at("0 12 1 * *", NOW), 1_796_083_200 + 12 * 3600);
    }

    #[test]
    fn bad_schedules_say_why() {
        for spec in [
            "",
            "* * * *",
            "60 * * * *",
            "* * 0 * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "@fortnightly",
            "@every x",
            "CRON_TZ=Europe/Paris 0 9 * * *",
        ] {
            assert!(CronSchedule::parse(spec).is_err(), "{spec:?} parsed");
        }
        assert!(CronSchedule::parse("CRON_TZ=UTC 0 9 * * *").is_ok());
    }

    #[test]
    fn backoff_skips_missed_times_and_rounds_up() {
        let every_minute = CronSchedule::parse("* * * * *").unwrap_or_else(|e| panic!("{e}"));
        // Due at 13:50:15, closing at 13:52:30.5: the next run is at 13:53:00.
        let close = NOW + 135 * NS_PER_SEC + NS_PER_SEC / 2;
        assert_eq!(every_minute.backoff_ms(NOW, close), Some(30_000));
    }
}

//! Schedule-spec evaluation: compiles a Temporal `ScheduleSpec` (calendars, cron strings,
//! intervals, exclusions, start/end bounds, jitter, time zone) into something that yields its
//! action times, and produces the canonical form of a spec that DescribeSchedule reports.

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};
use chrono::{TimeZone, Timelike};
use chrono_tz::Tz;
use prost_wkt_types::Duration;
use temporalio_protos::temporal::api::schedule::v1::{
    CalendarSpec, IntervalSpec, Range, ScheduleSpec, StructuredCalendarSpec,
};

/// Smallest year a calendar may name (Temporal's limit).
const MIN_YEAR: i32 = 2000;
/// Largest year a calendar may name; no time after this year is ever produced.
const MAX_YEAR: i32 = 2100;
/// Last second (Unix seconds) of `MAX_YEAR` in UTC, the search horizon.
const MAX_SECS: i64 = 4_133_980_799;
/// Longest accepted calendar comment, in bytes.
const MAX_COMMENT_LEN: usize = 200;
/// How many excluded nominal times one `next` call may skip before giving up.
const MAX_EXCLUDED_SKIPS: usize = 100_000;
const NANOS: i64 = 1_000_000_000;

#[rustfmt::skip]
const MONTH_NAMES: [&str; 12] = [
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
];
#[rustfmt::skip]
const DOW_NAMES: [&str; 7] =
    ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"];

/// How values of a calendar string field are written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Decimal integers only.
    Int,
    /// Decimal integers; "*" alone means every year (an empty range list).
    Year,
    /// Integers or month names/prefixes of at least three letters.
    Month,
    /// Integers or weekday names/prefixes of at least two letters; 7 is Sunday.
    Dow,
}

/// One field of a calendar string: name, default text, bounds (inclusive) and value syntax.
struct Field(&'static str, &'static str, i32, i32, Mode);

const SECOND: Field = Field("second", "0", 0, 59, Mode::Int);
const MINUTE: Field = Field("minute", "0", 0, 59, Mode::Int);
const HOUR: Field = Field("hour", "0", 0, 23, Mode::Int);
const DOM: Field = Field("day_of_month", "*", 1, 31, Mode::Int);
const MONTH: Field = Field("month", "*", 1, 12, Mode::Month);
const YEAR: Field = Field("year", "*", MIN_YEAR, MAX_YEAR, Mode::Year);
const DOW: Field = Field("day_of_week", "*", 0, 7, Mode::Dow);

/// A spec compiled for computing times.
///
/// Calendars are matched against wall-clock time in the spec's time zone, literally: a wall
/// time skipped by a DST gap never fires, and a wall time repeated by a DST overlap fires at
/// both instants (as the proto documents and Temporal's calendar.go does).
#[derive(Debug, Clone)]
pub struct CompiledSpec {
    tz: Tz,
    calendars: Vec<Calendar>,
    excludes: Vec<Calendar>,
    /// (interval, phase) in whole seconds; interval > 0, 0 <= phase < interval.
    intervals: Vec<(i64, i64)>,
    /// Searches never start before this Unix second (start_time rounded up, minus one).
    floor_after: i64,
    end_ns: Option<i64>,
    jitter_ms: u64,
}

impl CompiledSpec {
    /// Compiles a spec (calendars, calendar strings, cron strings, intervals, exclusions,
    /// start/end time, jitter, timezone_name). Errors are human-readable messages naming the
    /// bad field and value, e.g. "invalid cron string \"0 25 * * *\": hour 25 is out of range
    /// 0-23".
    pub fn compile(spec: &ScheduleSpec) -> Result<CompiledSpec, String> {
        let spec = canonical(spec)?;
        let tz = load_tz(&spec)?;
        let mut intervals = Vec::with_capacity(spec.interval.len());
        for iv in &spec.interval {
            let every = duration_ns(iv.interval.as_ref()) / i128::from(NANOS);
            let phase = duration_ns(iv.phase.as_ref()) / i128::from(NANOS);
            intervals.push((clamp_i64(every).max(1), clamp_i64(phase).max(0)));
        }
        // Without a start_time Temporal still never schedules before the Unix epoch.
        let start_ns = spec
            .start_time
            .as_ref()
            .map_or(0, |t| ts_ns(t.seconds, t.nanos));
        let start_s = clamp_i64(
            start_ns.div_euclid(1_000_000_000) + i128::from(start_ns % 1_000_000_000 != 0),
        );
        Ok(CompiledSpec {
            tz,
            calendars: spec.structured_calendar.iter().map(Calendar::new).collect(),
            excludes: spec
                .exclude_structured_calendar
                .iter()
                .map(Calendar::new)
                .collect(),
            intervals,
            floor_after: start_s.saturating_sub(1),
            end_ns: spec
                .end_time
                .as_ref()
                .map(|t| clamp_i64(ts_ns(t.seconds, t.nanos))),
            jitter_ms: u64::try_from(
                (duration_ns(spec.jitter.as_ref()) / 1_000_000).clamp(0, i128::from(u32::MAX)),
            )
            .unwrap_or(0),
        })
    }

    /// The first action strictly after `after_ns`: (nominal time, actual time with jitter).
    /// None when the spec has no more times (empty spec, past end_time, or nothing within the
    /// search bound). `jitter_seed` makes jitter deterministic (same seed+nominal → same jitter).
    ///
    /// The search ends at the end of year 2100 and after skipping 100,000 excluded times.
    pub fn next(&self, jitter_seed: &str, after_ns: i64) -> Option<(i64, i64)> {
        let mut after = after_ns.div_euclid(NANOS).max(self.floor_after);
        for _ in 0..MAX_EXCLUDED_SKIPS {
            let nominal = self.raw_next(after)?;
            let nominal_ns = nominal.checked_mul(NANOS)?;
            if self.end_ns.is_some_and(|end| nominal_ns > end) {
                return None;
            }
            match self.excluded_until(nominal) {
                Some(until) => after = until,
                None => {
                    let jitter = self.jitter_ns(jitter_seed, nominal);
                    return Some((nominal_ns, nominal_ns.saturating_add(jitter)));
                }
            }
        }
        None
    }

    /// Earliest calendar or interval time after `after` (Unix seconds), ignoring exclusions
    /// and end_time; None past the horizon.
    fn raw_next(&self, after: i64) -> Option<i64> {
        if after >= MAX_SECS {
            return None;
        }
        let cal = self
            .calendars
            .iter()
            .filter_map(|c| c.next_instant(self.tz, after));
        let ivs = self.intervals.iter().filter_map(|&(every, phase)| {
            let k = after.checked_sub(phase)?.div_euclid(every).checked_add(1)?;
            k.checked_mul(every)?.checked_add(phase)
        });
        cal.chain(ivs).min().filter(|&t| t <= MAX_SECS)
    }

    /// If an exclusion matches the instant `secs`, the last instant of the run of seconds from
    /// `secs` that it certainly matches too (whole minutes, hours or days when the excluding
    /// calendar covers every second, minute or hour), so long runs are skipped in one step.
    fn excluded_until(&self, secs: i64) -> Option<i64> {
        let wall = |s: i64| Some(DateTime::from_timestamp(s, 0)?.with_timezone(&self.tz));
        let local = wall(secs)?.naive_local();
        let mut until = None;
        for cal in self.excludes.iter().filter(|c| c.matches(&local)) {
            let full = [(cal.second, 60), (cal.minute, 60), (cal.hour, 24)];
            let levels = full
                .iter()
                .take_while(|&&(bits, n)| bits == (1u64 << n) - 1)
                .count();
            let (h, m) = (local.hour(), local.minute());
            let mut end = secs;
            for (level, (h, m)) in [(3, (23, 59)), (2, (h, 59)), (1, (h, m))] {
                let Some(target) =
                    NaiveTime::from_hms_opt(h, m, 59).map(|t| local.date().and_time(t))
                else {
                    continue;
                };
                let cand = secs.saturating_add((target - local).num_seconds());
                // Only jump when no UTC-offset change lies in between.
                if level <= levels && wall(cand).is_some_and(|w| w.naive_local() == target) {
                    end = cand;
                    break;
                }
            }
            until = until.max(Some(end));
        }
        until
    }

    /// Deterministic jitter in nanoseconds (whole milliseconds) for a nominal time: in
    /// `[0, min(jitter, following nominal - nominal))`, from an FNV-1a hash of seed and time.
    fn jitter_ns(&self, seed: &str, nominal: i64) -> i64 {
        let mut max_ms = self.jitter_ms;
        if max_ms == 0 {
            return 0;
        }
        if let Some(following) = self.raw_next(nominal) {
            let gap_ms = following.saturating_sub(nominal).saturating_mul(1000);
            max_ms = max_ms.min(u64::try_from(gap_ms).unwrap_or(0));
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in seed.bytes().chain(nominal.to_le_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let ms = ((hash >> 32) * max_ms) >> 32;
        i64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000)
    }
}

/// Temporal's canonical form of a spec, as DescribeSchedule returns it: `calendar` (string form)
/// and `cron_string` entries are converted to `structured_calendar` entries appended after the
/// given structured ones (cron `@every` forms become `interval` entries; a cron's CRON_TZ/TZ sets
/// timezone_name), `exclude_calendar` becomes `exclude_structured_calendar`; everything else kept.
///
/// The result is validated (ranges, intervals, comments, time zone), so an `Ok` here means
/// [`CompiledSpec::compile`] succeeds too. Ranges are left as written; see [`clean_ranges`].
#[allow(deprecated)] // exclude_calendar is deprecated but still accepted
pub fn canonical(spec: &ScheduleSpec) -> Result<ScheduleSpec, String> {
    let mut out = spec.clone();
    for (i, cal) in spec.calendar.iter().enumerate() {
        let parsed =
            calendar_to_structured(cal).map_err(|e| format!("invalid calendar[{i}]: {e}"))?;
        out.structured_calendar.push(parsed);
    }
    out.calendar.clear();
    for (i, cal) in spec.exclude_calendar.iter().enumerate() {
        let parsed = calendar_to_structured(cal)
            .map_err(|e| format!("invalid exclude_calendar[{i}]: {e}"))?;
        out.exclude_structured_calendar.push(parsed);
    }
    out.exclude_calendar.clear();
    let mut cron_tz: Option<String> = None;
    for cron in &spec.cron_string {
        let (parsed, tz) =
            parse_cron(cron).map_err(|e| format!("invalid cron string {cron:?}: {e}"))?;
        match &cron_tz {
            Some(seen) if *seen != tz => {
                return Err(format!(
                    "cron strings have conflicting time zones {seen:?} and {tz:?}"
                ));
            }
            _ => cron_tz = Some(tz),
        }
        match parsed {
            Cron::Calendar(cal) => out.structured_calendar.push(cal),
            Cron::Interval(iv) => out.interval.push(iv),
        }
    }
    out.cron_string.clear();
    if let Some(tz) = cron_tz.filter(|tz| !tz.is_empty()) {
        if !out.timezone_data.is_empty()
            || (!out.timezone_name.is_empty() && out.timezone_name != tz)
        {
            return Err(format!(
                "cron string time zone {tz:?} conflicts with timezone_name {:?}",
                out.timezone_name
            ));
        }
        out.timezone_name = tz;
    }
    for (list, what) in [
        (&out.structured_calendar, "structured_calendar"),
        (
            &out.exclude_structured_calendar,
            "exclude_structured_calendar",
        ),
    ] {
        for (i, cal) in list.iter().enumerate() {
            validate_structured(cal).map_err(|e| format!("invalid {what}[{i}]: {e}"))?;
        }
    }
    for (i, iv) in out.interval.iter().enumerate() {
        validate_interval(iv).map_err(|e| format!("invalid interval[{i}]: {e}"))?;
    }
    load_tz(&out)?;
    Ok(out)
}

/// Normalises every range in the spec's structured calendars the way Temporal's frontend does
/// before returning a spec from DescribeSchedule/ListSchedules: `end < start` becomes
/// `end = start` and `step == 0` becomes `step = 1`.
pub fn clean_ranges(spec: &mut ScheduleSpec) {
    for cal in spec
        .structured_calendar
        .iter_mut()
        .chain(spec.exclude_structured_calendar.iter_mut())
    {
        for list in [
            &mut cal.second,
            &mut cal.minute,
            &mut cal.hour,
            &mut cal.day_of_month,
            &mut cal.month,
            &mut cal.year,
            &mut cal.day_of_week,
        ] {
            for r in list.iter_mut() {
                r.end = r.end.max(r.start);
                if r.step == 0 {
                    r.step = 1;
                }
            }
        }
    }
}

/// Resolves the spec's time zone: empty name is UTC; tzdata bytes are not supported.
fn load_tz(spec: &ScheduleSpec) -> Result<Tz, String> {
    if !spec.timezone_data.is_empty() {
        return Err("timezone_data is not supported; use timezone_name instead".to_string());
    }
    if spec.timezone_name.is_empty() {
        return Ok(Tz::UTC);
    }
    spec.timezone_name
        .parse::<Tz>()
        .map_err(|_| format!("unknown timezone_name {:?}", spec.timezone_name))
}

/// Nanoseconds in an optional protobuf duration (0 when absent).
fn duration_ns(d: Option<&Duration>) -> i128 {
    d.map_or(0, |d| ts_ns(d.seconds, d.nanos))
}

/// Nanoseconds in a seconds+nanos pair, without overflow.
fn ts_ns(seconds: i64, nanos: i32) -> i128 {
    i128::from(seconds) * i128::from(NANOS) + i128::from(nanos)
}

/// Saturating conversion to i64.
fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v.clamp(i128::from(i64::MIN), i128::from(i64::MAX))).unwrap_or(0)
}

/// Checks one structured calendar against Temporal's field bounds.
fn validate_structured(cal: &StructuredCalendarSpec) -> Result<(), String> {
    let fields: [(&[Range], &str, i32, i32); 7] = [
        (&cal.second, "second", 0, 59),
        (&cal.minute, "minute", 0, 59),
        (&cal.hour, "hour", 0, 23),
        (&cal.day_of_month, "day_of_month", 1, 31),
        (&cal.month, "month", 1, 12),
        (&cal.year, "year", MIN_YEAR, MAX_YEAR),
        (&cal.day_of_week, "day_of_week", 0, 6),
    ];
    for (ranges, name, lo, hi) in fields {
        for r in ranges {
            if r.start < lo || r.start > hi {
                return Err(format!(
                    "{name} start {} is out of range {lo}-{hi}",
                    r.start
                ));
            }
            if r.end > hi {
                return Err(format!("{name} end {} is out of range {lo}-{hi}", r.end));
            }
            // 0 is "unset" (the start alone); any other end before the start is refused, as
            // Temporal refuses it.
            if r.end != 0 && r.end < r.start {
                return Err(format!(
                    "{name} end {} is before its start {}",
                    r.end, r.start
                ));
            }
            if r.step < 0 {
                return Err(format!("{name} step {} is negative", r.step));
            }
        }
    }
    if cal.comment.len() > MAX_COMMENT_LEN {
        return Err(format!(
            "comment is too long ({} bytes, max {MAX_COMMENT_LEN})",
            cal.comment.len()
        ));
    }
    Ok(())
}

/// Checks an interval: at least one second, and 0 <= phase < interval.
fn validate_interval(iv: &IntervalSpec) -> Result<(), String> {
    let (every, phase) = (
        duration_ns(iv.interval.as_ref()),
        duration_ns(iv.phase.as_ref()),
    );
    let (e, p) = (show_ns(every), show_ns(phase));
    if every < i128::from(NANOS) {
        return Err(format!("interval {e} is too small (minimum 1s)"));
    }
    if phase < 0 || phase >= every {
        return Err(format!(
            "phase {p} must be at least 0s and less than interval {e}"
        ));
    }
    Ok(())
}

/// A nanosecond count as seconds, e.g. "90s" or "0.5s" (for messages).
fn show_ns(ns: i128) -> String {
    format!("{}s", ns as f64 / 1e9)
}

/// A structured calendar compiled to bit sets (bit v set = value v matches).
#[derive(Debug, Clone)]
struct Calendar {
    second: u64,
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// Bit i = year MIN_YEAR + i; None = every year.
    years: Option<u128>,
}

impl Calendar {
    /// Compiles validated ranges; an empty list matches nothing, except for year (all years).
    fn new(cal: &StructuredCalendarSpec) -> Calendar {
        let bits64 = |ranges: &[Range]| {
            u64::try_from(range_bits(ranges, 0) & u128::from(u64::MAX)).unwrap_or(0)
        };
        Calendar {
            second: bits64(&cal.second),
            minute: bits64(&cal.minute),
            hour: bits64(&cal.hour),
            dom: bits64(&cal.day_of_month),
            month: bits64(&cal.month),
            dow: bits64(&cal.day_of_week),
            years: (!cal.year.is_empty()).then(|| range_bits(&cal.year, MIN_YEAR)),
        }
    }

    /// Whether the year field matches `year`.
    fn year_ok(&self, year: i32) -> bool {
        self.years.is_none_or(|bits| {
            (0..128).contains(&(year - MIN_YEAR)) && bits & (1u128 << (year - MIN_YEAR)) != 0
        })
    }

    /// Whether a wall-clock time matches every field.
    fn matches(&self, t: &NaiveDateTime) -> bool {
        let has = |bits: u64, v: u32| v < 64 && bits & (1u64 << v) != 0;
        self.year_ok(t.year())
            && has(self.month, t.month())
            && has(self.dom, t.day())
            && has(self.dow, t.weekday().num_days_from_sunday())
            && has(self.hour, t.hour())
            && has(self.minute, t.minute())
            && has(self.second, t.second())
    }

    /// First matching year >= `year` (no later than MAX_YEAR).
    fn year_from(&self, year: i32) -> Option<i32> {
        if year > MAX_YEAR {
            return None;
        }
        let Some(bits) = self.years else {
            return Some(year);
        };
        let offset = u32::try_from(year - MIN_YEAR).unwrap_or(0);
        let rest = bits.checked_shr(offset).unwrap_or(0);
        (rest != 0).then(|| MIN_YEAR + i32::try_from(offset + rest.trailing_zeros()).unwrap_or(0))
    }

    /// First matching wall-clock time at or after `from`, skipping whole fields at a time.
    fn next_wall(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut year = from.year();
        let mut at_from = true;
        while let Some(y) = self.year_from(year) {
            at_from &= y == year;
            year = y;
            for mo in set_bits(self.month, if at_from { from.month() } else { 1 }, 12) {
                let at_mo = at_from && mo == from.month();
                let last = days_in_month(year, mo);
                for day in set_bits(self.dom, if at_mo { from.day() } else { 1 }, last) {
                    let Some(date) = NaiveDate::from_ymd_opt(year, mo, day) else {
                        continue;
                    };
                    if self.dow & (1u64 << date.weekday().num_days_from_sunday()) == 0 {
                        continue;
                    }
                    let start = (at_mo && day == from.day()).then(|| from.time());
                    if let Some(time) = self.time_in_day(start) {
                        return Some(date.and_time(time));
                    }
                }
            }
            year += 1;
            at_from = false;
        }
        None
    }

    /// First matching time of day at or after `from` (from midnight when `from` is None).
    fn time_in_day(&self, from: Option<NaiveTime>) -> Option<NaiveTime> {
        let (h0, m0, s0) = from.map_or((0, 0, 0), |t| (t.hour(), t.minute(), t.second()));
        for h in set_bits(self.hour, h0, 23) {
            let at_h = h == h0 && from.is_some();
            for m in set_bits(self.minute, if at_h { m0 } else { 0 }, 59) {
                let s_from = if at_h && m == m0 { s0 } else { 0 };
                if let Some(s) = set_bits(self.second, s_from, 59).next() {
                    return NaiveTime::from_hms_opt(h, m, s);
                }
            }
        }
        None
    }

    /// First instant (Unix seconds) strictly after `after` whose wall time in `tz` matches.
    fn next_instant(&self, tz: Tz, after: i64) -> Option<i64> {
        let local = DateTime::from_timestamp(after, 0)?
            .with_timezone(&tz)
            .naive_local();
        // Wall times up to `local` can still lie ahead when `after` is in the first pass of
        // a repeated (DST overlap) hour: their second occurrence is later.
        let mut repeat = None;
        if let Some((early, late)) = both(tz.from_local_datetime(&local)) {
            if early == after {
                let lo = add(local, 1 - (late - early))?;
                let first = first_where(lo, local, |w| both(tz.from_local_datetime(&w)).is_some());
                repeat = self
                    .next_wall(first)
                    .filter(|w| *w <= local)
                    .and_then(|w| both(tz.from_local_datetime(&w)))
                    .map(|(_, late)| late);
            }
        }
        let mut wall = add(local, 1)?;
        let forward = loop {
            let Some(w) = self.next_wall(wall) else {
                break None;
            };
            match tz.from_local_datetime(&w) {
                LocalResult::None => {
                    wall = gap_end(tz, w)?;
                    continue;
                }
                LocalResult::Single(t) if t.timestamp() > after => break Some(t.timestamp()),
                LocalResult::Ambiguous(a, b) => {
                    let (early, late) = order(a.timestamp(), b.timestamp());
                    if early > after {
                        break Some(early);
                    }
                    if late > after {
                        break Some(late);
                    }
                }
                LocalResult::Single(_) => {}
            }
            wall = add(w, 1)?;
        };
        match (repeat, forward) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Bit set of all values in validated ranges, offset by `base`.
fn range_bits(ranges: &[Range], base: i32) -> u128 {
    let mut bits = 0u128;
    for r in ranges {
        let (start, end) = (i64::from(r.start), i64::from(r.end.max(r.start)));
        let step = i64::from(r.step.max(1));
        let mut v = start;
        while v <= end {
            if let Ok(shift @ 0..=127) = u32::try_from(v - i64::from(base)) {
                bits |= 1u128 << shift;
            }
            v += step;
        }
    }
    bits
}

/// Set bits of `mask` within `lo..=hi`, ascending.
fn set_bits(mask: u64, lo: u32, hi: u32) -> impl Iterator<Item = u32> {
    let mut rest = if lo > hi || hi > 63 {
        0
    } else {
        mask & (u64::MAX << lo) & (u64::MAX >> (63 - hi))
    };
    std::iter::from_fn(move || {
        (rest != 0).then(|| {
            let bit = rest.trailing_zeros();
            rest &= rest - 1;
            bit
        })
    })
}

/// Days in a month of the proleptic Gregorian calendar.
fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `t` plus `secs` seconds, None on overflow.
fn add(t: NaiveDateTime, secs: i64) -> Option<NaiveDateTime> {
    t.checked_add_signed(TimeDelta::try_seconds(secs)?)
}

/// The pair sorted ascending.
fn order(a: i64, b: i64) -> (i64, i64) {
    (a.min(b), a.max(b))
}

/// Both instants (earlier, later) of an ambiguous local time, if it is ambiguous.
fn both<T: TimeZone>(r: LocalResult<DateTime<T>>) -> Option<(i64, i64)> {
    match r {
        LocalResult::Ambiguous(a, b) => Some(order(a.timestamp(), b.timestamp())),
        _ => None,
    }
}

/// Smallest `t` in `lo..=hi` with `pred(t)`, assuming `pred` is false then true and true at `hi`.
fn first_where(
    lo: NaiveDateTime,
    hi: NaiveDateTime,
    pred: impl Fn(NaiveDateTime) -> bool,
) -> NaiveDateTime {
    let (mut a, mut b) = (0i64, (hi - lo).num_seconds().max(0));
    while a < b {
        let mid = a + (b - a) / 2;
        match add(lo, mid) {
            Some(t) if !pred(t) => a = mid + 1,
            _ => b = mid,
        }
    }
    add(lo, a).unwrap_or(hi)
}

/// First existing wall time after `w`, which falls in a DST gap.
fn gap_end(tz: Tz, w: NaiveDateTime) -> Option<NaiveDateTime> {
    let exists = |t: NaiveDateTime| !matches!(tz.from_local_datetime(&t), LocalResult::None);
    let mut span = 64;
    while !exists(add(w, span)?) {
        span *= 2;
        if span > 4 * 86_400 {
            return add(w, span);
        }
    }
    Some(first_where(w, add(w, span)?, exists))
}

/// What one cron string compiles to.
enum Cron {
    /// A calendar (5-7 fields or a shorthand such as @daily).
    Calendar(StructuredCalendarSpec),
    /// An `@every` interval.
    Interval(IntervalSpec),
}

/// Parses a cron string into a calendar or interval plus its CRON_TZ/TZ zone ("" if none).
fn parse_cron(text: &str) -> Result<(Cron, String), String> {
    let mut rest = text.trim();
    let mut tz = String::new();
    if rest.starts_with("TZ=") || rest.starts_with("CRON_TZ=") {
        let (zone, fields) = rest
            .split_once(' ')
            .ok_or("time zone prefix is not followed by any fields")?;
        tz = zone.split_once('=').map_or("", |(_, z)| z).to_string();
        rest = fields;
    }
    let (body, comment) = rest.split_once('#').unwrap_or((rest, ""));
    let body = body.trim();
    if body.starts_with("@every") {
        // As in Temporal, the zone prefix is ignored for intervals.
        return Ok((Cron::Interval(parse_every(body)?), String::new()));
    }
    let body = match body {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => other,
    };
    let f: Vec<&str> = body.split_whitespace().collect();
    let (second, rest) = match f.len() {
        5 | 6 => ("", &f[..]),
        7 => (f[0], &f[1..]),
        n => return Err(format!("expected 5, 6 or 7 fields, found {n}")),
    };
    let cal = CalendarSpec {
        second: second.to_string(),
        minute: rest[0].to_string(),
        hour: rest[1].to_string(),
        day_of_month: rest[2].to_string(),
        month: rest[3].to_string(),
        day_of_week: rest[4].to_string(),
        year: rest.get(5).map_or("", |y| y).to_string(),
        comment: comment.trim().to_string(),
    };
    Ok((Cron::Calendar(calendar_to_structured(&cal)?), tz))
}

/// Parses "@every <interval>[/<phase>]".
fn parse_every(body: &str) -> Result<IntervalSpec, String> {
    let (_, spec) = body
        .split_once(' ')
        .ok_or("@every needs an interval, e.g. \"@every 1h\"")?;
    let (every, phase) = spec.trim().split_once('/').unwrap_or((spec.trim(), ""));
    let phase = if phase.is_empty() {
        None
    } else {
        Some(parse_duration(phase)?)
    };
    let spec = IntervalSpec {
        interval: Some(parse_duration(every)?),
        phase,
    };
    validate_interval(&spec)?;
    Ok(spec)
}

/// Parses a Go duration ("1h30m", "90s", "1.5h", "500ms") with Temporal's extra "d" (24h).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let total = super::go_duration::parse_ns(text)?;
    Ok(Duration {
        seconds: total.div_euclid(NANOS),
        nanos: i32::try_from(total.rem_euclid(NANOS)).unwrap_or(0),
    })
}

/// Converts a calendar string spec to its structured form, applying field defaults.
fn calendar_to_structured(cal: &CalendarSpec) -> Result<StructuredCalendarSpec, String> {
    Ok(StructuredCalendarSpec {
        second: parse_field(&cal.second, &SECOND)?,
        minute: parse_field(&cal.minute, &MINUTE)?,
        hour: parse_field(&cal.hour, &HOUR)?,
        day_of_month: parse_field(&cal.day_of_month, &DOM)?,
        month: parse_field(&cal.month, &MONTH)?,
        year: parse_field(&cal.year, &YEAR)?,
        day_of_week: parse_field(&cal.day_of_week, &DOW)?,
        comment: cal.comment.clone(),
    })
}

/// Parses one calendar-string field ("*", "x", "x-z", "x/y", "x-z/y", comma lists) into
/// ranges, written as Temporal writes them (end 0 for a single value, step 0 for step 1).
fn parse_field(text: &str, f: &Field) -> Result<Vec<Range>, String> {
    let &Field(name, default, lo, hi, mode) = f;
    let s = Some(text.trim())
        .filter(|s| !s.is_empty())
        .unwrap_or(default);
    if s == "*" && mode == Mode::Year {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let (body, step) = match part.split_once('/') {
            None => (part, 1),
            Some((b, st)) => match st.parse::<i32>() {
                Ok(n) if n >= 1 => (b, n),
                _ => return Err(format!("{name} {part:?} has invalid step {st:?}")),
            },
        };
        let (mut start, mut end) = if body == "*" {
            (lo, hi)
        } else if let Some((a, b)) = body.split_once('-') {
            let (a, b) = (parse_value(a, f)?, parse_value(b, f)?);
            if b < a {
                return Err(format!("{name} range {body:?} ends before it starts"));
            }
            (a, b)
        } else {
            let v = parse_value(body, f)?;
            (v, if part.contains('/') { hi } else { v })
        };
        if mode == Mode::Dow && end == 7 {
            // 7 is another name for Sunday (0).
            if (7 - start) % step == 0 {
                if step == 1 && start <= 1 {
                    start = 0;
                } else {
                    out.push(Range::default());
                    if start == 7 {
                        continue;
                    }
                }
            }
            end = 6;
        }
        let end = if end == start { 0 } else { end };
        out.push(Range {
            start,
            end,
            step: if step == 1 { 0 } else { step },
        });
    }
    Ok(out)
}

/// Parses a number, or a month / weekday name or prefix in the appropriate field.
fn parse_value(text: &str, f: &Field) -> Result<i32, String> {
    let &Field(name, _, lo, hi, mode) = f;
    let lower = text.to_ascii_lowercase();
    let named = match mode {
        Mode::Month if lower.len() >= 3 => MONTH_NAMES.iter().position(|m| m.starts_with(&lower)),
        Mode::Dow if lower.len() >= 2 => DOW_NAMES.iter().position(|d| d.starts_with(&lower)),
        _ => None,
    };
    let v = match named.and_then(|i| i32::try_from(i).ok()) {
        Some(i) if mode == Mode::Month => i + 1,
        Some(i) => i,
        None => text
            .parse()
            .map_err(|_| format!("{name} value {text:?} is not valid"))?,
    };
    if v < lo || v > hi {
        return Err(format!("{name} {v} is out of range {lo}-{hi}"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_wkt_types::Timestamp;
    use std::time::Instant;

    /// RFC 3339 text → Unix nanoseconds.
    fn ns(text: &str) -> i64 {
        let t = DateTime::parse_from_rfc3339(text).map(|t| t.timestamp() * NANOS);
        t.unwrap_or_else(|e| panic!("bad test time {text}: {e}"))
    }

    /// Unix nanoseconds → RFC 3339 text (UTC, whole seconds).
    fn show(ns: i64) -> String {
        let t = DateTime::from_timestamp(ns.div_euclid(NANOS), 0);
        t.map_or(format!("<{ns}>"), |t| {
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        })
    }

    /// A whole-second protobuf duration.
    fn secs(seconds: i64) -> Option<Duration> {
        Some(Duration { seconds, nanos: 0 })
    }

    /// Compiles or fails the test, naming the spec.
    fn compile(spec: &ScheduleSpec) -> CompiledSpec {
        CompiledSpec::compile(spec).unwrap_or_else(|e| panic!("compile {spec:?} failed: {e}"))
    }

    /// Canonicalises or fails the test, naming the spec.
    fn canon(spec: &ScheduleSpec) -> ScheduleSpec {
        canonical(spec).unwrap_or_else(|e| panic!("canonical {spec:?} failed: {e}"))
    }

    /// The compile error for a spec that must not compile.
    fn compile_err(spec: &ScheduleSpec) -> String {
        CompiledSpec::compile(spec).map_or_else(|e| e, |_| panic!("no error for {spec:?}"))
    }

    /// Checks lines of `what | after | expected nominal times...`, where `spec` builds the
    /// spec from `what`. An empty expectation means no time at all.
    fn check(table: &str, spec: impl Fn(&str) -> ScheduleSpec) {
        for line in table.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let cols: Vec<&str> = line.split('|').map(str::trim).collect();
            let [what, after, want] = cols[..] else {
                panic!("bad table line {line:?}")
            };
            let want: Vec<&str> = want.split_whitespace().collect();
            let (c, mut at, mut got) = (compile(&spec(what)), ns(after), Vec::new());
            while got.len() < want.len().max(1) {
                let Some((nominal, _)) = c.next("", at) else {
                    break;
                };
                got.push(show(nominal));
                at = nominal;
            }
            assert_eq!(got, want, "spec {what:?} after {after}");
        }
    }

    /// Spec with a single cron string.
    fn cron(s: &str) -> ScheduleSpec {
        ScheduleSpec {
            cron_string: vec![s.to_string()],
            ..Default::default()
        }
    }

    /// Spec from "interval phase" in seconds.
    fn every(text: &str) -> ScheduleSpec {
        let n: Vec<i64> = text.split(' ').filter_map(|n| n.parse().ok()).collect();
        let iv = IntervalSpec {
            interval: secs(n[0]),
            phase: secs(n[1]),
        };
        ScheduleSpec {
            interval: vec![iv],
            ..Default::default()
        }
    }

    /// Spec from a calendar given as "second minute hour day_of_month month year day_of_week
    /// [zone]", where "-" leaves a field empty (its default) and zone "NY" is New York.
    fn cal(text: &str) -> ScheduleSpec {
        let f: Vec<String> = text
            .split(' ')
            .map(|f| if f == "-" { "" } else { f }.into())
            .collect();
        let c = CalendarSpec {
            second: f[0].clone(),
            minute: f[1].clone(),
            hour: f[2].clone(),
            day_of_month: f[3].clone(),
            month: f[4].clone(),
            year: f[5].clone(),
            day_of_week: f[6].clone(),
            comment: String::new(),
        };
        let tz = f
            .get(7)
            .cloned()
            .unwrap_or_default()
            .replace("NY", "America/New_York");
        ScheduleSpec {
            calendar: vec![c],
            timezone_name: tz,
            ..Default::default()
        }
    }

    /// Shorthand for a Range.
    fn r(start: i32, end: i32, step: i32) -> Range {
        Range { start, end, step }
    }

    #[test]
    fn cron_strings() {
        check(
            "0 12 * * MON | 2024-01-01T12:00:00Z | 2024-01-08T12:00:00Z 2024-01-15T12:00:00Z
            30 15 10 * * * 2025 | 2024-06-01T00:00:00Z | 2025-01-01T10:15:30Z 2025-01-02T10:15:30Z
            */20 * * * * * * | 2024-06-01T00:00:50Z | 2024-06-01T00:01:00Z 2024-06-01T00:01:20Z
            0 0 1 jan,JUL * 2024-2025 | 2024-07-02T00:00:00Z | 2025-01-01T00:00:00Z
            0 0 29 2 * | 2024-03-01T00:00:00Z | 2028-02-29T00:00:00Z 2032-02-29T00:00:00Z
            @every 90s | 1970-01-01T00:01:40Z | 1970-01-01T00:03:00Z 1970-01-01T00:04:30Z
            @every 1h/15m | 2024-01-01T00:20:00Z | 2024-01-01T01:15:00Z
            @hourly | 2024-01-01T10:00:00Z | 2024-01-01T11:00:00Z 2024-01-01T12:00:00Z
            @daily | 2024-01-01T10:00:00Z | 2024-01-02T00:00:00Z
            @weekly | 2024-01-01T00:00:00Z | 2024-01-07T00:00:00Z
            @monthly | 2024-01-01T00:00:00Z | 2024-02-01T00:00:00Z
            @yearly # happy new year | 2024-01-01T00:00:00Z | 2025-01-01T00:00:00Z
            CRON_TZ=America/New_York 0 9 * * * | 2024-01-10T00:00:00Z | 2024-01-10T14:00:00Z
            TZ=America/New_York 0 9 * * * | 2024-07-10T00:00:00Z | 2024-07-10T13:00:00Z",
            cron,
        );
        let tz = canon(&cron("CRON_TZ=America/New_York 0 9 * * *")).timezone_name;
        assert_eq!(tz, "America/New_York", "CRON_TZ=America/New_York 0 9 * * *");
        let clash = ScheduleSpec {
            timezone_name: "UTC".into(),
            ..cron("TZ=Asia/Tokyo @daily")
        };
        assert!(
            canonical(&clash).is_err(),
            "TZ=Asia/Tokyo with timezone_name UTC"
        );
        let iv = canon(&cron("@every 1h30m/15m")).interval;
        assert_eq!(iv, every("5400 900").interval, "@every 1h30m/15m");
        let cal = canon(&cron("0 5 * * * # morning run")).structured_calendar;
        assert_eq!(cal[0].comment, "morning run", "0 5 * * * # morning run");
        let d = |s: &str| parse_duration(s).map(|d| (d.seconds, d.nanos));
        assert_eq!(d("1.5h"), Ok((5400, 0)), "duration 1.5h");
        assert_eq!(d("2d500ms"), Ok((172_800, 500_000_000)), "duration 2d500ms");
    }

    #[test]
    fn intervals() {
        // The last line is the proto's example: 28 days with phase 3d5h23m.
        check(
            "60 0 | 2024-01-01T10:00:30Z | 2024-01-01T10:01:00Z 2024-01-01T10:02:00Z
            60 0 | 2024-01-01T10:01:00Z | 2024-01-01T10:02:00Z
            3600 1140 | 2024-01-01T10:30:00Z | 2024-01-01T11:19:00Z 2024-01-01T12:19:00Z
            60 30 | 1970-01-01T00:00:00Z | 1970-01-01T00:00:30Z
            2419200 278580 | 2022-02-20T00:00:00Z | 2022-02-20T05:23:00Z",
            every,
        );
    }

    #[test]
    fn calendars_and_time_zones() {
        // New York: 2024-03-10 02:00 EST jumps to 03:00 EDT (02:30 does not exist), and
        // 2024-11-03 01:00-02:00 happens twice (01:30 fires twice). From 01:50 EDT on
        // 2024-11-03 the next quarter hour is 01:00 EST (06:00Z), not 02:00 EST.
        check(
            "- - - - - - - | 2024-03-05T10:00:00Z | 2024-03-06T00:00:00Z 2024-03-07T00:00:00Z
            - 30 2 - - - - NY | 2024-03-09T00:00:00Z | 2024-03-09T07:30:00Z 2024-03-11T06:30:00Z
            - 30 1 - - - - NY | 2024-11-02T12:00:00Z | 2024-11-03T05:30:00Z 2024-11-03T06:30:00Z
            - */15 * - - - - NY | 2024-11-03T05:50:00Z | 2024-11-03T06:00:00Z 2024-11-03T06:15:00Z
            - */15 * - - - - NY | 2024-03-10T06:45:00Z | 2024-03-10T07:00:00Z
            - - 9 - - - mon/2 | 2024-01-01T10:00:00Z | 2024-01-03T09:00:00Z 2024-01-05T09:00:00Z
            - - 9 1-7 - - sun | 2024-01-01T10:00:00Z | 2024-01-07T09:00:00Z 2024-02-04T09:00:00Z
            * * * 31 12 2099 * | 1970-01-01T00:00:00Z | 2099-12-31T00:00:00Z",
            cal,
        );
        let empty = ScheduleSpec::default();
        assert_eq!(compile(&empty).next("", 0), None, "empty ScheduleSpec");
        let only_hour = StructuredCalendarSpec {
            hour: vec![r(12, 0, 0)],
            ..Default::default()
        };
        let spec = ScheduleSpec {
            structured_calendar: vec![only_hour],
            ..Default::default()
        };
        assert_eq!(
            compile(&spec).next("", 0),
            None,
            "structured with only hour 12"
        );
    }

    #[test]
    fn start_end_and_exclusions() {
        let at = |t: &str| {
            Some(Timestamp {
                seconds: ns(t) / NANOS,
                nanos: 0,
            })
        };
        let bounded = |c: &str| ScheduleSpec {
            start_time: at("2024-01-01T05:00:00Z"),
            end_time: at("2024-01-01T07:00:00Z"),
            ..cron(c)
        };
        check(
            "@hourly | 2023-01-01T00:00:00Z | 2024-01-01T05:00:00Z 2024-01-01T06:00:00Z
            @hourly | 2024-01-01T06:00:00Z | 2024-01-01T07:00:00Z
            @hourly | 2024-01-01T07:00:00Z |",
            bounded,
        );
        let all = vec![r(0, 59, 1)];
        let five = StructuredCalendarSpec {
            second: all.clone(),
            minute: all,
            hour: vec![r(5, 0, 0)],
            day_of_month: vec![r(1, 31, 0)],
            month: vec![r(1, 12, 0)],
            day_of_week: vec![r(0, 6, 0)],
            ..Default::default()
        };
        // "<cron> except <second minute hour month>", also always excluding 05:xx.
        #[allow(deprecated)]
        let excluding = |c: &str| {
            let (cron_text, exclusion) = c.split_once(" except ").unwrap_or((c, ""));
            let f: Vec<String> = exclusion.split(' ').map(String::from).collect();
            let field = |i: usize| f.get(i).cloned().unwrap_or_default();
            let (second, minute, hour, month) = (field(0), field(1), field(2), field(3));
            let excl = CalendarSpec {
                second,
                minute,
                hour,
                month,
                ..Default::default()
            };
            ScheduleSpec {
                exclude_calendar: vec![excl],
                exclude_structured_calendar: vec![five.clone()],
                ..cron(cron_text)
            }
        };
        check(
            "@hourly except 0 0 3 | 2024-01-01T01:30:00Z | 2024-01-01T02:00:00Z 2024-01-01T04:00:00Z
            @hourly except 0 0 3 | 2024-01-01T04:00:00Z | 2024-01-01T06:00:00Z
            * * * * * except * * * jun-aug | 2024-05-31T23:59:00Z | 2024-09-01T00:00:00Z
            * * * * * * * except * * * jan-nov | 2024-01-01T00:00:00Z | 2024-12-01T00:00:00Z
            * * * * * * * except * * * * | 2024-01-01T00:00:00Z |",
            excluding,
        );
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let after = ns("2024-01-01T00:00:00Z");
        // (cron, jitter, bound) in seconds: the bound is the jitter, or the gap to the
        // following nominal time when that is smaller.
        for (c, jitter, bound) in [("* * * * *", 30, 30), ("*/10 * * * * * *", 3600, 10)] {
            let spec = compile(&ScheduleSpec {
                jitter: secs(jitter),
                ..cron(c)
            });
            let mut seen = std::collections::HashSet::new();
            for seed in ["a", "b", "c", "d", "e", "f"] {
                let what = format!("cron {c:?}, jitter {jitter}s, seed {seed:?}");
                let got = spec.next(seed, after);
                assert_eq!(spec.next(seed, after), got, "{what}: not deterministic");
                let (nominal, actual) = got.unwrap_or_else(|| panic!("{what}: no time"));
                let j = actual - nominal;
                let ok = (0..bound * NANOS).contains(&j) && j % 1_000_000 == 0;
                assert!(ok, "{what}: jitter {j}ns");
                seen.insert(j);
            }
            assert!(
                seen.len() > 1,
                "cron {c:?}: jitter does not vary with the seed"
            );
        }
    }

    #[test]
    fn never_matching_specs_return_none_quickly() {
        #[allow(deprecated)]
        let excluded = ScheduleSpec {
            exclude_calendar: vec![CalendarSpec {
                minute: "*".into(),
                hour: "*".into(),
                ..Default::default()
            }],
            ..cron("@hourly")
        };
        let after = ns("2010-01-01T00:00:00Z");
        for (what, spec) in [
            ("Feb 30", cron("0 0 30 2 *")),
            ("year 2000 only", cron("0 0 * * * 2000")),
            (
                "Feb 29 on Mondays, 2029-2031",
                cron("0 0 29 2 MON 2029-2031"),
            ),
            ("@hourly, all excluded (100k skips)", excluded),
        ] {
            let t0 = Instant::now();
            assert_eq!(compile(&spec).next("", after), None, "{what}");
            assert!(t0.elapsed().as_secs() < 2, "{what} took {:?}", t0.elapsed());
        }
        let late = compile(&cron("* * * * * * 2099"));
        let t0 = Instant::now();
        let got = late.next("", 0).map(|t| show(t.0));
        let took = t0.elapsed();
        assert!(
            took.as_millis() < 10,
            "every second of 2099 from 1970 took {took:?}"
        );
        let want = Some("2099-01-01T00:00:00Z");
        assert_eq!(got.as_deref(), want, "every second of 2099 from 1970");
        let end = ns("2099-12-31T23:59:59Z");
        assert_eq!(
            late.next("", end),
            None,
            "every second of 2099, after its end"
        );
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let want = "invalid cron string \"0 25 * * *\": hour 25 is out of range 0-23";
        assert_eq!(compile_err(&cron("0 25 * * *")), want, "cron 0 25 * * *");
        let bad = "garbage|* * * *|1 2 3 4 5 6 7 8|0 12 * * FUNDAY|*/0 * * * *|5-1 * * * *|\
            1/2/3 * * * *|@every|@every 5x|@every 0s|@every 1h/1h|TZ=UTC|0 0 1 1 * 1990|\
            60 * * * * * *|* * 0 * *|* * * 13 *|* * * * 8";
        for bad in bad.split('|') {
            let res = CompiledSpec::compile(&cron(bad));
            assert!(res.is_err(), "cron {bad:?} should be rejected");
        }
        let zone = ScheduleSpec {
            timezone_name: "Mars/Olympus".into(),
            ..cron("@daily")
        };
        let want = "unknown timezone_name \"Mars/Olympus\"";
        assert_eq!(compile_err(&zone), want, "timezone_name Mars/Olympus");
        let want = "invalid interval[0]: interval 0s is too small (minimum 1s)";
        assert_eq!(compile_err(&every("0 0")), want, "interval 0s");
        let e = compile_err(&every("60 60"));
        assert!(e.contains("phase 60s"), "interval 60s phase 60s: {e}");
        let hour = StructuredCalendarSpec {
            hour: vec![r(24, 0, 0)],
            ..Default::default()
        };
        let spec = ScheduleSpec {
            structured_calendar: vec![hour],
            ..Default::default()
        };
        let want = "invalid structured_calendar[0]: hour start 24 is out of range 0-23";
        assert_eq!(compile_err(&spec), want, "structured hour 24");
        let backwards = ScheduleSpec {
            structured_calendar: vec![StructuredCalendarSpec {
                hour: vec![r(12, 3, 0)],
                ..Default::default()
            }],
            ..Default::default()
        };
        let want = "invalid structured_calendar[0]: hour end 3 is before its start 12";
        assert_eq!(compile_err(&backwards), want, "structured hour 12-3");
        let data = ScheduleSpec {
            timezone_data: vec![1, 2, 3],
            ..cron("@daily")
        };
        let e = compile_err(&data);
        assert!(e.contains("timezone_data"), "timezone_data [1, 2, 3]: {e}");
        let want = "invalid calendar[0]: month value \"foo\" is not valid";
        assert_eq!(
            compile_err(&cal("- - - - foo - -")),
            want,
            "calendar month foo"
        );
    }

    #[test]
    fn canonical_cron_monday_noon() {
        let mut got = canon(&cron("0 12 * * MON"));
        assert!(
            got.cron_string.is_empty(),
            "0 12 * * MON: cron kept: {got:?}"
        );
        let hour = &got.structured_calendar[0].hour;
        assert_eq!(*hour, [r(12, 0, 0)], "0 12 * * MON: raw hour");
        clean_ranges(&mut got);
        let want = StructuredCalendarSpec {
            second: vec![r(0, 0, 1)],
            minute: vec![r(0, 0, 1)],
            hour: vec![r(12, 12, 1)],
            day_of_month: vec![r(1, 31, 1)],
            month: vec![r(1, 12, 1)],
            year: vec![],
            day_of_week: vec![r(1, 1, 1)],
            comment: String::new(),
        };
        assert_eq!(got.structured_calendar, [want], "0 12 * * MON: cleaned");
    }

    #[test]
    #[allow(deprecated)]
    fn canonical_keeps_structured_and_appends() {
        let given = StructuredCalendarSpec {
            hour: vec![r(3, 0, 0)],
            minute: vec![r(7, 0, 0)],
            comment: "kept".into(),
            ..Default::default()
        };
        let dow = |d: &str| CalendarSpec {
            day_of_week: d.into(),
            ..Default::default()
        };
        let spec = ScheduleSpec {
            structured_calendar: vec![given.clone()],
            calendar: vec![dow("mon-fri")],
            cron_string: vec!["0 0 * * 7".into()],
            exclude_calendar: vec![dow("sat-7")],
            jitter: secs(5),
            ..Default::default()
        };
        let got = canon(&spec);
        let what = format!("canonical of {spec:?}");
        let cals = &got.structured_calendar;
        assert_eq!(cals.len(), 3, "{what}: 1 structured + 1 calendar + 1 cron");
        assert_eq!(cals[0], given, "{what}: structured calendar kept as sent");
        assert_eq!(cals[1].day_of_week, [r(1, 5, 0)], "{what}: dow mon-fri");
        assert_eq!(cals[2].day_of_week, [r(0, 0, 0)], "{what}: cron dow 7");
        let excl = &got.exclude_structured_calendar[0].day_of_week;
        assert_eq!(*excl, [r(0, 0, 0), r(6, 0, 0)], "{what}: exclude dow sat-7");
        let consumed = got.calendar.is_empty() && got.exclude_calendar.is_empty();
        assert!(
            consumed && got.cron_string.is_empty(),
            "{what}: strings kept"
        );
        assert_eq!(got.jitter, secs(5), "{what}: jitter");
        for (text, field, want) in [
            ("1-7", &DOW, vec![r(0, 6, 0)]),
            ("1-7/2", &DOW, vec![r(0, 0, 0), r(1, 6, 2)]),
            ("*", &DOW, vec![r(0, 6, 0)]),
            ("*/15", &MINUTE, vec![r(0, 59, 15)]),
            ("1-5/2,8", &HOUR, vec![r(1, 5, 2), r(8, 0, 0)]),
            ("Jan,jul-AUG", &MONTH, vec![r(1, 0, 0), r(7, 8, 0)]),
        ] {
            let what = format!("{} {text:?}", field.0);
            assert_eq!(parse_field(text, field), Ok(want), "{what}");
        }
    }
}

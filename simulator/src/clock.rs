//! Civil calendar arithmetic for event times and birth dates, without a date library:
//! the generator formats millions of timestamps, and these few integer operations are
//! all it needs.

use crate::json::push_padded;

/// Milliseconds in a day.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Days from 1970-01-01 to `year-month-day` (proleptic Gregorian calendar).
///
/// Howard Hinnant's `days_from_civil`.
pub(crate) const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The `(year, month, day)` of a day counted from 1970-01-01 (Hinnant's `civil_from_days`).
pub(crate) const fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

/// Days in `month` of `year`.
pub(crate) const fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Appends `YYYY-MM-DD`.
pub(crate) fn push_date(out: &mut Vec<u8>, year: i64, month: u32, day: u32) {
    push_padded(out, year.unsigned_abs(), 4);
    out.push(b'-');
    push_padded(out, u64::from(month), 2);
    out.push(b'-');
    push_padded(out, u64::from(day), 2);
}

/// Appends the RFC 3339 UTC form of `unix_ms`, with milliseconds: `2026-11-21T14:03:22.512Z`.
pub(crate) fn push_rfc3339_ms(out: &mut Vec<u8>, unix_ms: i64) {
    let days = unix_ms.div_euclid(DAY_MS);
    let ms_of_day = unix_ms.rem_euclid(DAY_MS) as u64;
    let (year, month, day) = civil_from_days(days);
    push_date(out, year, month, day);
    out.push(b'T');
    push_padded(out, ms_of_day / 3_600_000, 2);
    out.push(b':');
    push_padded(out, ms_of_day / 60_000 % 60, 2);
    out.push(b':');
    push_padded(out, ms_of_day / 1000 % 60, 2);
    out.push(b'.');
    push_padded(out, ms_of_day % 1000, 3);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(
            civil_from_days(days_from_civil(2026, 11, 21)),
            (2026, 11, 21)
        );
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
    }

    #[test]
    fn rfc3339_with_milliseconds() {
        // 2026-11-21T14:03:22.512Z, as in the example event.
        let ms = days_from_civil(2026, 11, 21) * DAY_MS + ((14 * 60 + 3) * 60 + 22) * 1000 + 512;
        let mut out = Vec::new();
        push_rfc3339_ms(&mut out, ms);
        assert_eq!(out, b"2026-11-21T14:03:22.512Z");
    }
}

//! Settlement dates: which business day a moment belongs to, from a cutoff
//! time in a time zone (`[clearing]` in the serve configuration).
//!
//! With a cutoff `C` (not midnight), settlement day `D` covers the local times
//! from `C` on the day before `D` up to, not including, `C` on `D`: with the
//! default 23:00 in Asia/Shanghai, 2026-11-23 covers 2026-11-22 23:00:00 to
//! 2026-11-23 22:59:59 Shanghai time. A cutoff of 00:00 makes settlement days
//! calendar days. Times the switch keeps are UTC; they are converted here.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;

thread_local! {
    /// The settlement day found last on this thread, with its window in UTC
    /// milliseconds: nearly every moment asked about falls in the same day
    /// as the one before (a response's F15, clearing's legs), and finding a
    /// day walks the time zone's rules several times.
    static LAST_DAY: Cell<Option<(Settlement, i64, i64, NaiveDate)>> = const { Cell::new(None) };
}

/// A cutoff time in a time zone: what decides every settlement date.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Settlement {
    /// Local time from which moments belong to the next settlement day.
    pub cutoff: NaiveTime,
    pub time_zone: Tz,
}

impl Default for Settlement {
    /// 23:00 in Asia/Shanghai.
    fn default() -> Self {
        Settlement {
            cutoff: NaiveTime::from_hms_opt(23, 0, 0).expect("23:00 is a time"),
            time_zone: chrono_tz::Asia::Shanghai,
        }
    }
}

impl fmt::Display for Settlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cutoff {} {}", self.cutoff_text(), self.time_zone)
    }
}

/// Why a cutoff or time zone cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettlementError(pub String);

impl Settlement {
    /// From a cutoff written `HH:MM` (or `HH:MM:SS`) and an IANA time zone name.
    pub fn parse(cutoff: &str, time_zone: &str) -> Result<Settlement, SettlementError> {
        let cutoff = NaiveTime::parse_from_str(cutoff, "%H:%M")
            .or_else(|_| NaiveTime::parse_from_str(cutoff, "%H:%M:%S"))
            .map_err(|_| {
                SettlementError(format!("{cutoff:?} is not a time of day such as \"23:00\""))
            })?;
        let time_zone = Tz::from_str(time_zone).map_err(|_| {
            SettlementError(format!(
                "{time_zone:?} is not an IANA time zone such as \"Asia/Shanghai\""
            ))
        })?;
        Ok(Settlement { cutoff, time_zone })
    }

    /// The cutoff as `HH:MM` (with seconds when it has some).
    pub fn cutoff_text(&self) -> String {
        if self.cutoff.format("%S").to_string() == "00" {
            self.cutoff.format("%H:%M").to_string()
        } else {
            self.cutoff.format("%H:%M:%S").to_string()
        }
    }

    /// How far local times are pushed forward to land on their settlement day.
    fn shift(&self) -> Duration {
        let since_midnight = self.cutoff - NaiveTime::MIN;
        if since_midnight.is_zero() {
            Duration::zero()
        } else {
            Duration::days(1) - since_midnight
        }
    }

    /// The UTC moment settlement day `date` starts (inclusive).
    pub fn day_start(&self, date: NaiveDate) -> NaiveDateTime {
        let local = date.and_time(NaiveTime::MIN) - self.shift();
        self.utc_of_local(local)
    }

    /// Settlement day `date` as UTC milliseconds: `[start, end)`.
    pub fn window_ms(&self, date: NaiveDate) -> (i64, i64) {
        let start = self.day_start(date).and_utc().timestamp_millis();
        let end = self
            .day_start(date.succ_opt().unwrap_or(date))
            .and_utc()
            .timestamp_millis();
        (start, end)
    }

    /// The first UTC moment whose local time is `local` or later (a local time
    /// skipped by a daylight-saving change starts at the first one after it).
    fn utc_of_local(&self, local: NaiveDateTime) -> NaiveDateTime {
        for minutes in 0..=180 {
            let candidate = local + Duration::minutes(minutes);
            if let Some(t) = self.time_zone.from_local_datetime(&candidate).earliest() {
                return t.naive_utc();
            }
        }
        local
    }

    /// The settlement date of a UTC moment.
    pub fn date_of(&self, utc: NaiveDateTime) -> NaiveDate {
        let ms = utc.and_utc().timestamp_millis();
        if let Some((settlement, start, end, date)) = LAST_DAY.get() {
            if settlement == *self && (start..end).contains(&ms) {
                return date;
            }
        }
        let date = self.find_date_of(utc);
        let (start, end) = self.window_ms(date);
        if (start..end).contains(&ms) {
            LAST_DAY.set(Some((*self, start, end, date)));
        }
        date
    }

    /// [`Settlement::date_of`] worked out from the time zone's rules.
    fn find_date_of(&self, utc: NaiveDateTime) -> NaiveDate {
        let local = self.time_zone.from_utc_datetime(&utc).naive_local();
        let mut date = (local + self.shift()).date();
        // Around daylight-saving changes the local clock repeats or skips: the
        // windows decide.
        for _ in 0..2 {
            if utc < self.day_start(date) {
                date = date.pred_opt().unwrap_or(date);
            } else if utc >= self.day_start(date.succ_opt().unwrap_or(date)) {
                date = date.succ_opt().unwrap_or(date);
            } else {
                break;
            }
        }
        date
    }

    /// The settlement date of a moment in Unix milliseconds.
    pub fn date_of_ms(&self, ms: i64) -> NaiveDate {
        let utc = chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.naive_utc())
            .unwrap_or_default();
        self.date_of(utc)
    }

    /// Field 15 (MMDD) for a moment.
    pub fn f15(&self, utc: NaiveDateTime) -> String {
        let date = self.date_of(utc);
        let mut mmdd = String::with_capacity(4);
        for part in [date.month(), date.day()] {
            mmdd.push(char::from(b'0' + (part / 10) as u8));
            mmdd.push(char::from(b'0' + (part % 10) as u8));
        }
        mmdd
    }

    /// The settlement date of a message sent with field 7 `transmission`
    /// (MMDDhhmmss, UTC, no year), the year being the one that puts it
    /// nearest to `near`. Every participant dates the switch's debits and
    /// credits this way, from the F7 the switch gave them. `None` when F7 is
    /// not a date-time.
    pub fn date_of_transmission(&self, transmission: &[u8], near: NaiveDate) -> Option<NaiveDate> {
        transmission_near(transmission, near).map(|t| self.date_of(t))
    }
}

/// Field 7 as a full UTC date-time, in the year (of `near`'s, the one before
/// or the one after) that puts it nearest to `near`.
pub fn transmission_near(transmission: &[u8], near: NaiveDate) -> Option<NaiveDateTime> {
    if transmission.len() != 10 || !transmission.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let part =
        |i: usize| u32::from(transmission[i] - b'0') * 10 + u32::from(transmission[i + 1] - b'0');
    let (month, day, hour, minute, second) = (part(0), part(2), part(4), part(6), part(8));
    let anchor = near.and_time(NaiveTime::MIN) + Duration::hours(12);
    (near.year() - 1..=near.year() + 1)
        .filter_map(|year| {
            NaiveDate::from_ymd_opt(year, month, day)
                .and_then(|d| d.and_hms_opt(hour, minute, second))
        })
        .min_by_key(|t| (*t - anchor).num_seconds().abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn cutoff_23_in_shanghai() {
        let s = Settlement::default();
        // 22:59:59 Shanghai = 14:59:59 UTC: same day.
        assert_eq!(s.date_of(utc("2026-11-23 14:59:59")), date("2026-11-23"));
        // 23:00:00 Shanghai: the next day.
        assert_eq!(s.date_of(utc("2026-11-23 15:00:00")), date("2026-11-24"));
        // 07:00 Shanghai = 23:00 UTC the day before.
        assert_eq!(s.date_of(utc("2026-11-22 23:00:00")), date("2026-11-23"));
        assert_eq!(s.f15(utc("2026-12-31 15:30:00")), "0101");
        let (from, to) = s.window_ms(date("2026-11-23"));
        assert_eq!(
            from,
            utc("2026-11-22 15:00:00").and_utc().timestamp_millis()
        );
        assert_eq!(to, utc("2026-11-23 15:00:00").and_utc().timestamp_millis());
    }

    #[test]
    fn midnight_cutoff_is_the_calendar_day() {
        let s = Settlement::parse("00:00", "Asia/Shanghai").unwrap();
        assert_eq!(s.date_of(utc("2026-11-23 15:59:59")), date("2026-11-23"));
        assert_eq!(s.date_of(utc("2026-11-23 16:00:00")), date("2026-11-24"));
        let s = Settlement::parse("06:30", "UTC").unwrap();
        assert_eq!(s.date_of(utc("2026-11-23 06:29:59")), date("2026-11-23"));
        assert_eq!(s.date_of(utc("2026-11-23 06:30:00")), date("2026-11-24"));
        assert_eq!(s.cutoff_text(), "06:30");
    }

    #[test]
    fn daylight_saving_zones_have_consistent_windows() {
        let s = Settlement::parse("02:30", "Europe/Berlin").unwrap();
        // 2026-03-29: 02:00 → 03:00 in Berlin, so 02:30 does not exist.
        let day = date("2026-03-29");
        let (from, to) = s.window_ms(day);
        assert!(from < to);
        for ms in [from, to - 1] {
            assert_eq!(s.date_of_ms(ms), day);
        }
        assert_eq!(s.date_of_ms(to), date("2026-03-30"));
    }

    /// The day remembered from the moment before gives what the time zone's
    /// rules give, on both sides of every cutoff and daylight-saving change
    /// of a year, with two settlements asked in turn on one thread.
    #[test]
    fn the_remembered_day_is_the_day_the_rules_give() {
        let berlin = Settlement::parse("02:30", "Europe/Berlin").unwrap();
        let shanghai = Settlement::default();
        let new_york = Settlement::parse("00:00", "America/New_York").unwrap();
        let start = utc("2026-01-01 00:00:00");
        // Every 5 minutes of the year, and 1 ms either side of each.
        let moments = (0..(366 * 24 * 12)).flat_map(|step| {
            let at = start + Duration::minutes(5 * step);
            [
                at - Duration::milliseconds(1),
                at,
                at + Duration::milliseconds(1),
            ]
        });
        for s in [berlin, shanghai, new_york] {
            for moment in moments.clone() {
                assert_eq!(s.date_of(moment), s.find_date_of(moment), "{s} {moment}");
            }
        }
        // Two settlements in turn: each asked about the other's day.
        for moment in moments.step_by(97) {
            for s in [berlin, new_york] {
                assert_eq!(s.date_of(moment), s.find_date_of(moment), "{s} {moment}");
            }
        }
        assert_eq!(shanghai.f15(utc("2026-03-04 12:00:00")), "0304");
        assert_eq!(shanghai.f15(utc("2026-11-30 15:00:00")), "1201");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Settlement::parse("25:00", "Asia/Shanghai").unwrap_err();
        assert!(e.0.contains("25:00"), "{e}");
        let e = Settlement::parse("23:00", "Mars/Olympus").unwrap_err();
        assert!(e.0.contains("Mars/Olympus"), "{e}");
    }

    #[test]
    fn transmission_year_is_the_nearest() {
        let s = Settlement::default();
        assert_eq!(
            s.date_of_transmission(b"1231160000", date("2027-01-01")),
            Some(date("2027-01-01"))
        );
        assert_eq!(
            s.date_of_transmission(b"0101010000", date("2026-12-31")),
            Some(date("2027-01-01"))
        );
        assert_eq!(
            s.date_of_transmission(b"13x1010000", date("2026-12-31")),
            None
        );
    }
}

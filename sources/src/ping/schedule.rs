//! A PingSource's schedule: a cron expression in a time zone.
//!
//! Accepted forms (Knative's PingSource takes robfig/cron's standard syntax; this is a superset
//! of what it accepts, minus `@every`): five fields (`minute hour day-of-month month
//! day-of-week`), or six with seconds first; names (`JAN`, `MON`), ranges, steps and lists;
//! the aliases `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`;
//! and a `CRON_TZ=<zone> ` (or `TZ=<zone> `) prefix, as robfig/cron reads it. Day of month and
//! day of week combine with OR when both are restricted, as in Vixie cron.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

/// Why a schedule or time zone was refused, and which field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    /// `spec.schedule` or `spec.timezone`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Schedule {
    /// Parses `schedule` in `timezone` (an IANA name; UTC when absent).
    pub fn parse(schedule: &str, timezone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let (prefix_zone, expression) = split_zone_prefix(schedule.trim());
        let zone_name = match (prefix_zone, timezone) {
            (Some(prefix), Some(field)) if prefix != field => {
                return Err(ScheduleError {
                    field: "spec.schedule",
                    message: format!("the schedule's time zone '{prefix}' differs from spec.timezone '{field}'"),
                })
            }
            (Some(zone), _) | (None, Some(zone)) => Some(zone),
            (None, None) => None,
        };
        let zone = match zone_name {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| ScheduleError {
                field: if prefix_zone.is_some() { "spec.schedule" } else { "spec.timezone" },
                message: format!("'{name}' is not an IANA time zone (e.g. 'Europe/Paris', 'UTC')"),
            })?,
        };
        if expression.starts_with("@every") {
            return Err(ScheduleError {
                field: "spec.schedule",
                message: format!(
                    "'{expression}' is not supported: write the interval as a cron expression, e.g. '*/5 * * * *'"
                ),
            });
        }
        let fields = expression.split_whitespace().count();
        if !expression.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(ScheduleError {
                field: "spec.schedule",
                message: format!(
                    "'{expression}' has {fields} fields: use 5 (minute hour day month weekday) or 6 (seconds first)"
                ),
            });
        }
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser.parse(expression).map_err(|e| ScheduleError {
            field: "spec.schedule",
            message: format!("'{expression}' is not a cron expression: {e}"),
        })?;
        Ok(Schedule { cron, zone })
    }

    /// The first tick strictly after `after`, if the schedule has one.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron.find_next_occurrence(&local, false).ok().map(|tick| tick.with_timezone(&Utc))
    }
}

/// `CRON_TZ=Europe/Paris 0 9 * * *` → (`Europe/Paris`, `0 9 * * *`).
fn split_zone_prefix(schedule: &str) -> (Option<&str>, &str) {
    for prefix in ["CRON_TZ=", "TZ="] {
        if let Some(rest) = schedule.strip_prefix(prefix) {
            let (zone, expression) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            return (Some(zone), expression.trim());
        }
    }
    (None, schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn next(schedule: &str, zone: Option<&str>, after: &str) -> String {
        let tick = Schedule::parse(schedule, zone).unwrap().next_after(at(after)).unwrap();
        tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    #[test]
    fn five_and_six_fields_and_aliases() {
        assert_eq!(next("* * * * *", None, "2026-12-01T10:00:00Z"), "2026-12-01T10:01:00Z");
        assert_eq!(next("*/15 * * * *", None, "2026-12-01T10:00:00Z"), "2026-12-01T10:15:00Z");
        assert_eq!(next("* * * * * *", None, "2026-12-01T10:00:00Z"), "2026-12-01T10:00:01Z");
        assert_eq!(next("*/2 * * * * *", None, "2026-12-01T10:00:01Z"), "2026-12-01T10:00:02Z");
        assert_eq!(next("@hourly", None, "2026-12-01T10:00:00Z"), "2026-12-01T11:00:00Z");
        assert_eq!(next("@daily", None, "2026-12-01T10:00:00Z"), "2026-12-02T00:00:00Z");
        assert_eq!(next("0 9 * * MON", None, "2026-12-01T10:00:00Z"), "2026-12-07T09:00:00Z");
        // Strictly after: a tick at `after` itself is not the next one.
        assert_eq!(next("0 * * * *", None, "2026-12-01T10:00:00Z"), "2026-12-01T11:00:00Z");
    }

    #[test]
    fn time_zones_shift_the_ticks_and_follow_daylight_saving() {
        // 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer.
        assert_eq!(next("0 9 * * *", Some("Europe/Paris"), "2026-12-01T10:00:00Z"), "2026-12-02T08:00:00Z");
        assert_eq!(next("0 9 * * *", Some("Europe/Paris"), "2026-07-01T10:00:00Z"), "2026-07-02T07:00:00Z");
        assert_eq!(next("CRON_TZ=America/New_York 0 9 * * *", None, "2026-12-01T00:00:00Z"), "2026-12-01T14:00:00Z");
        assert_eq!(next("TZ=UTC 0 9 * * *", Some("UTC"), "2026-12-01T00:00:00Z"), "2026-12-01T09:00:00Z");
    }

    #[test]
    fn bad_schedules_and_zones_name_the_field() {
        let cases = [
            ("not cron", None, "spec.schedule"),
            ("* * * *", None, "spec.schedule"),
            ("* * * * * * *", None, "spec.schedule"),
            ("61 * * * *", None, "spec.schedule"),
            ("@every 5m", None, "spec.schedule"),
            ("@fortnightly", None, "spec.schedule"),
            ("* * * * *", Some("Mars/Olympus"), "spec.timezone"),
            ("CRON_TZ=Nowhere * * * * *", None, "spec.schedule"),
            ("CRON_TZ=UTC * * * * *", Some("Europe/Paris"), "spec.schedule"),
        ];
        for (schedule, zone, field) in cases {
            let error = Schedule::parse(schedule, zone).expect_err(schedule);
            assert_eq!(error.field, field, "{schedule}: {}", error.message);
            assert!(error.message.contains('\''), "{schedule}: the message quotes the value: {}", error.message);
        }
    }
}

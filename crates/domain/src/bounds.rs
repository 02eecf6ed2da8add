//! What makes sense for each kind of date or instant a request may carry,
//! written once and used by every conversion, so a year 0 birth date or a
//! consent valid until the year 292277026596 is refused where it enters,
//! naming its field.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use crate::error::FieldError;

/// The years any record of the system may fall in: the agreements start in
/// 2020, and nothing is planned past this century.
pub const RECORD_YEARS: std::ops::RangeInclusive<i32> = 2000..=2100;

/// The years a person may have been born in.
pub const BIRTH_YEARS: std::ops::RangeInclusive<i32> = 1900..=2100;

/// An instant of the system's life: an event, a signature, a validity bound.
pub fn instant(field: &str, at: DateTime<Utc>) -> Result<DateTime<Utc>, FieldError> {
    if RECORD_YEARS.contains(&at.year()) {
        Ok(at)
    } else {
        Err(FieldError::new(
            field,
            format!(
                "must fall between the years {} and {}",
                RECORD_YEARS.start(),
                RECORD_YEARS.end()
            ),
        ))
    }
}

/// A calendar date of the system's life (a registration, an event).
pub fn record_date(field: &str, date: NaiveDate) -> Result<NaiveDate, FieldError> {
    year(field, date.year()).map(|_| date)
}

/// A year of the system's life (a quota's, a list's).
pub fn year(field: &str, year: i32) -> Result<i32, FieldError> {
    if RECORD_YEARS.contains(&year) {
        Ok(year)
    } else {
        Err(FieldError::new(
            field,
            format!(
                "must be a year from {} to {}",
                RECORD_YEARS.start(),
                RECORD_YEARS.end()
            ),
        ))
    }
}

/// A birth date's year is plausible (where it enters, without a clock).
pub fn birth_year(field: &str, date: NaiveDate) -> Result<NaiveDate, FieldError> {
    if BIRTH_YEARS.contains(&date.year()) {
        Ok(date)
    } else {
        Err(FieldError::new(
            field,
            format!(
                "must fall between the years {} and {}",
                BIRTH_YEARS.start(),
                BIRTH_YEARS.end()
            ),
        ))
    }
}

/// A birth date: a plausible year, and not after `today` (the service's clock).
pub fn birth_date(field: &str, date: NaiveDate, today: NaiveDate) -> Result<NaiveDate, FieldError> {
    birth_year(field, date)?;
    if date > today {
        return Err(FieldError::new(field, "is in the future"));
    }
    Ok(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("date")
    }

    #[test]
    fn each_kind_of_date_has_its_range() {
        let today = day(2026, 12, 1);
        assert!(birth_date("b", day(1991, 5, 17), today).is_ok());
        assert_eq!(birth_date("b", day(0, 1, 1), today).unwrap_err().field, "b");
        assert!(birth_date("b", day(2990, 1, 1), today).is_err());
        assert!(birth_date("b", day(2026, 12, 2), today).is_err());
        assert!(year("year", 2021).is_ok());
        assert!(year("year", -5).is_err());
        assert!(year("year", 0).is_err());
        let far = DateTime::from_timestamp(253_402_300_799, 0).expect("9999");
        assert!(instant("valid_until", far).is_err());
        assert!(
            instant(
                "valid_until",
                day(2099, 1, 1).and_hms_opt(0, 0, 0).expect("t").and_utc()
            )
            .is_ok()
        );
        assert!(record_date("d", day(1899, 1, 1)).is_err());
    }
}

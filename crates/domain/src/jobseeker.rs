//! The employment side's jobseeker register, and what the Département may
//! read of it under the agreement's title II: the monthly RSA jobseeker list
//! (LRSA-DE, legal obligation) and the jobseeker file (DUDE, public task),
//! each for agents habilitated one by one.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::person::{MAX_SHORT_TEXT, required_text};
use crate::vocabulary::coded_enum;

coded_enum!(
    HabilitationScope {
        RsaJobseekerList => "rsa_jobseeker_list",
        JobseekerFile => "jobseeker_file",
    }
);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub target_jobs: Vec<String>,
    pub education_level: String,
    pub driving_licence: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSearchEvent {
    pub date: String,
    pub kind: String,
    pub summary: String,
}

/// What DUDE shows beyond identity and registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDetails {
    pub profile: Profile,
    pub employment_plan: Vec<String>,
    pub history: Vec<JobSearchEvent>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jobseeker {
    pub jobseeker_number: String,
    pub first_name: String,
    pub last_name: String,
    pub birth_date: String,
    pub registration_date: String,
    pub registration_category: String,
    pub agency_code: String,
    pub support_modality: String,
    pub rsa_beneficiary: bool,
    pub details: FileDetails,
}

/// One line of the LRSA-DE.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RsaRow {
    pub seq: u64,
    pub jobseeker_number: String,
    pub first_name: String,
    pub last_name: String,
    pub birth_date: String,
    pub registration_date: String,
    pub registration_category: String,
    pub agency_code: String,
    pub support_modality: String,
}

fn date(field: &str, value: &str) -> Result<NaiveDate, FieldError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| FieldError::new(field, "must be a date, YYYY-MM-DD"))
}

impl Jobseeker {
    pub fn validate(&self) -> Result<(), FieldError> {
        let n = &self.jobseeker_number;
        if n.len() < 7 || n.len() > 11 || !n.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(FieldError::new(
                "jobseeker_number",
                "must be 7 to 11 letters or digits",
            ));
        }
        required_text("first_name", &self.first_name, MAX_SHORT_TEXT)?;
        required_text("last_name", &self.last_name, MAX_SHORT_TEXT)?;
        crate::bounds::birth_year("birth_date", date("birth_date", &self.birth_date)?)?;
        let registered = date("registration_date", &self.registration_date)?;
        crate::bounds::record_date("registration_date", registered)?;
        if !["1", "2", "3", "4", "5"].contains(&self.registration_category.as_str()) {
            return Err(FieldError::new("registration_category", "must be 1 to 5"));
        }
        required_text("agency_code", &self.agency_code, MAX_SHORT_TEXT)?;
        required_text("support_modality", &self.support_modality, MAX_SHORT_TEXT)?;
        Ok(())
    }
}

/// A month of the list, `YYYY-MM`.
pub fn month(value: &str) -> Result<String, FieldError> {
    let parsed = (value.len() == 7 && value.as_bytes()[4] == b'-')
        .then(|| NaiveDate::parse_from_str(&format!("{value}-01"), "%Y-%m-%d").ok())
        .flatten();
    let ok = parsed.is_some_and(|d| crate::bounds::record_date("month", d).is_ok());
    if ok {
        Ok(value.to_owned())
    } else {
        Err(FieldError::new(
            "month",
            format!(
                "must be YYYY-MM, a month from {} to {}",
                crate::bounds::RECORD_YEARS.start(),
                crate::bounds::RECORD_YEARS.end()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_of_the_systems_years() {
        assert!(month("2024-03").is_ok());
        assert!(month("-001-01").is_err());
        assert!(month("0000-01").is_err());
        assert!(month("2024-13").is_err());
        assert!(month("2024-3").is_err());
    }

    #[test]
    fn months_and_records_are_checked() {
        assert!(month("2026-11").is_ok());
        assert_eq!(month("2026-13").map_err(|e| e.field), Err("month".into()));
        let mut j = Jobseeker {
            jobseeker_number: "1234567A".into(),
            first_name: "Léa".into(),
            last_name: "Martin".into(),
            birth_date: "1988-04-12".into(),
            registration_date: "2025-01-06".into(),
            registration_category: "1".into(),
            agency_code: "PE-RENNES".into(),
            support_modality: "global".into(),
            rsa_beneficiary: true,
            details: FileDetails::default(),
        };
        assert!(j.validate().is_ok());
        j.registration_category = "9".into();
        assert_eq!(
            j.validate().map_err(|e| e.field),
            Err("registration_category".into())
        );
    }
}

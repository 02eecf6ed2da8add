//! What the referral says about the person.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::vocabulary::coded_enum;

/// Longest name, office code or agent id accepted.
pub const MAX_SHORT_TEXT: usize = 200;
/// Longest postal address accepted.
pub const MAX_ADDRESS: usize = 500;
/// Longest local note accepted.
pub const MAX_NOTE: usize = 4000;

/// A required, bounded, trimmed text field.
pub fn required_text(field: &str, value: &str, max: usize) -> Result<String, FieldError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    bounded_text(field, trimmed, max)
}

/// An optional bounded text field: empty means absent.
pub fn optional_text(field: &str, value: &str, max: usize) -> Result<Option<String>, FieldError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    bounded_text(field, trimmed, max).map(Some)
}

fn bounded_text(field: &str, value: &str, max: usize) -> Result<String, FieldError> {
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(field, "contains control characters"));
    }
    Ok(value.to_owned())
}

/// A calendar date in ISO 8601 form (YYYY-MM-DD).
pub fn parse_date(field: &str, value: &str) -> Result<NaiveDate, FieldError> {
    NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d")
        .map_err(|_| FieldError::new(field, "is not a date of the form YYYY-MM-DD"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonIdentity {
    pub first_name: String,
    pub last_name: String,
    pub birth_date: NaiveDate,
    pub jobseeker_number: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub phone: Option<String>,
    pub email: Option<String>,
    pub postal_address: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmploymentSummary {
    pub registered: bool,
    pub registration_date: Option<NaiveDate>,
    pub rsa_beneficiary: bool,
}

coded_enum!(
    /// Barrier families, aligned on the data·inclusion thématiques.
    BarrierCategory {
        Mobility => "mobilite",
        Housing => "logement-hebergement",
        Health => "sante",
        FamilyChildcare => "famille",
        Financial => "difficultes-financieres",
        AdministrativeLegal => "difficultes-administratives-ou-juridiques",
        Digital => "numerique",
        LiteracyNumeracy => "lecture-ecriture-calcul",
        SocialInsertion => "remobilisation",
    }
);

coded_enum!(BarrierLevel { Low => "low", Medium => "medium", High => "high" });

/// A barrier crosses as a category and a level, never as a narrative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Barrier {
    pub category: BarrierCategory,
    pub level: BarrierLevel,
}

/// One barrier per category: a repeated category is a client mistake.
pub fn check_barriers(field: &str, barriers: &[Barrier]) -> Result<(), FieldError> {
    for (i, b) in barriers.iter().enumerate() {
        if barriers[..i].iter().any(|o| o.category == b.category) {
            return Err(FieldError::new(
                format!("{field}[{i}].category"),
                "is repeated",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_bounded_and_required() {
        assert_eq!(required_text("f", "  Anne ", 10).as_deref(), Ok("Anne"));
        assert_eq!(
            required_text("f", "   ", 10).unwrap_err().reason,
            "is required"
        );
        assert!(required_text("f", &"x".repeat(11), 10).is_err());
        assert!(required_text("f", "a\u{0}b", 10).is_err());
        assert_eq!(optional_text("f", "", 10), Ok(None));
    }

    #[test]
    fn accented_names_count_characters_not_bytes() {
        assert!(required_text("f", "Éléonore", 8).is_ok());
    }

    #[test]
    fn dates_are_iso() {
        assert!(parse_date("d", "1990-02-28").is_ok());
        assert_eq!(parse_date("d", "1990-02-30").unwrap_err().field, "d");
        assert!(parse_date("d", "28/02/1990").is_err());
    }

    #[test]
    fn repeated_barrier_category_is_named() {
        let b = Barrier {
            category: BarrierCategory::Housing,
            level: BarrierLevel::Low,
        };
        let err = check_barriers("barriers", &[b, b]).unwrap_err();
        assert_eq!(err.field, "barriers[1].category");
    }
}

coded_enum!(
    /// As the European Social Fund's participant questionnaire asks it.
    Sex { Female => "female", Male => "male" }
);

coded_enum!(
    /// Highest level of education completed, in the ESF's ISCED groups.
    EducationLevel {
        /// Primary or lower secondary (ISCED 0 to 2): CAP, BEP or below.
        Isced0To2 => "isced_0_2",
        /// Upper or post-secondary (ISCED 3 and 4): baccalauréat.
        Isced3To4 => "isced_3_4",
        /// Tertiary (ISCED 5 to 8).
        Isced5To8 => "isced_5_8",
    }
);

coded_enum!(
    /// A recognised disability (RQTH): health data, declared only if the person wishes.
    DisabilityDeclaration {
        Declared => "declared",
        NotDeclared => "not_declared",
        Undisclosed => "undisclosed",
    }
);

/// What the ESF participant questionnaire records at entry. Kept by the
/// institution where the person signs, for the committee's counts only: it
/// never crosses to the partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub sex: Sex,
    pub education: EducationLevel,
    /// Nobody in the household is in work.
    pub jobless_household: bool,
    /// A single adult with dependent children.
    pub single_adult_with_children: bool,
    pub disability: DisabilityDeclaration,
}

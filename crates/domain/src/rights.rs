//! The rights a person exercises at one institution that its partner, as a
//! recipient of their data, must hear of (GDPR art. 19): an erasure, or a
//! rectification of the fields the partner received.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::case::Referral;
use crate::error::FieldError;
use crate::ids::CaseId;
use crate::person::{
    Contact, MAX_ADDRESS, MAX_SHORT_TEXT, PersonIdentity, optional_text, parse_date, required_text,
};
use crate::vocabulary::coded_enum;

coded_enum!(
    /// A field of the referral the person may have corrected, named by its
    /// path in the contract (as the audit log records what crossed).
    RectifiableField {
        FirstName => "referral.person.first_name",
        LastName => "referral.person.last_name",
        BirthDate => "referral.person.birth_date",
        JobseekerNumber => "referral.person.jobseeker_number",
        Phone => "referral.contact.phone",
        Email => "referral.contact.email",
        PostalAddress => "referral.contact.postal_address",
    }
);

const ALL_FIELDS: [RectifiableField; 7] = [
    RectifiableField::FirstName,
    RectifiableField::LastName,
    RectifiableField::BirthDate,
    RectifiableField::JobseekerNumber,
    RectifiableField::Phone,
    RectifiableField::Email,
    RectifiableField::PostalAddress,
];

/// A field's corrected value, as text (empty: no longer known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RectifiedValue {
    pub field: RectifiableField,
    pub value: String,
}

coded_enum!(
    RightsNoticeKind {
        Erasure => "erasure",
        Rectification => "rectification",
        Restriction => "restriction",
        RestrictionLifted => "restriction_lifted",
        Objection => "objection",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RightsNotice {
    pub case_id: CaseId,
    pub kind: RightsNoticeKind,
    pub at: DateTime<Utc>,
    /// For a rectification: the corrected fields this recipient received.
    pub rectified: Vec<RectifiedValue>,
    /// For an objection: the processing objected to.
    #[serde(default)]
    pub purpose: Option<crate::vocabulary::Purpose>,
}

impl Referral {
    /// The field's value as text.
    pub fn field_text(&self, field: RectifiableField) -> String {
        let p = &self.person;
        let c = &self.contact;
        match field {
            RectifiableField::FirstName => p.first_name.clone(),
            RectifiableField::LastName => p.last_name.clone(),
            RectifiableField::BirthDate => p.birth_date.format("%Y-%m-%d").to_string(),
            RectifiableField::JobseekerNumber => p.jobseeker_number.clone().unwrap_or_default(),
            RectifiableField::Phone => c.phone.clone().unwrap_or_default(),
            RectifiableField::Email => c.email.clone().unwrap_or_default(),
            RectifiableField::PostalAddress => c.postal_address.clone().unwrap_or_default(),
        }
    }

    /// Corrects one field, checked as when it was first written.
    pub fn rectify(&mut self, change: &RectifiedValue) -> Result<(), FieldError> {
        let path = change.field.code();
        let v = change.value.as_str();
        match change.field {
            RectifiableField::FirstName => {
                self.person.first_name = required_text(path, v, MAX_SHORT_TEXT)?
            }
            RectifiableField::LastName => {
                self.person.last_name = required_text(path, v, MAX_SHORT_TEXT)?
            }
            RectifiableField::BirthDate => {
                self.person.birth_date = crate::bounds::birth_year(path, parse_date(path, v)?)?
            }
            RectifiableField::JobseekerNumber => {
                self.person.jobseeker_number = optional_text(path, v, 32)?
            }
            RectifiableField::Phone => self.contact.phone = optional_text(path, v, 32)?,
            RectifiableField::Email => {
                let email = optional_text(path, v, 254)?;
                if email.as_deref().is_some_and(|e| !e.contains('@')) {
                    return Err(FieldError::new(path, "is not an e-mail address"));
                }
                self.contact.email = email;
            }
            RectifiableField::PostalAddress => {
                self.contact.postal_address = optional_text(path, v, MAX_ADDRESS)?
            }
        }
        Ok(())
    }

    /// The fields whose value differs once the identity and contact read
    /// as given (`None`: that part unchanged).
    pub fn rectifications(
        &self,
        person: Option<&PersonIdentity>,
        contact: Option<&Contact>,
    ) -> Vec<RectifiedValue> {
        let mut corrected = self.clone();
        if let Some(p) = person {
            corrected.person = p.clone();
        }
        if let Some(c) = contact {
            corrected.contact = c.clone();
        }
        ALL_FIELDS
            .into_iter()
            .filter(|f| self.field_text(*f) != corrected.field_text(*f))
            .map(|field| RectifiedValue {
                field,
                value: corrected.field_text(field),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::tests_support::referral;

    #[test]
    fn only_the_fields_that_differ_are_rectified_and_each_is_checked() {
        let r = referral();
        let mut person = r.person.clone();
        person.last_name = "Le Goff".into();
        let contact = Contact {
            email: Some("n@example.org".into()),
            ..r.contact.clone()
        };
        let changes = r.rectifications(Some(&person), Some(&contact));
        let fields: Vec<_> = changes.iter().map(|c| c.field).collect();
        assert_eq!(
            fields,
            vec![RectifiableField::LastName, RectifiableField::Email]
        );
        let mut copy = r.clone();
        for c in &changes {
            copy.rectify(c).expect("valid");
        }
        assert_eq!(copy.person.last_name, "Le Goff");
        assert_eq!(copy.contact.email.as_deref(), Some("n@example.org"));
        let bad = RectifiedValue {
            field: RectifiableField::Email,
            value: "not-an-address".into(),
        };
        assert_eq!(
            copy.rectify(&bad).unwrap_err().field,
            "referral.contact.email"
        );
        assert!(r.rectifications(None, None).is_empty());
    }
}

//! The boundary's vocabulary as domain types. Each has a stable text code used
//! in storage, audit records and configuration.

use serde::{Deserialize, Serialize};

macro_rules! coded_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $code:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn code(self) -> &'static str {
                match self { $($name::$variant => $code),+ }
            }

            pub fn from_code(code: &str) -> Option<Self> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.code())
            }
        }
    };
}
pub(crate) use coded_enum;

coded_enum!(
    /// The three parties of the system.
    Institution { Emploi => "emploi", Social => "social", Pilotage => "pilotage" }
);

coded_enum!(
    /// What a caller does in its institution.
    Role {
        Counsellor => "counsellor",
        SocialWorker => "social_worker",
        Coordinator => "coordinator",
        Service => "service",
        Steering => "steering",
        Dpo => "dpo",
        AssociationWorker => "association_worker",
    }
);

coded_enum!(
    /// Why personal data crosses the boundary.
    Purpose {
        Referral => "referral",
        GlobalSupport => "global_support",
        ExclusiveSocialSupport => "exclusive_social_support",
        RsaJobseekerList => "rsa_jobseeker_list",
        JobseekerFile => "jobseeker_file",
        Statistics => "statistics",
        SubjectAccess => "subject_access",
        ConsentRecord => "consent_record",
        RightsNotification => "rights_notification",
        AuditIntegrity => "audit_integrity",
        Orientation => "orientation",
    }
);

coded_enum!(
    LegalBasis { Consent => "consent", LegalObligation => "legal_obligation", PublicTask => "public_task" }
);

coded_enum!(
    /// Data categories of BOUNDARY.md.
    DataCategory {
        Public => "public",
        Identity => "identity",
        Contact => "contact",
        Case => "case",
        Barrier => "barrier",
        Employment => "employment",
        SocialPlan => "social_plan",
        LocalOnly => "local_only",
        Aggregate => "aggregate",
    }
);

coded_enum!(
    /// The network that referred the person.
    Network { Emploi => "emploi", Social => "social" }
);

impl Institution {
    /// The institution on the other side of the accompaniment.
    pub fn partner(self) -> Option<Institution> {
        match self {
            Institution::Emploi => Some(Institution::Social),
            Institution::Social => Some(Institution::Emploi),
            Institution::Pilotage => None,
        }
    }

    pub fn network(self) -> Option<Network> {
        match self {
            Institution::Emploi => Some(Network::Emploi),
            Institution::Social => Some(Network::Social),
            Institution::Pilotage => None,
        }
    }
}

coded_enum!(
    /// One of the two institutions that run casework together, each the
    /// other's partner (the steering service runs none).
    Side { Emploi => "emploi", Social => "social" }
);

impl Side {
    pub fn institution(self) -> Institution {
        match self {
            Side::Emploi => Institution::Emploi,
            Side::Social => Institution::Social,
        }
    }

    pub fn partner(self) -> Side {
        match self {
            Side::Emploi => Side::Social,
            Side::Social => Side::Emploi,
        }
    }

    pub fn network(self) -> Network {
        match self {
            Side::Emploi => Network::Emploi,
            Side::Social => Network::Social,
        }
    }

    /// The casework side `institution` runs, if it runs one.
    pub fn of(institution: Institution) -> Option<Side> {
        match institution {
            Institution::Emploi => Some(Side::Emploi),
            Institution::Social => Some(Side::Social),
            Institution::Pilotage => None,
        }
    }
}

impl From<Side> for Institution {
    fn from(side: Side) -> Self {
        side.institution()
    }
}

impl PartialEq<Institution> for Side {
    fn eq(&self, other: &Institution) -> bool {
        self.institution() == *other
    }
}

impl PartialEq<Side> for Institution {
    fn eq(&self, other: &Side) -> bool {
        *self == other.institution()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_is_its_partners_partner() {
        for side in Side::ALL {
            assert_eq!(side.partner().partner(), *side);
            assert_ne!(side.partner(), *side);
            assert_eq!(Side::of(side.institution()), Some(*side));
            assert_eq!(side.institution().network(), Some(side.network()));
        }
        assert_eq!(Side::of(Institution::Pilotage), None);
    }

    #[test]
    fn codes_round_trip() {
        for c in DataCategory::ALL {
            assert_eq!(DataCategory::from_code(c.code()), Some(*c));
        }
        for p in Purpose::ALL {
            assert_eq!(Purpose::from_code(p.code()), Some(*p));
        }
        assert_eq!(Institution::from_code("nobody"), None);
    }

    #[test]
    fn partners_are_each_other() {
        assert_eq!(Institution::Emploi.partner(), Some(Institution::Social));
        assert_eq!(Institution::Social.partner(), Some(Institution::Emploi));
        assert_eq!(Institution::Pilotage.partner(), None);
    }
}

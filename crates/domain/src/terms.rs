//! The words of a case's life that both the agreements and the cases use:
//! a leaf, so that `agreement` and `case` need not import each other.

use serde::{Deserialize, Serialize};

use crate::vocabulary::coded_enum;

/// One pre-referral check or orientation criterion, as the referrer answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAnswer {
    pub code: String,
    pub met: bool,
}

coded_enum!(
    /// Where the referral stands with the institution it was sent to.
    ReferralState {
        Pending => "pending",
        Accepted => "accepted",
        Refused => "refused",
        Expired => "expired",
        /// The person withdrew their consent before the decision.
        Withdrawn => "withdrawn",
    }
);

coded_enum!(
    /// Who leads the case, as the agreement reads.
    Referent { Counsellor => "counsellor", Pair => "pair" }
);

coded_enum!(
    ExitReason {
        Job => "job",
        Training => "training",
        JobSearchAutonomy => "job_search_autonomy",
        SocialProblemSolved => "social_problem_solved",
        EndedByPerson => "ended_by_person",
        MissedAppointments => "missed_appointments",
        Deregistered => "deregistered",
        EndOfTerm => "end_of_term",
        /// Axe 3 ends with a return to one of the employment side's tracks.
        EmploymentTrack => "employment_track",
        /// The person withdrew their consent: processing ends on both sides.
        ConsentWithdrawn => "consent_withdrawn",
    }
);

coded_enum!(
    /// How the steering committee groups exits.
    ExitType { Job => "job", Training => "training", Other => "other" }
);

impl ExitReason {
    pub fn exit_type(self) -> ExitType {
        match self {
            ExitReason::Job => ExitType::Job,
            ExitReason::Training => ExitType::Training,
            _ => ExitType::Other,
        }
    }
}

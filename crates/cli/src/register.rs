//! `passerelle register`: an institution's record of processing activities
//! (GDPR art. 30), from the contract this binary was built with and the
//! agreement, counting the crossings of the last year from its database.

use chrono::{Duration, Utc};
use passerelle_domain::Institution;
use passerelle_domain::agreement::Agreement;
use passerelle_rights::{Catalogue, Document, Register};
use passerelle_storage::audit::{AuditFilter, AuditLog};
use passerelle_storage::{Database, Schema};

pub async fn write(
    institution: Institution,
    agreement: &Agreement,
    format: &str,
    database: Option<&str>,
) -> anyhow::Result<String> {
    if !matches!(institution, Institution::Emploi | Institution::Social) {
        anyhow::bail!("a register is kept by each institution: emploi or social");
    }
    let catalogue = Catalogue::from_contract()?;
    let now = Utc::now();
    let period = (now - Duration::days(365), now);
    let entries = match database {
        None => vec![],
        Some(url) => {
            let log = AuditLog::new(Database::connect(url, Schema::Institution, 2).await?);
            let filter = AuditFilter {
                from: Some(period.0),
                to: Some(period.1),
                limit: usize::MAX,
                ..AuditFilter::default()
            };
            let found = log.search(&filter).await?;
            log.close().await;
            found.into_iter().map(|(_, e)| e).collect()
        }
    };
    let register = Register::build(&catalogue, agreement, institution, &entries, period, now);
    Ok(match format {
        "markdown" | "md" => register.to_markdown(),
        "html" => register.to_html(),
        "json" => register.to_json(),
        other => anyhow::bail!("unknown format {other}: markdown, html or json"),
    })
}

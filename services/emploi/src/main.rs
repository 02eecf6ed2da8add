//! `passerelle-emploi`: the employment side's service.

use passerelle_domain::Institution;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    passerelle_runtime::binary::run(Institution::Emploi, |config, listener, clock| {
        Box::pin(passerelle_emploi::start(config, listener, clock))
    })
    .await
}

//! `passerelle-pilotage`: the steering committee's service.

use passerelle_domain::Institution;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    passerelle_runtime::binary::run(Institution::Pilotage, |config, listener, clock| {
        Box::pin(passerelle_pilotage::start(config, listener, clock))
    })
    .await
}

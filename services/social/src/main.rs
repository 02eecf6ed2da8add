//! `passerelle-social`: the social side's service.

use passerelle_domain::Institution;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    passerelle_runtime::binary::run(Institution::Social, |config, listener, clock| {
        Box::pin(passerelle_social::start(config, listener, clock))
    })
    .await
}

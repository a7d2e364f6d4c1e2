use clap::Args;
use tierline::config::Config;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind (overrides `server.host`).
    #[arg(long)]
    host: Option<String>,
    /// Port to bind (overrides `server.port`).
    #[arg(long)]
    port: Option<u16>,
}

pub fn run(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(host) = args.host {
        config.server.host = host;
    }
    if let Some(port) = args.port {
        config.server.port = port;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let address = format!("{}:{}", config.server.host, config.server.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|err| anyhow::anyhow!("cannot bind {address}: {err}"))?;
        tierline::server::run(config, listener, tierline::http::shutdown_signal()).await
    })
}

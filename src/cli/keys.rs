use clap::Subcommand;
use tierline::access::{self, Scope};
use tierline::config::Config;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key; the key is printed once and only its hash is stored.
    Create {
        /// Who uses it, e.g. `zendesk` or `agent-console`.
        #[arg(long)]
        name: String,
        /// helpdesk, agent or admin; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
    },
    /// List keys (ids, names, scopes; never the keys themselves).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
}

pub fn run(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    super::block_on(keys(config, command))?
}

async fn keys(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    let store = super::open_store(&config).await?;
    match command {
        KeysCommand::Create { name, scopes } => {
            let created = access::create(store.as_ref(), &name, &scopes).await?;
            eprintln!("created {} ({name}); store the key now, it is not shown again:", created.id);
            println!("{}", created.key);
        }
        KeysCommand::List => {
            for key in store.keys().await? {
                let state = if key.revoked_at.is_some() { "revoked" } else { "live" };
                println!("{}\t{}\t{}\t{state}", key.id, key.name, key.scopes.join(","));
            }
        }
        KeysCommand::Revoke { id } => {
            access::revoke(store.as_ref(), &id).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

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
        /// Keep the key to this account's conversations (its `account.id`); repeat for
        /// several. Such a key cannot call routes that span every account.
        #[arg(long = "account")]
        accounts: Vec<String>,
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
        KeysCommand::Create { name, scopes, accounts } => {
            let created = access::create_for_accounts(store.as_ref(), &name, &scopes, &accounts).await?;
            eprintln!("created {} ({name}); store the key now, it is not shown again:", created.id);
            println!("{}", created.key);
        }
        KeysCommand::List => {
            for key in store.keys().await? {
                let state = if key.revoked_at.is_some() { "revoked" } else { "live" };
                let accounts = if key.is_restricted() { key.accounts.join(",") } else { "all accounts".into() };
                println!("{}\t{}\t{}\t{accounts}\t{state}", key.id, key.name, key.scopes.join(","));
            }
        }
        KeysCommand::Revoke { id } => {
            access::revoke(store.as_ref(), &id).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

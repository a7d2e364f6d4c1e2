use clap::Subcommand;
use tierline::config::Config;
use tierline::inference::{Manifest, Resolver};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Resolve every role (or the ones named), downloading what is missing, with progress.
    Pull { roles: Vec<String> },
    /// List the manifest's roles and where each resolves now, without downloading.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print the local folder of a role's model (pulling it if needed).
    Path { role: String },
}

pub fn run(config: Config, command: ModelsCommand) -> anyhow::Result<()> {
    let manifest = Manifest::load(&config.models.manifest)?;
    match command {
        ModelsCommand::Pull { roles } => {
            let roles = if roles.is_empty() { manifest.roles.keys().cloned().collect() } else { roles };
            let resolver = Resolver::from_settings(&config.infer()).with_progress(true);
            for role in roles {
                let resolved = resolver.resolve(&role, manifest.role(&role)?)?;
                println!("{role}: {} from {} at {}", resolved.id, resolved.source, resolved.dir.display());
            }
            Ok(())
        }
        ModelsCommand::List { json } => {
            let resolver = Resolver::from_settings(&config.infer()).offline_only();
            let mut rows = Vec::new();
            for (role, spec) in &manifest.roles {
                let (location, source) = match resolver.resolve(role, spec) {
                    Ok(found) => (found.dir.display().to_string(), found.source),
                    Err(_) => ("not pulled".to_string(), "-".to_string()),
                };
                rows.push(serde_json::json!({ "role": role, "id": spec.id, "revision": spec.revision, "source": source, "location": location }));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!("{:<10} {:<42} {:<10} {:<9} location", "role", "model", "revision", "source");
            for row in rows {
                let revision: String = row["revision"].as_str().unwrap_or("").chars().take(8).collect();
                println!(
                    "{:<10} {:<42} {:<10} {:<9} {}",
                    row["role"].as_str().unwrap_or(""),
                    row["id"].as_str().unwrap_or(""),
                    revision,
                    row["source"].as_str().unwrap_or(""),
                    row["location"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        ModelsCommand::Path { role } => {
            let resolved =
                Resolver::from_settings(&config.infer()).with_progress(true).resolve(&role, manifest.role(&role)?)?;
            println!("{}", resolved.dir.display());
            Ok(())
        }
    }
}

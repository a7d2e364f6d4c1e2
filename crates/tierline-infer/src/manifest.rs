//! `models/models.toml`: the model roles and where each can be found.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    #[serde(flatten)]
    pub roles: BTreeMap<String, ModelSpec>,
}

/// What a role's model is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// A sentence encoder (the `encoder` role).
    #[default]
    Encoder,
    /// A Hugging Face `*ForSequenceClassification` checkpoint served in place of a head.
    SequenceClassification,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    #[serde(default)]
    pub kind: ModelKind,
    /// For `sequence-classification`: the head name it serves as (`sentiment`...), replacing a
    /// trained head of that name.
    #[serde(default)]
    pub head: Option<String>,
    pub id: String,
    #[serde(default = "default_revision")]
    pub revision: String,
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub pip: Option<String>,
    #[serde(default)]
    pub pip_path: Option<String>,
    /// Required files with their expected sha256 ("" when only presence is checked).
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub optional: Vec<String>,
}

fn default_revision() -> String {
    "main".to_string()
}

impl Manifest {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read model manifest {}", path.display()))?;
        let mut manifest: Manifest =
            toml::from_str(&text).with_context(|| format!("invalid model manifest {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for (role, spec) in &mut manifest.roles {
            if spec.files.is_empty() {
                bail!("{}: role `{role}` lists no required `files`", path.display());
            }
            if spec.kind == ModelKind::SequenceClassification && spec.head.is_none() {
                bail!(
                    "{}: role `{role}` is a sequence-classification checkpoint: name the `head` it serves as",
                    path.display()
                );
            }
            if spec.pip.is_some() != spec.pip_path.is_some() {
                bail!("{}: role `{role}`: `pip` and `pip_path` go together", path.display());
            }
            // A relative `path` is relative to the manifest, like the rest of `models/`.
            if let Some(local) = &spec.path {
                if local.is_relative() {
                    spec.path = Some(base.join(local));
                }
            }
        }
        Ok(manifest)
    }

    pub fn role(&self, role: &str) -> anyhow::Result<&ModelSpec> {
        self.roles.get(role).with_context(|| {
            let known: Vec<&str> = self.roles.keys().map(String::as_str).collect();
            format!("no model role `{role}` in the manifest (known: {})", known.join(", "))
        })
    }
}

impl ModelSpec {
    /// Every file worth fetching: required first, then optional.
    pub fn all_files(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str).chain(self.optional.iter().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_manifest_names_the_encoder() {
        let manifest =
            Manifest::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/models.toml"))).unwrap();
        let encoder = manifest.role("encoder").unwrap();
        assert_eq!(encoder.id, "sentence-transformers/all-MiniLM-L6-v2");
        assert_eq!(encoder.revision.len(), 40, "revision is pinned to a commit");
        assert!(encoder.files.contains_key("model.safetensors"));
        assert!(manifest.role("nope").unwrap_err().to_string().contains("encoder"));
    }
}

//! Articles added, replaced or removed through the API or `tierline index add|remove`, kept apart
//! from the source folder (which may be read-only, or a checkout) and applied on top of it at
//! every build, so edits survive restarts and later changes to the source.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::article::Article;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Edits {
    /// Articles that replace the source's article of the same id, or add to it.
    #[serde(default)]
    pub upserts: BTreeMap<String, Article>,
    /// Ids removed from the source.
    #[serde(default)]
    pub deletes: BTreeSet<String>,
}

impl Edits {
    /// Reads the edits file; a missing file means no edits.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).with_context(|| format!("invalid edits file {}", path.display()))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes to a temporary file, syncs it and renames it over the old one: a crash leaves the old
    /// edits or the new ones, never a torn file.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        file.write_all(&serde_json::to_vec_pretty(self)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    pub fn upsert(&mut self, article: Article) {
        self.deletes.remove(&article.id);
        self.upserts.insert(article.id.clone(), article);
    }

    pub fn delete(&mut self, id: &str) {
        self.upserts.remove(id);
        self.deletes.insert(id.to_string());
    }

    /// The source's articles with the edits applied (source order, then added articles by id).
    pub fn apply(&self, source: Vec<Article>) -> Vec<Article> {
        let mut seen = BTreeSet::new();
        let mut articles: Vec<Article> = source
            .into_iter()
            .filter(|a| !self.deletes.contains(&a.id))
            .map(|a| {
                seen.insert(a.id.clone());
                self.upserts.get(&a.id).cloned().unwrap_or(a)
            })
            .collect();
        articles.extend(self.upserts.values().filter(|a| !seen.contains(&a.id)).cloned());
        articles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article(id: &str, body: &str) -> Article {
        Article {
            id: id.into(),
            title: id.to_uppercase(),
            url: None,
            tags: Vec::new(),
            product: None,
            audience: Default::default(),
            updated: None,
            body: body.into(),
        }
    }

    #[test]
    fn edits_replace_add_and_remove_source_articles_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edits.json");
        assert_eq!(Edits::load(&path).unwrap(), Edits::default());
        let mut edits = Edits::default();
        edits.upsert(article("b", "new b"));
        edits.upsert(article("z", "added"));
        edits.delete("c");
        edits.save(&path).unwrap();
        let edits = Edits::load(&path).unwrap();
        let applied = edits.apply(vec![article("a", "a"), article("b", "old b"), article("c", "c")]);
        let summary: Vec<(&str, &str)> = applied.iter().map(|a| (a.id.as_str(), a.body.as_str())).collect();
        assert_eq!(summary, [("a", "a"), ("b", "new b"), ("z", "added")]);

        // Re-adding a deleted id brings it back; deleting an added one removes it.
        let mut edits = edits;
        edits.upsert(article("c", "back"));
        edits.delete("z");
        let applied = edits.apply(vec![article("c", "c")]);
        assert_eq!(applied.iter().map(|a| a.body.as_str()).collect::<Vec<_>>(), ["back", "new b"]);
    }

    #[test]
    fn a_torn_edits_file_is_an_error_not_an_empty_knowledge_base() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edits.json");
        std::fs::write(&path, b"{\"upserts\": {").unwrap();
        assert!(Edits::load(&path).unwrap_err().to_string().contains("invalid edits file"));
    }
}

/// Where the edits live: a file beside the index (one node), or a document in the shared store
/// that every node reads (several nodes; an edit notifies the others).
#[derive(Clone)]
pub enum EditsStorage {
    File(std::path::PathBuf),
    Shared { store: std::sync::Arc<dyn crate::store::Store>, runtime: tokio::runtime::Handle },
}

/// The shared store's document holding the edits.
pub const EDITS_DOCUMENT: &str = "kb_edits";

impl EditsStorage {
    /// The edits and their version (0: none yet). Blocking: call from a blocking thread.
    pub fn load(&self) -> anyhow::Result<(Edits, i64)> {
        match self {
            EditsStorage::File(path) => Ok((Edits::load(path)?, 0)),
            EditsStorage::Shared { store, runtime } => match runtime.block_on(store.document(EDITS_DOCUMENT))? {
                Some((version, body)) => {
                    let edits = serde_json::from_str(&body).context("the shared knowledge-base edits do not parse")?;
                    Ok((edits, version))
                }
                None => Ok((Edits::default(), 0)),
            },
        }
    }

    /// Stores the edits; returns their new version. Blocking.
    pub fn save(&self, edits: &Edits) -> anyhow::Result<i64> {
        match self {
            EditsStorage::File(path) => {
                edits.save(path)?;
                Ok(0)
            }
            EditsStorage::Shared { store, runtime } => runtime.block_on(async {
                let version = store.save_document(EDITS_DOCUMENT, &serde_json::to_string(edits)?).await?;
                // Other nodes rebuild at once; a lost notification is caught by their poll.
                if let Err(err) = store.notify(crate::store::KB_CHANNEL, &version.to_string()).await {
                    tracing::warn!(%err, "other nodes not told of the knowledge-base edit; they see it at their next poll");
                }
                Ok(version)
            }),
        }
    }

    /// The version stored now (shared storage only; a file has none). Async.
    pub async fn version(&self) -> anyhow::Result<i64> {
        match self {
            EditsStorage::File(_) => Ok(0),
            EditsStorage::Shared { store, .. } => Ok(store.document(EDITS_DOCUMENT).await?.map_or(0, |(v, _)| v)),
        }
    }
}

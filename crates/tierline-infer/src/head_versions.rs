//! Versions of a head beyond the one shipped in `heads_dir`: `<root>/<head>/v<N>/` (card and
//! weights), `<root>/<head>/history` (promotions, one version per line, oldest first) and
//! `<root>/<head>/CURRENT` (the version served). No `CURRENT` means the shipped head is served.
//! Files are replaced by rename, so a reader never sees half a promotion.

use std::path::{Path, PathBuf};

use anyhow::Context;

const CURRENT_FILE: &str = "CURRENT";
const HISTORY_FILE: &str = "history";

#[derive(Debug, Clone)]
pub struct HeadVersions {
    root: PathBuf,
}

impl HeadVersions {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The promoted version served for `head` (`v3`), if any.
    pub fn current(&self, head: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.root.join(head).join(CURRENT_FILE)).ok()?;
        let version = text.trim();
        (!version.is_empty()).then(|| version.to_string())
    }

    /// The folder of the promoted version served for `head`, if any.
    pub fn current_dir(&self, head: &str) -> Option<PathBuf> {
        self.current(head).map(|version| self.root.join(head).join(version))
    }

    /// Every stored version number of `head`, ascending.
    pub fn versions(&self, head: &str) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(self.root.join(head)) else { return Vec::new() };
        let mut versions: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str()?.strip_prefix('v')?.parse().ok())
            .collect();
        versions.sort_unstable();
        versions
    }

    /// Promotions of `head`, oldest first.
    pub fn history(&self, head: &str) -> Vec<String> {
        std::fs::read_to_string(self.root.join(head).join(HISTORY_FILE))
            .map(|text| text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
            .unwrap_or_default()
    }

    /// A fresh, empty folder for the next version of `head`, numbered at least `at_least` (a
    /// version above the shipped head's): `(number, folder)`.
    pub fn stage(&self, head: &str, at_least: u32) -> anyhow::Result<(u32, PathBuf)> {
        let number = self.versions(head).last().map_or(1, |v| v + 1).max(at_least);
        let dir = self.root.join(head).join(format!("v{number}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok((number, dir))
    }

    /// Serves `version` of `head` from now on (servers notice within their poll interval).
    pub fn promote(&self, head: &str, version: &str) -> anyhow::Result<()> {
        let dir = self.root.join(head);
        anyhow::ensure!(dir.join(version).is_dir(), "head `{head}` has no version `{version}`");
        let mut history = self.history(head);
        history.push(version.to_string());
        write_atomically(&dir.join(HISTORY_FILE), &(history.join("\n") + "\n"))?;
        write_atomically(&dir.join(CURRENT_FILE), &format!("{version}\n"))
    }

    /// Goes back to the version promoted before the current one, or to the shipped head when
    /// there is none. Returns what is served now (`None`: the shipped head).
    pub fn rollback(&self, head: &str) -> anyhow::Result<Option<String>> {
        let dir = self.root.join(head);
        let mut history = self.history(head);
        anyhow::ensure!(history.pop().is_some(), "head `{head}` has no promoted version to roll back");
        // What is served changes first; the history follows.
        match history.last() {
            Some(previous) => write_atomically(&dir.join(CURRENT_FILE), &format!("{previous}\n"))?,
            None => {
                let current = dir.join(CURRENT_FILE);
                std::fs::remove_file(&current).with_context(|| format!("cannot remove {}", current.display()))?;
            }
        }
        write_atomically(&dir.join(HISTORY_FILE), &history.iter().map(|v| format!("{v}\n")).collect::<String>())?;
        Ok(history.last().cloned())
    }

    /// What every head currently serves, to notice a promotion or rollback cheaply.
    pub fn fingerprint(&self) -> String {
        let Ok(entries) = std::fs::read_dir(&self.root) else { return String::new() };
        let mut heads: Vec<String> =
            entries.filter_map(Result::ok).filter_map(|e| e.file_name().to_str().map(String::from)).collect();
        heads.sort();
        heads.iter().map(|head| format!("{head}={};", self.current(head).unwrap_or_default())).collect()
    }
}

fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&temporary).with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotions_and_rollbacks_walk_the_history_back_to_the_shipped_head() {
        let dir = tempfile::tempdir().unwrap();
        let versions = HeadVersions::new(dir.path());
        assert_eq!(versions.current("topic"), None);
        let (first, _) = versions.stage("topic", 2).unwrap();
        let (second, _) = versions.stage("topic", 1).unwrap();
        assert_eq!((first, second), (2, 3));
        versions.promote("topic", "v2").unwrap();
        let before = versions.fingerprint();
        versions.promote("topic", "v3").unwrap();
        assert_ne!(versions.fingerprint(), before);
        assert_eq!(versions.current("topic").as_deref(), Some("v3"));
        assert_eq!(versions.rollback("topic").unwrap().as_deref(), Some("v2"));
        assert_eq!(versions.current_dir("topic"), Some(dir.path().join("topic/v2")));
        assert_eq!(versions.rollback("topic").unwrap(), None);
        assert_eq!(versions.current("topic"), None);
        assert!(versions.rollback("topic").is_err());
        assert!(versions.promote("topic", "v9").is_err());
    }
}

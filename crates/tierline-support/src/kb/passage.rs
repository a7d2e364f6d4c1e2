//! Articles split into passages: by `##`/`###` headings first, then by paragraphs so that no
//! passage exceeds a word budget (a proxy for the encoder's token limit).

use serde::{Deserialize, Serialize};

use super::article::{Article, Audience};

/// Words per passage at most; ~1.3 tokens per word keeps passages well under 256 tokens.
pub const MAX_WORDS: usize = 160;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Passage {
    pub article_id: String,
    pub title: String,
    pub url: Option<String>,
    pub heading: Option<String>,
    pub text: String,
    pub audience: Audience,
    pub product: Option<String>,
    pub tags: Vec<String>,
}

impl Passage {
    /// What the encoder and BM25 see: title and heading give the passage its context.
    pub fn indexed_text(&self) -> String {
        match &self.heading {
            Some(heading) => format!("{}. {}. {}", self.title, heading, self.text),
            None => format!("{}. {}", self.title, self.text),
        }
    }
}

pub fn split(article: &Article) -> Vec<Passage> {
    let mut sections: Vec<(Option<String>, Vec<String>)> = vec![(None, Vec::new())];
    let mut in_code = false;
    for line in article.body.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        let heading = line.strip_prefix("## ").or_else(|| line.strip_prefix("### "));
        match heading {
            Some(heading) if !in_code => sections.push((Some(heading.trim().to_string()), Vec::new())),
            _ => sections.last_mut().expect("one section at least").1.push(line.to_string()),
        }
    }
    let mut passages = Vec::new();
    for (heading, lines) in sections {
        let text = lines.join("\n");
        for chunk in chunk_paragraphs(&text) {
            passages.push(Passage {
                article_id: article.id.clone(),
                title: article.title.clone(),
                url: article.url.clone(),
                heading: heading.clone(),
                text: chunk,
                audience: article.audience,
                product: article.product.clone(),
                tags: article.tags.clone(),
            });
        }
    }
    passages
}

/// Paragraphs (blank-line separated, code blocks kept whole) packed into chunks of at most
/// `MAX_WORDS` words; a longer paragraph becomes a chunk of its own.
fn chunk_paragraphs(text: &str) -> Vec<String> {
    let mut paragraphs = Vec::new();
    let mut current = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if line.trim().is_empty() && !in_code {
            if !current.is_empty() {
                paragraphs.push(current.join("\n"));
                current.clear();
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        paragraphs.push(current.join("\n"));
    }
    let mut chunks: Vec<String> = Vec::new();
    let mut words = 0;
    for paragraph in paragraphs {
        let count = paragraph.split_whitespace().count();
        match chunks.last_mut() {
            Some(last) if words + count <= MAX_WORDS => {
                last.push_str("\n\n");
                last.push_str(&paragraph);
                words += count;
            }
            _ => {
                chunks.push(paragraph);
                words = count;
            }
        }
    }
    chunks.into_iter().filter(|c| !c.trim().is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article(body: &str) -> Article {
        Article {
            id: "a".into(),
            title: "T".into(),
            url: None,
            tags: vec![],
            product: None,
            audience: Audience::Public,
            updated: None,
            body: body.into(),
        }
    }

    #[test]
    fn splits_by_heading_then_paragraph_budget() {
        let long = "word ".repeat(100);
        let body = format!(
            "Intro line.\n\n## First\nOne.\n\nTwo.\n\n## Second\n{long}\n\n{long}\n\n```\n## not a heading\n```\n"
        );
        let passages = split(&article(&body));
        let headings: Vec<Option<&str>> = passages.iter().map(|p| p.heading.as_deref()).collect();
        assert_eq!(headings, [None, Some("First"), Some("Second"), Some("Second")]);
        assert_eq!(passages[1].text, "One.\n\nTwo.");
        assert!(passages.iter().all(|p| p.text.split_whitespace().count() <= MAX_WORDS + 5));
        assert!(passages[3].text.contains("## not a heading"), "code blocks stay whole");
    }
}

//! A real browser for the screens: Debian's Chromium driven through its WebDriver
//! (chromedriver), one driver per test binary, a fresh browser session per user.
//!
//! Without Chromium and chromedriver the test says so loudly; under CI (`CI=true`) that is a
//! failure, so a CI run never passes with the browser tests silently skipped.

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The driver process, started once and killed when the test process exits.
struct Driver {
    port: u16,
    _child: ChildGuard,
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

/// `Some(port)` of a running chromedriver; `None` (after a loud message) when Chromium is not
/// installed and this is not CI. Under CI a missing browser panics.
pub fn driver() -> Option<u16> {
    static DRIVER: OnceLock<Option<Driver>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            let missing: Vec<&str> =
                [CHROMIUM, CHROMEDRIVER].into_iter().filter(|p| !std::path::Path::new(p).exists()).collect();
            if !missing.is_empty() {
                let message = format!(
                    "BROWSER TESTS NOT RUN: {} missing. Install Debian's `chromium` and `chromium-driver` \
                     (sh .ci/install-test-deps)",
                    missing.join(", ")
                );
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{message}");
                }
                eprintln!("\n*** {message} ***\n");
                return None;
            }
            let port = super::free_port();
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts");
            let guard = ChildGuard(child);
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(Driver { port, _child: guard })
        })
        .as_ref()
        .map(|d| d.port)
}

/// A new headless browser session (its own profile: no shared storage with other sessions).
pub async fn session(port: u16, width: u32, height: u32) -> Client {
    let profile = std::env::temp_dir().join(format!("tierline-chromium-{}-{}", std::process::id(), super::free_port()));
    let args = [
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-extensions".into(),
        format!("--window-size={width},{height}"),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), serde_json::json!({ "binary": CHROMIUM, "args": args }));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser session starts")
}

/// Waits up to `timeout` for `css` to match an element that is displayed.
pub async fn visible(client: &Client, css: &str, timeout: Duration) -> fantoccini::elements::Element {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if element.is_displayed().await.unwrap_or(false) {
                return element;
            }
        }
        assert!(Instant::now() < deadline, "`{css}` not visible within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to `timeout` for `css` to hold an element whose text contains `needle`.
pub async fn text_appears(client: &Client, css: &str, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(elements) = client.find_all(Locator::Css(css)).await {
            for element in elements {
                let text = element.text().await.unwrap_or_default();
                if text.contains(needle) {
                    return text;
                }
            }
        }
        assert!(Instant::now() < deadline, "no `{css}` containing {needle:?} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The button a customer must always see: present, displayed and inside the viewport.
pub async fn assert_person_button_visible(client: &Client, state: &str) {
    let button = client.find(Locator::Css("#talk-to-person")).await.unwrap_or_else(|_| panic!("no button ({state})"));
    assert!(button.is_displayed().await.unwrap(), "\"Talk to a person\" hidden ({state})");
    assert!(button.is_enabled().await.unwrap(), "\"Talk to a person\" disabled ({state})");
    let inside: bool = client
        .execute(
            "const r = document.getElementById('talk-to-person').getBoundingClientRect();
             return r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0 &&
                    r.bottom <= window.innerHeight && r.right <= window.innerWidth;",
            vec![],
        )
        .await
        .unwrap()
        .as_bool()
        .unwrap_or(false);
    assert!(inside, "\"Talk to a person\" is off screen ({state})");
}

/// What the browser measured of the page it shows: transferred bytes and first contentful paint.
pub async fn page_figures(client: &Client) -> serde_json::Value {
    client
        .execute(
            "const nav = performance.getEntriesByType('navigation')[0];
             const resources = performance.getEntriesByType('resource');
             const paint = performance.getEntriesByType('paint').find(p => p.name === 'first-contentful-paint');
             const bytes = (nav ? nav.decodedBodySize : 0) + resources.reduce((s, r) => s + (r.decodedBodySize || 0), 0);
             return { bytes, first_contentful_paint_ms: paint ? paint.startTime : null,
                      dom_content_loaded_ms: nav ? nav.domContentLoadedEventEnd : null };",
            vec![],
        )
        .await
        .unwrap()
}

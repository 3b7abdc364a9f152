//! Driving the console: [`Console`], a signed-in session over plain HTTP
//! (cheap: no browser), and [`Browser`], a headless Chromium driven over
//! WebDriver (`fantoccini` and Debian's `chromium-driver`).
//!
//! Without Chromium, [`Browser::start`] prints a note and gives `None`, so
//! that `cargo test` passes on a fresh machine; under `CI=true` it panics
//! instead: there the browser tests must run.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::Locator;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};

use super::{SAFETY, TestApp};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A page as the console answered it.
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// Where a redirect goes.
    pub fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The value of the first hidden `csrf` field.
    pub fn csrf(&self) -> Option<String> {
        let (_, rest) = self.body.split_once(r#"name="csrf" value=""#)?;
        rest.split('"').next().map(str::to_owned)
    }
}

/// The console over plain HTTP, with the cookie of a session once signed
/// in; redirects are not followed, so that a test sees them.
pub struct Console {
    base: String,
    client: reqwest::Client,
    pub cookie: String,
    pub csrf: String,
}

impl Console {
    /// No session.
    pub fn anonymous(app: &TestApp) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Console {
            base: app.url(""),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client"),
            cookie: String::new(),
            csrf: String::new(),
        }
    }

    /// Signs in with `key` as a person would: the form, then the post.
    pub async fn sign_in(app: &TestApp, key: &str) -> Self {
        let mut console = Self::anonymous(app);
        let signed = console.try_sign_in(key).await;
        assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
        let cookie = session_cookie(&signed.headers).expect("a session cookie");
        console.cookie = cookie;
        let overview = console.get("/console").await;
        assert_eq!(overview.status, StatusCode::OK, "{}", overview.body);
        console.csrf = overview.csrf().expect("a csrf field");
        console
    }

    /// The same session, at `app`'s address (a restarted app).
    pub fn at(mut self, app: &TestApp) -> Self {
        self.base = app.url("");
        self
    }

    /// The sign-in form posted with `key`.
    pub async fn try_sign_in(&self, key: &str) -> Page {
        let form = self.get("/console/sign-in").await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let token = form.csrf().expect("the sign-in form's token");
        let cookie = cookie_pair(&form.headers, "clientele_sign_in").expect("the sign-in cookie");
        let response = self
            .client
            .post(format!("{}/console/sign-in", self.base))
            .header("cookie", cookie)
            .form(&[("key", key), ("csrf", &token)])
            .send()
            .await
            .expect("an answer");
        page(response).await
    }

    pub async fn get(&self, path: &str) -> Page {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .expect("an answer");
        page(response).await
    }

    /// Posts `fields` with the session's CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut fields = fields.to_vec();
        fields.push(("csrf", &self.csrf));
        self.post_raw(path, &fields).await
    }

    /// Posts `fields` as they are: a forged form.
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(fields)
            .send()
            .await
            .expect("an answer");
        page(response).await
    }
}

async fn page(response: reqwest::Response) -> Page {
    Page {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.expect("a body"),
    }
}

/// `name=value` of the cookie `name` that an answer sets.
fn cookie_pair(headers: &HeaderMap, name: &str) -> Option<String> {
    set_cookies(headers)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .and_then(|c| c.split(';').next().map(str::to_owned))
}

/// The `Set-Cookie` lines of an answer.
pub fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie_pair(headers, "clientele_session").filter(|c| c != "clientele_session=")
}

/// A headless Chromium, driven by its own `chromedriver`, which ends with
/// it.
pub struct Browser {
    pub client: fantoccini::Client,
    driver: Child,
    port: u16,
    /// One browser at a time in the suite: several Chromiums at once on a
    /// 2-core machine, beside the rest of the suite, lost their WebDriver
    /// connection mid-test.
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// Whose turn it is to drive a browser.
static TURN: std::sync::LazyLock<std::sync::Arc<tokio::sync::Mutex<()>>> = std::sync::LazyLock::new(Default::default);

impl Browser {
    /// A browser, or `None` (with a note) where Chromium is not installed
    /// and `CI` is not `true`.
    pub async fn start() -> Option<Self> {
        let installed = std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
        if !installed {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: the browser tests must run, but {CHROMIUM} or {CHROMEDRIVER} is missing (.ci/chromium.sh installs them)"
            );
            eprintln!(
                "note: skipping a browser test: {CHROMIUM} and {CHROMEDRIVER} are not installed (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let turn = TURN.clone().lock_owned().await;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + SAFETY;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--no-first-run",
                    "--window-size=1440,900",
                ],
            }),
        );
        let client = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        Some(Browser {
            client,
            driver,
            port,
            _turn: turn,
        })
    }

    /// Saves what the browser shows now as `target/console-screenshots/{name}-{width}.png`,
    /// at 1440 and at 390 pixels wide, for people to look at.
    pub async fn screenshots(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("the screenshots directory");
        for (width, height) in [(1440, 1100), (390, 1400)] {
            self.client.set_window_size(width, height).await.expect("a window size");
            let png = self.client.screenshot().await.expect("a screenshot");
            std::fs::write(dir.join(format!("{name}-{width}.png")), png).expect("a screenshot written");
        }
        self.client.set_window_size(1440, 900).await.expect("a window size");
    }

    /// Signs in at `app`'s sign-in page with `key`, as a person types it,
    /// and waits for the overview.
    pub async fn sign_in(&self, app: &TestApp, key: &str) {
        let c = &self.client;
        c.goto(&app.url("/console/sign-in")).await.unwrap();
        c.find(Locator::Id("key")).await.unwrap().send_keys(key).await.unwrap();
        c.find(Locator::Css("form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let overview = reqwest::Url::parse(&app.url("/console")).unwrap();
        c.wait().for_url(&overview).await.unwrap();
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// Also after a failed test: chromedriver's `/shutdown` quits the
    /// browsers it started (killing chromedriver alone would leave
    /// Chromium running), then chromedriver itself is ended.
    fn drop(&mut self) {
        use std::io::Write;
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = write!(
                stream,
                "GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            );
            let _ = std::io::Read::read(&mut stream, &mut [0u8; 256]);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.driver.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

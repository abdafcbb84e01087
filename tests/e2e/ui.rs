//! The web UI in a real browser: headless Chromium driven over WebDriver
//! (chromedriver). It signs in with the server's token, creates an
//! instance, watches its timeline fill in, sends it an event, sees it
//! complete, and saves a screenshot of each page under target/ui/.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::common::*;
use crate::server::rust_only;

/// chromedriver on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver is not installed: apt-get install chromium chromium-driver \
                 (scripts/test.sh does)",
            );
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < PATIENCE, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shots() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

/// Waits until `css` matches an element whose text satisfies `pred`.
async fn wait_text(c: &Client, css: &str, pred: impl Fn(&str) -> bool) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
            && pred(&t)
        {
            return t;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out waiting for `{css}`; page: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css))
        .await
        .map(|v| v.len())
        .unwrap_or(0)
}

async fn fill(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[test]
fn the_ui_creates_an_instance_shows_its_timeline_and_sends_it_an_event() {
    let w = Weft::new();
    let toml = format!(
        "{}[workflows.nightly]\ncomponent = {SCENARIOS:?}\nschedules = [{{ cron = \"0 3 * * *\", timezone = \"Europe/Paris\" }}]\n",
        rust_only()
    );
    let s = w.serve("serve", &toml, &["--token", "t0k"]);
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let caps = json!({"goog:chromeOptions": {"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ]}});
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&driver.url)
            .await
            .expect("a Chromium session");

        // Without the token the UI asks for it, and shows nothing else.
        c.goto(&s.url).await.unwrap();
        wait_text(&c, "h1", |t| t == "Sign in").await;
        shot(&c, "sign-in").await;
        fill(&c, "#token-input", "t0k").await;
        click(&c, "#token-save").await;

        // Workflows, with a form to create an instance.
        wait_text(&c, "#workflows", |t| t.contains("rs")).await;
        // Schedules are listed with their next tick.
        let sch = wait_text(&c, "#schedules", |t| t.contains("0 3 * * *")).await;
        assert!(sch.contains("Europe/Paris"), "{sch}");
        shot(&c, "workflows").await;
        let option = c
            .find(Locator::Css("#create-workflow option[value='rs']"))
            .await
            .unwrap();
        option.click().await.unwrap();
        fill(&c, "#create-id", "ui-1").await;
        fill(
            &c,
            "#create-params",
            r#"{"scenario":"steps-then-wait","n":3}"#,
        )
        .await;
        click(&c, "#create-submit").await;

        // The instance: its steps fill the timeline, then it waits.
        wait_text(&c, "h1", |t| t.starts_with("ui-1")).await;
        let start = std::time::Instant::now();
        while count(&c, "#timeline .tl-bar.k-wait").await == 0 {
            assert!(start.elapsed() < PATIENCE, "{}", c.source().await.unwrap());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            count(&c, "#timeline .tl-bar.k-ok").await,
            3,
            "three completed steps"
        );
        // Bars sit on one time axis: the wait starts after the steps.
        let left = |style: Option<String>| -> f64 {
            let style = style.unwrap_or_default();
            let v = style
                .split("left:")
                .nth(1)
                .unwrap_or_else(|| panic!("no position: {style:?}"));
            v.trim().split('%').next().unwrap().trim().parse().unwrap()
        };
        let mut steps_left = Vec::new();
        for b in c
            .find_all(Locator::Css("#timeline .tl-bar.k-ok"))
            .await
            .unwrap()
        {
            steps_left.push(left(b.attr("style").await.unwrap()));
        }
        let wait = c
            .find(Locator::Css("#timeline .tl-bar.k-wait"))
            .await
            .unwrap();
        let wait_left = left(wait.attr("style").await.unwrap());
        assert!(
            steps_left.iter().all(|l| *l <= wait_left),
            "{steps_left:?} then {wait_left}"
        );
        wait_text(&c, "h1 .badge", |t| t == "waiting").await;
        shot(&c, "instance-waiting").await;

        // A step's bar opens its output.
        click(&c, "#timeline .tl-bar.k-ok").await;
        wait_text(&c, "#tl-detail pre", |t| t.contains("\"output\"")).await;

        // Send the event it waits for from the UI; it completes.
        fill(&c, "#event-type", "go").await;
        fill(&c, "#event-payload", r#"{"by": "the ui"}"#).await;
        click(&c, "#event-send").await;
        wait_text(&c, "h1 .badge", |t| t == "complete").await;
        let out = wait_text(&c, "#instance-output", |t| t.contains("\"event\"")).await;
        assert!(out.contains("the ui"), "{out}");
        // The wait's bar is closed now, and the last step is on the timeline.
        assert_eq!(count(&c, "#timeline .tl-bar.k-open").await, 0);
        assert_eq!(count(&c, "#timeline .tl-bar.k-ok").await, 4);
        assert_eq!(
            count(&c, "#act-terminate[disabled]").await,
            1,
            "no actions on a finished instance"
        );
        shot(&c, "instance-complete").await;

        // The instance list, filtered by status, with the new instance.
        c.goto(&format!("{}/#/instances?status=complete", s.url))
            .await
            .unwrap();
        wait_text(&c, "#instances", |t| t.contains("ui-1")).await;
        shot(&c, "instances").await;
        // Searching by the start of an id lists the matches.
        fill(&c, "#search-id", "ui-").await;
        click(&c, "#search-go").await;
        let start = std::time::Instant::now();
        while !c
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("prefix=ui-")
        {
            assert!(start.elapsed() < PATIENCE);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        wait_text(&c, "#instances", |t| t.contains("ui-1")).await;

        // Restart it from a step through the UI: it waits again.
        c.goto(&format!("{}/#/instance/ui-1", s.url)).await.unwrap();
        wait_text(&c, "h1 .badge", |t| t == "complete").await;
        let from = c
            .find(Locator::Css("#restart-from option:nth-child(3)"))
            .await
            .unwrap();
        from.click().await.unwrap();
        click(&c, "#act-restart").await;
        wait_text(&c, "h1 .badge", |t| t == "waiting").await;

        // On a phone.
        c.set_window_size(390, 844).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        shot(&c, "instance-phone").await;
        c.close().await.unwrap();
    });
    for name in [
        "sign-in",
        "workflows",
        "instance-waiting",
        "instance-complete",
        "instances",
        "instance-phone",
    ] {
        let png = std::fs::read(shots().join(format!("{name}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 2000, "{name}");
    }
}

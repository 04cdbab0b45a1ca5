//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (Debian `chromium` + `chromium-driver`). The page loads with no console
//! errors, shows a connected client within 2 s, its chart moves while a
//! publisher runs, and its Kick button disconnects the client (v5 0x98).
//!
//! Skipped, saying so, when `chromedriver` is not installed. The screenshot is
//! saved in the test's temp dir, and copied to `$ROOKERY_DASHBOARD_SCREENSHOT`
//! when that is set (how `docs/dashboard.png` is made).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use rookery::protocol::{Packet, ProtocolVersion, QoS, ReasonCode};
use rookery::Config;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "dashboard-test-token";

/// A chromedriver process and one browser session in it.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One WebDriver call (HTTP/1.1, JSON); returns the `value` of the reply.
async fn webdriver(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|body| body.to_string()).unwrap_or_default();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // chromedriver keeps the connection open: read by Content-Length, not to EOF.
    let mut response = Vec::new();
    let body = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "chromedriver closed the connection early");
            response.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&response).to_string();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())
                        .flatten()
                })
                .expect("a Content-Length");
            if body.len() >= length {
                return body.to_string();
            }
        }
    })
    .await
    .expect("chromedriver did not answer");
    let reply: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    reply["value"].clone()
}

impl Browser {
    async fn start() -> Option<Browser> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000",
            ]},
        }}});
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
        };
        let session = webdriver(addr, "POST", "/session", Some(capabilities)).await;
        browser.session = session["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        Some(browser)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        webdriver(self.addr, method, &path, body).await
    }

    async fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Runs `script` every 100 ms until it returns `true`, for at most `limit`.
    async fn wait_for(&self, script: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        while self.script(script).await != json!(true) {
            assert!(
                started.elapsed() < limit,
                "timed out after {limit:?} waiting for {script}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        started.elapsed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_clients_moves_its_chart_and_kicks_in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        // CI installs the browser (.ci/run): there, a missing one is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "chromedriver is not installed, and CI must run this test"
        );
        eprintln!(
            "skipped: chromedriver is not installed (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let mut config = Config::default();
    config.http.bind = Some("127.0.0.1:0".parse().unwrap());
    config.http.admin_token = Some(TOKEN.to_string());
    let broker = start_broker_with(config).await;
    let http = broker.server.http_addr().unwrap();

    let url = format!("http://{http}/#token={TOKEN}");
    browser
        .call("POST", "/url", Some(json!({"url": url})))
        .await;
    browser
        .wait_for(
            "return document.getElementById('status-text').textContent === 'live'",
            Duration::from_secs(5),
        )
        .await;

    // A connected client appears within 2 s.
    let (mut device, _) =
        RawClient::start(broker.addr, ProtocolVersion::V5, "device-42", true).await;
    device.subscribe_one("telemetry/#", QoS::AtMostOnce).await;
    let shown = "return !!document.querySelector('#clients tr[data-client-id=\"device-42\"]')";
    let took = browser.wait_for(shown, Duration::from_secs(2)).await;
    eprintln!("client shown after {took:?}");

    // The chart moves while a publisher runs.
    let (mut publisher, _) =
        RawClient::start(broker.addr, ProtocolVersion::V5, "publisher", true).await;
    let publishing = tokio::spawn(async move {
        for i in 0..400 {
            let payload = format!("{{\"t\": {i}}}");
            publisher
                .send(&Packet::Publish(publish(
                    "telemetry/temp",
                    QoS::AtMostOnce,
                    0,
                    &payload,
                )))
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        publisher
    });
    let moving = "return Number(document.getElementById('rate-in').textContent) > 0";
    browser.wait_for(moving, Duration::from_secs(5)).await;
    let mut retained = publish("status/device-42", QoS::AtMostOnce, 0, "online");
    retained.retain = true;
    let publisher = publishing.await.unwrap();
    let mut publisher = publisher;
    publisher.send(&Packet::Publish(retained)).await;
    browser
        .wait_for(
            "return document.getElementById('retained').textContent.includes('status/device-42')",
            Duration::from_secs(3),
        )
        .await;

    let dir = tempfile::tempdir().unwrap();
    let screenshot = browser.call("GET", "/screenshot", None).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(screenshot.as_str().unwrap())
        .unwrap();
    let path = dir.path().join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    if let Ok(copy) = std::env::var("ROOKERY_DASHBOARD_SCREENSHOT") {
        std::fs::write(copy, &png).unwrap();
    }

    // The Kick button disconnects the client, which sees 0x98.
    let kick = browser
        .call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": "button[data-kick=\"device-42\"]"})),
        )
        .await;
    let element = kick
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    browser
        .call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    loop {
        match device.recv().await {
            Some(Packet::Disconnect(disconnect)) => {
                assert_eq!(disconnect.reason, ReasonCode::ADMINISTRATIVE_ACTION);
                break;
            }
            Some(Packet::Publish(_)) => continue,
            other => panic!("expected DISCONNECT 0x98, got {other:?}"),
        }
    }
    let gone = "return !document.querySelector('#clients tr[data-client-id=\"device-42\"]')";
    browser.wait_for(gone, Duration::from_secs(3)).await;

    // No console errors from the page.
    let logs = browser
        .call("POST", "/se/log", Some(json!({"type": "browser"})))
        .await;
    let errors: Vec<&Value> = logs
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|entry| entry["level"] == "SEVERE")
                .collect()
        })
        .unwrap_or_default();
    assert!(errors.is_empty(), "console errors: {errors:?}");

    browser.call("DELETE", "", None).await;
    broker.stop().await;
}

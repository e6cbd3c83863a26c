//! `POST /collect`, `GET /p.gif`, `/metrics`, `/api/streams` and `/` on a real socket.

mod common;

use clickpulse_server::ServerConfig;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn post(
    server: &TestServer,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(server.url("/collect"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, resp.json().await.expect("JSON reply"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_json_and_ndjson_are_appended_before_the_reply() {
    let server = TestServer::start().await;
    let (status, body) = post(
        &server,
        "application/json",
        json!([{"ts_ms": 1, "visitor_id": "v1", "url": "/a"}, {"ts_ms": 2, "visitor_id": "v2", "url": "/b"}]).to_string(),
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"accepted": 2, "rejected": []}))
    );
    // The reply means appended: no waiting needed.
    assert_eq!(server.appender.len(), 2);

    let (status, body) = post(
        &server,
        "application/json",
        r#"{"ts_ms":3,"visitor_id":"v3","url":"/c"}"#,
    )
    .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (StatusCode::OK, json!(1))
    );

    let ndjson = "{\"ts_ms\":4,\"visitor_id\":\"v4\",\"url\":\"/d\"}\n\n{\"ts_ms\":5,\"visitor_id\":\"v5\",\"url\":\"/e\"}\n";
    for ct in ["application/x-ndjson", "text/plain; charset=utf-8"] {
        let (status, body) = post(&server, ct, ndjson).await;
        assert_eq!(
            (status, body["accepted"].clone()),
            (StatusCode::OK, json!(2)),
            "{ct}"
        );
    }
    let urls: Vec<String> = server
        .appender
        .events()
        .into_iter()
        .map(|e| e.url)
        .collect();
    assert_eq!(urls, vec!["/a", "/b", "/c", "/d", "/e", "/d", "/e"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_request_appends_the_good_events_and_is_400_with_reasons() {
    let server = TestServer::start().await;
    let ndjson = [
        r#"{"ts_ms":1,"visitor_id":"v1","url":"/ok"}"#,
        r#"{"ts_ms":"soon","visitor_id":"v1","url":"/bad-ts"}"#,
        "",
        "{broken",
        r#"{"visitor_id":"v2","url":"/no-ts"}"#,
    ]
    .join("\n");
    let (status, body) = post(&server, "application/x-ndjson", ndjson).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["accepted"], 2);
    let rejected = body["rejected"].as_array().expect("array");
    let indexes: Vec<u64> = rejected
        .iter()
        .map(|r| r["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(indexes, vec![1, 3], "line numbers, blank lines counted");
    assert!(
        rejected[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("ts_ms")
    );
    assert!(
        rejected[1]["reason"]
            .as_str()
            .expect("reason")
            .contains("invalid JSON")
    );
    let events = server.appender.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].url, "/ok");
    assert!(
        events[1].ts_ms > 1_600_000_000_000,
        "missing ts_ms filled by the server clock"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_bad_is_400_with_nothing_appended() {
    let server = TestServer::start().await;
    let (status, body) = post(
        &server,
        "application/json",
        json!([{"url": ""}, 5]).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["rejected"].as_array().map(Vec::len), Some(2));
    assert!(server.appender.is_empty());

    let (status, body) = post(&server, "application/json", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("not valid JSON")
    );
    let (status, _) = post(&server, "application/x-ndjson", "\n\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no events at all");
    assert_eq!(server.appender.appends(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_too_many_events_and_wrong_types_are_refused() {
    let server = TestServer::start_with(ServerConfig {
        body_limit: 4096,
        batch_limit: 10,
        ..ServerConfig::default()
    })
    .await;
    let event = r#"{"visitor_id":"v","url":"/"}"#;
    let big = format!("{}\n", vec![event; 200].join("\n"));
    let (status, body) = post(&server, "application/x-ndjson", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["error"].is_string());

    let (status, body) = post(&server, "application/x-ndjson", [event; 11].join("\n")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("limit is 10"),
        "{body}"
    );
    let (status, _) = post(&server, "application/x-ndjson", [event; 10].join("\n")).await;
    assert_eq!(status, StatusCode::OK, "exactly the limit is fine");

    let (status, body) = post(&server, "text/csv", "v,/").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("application/json")
    );
    let resp = reqwest::Client::new()
        .post(server.url("/collect"))
        .body(event)
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "no content type"
    );
    assert_eq!(server.appender.len(), 10);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitor_cookie_is_set_when_absent_and_used_when_present() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    let resp = client
        .post(server.url("/collect"))
        .header("content-type", "application/json")
        .body(r#"{"url":"/first"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    let id = cookie
        .strip_prefix("cp_vid=")
        .and_then(|rest| rest.split(';').next())
        .expect("cp_vid cookie")
        .to_string();
    assert!(cookie.contains("Max-Age="), "{cookie}");

    let resp = client
        .post(server.url("/collect"))
        .header("content-type", "application/json")
        .header("cookie", format!("cp_vid={id}"))
        .body(r#"[{"url":"/second"},{"url":"/third","visitor_id":"explicit"}]"#)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "known visitor: no new cookie"
    );
    let visitors: Vec<String> = server
        .appender
        .events()
        .into_iter()
        .map(|e| e.visitor_id)
        .collect();
    assert_eq!(visitors, vec![id.clone(), id, "explicit".to_string()]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pixel_records_the_query_and_answers_an_uncached_gif() {
    let server = TestServer::start().await;
    let resp = reqwest::Client::new()
        .get(server.url("/p.gif?url=%2Fproduct%2F7&visitor_id=v9&event_type=add_to_cart&product=p7&ts_ms=1234&color=red"))
        .header("user-agent", "pixel-test")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "image/gif");
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .expect("ascii")
            .contains("no-store")
    );
    let gif = resp.bytes().await.expect("body");
    assert!(gif.starts_with(b"GIF89a"));
    let events = server.appender.events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        (e.ts_ms, e.visitor_id.as_str(), e.url.as_str()),
        (1234, "v9", "/product/7")
    );
    assert_eq!(e.event_type(), "add_to_cart");
    assert_eq!(e.product.as_deref(), Some("p7"));
    assert_eq!(e.user_agent.as_deref(), Some("pixel-test"));
    assert_eq!(e.properties.get("color").map(String::as_str), Some("red"));

    // No url and no Referer: refused, but still a GIF; a cookie-less visitor gets an id.
    let resp = reqwest::get(server.url("/p.gif?visitor_id=v1"))
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()["content-type"], "image/gif");
    let resp = reqwest::Client::new()
        .get(server.url("/p.gif"))
        .header("referer", "https://shop.example/cart")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .starts_with("cp_vid=")
    );
    assert_eq!(server.appender.events()[1].url, "https://shop.example/cart");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_all_appended() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    let requests = (0..50).map(|i| {
        let client = client.clone();
        let url = server.url("/collect");
        async move {
            let body = (0..20)
                .map(|j| format!(r#"{{"ts_ms":{j},"visitor_id":"v{i}","url":"/{j}"}}"#))
                .collect::<Vec<_>>()
                .join("\n");
            let resp = client
                .post(url)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .expect("request");
            assert_eq!(resp.status(), StatusCode::OK);
        }
    });
    futures::future::join_all(requests).await;
    assert_eq!(server.appender.len(), 1000);
    assert!(
        server.appender.appends() <= 50,
        "never more appends than requests"
    );
    // Each request's events stay together and in order.
    let events = server.appender.events();
    for chunk in events.chunks(20) {
        let ts: Vec<u64> = chunk.iter().map(|e| e.ts_ms).collect();
        assert_eq!(ts, (0..20).collect::<Vec<_>>());
        assert!(chunk.iter().all(|e| e.visitor_id == chunk[0].visitor_id));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_the_counters() {
    let server = TestServer::start().await;
    server.metrics.add_events_in(7);
    server.metrics.set_operator_state("top_pages", 3, 300);
    post(
        &server,
        "application/x-ndjson",
        "{\"visitor_id\":\"v\",\"url\":\"/\"}\n{}",
    )
    .await;
    let _ws = ws_connect(server.addr).await;
    let resp = reqwest::get(server.url("/metrics")).await.expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.expect("body");
    for line in [
        "clickpulse_events_in_total 7",
        "clickpulse_collector_requests_total 1",
        "clickpulse_collector_events_total 1",
        "clickpulse_collector_rejected_total 1",
        r#"clickpulse_operator_state_keys{operator="top_pages"} 3"#,
        r#"clickpulse_operator_state_bytes{operator="top_pages"} 300"#,
        "clickpulse_conflated_messages_total 0",
        "clickpulse_sse_clients 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    for name in [
        "clickpulse_ws_clients",
        "clickpulse_bad_lines_total",
        "clickpulse_late_events_total",
        "clickpulse_batches_total",
        "clickpulse_last_batch_processing_seconds",
        "clickpulse_last_batch_scheduling_delay_seconds",
        "clickpulse_batch_processing_seconds_bucket",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_streams_lists_fields_latest_batch_and_subscribers() {
    let server = TestServer::start().await;
    server.publish("top_pages", 12);
    let mut ws = ws_connect(server.addr).await;
    ws_subscribe(&mut ws, &["top_pages"], None).await;
    let body: Value = reqwest::get(server.url("/api/streams"))
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        body,
        json!([
            {"name": "page_views", "fields": ["url", "count"], "latest_batch": null, "subscribers": 0},
            {"name": "top_pages", "fields": ["url", "count"], "latest_batch": 12, "subscribers": 1},
        ])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_is_served_from_its_directory_or_a_builtin_page() {
    let server = TestServer::start_with(ServerConfig {
        dashboard_dir: "/nonexistent/clickpulse/dist".into(),
        ..ServerConfig::default()
    })
    .await;
    let resp = reqwest::get(server.url("/")).await.expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.text()
            .await
            .expect("body")
            .contains("dashboard has not been built")
    );
    let resp = reqwest::get(server.url("/assets/app.js"))
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    server.stop().await;

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("index.html"), "<h1>live dashboard</h1>").expect("write");
    std::fs::create_dir(dir.path().join("assets")).expect("mkdir");
    std::fs::write(dir.path().join("assets/app.js"), "console.log(1)").expect("write");
    let server = TestServer::start_with(ServerConfig {
        dashboard_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    })
    .await;
    let page = reqwest::get(server.url("/"))
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert_eq!(page, "<h1>live dashboard</h1>");
    let resp = reqwest::get(server.url("/assets/app.js"))
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .contains("javascript")
    );
    server.stop().await;
}

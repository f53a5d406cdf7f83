//! Webhook recovery calls: against a scripted server (GitHub's documented shapes, cursor paging,
//! retries, errors) and end to end against `github-sim` (a receiver down, then up; paging;
//! reading a payload; redelivery).

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use github::{Auth, Client, ClientConfig, EndpointKind, Error, RetryPolicy, Scope, Secret};
use github_sim::{
    serve_webhook_receiver, JobSpec, Received, Sim, SimConfig, SimHandle, WebhookTarget,
};
use serde_json::json;
use url::Url;

const H: &str = "/repos/octo-org/app/hooks";

fn item(id: u64, guid: &str, status_code: u16) -> serde_json::Value {
    json!({
        "id": id, "guid": guid, "delivered_at": "2026-01-22T12:00:00Z", "redelivery": false,
        "duration": 0.27, "status": if status_code == 200 { "OK".to_owned() } else { format!("Invalid HTTP Response: {status_code}") },
        "status_code": status_code, "event": "workflow_job", "action": "queued",
        "installation_id": 42, "repository_id": 7, "throttled_at": null
    })
}

#[tokio::test]
async fn scripted_hooks_and_cursor_paging() {
    let server = Server::start(vec![]).await;
    let base = server.url.as_str().trim_end_matches('/').to_owned();
    server.push(vec![
        expect("GET", &format!("{H}?per_page=100")).json(json!([
            {"type": "Repository", "id": 5, "name": "web", "active": false, "events": ["workflow_job"],
             "config": {"url": "https://manager.example/webhook", "content_type": "json", "insecure_ssl": "0"}},
            {"type": "Repository", "id": 6, "name": "web", "active": true, "events": ["*"],
             "config": {"url": "https://MANAGER.example:443/webhook/", "content_type": "json"}},
            {"type": "Repository", "id": 7, "name": "web", "active": true, "events": ["push"],
             "config": {"url": "https://other.example/"}}
        ])),
        expect("GET", &format!("{H}/6/deliveries?per_page=2"))
            .json(json!([item(30, "c", 200), item(20, "b", 503)]))
            .header(
                "link",
                &format!(r#"<{base}{H}/6/deliveries?per_page=2&cursor=v1_20>; rel="next""#),
            ),
        expect("GET", &format!("{H}/6/deliveries?per_page=2&cursor=v1_20"))
            .json(json!([item(10, "a", 200)]))
            .header(
                "link",
                &format!(r#"<{base}{H}/6/deliveries?per_page=2&cursor=v1_40>; rel="prev""#),
            ),
        expect("GET", &format!("{H}/6/deliveries/20")).json({
            let mut full = item(20, "b", 503);
            full["url"] = json!("https://manager.example/webhook");
            full["request"] = json!({"headers": {"X-GitHub-Delivery": "b", "X-GitHub-Event": "workflow_job"},
                                     "payload": {"action": "queued", "workflow_job": {"id": 99}}});
            full["response"] = json!({"headers": {"content-type": "text/plain"}, "payload": "busy"});
            full
        }),
        expect("POST", &format!("{H}/6/deliveries/20/attempts"))
            .status(202)
            .json(json!({})),
        expect("POST", &format!("{H}/6/deliveries/21/attempts")).error(502, "Bad Gateway"),
        expect("GET", &format!("{H}/6/deliveries/404")).error(404, "Not Found"),
    ]);
    let client = pat_client(&server, "octo-org/app");
    let hook = client
        .find_hook_by_url("https://manager.example/webhook")
        .await
        .expect("hooks")
        .expect("found");
    assert_eq!(hook.id, 6, "the active one, URLs compared parsed");
    assert!(hook.subscribes_to("workflow_job"));

    let first = client.list_deliveries(6, None, 2).await.expect("page 1");
    assert_eq!(
        first.deliveries.iter().map(|d| d.id).collect::<Vec<_>>(),
        [30, 20]
    );
    assert_eq!(first.next_cursor.as_deref(), Some("v1_20"));
    assert!(first.deliveries[0].succeeded() && !first.deliveries[1].succeeded());
    assert_eq!(first.deliveries[1].status, "Invalid HTTP Response: 503");
    assert_eq!(first.deliveries[0].installation_id, Some(42));
    let second = client
        .list_deliveries(6, first.next_cursor.as_deref(), 2)
        .await
        .expect("page 2");
    assert_eq!(second.deliveries[0].guid, "a");
    assert_eq!(second.next_cursor, None, "only rel=prev: last page");

    let delivery = client.get_delivery(6, 20).await.expect("delivery");
    assert_eq!(delivery.summary.guid, "b");
    assert_eq!(delivery.payload["workflow_job"]["id"], 99);
    assert_eq!(delivery.request_header("x-github-delivery"), Some("b"));
    assert_eq!(delivery.response_body.as_deref(), Some("busy"));

    client.redeliver(6, 20).await.expect("202");
    let error = client.redeliver(6, 21).await.expect_err("502");
    assert!(
        matches!(error, Error::Server { status: 502, .. }),
        "{error:?}"
    );
    let error = client.get_delivery(6, 404).await.expect_err("404");
    assert!(error.is_not_found(), "{error:?}");
    server.finish();
    let stats = client.stats();
    assert_eq!(stats.get(EndpointKind::ListHooks).requests, 1);
    assert_eq!(stats.get(EndpointKind::ListDeliveries).requests, 2);
    assert_eq!(
        stats.get(EndpointKind::Redeliver).retries,
        0,
        "a redelivery is never retried blindly"
    );
}

#[tokio::test]
async fn list_deliveries_retries_5xx_and_rejects_a_next_link_without_cursor() {
    let server = Server::start(vec![
        expect("GET", "/orgs/octo-org/hooks/1/deliveries?per_page=100").error(502, "Bad Gateway"),
        expect("GET", "/orgs/octo-org/hooks/1/deliveries?per_page=100")
            .json(json!([]))
            .header(
                "link",
                r#"</orgs/octo-org/hooks/1/deliveries?page=2>; rel="next""#,
            ),
    ])
    .await;
    let client = pat_client(&server, "octo-org");
    let error = client
        .list_deliveries(1, None, 500)
        .await
        .expect_err("no cursor");
    assert!(matches!(error, Error::Unexpected { .. }), "{error:?}");
    server.finish();
    assert_eq!(client.stats().get(EndpointKind::ListDeliveries).retries, 1);
}

#[tokio::test]
async fn enterprise_scope_has_no_hooks_api() {
    let server = Server::start(vec![]).await;
    let client = pat_client(&server, "enterprises/acme");
    for error in [
        client.list_hooks().await.expect_err("unsupported"),
        client
            .list_deliveries(1, None, 30)
            .await
            .map(|_| ())
            .expect_err("unsupported"),
        client.redeliver(1, 2).await.expect_err("unsupported"),
    ] {
        assert!(
            matches!(&error, Error::Unsupported { scope, .. } if scope == "enterprises/acme"),
            "{error:?}"
        );
        assert!(error.to_string().contains("enterprise"), "{error}");
    }
    assert!(server.finish().is_empty(), "no request was sent");
}

// ---------------------------------------------------------------- against the simulator

/// Starts a webhook receiver on `addr` (answers 200 `ok`).
async fn receiver_on(addr: SocketAddr) -> Received {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    serve_webhook_receiver(listener)
}

fn sim_client(sim: &SimHandle, scope: &str) -> Client {
    let mut config = ClientConfig::new(
        Url::parse(&sim.api_url()).expect("api url"),
        Url::parse(&sim.web_url()).expect("web url"),
        Scope::parse(scope).expect("scope"),
        Auth::Token(Secret::from(sim.token().expose())),
    );
    config.timeout = Duration::from_secs(10);
    config.retry = RetryPolicy {
        max_retries: 2,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    Client::new(config).expect("client")
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn recovers_missed_deliveries_from_the_simulator() {
    // A port with nothing listening: the receiver is down.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let url = format!("http://{addr}/hook");
    let sim = Sim::start(SimConfig::default()).await.expect("sim");
    sim.set_webhook(Some(WebhookTarget {
        url: url.clone(),
        secret: github_sim::Secret::new("s"),
    }));
    let client = sim_client(&sim, "octo/app");
    let hook = client
        .find_hook_by_url(&url)
        .await
        .expect("hooks")
        .expect("the sim's repository hook");
    assert!(hook.active && hook.subscribes_to("workflow_job"));
    assert!(client
        .find_hook_by_url("http://elsewhere/hook")
        .await
        .expect("hooks")
        .is_none());

    let enqueue = |n: usize| -> Vec<u64> {
        (0..n)
            .map(|_| {
                sim.enqueue_job(JobSpec::new(&["self-hosted"], "true"))
                    .expect("enqueue")
            })
            .collect()
    };
    let missed_jobs = enqueue(2);
    wait_until("2 attempts", || sim.webhook_deliveries().len() == 2).await;
    let received = receiver_on(addr).await;
    enqueue(3);
    wait_until("5 attempts", || sim.webhook_deliveries().len() == 5).await;

    // Page through all five, two at a time, newest first.
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = client
            .list_deliveries(hook.id, cursor.as_deref(), 2)
            .await
            .expect("page");
        pages += 1;
        all.extend(page.deliveries);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let ids: Vec<u64> = all.iter().map(|d| d.id).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert_eq!(all.iter().map(|d| &d.guid).collect::<HashSet<_>>().len(), 5);
    let failed: Vec<_> = all.iter().filter(|d| !d.succeeded()).collect();
    assert_eq!(failed.len(), 2);
    assert!(failed
        .iter()
        .all(|d| d.status_code == 0 && d.status == "failed to connect to host"));

    // Read the oldest missed one and redeliver it.
    let missed = failed.last().expect("oldest");
    let delivery = client.get_delivery(hook.id, missed.id).await.expect("get");
    assert_eq!(delivery.summary, **missed);
    assert_eq!(delivery.payload["action"], "queued");
    assert_eq!(delivery.payload["workflow_job"]["id"], missed_jobs[0]);
    assert_eq!(
        delivery.request_header("X-GitHub-Delivery"),
        Some(missed.guid.as_str())
    );
    client
        .redeliver(hook.id, missed.id)
        .await
        .expect("redeliver");
    wait_until("the redelivery", || received.lock().len() == 4).await;
    assert_eq!(
        received.lock()[3].0["x-github-delivery"],
        missed.guid.as_str()
    );
    wait_until("its record", || sim.webhook_deliveries().len() == 6).await;
    let newest = client
        .list_deliveries(hook.id, None, 1)
        .await
        .expect("newest");
    let redelivered = &newest.deliveries[0];
    assert!(redelivered.redelivery && redelivered.succeeded());
    assert_eq!(redelivered.guid, missed.guid);
    assert!(redelivered.id > ids[0]);

    let error = client
        .get_delivery(hook.id, 999_999)
        .await
        .expect_err("unknown");
    assert!(error.is_not_found(), "{error:?}");

    // The organisation hook is found the same way.
    let org = sim_client(&sim, "octo-org");
    let hooks = org.list_hooks().await.expect("org hooks");
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].url.as_deref(), Some(url.as_str()));
}

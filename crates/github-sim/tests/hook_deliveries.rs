//! Repository and organisation webhooks and GitHub's webhook deliveries API: failed attempts while
//! the receiver is down, cursor paging, one delivery with its payload, redelivery, and the
//! webhook-failure fault.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use github_sim::{
    serve_webhook_receiver, sign_webhook, JobSpec, Received, Secret, SimConfig, SimHandle,
    WebhookFaultSpec, WebhookTarget, ORG_HOOK_ID_BASE,
};
use reqwest::Method;
use serde_json::{json, Value};

const SECRET: &str = "s3cret";

/// A free port with nothing listening on it (the receiver is "down").
async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr")
}

/// Starts the receiver on `addr` (answers 200 `ok`).
async fn receiver_on(addr: SocketAddr) -> Received {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    serve_webhook_receiver(listener)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn enqueue(sim: &SimHandle, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| {
            sim.enqueue_job(JobSpec::new(&["self-hosted"], "true"))
                .expect("enqueue")
        })
        .collect()
}

/// Follows the `cursor` of `rel="next"` until it is gone; returns the pages.
async fn all_pages(sim: &SimHandle, path: &str, per_page: usize) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut query = format!("per_page={per_page}");
    loop {
        let response = api_send(sim, Method::GET, &format!("{path}?{query}")).await;
        assert_eq!(response.status(), 200);
        let link = response
            .headers()
            .get("link")
            .map(|v| v.to_str().expect("ascii").to_owned());
        pages.push(json(response).await.as_array().expect("array").clone());
        let Some(link) = link else { return pages };
        let (target, rel) = link.split_once(';').expect("link has a rel");
        assert_eq!(rel.trim(), "rel=\"next\"", "{link}");
        let target = target.trim().trim_start_matches('<').trim_end_matches('>');
        let url = url::Url::parse(target).expect("absolute link");
        assert!(url.path().ends_with(path), "{url}");
        assert!(url
            .query_pairs()
            .any(|(k, v)| k == "per_page" && v == per_page.to_string()));
        query = url.query().expect("query").to_owned();
        assert!(pages.len() < 50, "runaway paging");
    }
}

#[tokio::test]
async fn missed_deliveries_are_listed_paged_and_redelivered() {
    let addr = dead_addr().await;
    let url = format!("http://{addr}/hook");
    let sim = start(SimConfig::default()).await;
    sim.set_webhook(Some(WebhookTarget {
        url: url.clone(),
        secret: Secret::new(SECRET),
    }));

    // The repository hook points at the target.
    let hooks = get_json(&sim, "/repos/octo/app/hooks").await;
    let hooks = hooks.as_array().expect("array");
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["type"], "Repository");
    assert_eq!(hooks[0]["name"], "web");
    assert_eq!(hooks[0]["active"], true);
    assert_eq!(hooks[0]["events"], json!(["workflow_job"]));
    assert_eq!(hooks[0]["config"]["url"], url);
    assert_eq!(hooks[0]["config"]["content_type"], "json");
    let hook_id = hooks[0]["id"].as_u64().expect("id");
    let base = format!("/repos/octo/app/hooks/{hook_id}");
    assert_eq!(get_json(&sim, &base).await["id"], hook_id);

    // Receiver down: two deliveries fail as connection failures.
    let down_jobs = enqueue(&sim, 2);
    wait_until("2 attempts", || sim.webhook_deliveries().len() == 2).await;
    for d in sim.webhook_deliveries() {
        assert_eq!((d.status, d.status_code), (None, 0), "{d:?}");
        assert_eq!(d.status_message, "failed to connect to host");
        assert!(d.error.is_some() && !d.redelivery);
        assert_eq!(d.hook_ids, [hook_id]);
    }

    // Receiver up: three more arrive.
    let received = receiver_on(addr).await;
    let up_jobs = enqueue(&sim, 3);
    wait_until("5 attempts", || sim.webhook_deliveries().len() == 5).await;
    assert_eq!(received.lock().len(), 3);

    // per_page=2 over 5 deliveries: 2 + 2 + 1, newest first, nothing lost or repeated.
    let pages = all_pages(&sim, &format!("{base}/deliveries"), 2).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    let items: Vec<Value> = pages.into_iter().flatten().collect();
    let ids: Vec<u64> = items
        .iter()
        .map(|d| d["id"].as_u64().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 5);
    let guids: HashSet<&str> = items
        .iter()
        .map(|d| d["guid"].as_str().expect("guid"))
        .collect();
    assert_eq!(guids.len(), 5);
    for item in &items[..3] {
        assert_eq!(item["status"], "OK");
        assert_eq!(item["status_code"], 200);
    }
    for item in &items[3..] {
        assert_eq!(item["status"], "failed to connect to host");
        assert_eq!(item["status_code"], 0);
    }
    for item in &items {
        assert_eq!(item["event"], "workflow_job");
        assert_eq!(item["action"], "queued");
        assert_eq!(item["redelivery"], false);
        assert_eq!(item["repository_id"], 1);
        assert_eq!(item["installation_id"], 43);
        assert!(item["throttled_at"].is_null());
        assert!(item["duration"].as_f64().is_some());
        assert!(item["delivered_at"].as_str().expect("time").ends_with('Z'));
    }
    // The default page size holds them all, without a Link.
    let response = api_send(&sim, Method::GET, &format!("{base}/deliveries")).await;
    assert!(response.headers().get("link").is_none());
    assert_eq!(json(response).await.as_array().expect("array").len(), 5);

    // One failed delivery with its request.
    let missed = &items[4];
    let missed_id = missed["id"].as_u64().expect("id");
    let guid = missed["guid"].as_str().expect("guid").to_owned();
    let full = get_json(&sim, &format!("{base}/deliveries/{missed_id}")).await;
    assert_eq!(full["id"], missed_id);
    assert_eq!(full["guid"], guid);
    assert_eq!(full["url"], url);
    let payload = &full["request"]["payload"];
    assert_eq!(payload["action"], "queued");
    assert_eq!(payload["workflow_job"]["id"], down_jobs[0]);
    assert_eq!(payload["repository"]["full_name"], "octo/app");
    let headers = &full["request"]["headers"];
    assert_eq!(headers["X-GitHub-Delivery"], guid);
    assert_eq!(headers["X-GitHub-Event"], "workflow_job");
    assert_eq!(headers["X-GitHub-Hook-ID"], hook_id.to_string());
    assert_eq!(
        headers["X-Hub-Signature-256"],
        sign_webhook(SECRET.as_bytes(), payload.to_string().as_bytes())
    );
    assert!(full["response"]["payload"].is_null());
    // A delivered one shows the receiver's answer.
    let ok = get_json(&sim, &format!("{base}/deliveries/{}", ids[0])).await;
    assert_eq!(ok["response"]["payload"], "ok");
    assert_eq!(ok["request"]["payload"]["workflow_job"]["id"], up_jobs[2]);

    // Unknown ids are 404.
    assert_eq!(
        get_status(&sim, &format!("{base}/deliveries/999999")).await,
        404
    );
    assert_eq!(
        get_status(&sim, "/repos/octo/app/hooks/777/deliveries").await,
        404
    );
    assert_eq!(
        api_status(
            &sim,
            Method::POST,
            &format!("{base}/deliveries/999999/attempts"),
        )
        .await,
        404
    );

    // Redeliver the missed one: 202, then it arrives with the same guid and payload.
    let response = api_send(
        &sim,
        Method::POST,
        &format!("{base}/deliveries/{missed_id}/attempts"),
    )
    .await;
    assert_eq!(response.status(), 202);
    assert_eq!(json(response).await, json!({}));
    wait_until("the redelivery", || received.lock().len() == 4).await;
    let (headers, body) = received.lock()[3].clone();
    assert_eq!(headers["x-github-delivery"], guid.as_str());
    assert_eq!(
        headers["x-hub-signature-256"].to_str().expect("ascii"),
        sign_webhook(SECRET.as_bytes(), &body)
    );
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(&body, payload);
    wait_until("the redelivery record", || {
        sim.webhook_deliveries().len() == 6
    })
    .await;
    let newest = get_json(&sim, &format!("{base}/deliveries?per_page=1")).await;
    let newest = &newest[0];
    assert_eq!(newest["guid"], guid);
    assert_eq!(newest["redelivery"], true);
    assert_eq!(newest["status"], "OK");
    assert!(newest["id"].as_u64().expect("id") > ids[0]);
    let redeliveries = get_json(&sim, &format!("{base}/deliveries?redelivery=true")).await;
    assert_eq!(redeliveries.as_array().expect("array").len(), 1);

    // The hook's last response follows the latest attempt.
    let hook = get_json(&sim, &base).await;
    assert_eq!(hook["last_response"]["code"], 200);
}

#[tokio::test]
async fn webhook_fault_fails_the_next_deliveries() {
    let addr = dead_addr().await;
    let received = receiver_on(addr).await;
    let sim = start(SimConfig::default()).await;
    sim.set_webhook(Some(WebhookTarget {
        url: format!("http://{addr}/hook"),
        secret: Secret::new(SECRET),
    }));
    let response =
        send(admin(&sim, Method::POST, "/faults/webhooks").json(&json!({"count": 2}))).await;
    assert_eq!(response.status(), 201);
    assert_eq!(json(response).await, json!({"count": 2, "status": null}));
    sim.set_webhook_fault(Some(WebhookFaultSpec {
        count: 1,
        status: Some(503),
    }));
    let response = send(admin(&sim, Method::GET, "/faults/webhooks")).await;
    assert_eq!(json(response).await, json!({"count": 1, "status": 503}));
    enqueue(&sim, 2);
    wait_until("2 attempts", || sim.webhook_deliveries().len() == 2).await;
    let items = get_json(&sim, "/repos/octo/app/hooks/1/deliveries").await;
    assert_eq!(items[1]["status"], "Invalid HTTP Response: 503");
    assert_eq!(items[1]["status_code"], 503);
    assert_eq!(items[0]["status"], "OK");
    assert_eq!(received.lock().len(), 1, "the faulty attempt never arrived");
    let response = send(admin(&sim, Method::GET, "/faults/webhooks")).await;
    assert_eq!(json(response).await, Value::Null, "used up");
    let admin = send(admin(&sim, Method::GET, "/webhooks/deliveries")).await;
    let admin = json(admin).await;
    assert_eq!(admin[0]["status"], 503);
    assert_eq!(admin[0]["status_message"], "Invalid HTTP Response: 503");
    assert_eq!(admin[1]["status"], 200);
    assert_eq!(admin[1]["id"], 2);
}

#[tokio::test]
async fn org_hooks_scopes_and_auth() {
    let addr = dead_addr().await;
    let received = receiver_on(addr).await;
    let sim = start(SimConfig::default()).await;
    // No target, no hooks.
    assert_eq!(get_json(&sim, "/orgs/octo-org/hooks").await, json!([]));
    let url = format!("http://{addr}/hook");
    sim.set_webhook(Some(WebhookTarget {
        url: url.clone(),
        secret: Secret::new(SECRET),
    }));
    let hooks = get_json(&sim, "/orgs/octo-org/hooks").await;
    assert_eq!(hooks[0]["type"], "Organization");
    assert_eq!(hooks[0]["id"], ORG_HOOK_ID_BASE + 100);
    assert_eq!(hooks[0]["config"]["url"], url);
    assert!(hooks[0].get("test_url").is_none());
    // An org job goes through the org hook (its repository is not configured).
    let mut spec = JobSpec::new(&["self-hosted"], "true");
    spec.scope = Some("octo-org".into());
    let job = sim.enqueue_job(spec).expect("enqueue");
    wait_until("the delivery", || received.lock().len() == 1).await;
    wait_until("its record", || sim.webhook_deliveries().len() == 1).await;
    let org_base = format!("/orgs/octo-org/hooks/{}", ORG_HOOK_ID_BASE + 100);
    let items = get_json(&sim, &format!("{org_base}/deliveries")).await;
    assert_eq!(items.as_array().expect("array").len(), 1);
    let id = items[0]["id"].as_u64().expect("id");
    let full = get_json(&sim, &format!("{org_base}/deliveries/{id}")).await;
    assert_eq!(full["request"]["payload"]["workflow_job"]["id"], job);
    assert_eq!(
        full["request"]["headers"]["X-GitHub-Hook-Installation-Target-Type"],
        "organization"
    );
    // Not listed under the repository hook.
    assert_eq!(
        get_json(&sim, "/repos/octo/app/hooks/1/deliveries").await,
        json!([])
    );
    assert_eq!(
        get_status(&sim, &format!("/repos/octo/app/hooks/1/deliveries/{id}")).await,
        404
    );

    // Auth as for the runner endpoints; unknown scopes and enterprises are 404.
    let response = send(client().get(format!("{}/orgs/octo-org/hooks", sim.api_url()))).await;
    assert_eq!(response.status(), 401);
    assert_eq!(get_status(&sim, "/orgs/nope/hooks").await, 404);
    assert_eq!(get_status(&sim, "/repos/octo/nope/hooks").await, 404);
    assert_eq!(get_status(&sim, "/enterprises/acme/hooks").await, 404);
    assert_eq!(
        api_status(
            &sim,
            Method::GET,
            &format!("{org_base}/deliveries?cursor=garbage"),
        )
        .await,
        400
    );
    let counts = sim.request_counts();
    assert_eq!(
        counts["GET /orgs/{org}/hooks/{hook_id}/deliveries"].count,
        2
    );
}

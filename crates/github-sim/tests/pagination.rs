//! Pagination with `Link`, `per_page` bounds, the `name` filter and ETag revalidation.

mod common;

use common::*;
use futures::stream::{self, StreamExt};
use github_sim::SimConfig;
use reqwest::Method;

/// The URL of `rel` in a `Link` header.
fn link(header: &str, rel: &str) -> Option<String> {
    header.split(", ").find_map(|part| {
        let (url, r) = part.split_once("; ")?;
        (r == format!("rel=\"{rel}\"")).then(|| url.trim_matches(['<', '>']).to_owned())
    })
}

#[tokio::test]
async fn a_thousand_runners_list_in_ten_pages_of_100() {
    let sim = start(SimConfig::default()).await;
    let token = registration_token(&sim, &org()).await;
    stream::iter(0..1000)
        .for_each_concurrent(32, |i| {
            let (sim, token) = (&sim, &token);
            async move {
                register_with(
                    sim,
                    token,
                    &org(),
                    &format!("runner-{i:04}"),
                    &["bench"],
                    true,
                )
                .await;
            }
        })
        .await;
    let mut url = Some(format!(
        "{}{}?per_page=100",
        sim.api_url(),
        org().runners_path()
    ));
    let mut pages = 0;
    let mut names = Vec::new();
    while let Some(next) = url {
        let response = send(
            client()
                .get(&next)
                .header("authorization", format!("Bearer {}", sim.token().expose())),
        )
        .await;
        assert_eq!(response.status(), 200);
        let header = response
            .headers()
            .get("link")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let body = json(response).await;
        assert_eq!(body["total_count"], 1000);
        let runners = body["runners"].as_array().expect("runners");
        assert_eq!(runners.len(), 100);
        names.extend(
            runners
                .iter()
                .map(|r| r["name"].as_str().expect("name").to_owned()),
        );
        pages += 1;
        let header = header.expect("link header on every page of a multi-page list");
        if pages == 1 {
            assert!(link(&header, "prev").is_none() && link(&header, "first").is_none());
            assert!(
                link(&header, "last").expect("last").ends_with("page=10"),
                "{header}"
            );
        } else {
            assert!(link(&header, "first").expect("first").ends_with("page=1"));
        }
        url = link(&header, "next");
        assert!(pages <= 10);
    }
    assert_eq!(pages, 10);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 1000);
    assert_eq!(sim.runners().len(), 1000);
}

#[tokio::test]
async fn per_page_defaults_to_30_and_is_capped_at_100() {
    let sim = start(SimConfig::default()).await;
    let token = registration_token(&sim, &repo()).await;
    for i in 0..120 {
        register_with(&sim, &token, &repo(), &format!("r{i}"), &[], false).await;
    }
    let count = |query: &'static str| {
        let request = api(
            &sim,
            Method::GET,
            &format!("{}{query}", repo().runners_path()),
        );
        async move {
            let response = request.send().await.expect("send");
            let link = response
                .headers()
                .get("link")
                .map(|v| v.to_str().expect("ascii").to_owned());
            (
                json(response).await["runners"]
                    .as_array()
                    .expect("runners")
                    .len(),
                link,
            )
        }
    };
    let (n, link_header) = count("").await;
    assert_eq!(n, 30);
    assert!(link(&link_header.expect("link"), "last")
        .expect("last")
        .ends_with("per_page=30&page=4"));
    assert_eq!(count("?per_page=500").await.0, 100);
    assert_eq!(count("?per_page=100&page=2").await.0, 20);
    assert_eq!(count("?per_page=100&page=3").await.0, 0);
    let (n, link_header) = count("?name=r7").await;
    assert_eq!(n, 1);
    assert!(
        link_header.is_none(),
        "no Link when everything fits one page"
    );
    assert_eq!(count("?name=nope").await.0, 0);
}

#[tokio::test]
async fn etag_revalidation_is_free() {
    let sim = start(SimConfig::default().with_rate_limit(50)).await;
    register(&sim, &repo(), "one", &[], false).await;
    let path = repo().runners_path();
    let first = api_send(&sim, Method::GET, &path).await;
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().expect("ascii").to_owned();
    assert!(etag.starts_with("W/\""));
    let remaining: u32 = first.headers()["x-ratelimit-remaining"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    for _ in 0..5 {
        let again = send(api(&sim, Method::GET, &path).header("if-none-match", &etag)).await;
        assert_eq!(again.status(), 304);
        assert_eq!(again.headers()["etag"].to_str().expect("ascii"), etag);
        assert_eq!(
            again.headers()["x-ratelimit-remaining"]
                .to_str()
                .expect("ascii"),
            remaining.to_string()
        );
    }
    // A change produces a new ETag and a full, charged answer.
    register(&sim, &repo(), "two", &[], false).await;
    let changed = send(api(&sim, Method::GET, &path).header("if-none-match", &etag)).await;
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"].to_str().expect("ascii"), etag);
    let counts = sim.request_counts();
    let list = counts["GET /repos/{owner}/{repo}/actions/runners"];
    assert_eq!(list.count, 7);
    assert_eq!(list.not_modified, 5);
    assert_eq!(list.rate_limit_cost, 2);
}

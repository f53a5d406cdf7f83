//! Requests a test makes as an HTTP client.

/// `GET url`; the test fails unless it answers 200. The response, to read on.
pub async fn get_ok(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status(), 200, "GET {url}");
    response
}

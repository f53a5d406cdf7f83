//! Webhooks of the client's scope and their deliveries, to recover `workflow_job` events the
//! receiver missed: find the hook that points at the receiver, page through its deliveries
//! (newest first, cursor paging), read one with its payload, and ask GitHub to redeliver it.
//!
//! Repository and organisation scopes only: GitHub has no enterprise webhooks API, so an
//! enterprise client answers [`Error::Unsupported`] without a request.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::Deserialize;
use time::OffsetDateTime;
use url::Url;

use crate::client::{next_link, Call, Client};
use crate::error::Error;
use crate::stats::EndpointKind;

/// GitHub's largest `per_page`.
const MAX_PER_PAGE: u32 = 100;

/// A webhook of a repository or organisation (`GET /repos/{o}/{r}/hooks`, `GET /orgs/{org}/hooks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub id: u64,
    /// Always `web` for webhooks.
    pub name: String,
    pub active: bool,
    /// The events it is subscribed to, e.g. `workflow_job` (`*` for all).
    pub events: Vec<String>,
    /// `config.url`: where deliveries go.
    pub url: Option<String>,
    /// `config.content_type`: `json` or `form`.
    pub content_type: Option<String>,
}

impl Hook {
    /// Whether the hook receives `event` (directly or through `*`).
    pub fn subscribes_to(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event || e == "*")
    }
}

/// One delivery attempt as the deliveries list shows it (GitHub's `hook-delivery-item`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySummary {
    /// Unique per attempt; a redelivery gets a new id.
    pub id: u64,
    /// The `X-GitHub-Delivery` value, shared by an event's first delivery and its redeliveries.
    pub guid: String,
    pub delivered_at: OffsetDateTime,
    pub redelivery: bool,
    /// Seconds the attempt took.
    pub duration: f64,
    /// `OK`, `Invalid HTTP Response: 503`, `failed to connect to host`, …
    pub status: String,
    /// The receiver's HTTP status; 0 when it did not answer.
    pub status_code: u16,
    /// `X-GitHub-Event`, e.g. `workflow_job`.
    pub event: String,
    /// The payload's `action`, e.g. `queued`.
    pub action: Option<String>,
    pub installation_id: Option<u64>,
    pub repository_id: Option<u64>,
    pub throttled_at: Option<OffsetDateTime>,
}

impl DeliverySummary {
    /// The receiver answered 2xx.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status_code)
    }
}

/// One page of deliveries, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliverySummary>,
    /// The cursor of the next (older) page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// One delivery with what was sent and what came back (GitHub's `hook-delivery`).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub summary: DeliverySummary,
    /// The URL the attempt went to.
    pub url: Option<String>,
    /// The request headers as sent (`X-GitHub-Delivery`, `X-Hub-Signature-256`, …).
    pub request_headers: BTreeMap<String, String>,
    /// The webhook payload as sent (`Value::Null` if GitHub no longer has it).
    pub payload: serde_json::Value,
    pub response_headers: BTreeMap<String, String>,
    /// The receiver's response body.
    pub response_body: Option<String>,
}

impl Delivery {
    /// A request header by name, ignoring case.
    pub fn request_header(&self, name: &str) -> Option<&str> {
        self.request_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Deserialize)]
struct HookWire {
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    config: HookConfigWire,
}

#[derive(Debug, Default, Deserialize)]
struct HookConfigWire {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
}

impl From<HookWire> for Hook {
    fn from(w: HookWire) -> Self {
        Hook {
            id: w.id,
            name: w.name,
            active: w.active,
            events: w.events,
            url: w.config.url,
            content_type: w.config.content_type,
        }
    }
}

#[derive(Debug, Deserialize)]
struct DeliveryItemWire {
    id: u64,
    guid: String,
    #[serde(with = "time::serde::rfc3339")]
    delivered_at: OffsetDateTime,
    #[serde(default)]
    redelivery: bool,
    #[serde(default)]
    duration: f64,
    #[serde(default)]
    status: String,
    #[serde(default)]
    status_code: u16,
    #[serde(default)]
    event: String,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    installation_id: Option<u64>,
    #[serde(default)]
    repository_id: Option<u64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    throttled_at: Option<OffsetDateTime>,
}

impl From<DeliveryItemWire> for DeliverySummary {
    fn from(w: DeliveryItemWire) -> Self {
        DeliverySummary {
            id: w.id,
            guid: w.guid,
            delivered_at: w.delivered_at,
            redelivery: w.redelivery,
            duration: w.duration,
            status: w.status,
            status_code: w.status_code,
            event: w.event,
            action: w.action,
            installation_id: w.installation_id,
            repository_id: w.repository_id,
            throttled_at: w.throttled_at,
        }
    }
}

#[derive(Debug, Deserialize)]
struct DeliveryWire {
    #[serde(flatten)]
    item: DeliveryItemWire,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    request: Option<ExchangeWire>,
    #[serde(default)]
    response: Option<ExchangeWire>,
}

/// `request` / `response` of a delivery: headers and payload, both nullable.
#[derive(Debug, Default, Deserialize)]
struct ExchangeWire {
    #[serde(default)]
    headers: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

fn header_map(
    headers: Option<serde_json::Map<String, serde_json::Value>>,
) -> BTreeMap<String, String> {
    headers
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

impl From<DeliveryWire> for Delivery {
    fn from(w: DeliveryWire) -> Self {
        let request = w.request.unwrap_or_default();
        let response = w.response.unwrap_or_default();
        let response_body = match response.payload {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        };
        Delivery {
            summary: w.item.into(),
            url: w.url,
            request_headers: header_map(request.headers),
            payload: request.payload.unwrap_or(serde_json::Value::Null),
            response_headers: header_map(response.headers),
            response_body,
        }
    }
}

/// The `cursor` query parameter of a `Link` header's `rel="next"` URL (absolute or relative).
pub(crate) fn next_cursor(link: Option<&str>) -> Result<Option<String>, Error> {
    let Some(next) = link.and_then(next_link) else {
        return Ok(None);
    };
    let bad = |why: String| Error::Unexpected {
        status: 200,
        message: format!("Link rel=\"next\" of the deliveries list {why}: {next}"),
    };
    let base = Url::parse("http://link.invalid/").map_err(|e| bad(e.to_string()))?;
    let url = base
        .join(&next)
        .map_err(|e| bad(format!("is invalid ({e})")))?;
    url.query_pairs()
        .find(|(k, _)| k == "cursor")
        .map(|(_, v)| Some(v.into_owned()))
        .filter(|c| c.as_deref().is_some_and(|c| !c.is_empty()))
        .ok_or_else(|| bad("has no cursor".to_owned()))
}

/// Whether two hook URLs name the same endpoint (parsed comparison, so `HTTP://Host:80/x`
/// equals `http://host/x`; a trailing slash is ignored).
fn same_url(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        Url::parse(s.trim())
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_else(|_| s.trim().trim_end_matches('/').to_owned())
    };
    norm(a) == norm(b)
}

impl Client {
    /// `/repos/{o}/{r}/hooks{suffix}` or `/orgs/{org}/hooks{suffix}`; enterprises have no hooks.
    fn hooks_url(&self, operation: &'static str, suffix: &str) -> Result<Url, Error> {
        let path = self
            .inner
            .scope
            .hooks_path()
            .ok_or_else(|| Error::Unsupported {
                operation,
                scope: self.inner.scope.to_string(),
                reason: "github has no webhooks api for enterprises; use an organisation or \
                         repository scope",
            })?;
        self.endpoint(&format!("{path}{suffix}"))
    }

    /// Every webhook of the scope (all pages; ETag-conditional like the runner list).
    pub async fn list_hooks(&self) -> Result<Vec<Hook>, Error> {
        let url = self.hooks_url("listing webhooks", "")?;
        self.get_all_pages(EndpointKind::ListHooks, url, |w: Vec<HookWire>| {
            w.into_iter().map(Hook::from).collect()
        })
        .await
    }

    /// The webhook whose `config.url` is `url` (compared as parsed URLs, ignoring a trailing
    /// slash). An active hook wins over an inactive one.
    pub async fn find_hook_by_url(&self, url: &str) -> Result<Option<Hook>, Error> {
        let mut matching: Vec<Hook> = self
            .list_hooks()
            .await?
            .into_iter()
            .filter(|h| h.url.as_deref().is_some_and(|u| same_url(u, url)))
            .collect();
        matching.sort_by_key(|h| !h.active);
        Ok(matching.into_iter().next())
    }

    /// One page of a hook's deliveries, newest first. `cursor` is `None` for the newest page,
    /// else a [`DeliveryPage::next_cursor`]; `per_page` is clamped to 1..=100 (GitHub's default
    /// is 30). The request is ETag-conditional: polling an unchanged newest page costs no rate
    /// limit.
    pub async fn list_deliveries(
        &self,
        hook_id: u64,
        cursor: Option<&str>,
        per_page: u32,
    ) -> Result<DeliveryPage, Error> {
        let kind = EndpointKind::ListDeliveries;
        let mut url = self.hooks_url(
            "listing webhook deliveries",
            &format!("/{hook_id}/deliveries"),
        )?;
        url.query_pairs_mut()
            .append_pair("per_page", &per_page.clamp(1, MAX_PER_PAGE).to_string());
        if let Some(cursor) = cursor {
            url.query_pairs_mut().append_pair("cursor", cursor);
        }
        let response = self
            .execute(Call::new(kind, Method::GET, url.clone()).conditional())
            .await?;
        let items: Vec<DeliveryItemWire> = self
            .decode(kind, &response.body)
            .inspect_err(|_| self.forget_etag(&url))?;
        let next_cursor = next_cursor(response.link.as_deref())?;
        Ok(DeliveryPage {
            deliveries: items.into_iter().map(Into::into).collect(),
            next_cursor,
        })
    }

    /// One delivery with its request headers and payload. `Error::NotFound` for an unknown id.
    pub async fn get_delivery(&self, hook_id: u64, delivery_id: u64) -> Result<Delivery, Error> {
        let kind = EndpointKind::GetDelivery;
        let url = self.hooks_url(
            "reading a webhook delivery",
            &format!("/{hook_id}/deliveries/{delivery_id}"),
        )?;
        let response = self.execute(Call::new(kind, Method::GET, url)).await?;
        Ok(self.decode::<DeliveryWire>(kind, &response.body)?.into())
    }

    /// Asks GitHub to send a delivery again (`202 Accepted`; the attempt happens later and shows
    /// up as a new delivery with the same `guid` and `redelivery: true`).
    ///
    /// Not retried after a 5xx, timeout or transport error: GitHub may have queued the attempt,
    /// and a blind retry would send the event twice. The caller sees the outcome in the
    /// deliveries list and may ask again (receivers deduplicate by `guid` anyway).
    pub async fn redeliver(&self, hook_id: u64, delivery_id: u64) -> Result<(), Error> {
        let url = self.hooks_url(
            "redelivering a webhook delivery",
            &format!("/{hook_id}/deliveries/{delivery_id}/attempts"),
        )?;
        let call = Call::new(EndpointKind::Redeliver, Method::POST, url).never_retry();
        self.execute(call).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_hook_list() {
        let body = r#"[{"type":"Repository","id":12345678,"name":"web","active":true,
            "events":["push","pull_request"],
            "config":{"content_type":"json","insecure_ssl":"0","url":"https://example.com/webhook"},
            "updated_at":"2019-06-03T00:57:16Z","created_at":"2019-06-03T00:57:16Z",
            "url":"https://api.github.com/repos/octocat/Hello-World/hooks/12345678",
            "last_response":{"code":null,"status":"unused","message":null}}]"#;
        let hooks: Vec<Hook> = serde_json::from_str::<Vec<HookWire>>(body)
            .expect("parses")
            .into_iter()
            .map(Hook::from)
            .collect();
        assert_eq!(
            hooks,
            vec![Hook {
                id: 12_345_678,
                name: "web".into(),
                active: true,
                events: vec!["push".into(), "pull_request".into()],
                url: Some("https://example.com/webhook".into()),
                content_type: Some("json".into()),
            }]
        );
        assert!(!hooks[0].subscribes_to("workflow_job"));
    }

    #[test]
    fn documented_delivery_item_and_delivery() {
        let item = r#"{"id":12345678,"guid":"0b989ba4-242f-11e5-81e1-c7b6966d2516",
            "delivered_at":"2019-06-03T00:57:16Z","redelivery":false,"duration":0.27,
            "status":"OK","status_code":200,"event":"issues","action":"opened",
            "installation_id":123,"repository_id":456,"throttled_at":"2019-06-03T00:57:16Z"}"#;
        let s: DeliverySummary = serde_json::from_str::<DeliveryItemWire>(item)
            .expect("parses")
            .into();
        assert_eq!(s.id, 12_345_678);
        assert_eq!(s.delivered_at.unix_timestamp(), 1_559_523_436);
        assert_eq!(s.action.as_deref(), Some("opened"));
        assert!(s.succeeded());
        assert!(s.throttled_at.is_some());

        let failed = r#"{"id":2,"guid":"g","delivered_at":"2026-01-22T12:00:00Z","redelivery":true,
            "duration":0.01,"status":"failed to connect to host","status_code":0,
            "event":"workflow_job","action":null,"installation_id":null,"repository_id":null,
            "throttled_at":null}"#;
        let s: DeliverySummary = serde_json::from_str::<DeliveryItemWire>(failed)
            .expect("parses")
            .into();
        assert!(!s.succeeded() && s.redelivery && s.action.is_none() && s.throttled_at.is_none());

        let full = r#"{"id":12345678,"guid":"0b989ba4-242f-11e5-81e1-c7b6966d2516",
            "delivered_at":"2019-06-03T00:57:16Z","redelivery":false,"duration":0.27,
            "status":"OK","status_code":200,"event":"issues","action":"opened",
            "installation_id":123,"repository_id":456,"url":"https://www.example.com",
            "throttled_at":null,
            "request":{"headers":{"X-GitHub-Delivery":"0b989ba4-242f-11e5-81e1-c7b6966d2516",
                "X-Hub-Signature-256":"sha256=6dcb09b5b57875f334f61aebed695e2e4193db5e",
                "Accept":"*/*","X-GitHub-Hook-ID":"42","User-Agent":"GitHub-Hookshot/b8c71d8",
                "X-GitHub-Event":"issues","Content-Type":"application/json"},
                "payload":{"action":"opened","issue":{"body":"foo"},"repository":{"id":123}}},
            "response":{"headers":{"Content-Type":"text/html;charset=utf-8"},"payload":"ok"}}"#;
        let d: Delivery = serde_json::from_str::<DeliveryWire>(full)
            .expect("parses")
            .into();
        assert_eq!(d.summary.guid, "0b989ba4-242f-11e5-81e1-c7b6966d2516");
        assert_eq!(d.request_header("x-github-event"), Some("issues"));
        assert_eq!(d.payload["issue"]["body"], "foo");
        assert_eq!(d.response_body.as_deref(), Some("ok"));
        assert_eq!(d.url.as_deref(), Some("https://www.example.com"));

        let gone = r#"{"id":1,"guid":"g","delivered_at":"2026-01-22T12:00:00Z","status":"OK",
            "status_code":200,"event":"workflow_job","request":{"headers":null,"payload":null},
            "response":{"headers":null,"payload":null}}"#;
        let d: Delivery = serde_json::from_str::<DeliveryWire>(gone)
            .expect("parses")
            .into();
        assert!(d.payload.is_null() && d.request_headers.is_empty() && d.response_body.is_none());
    }

    #[test]
    fn cursor_from_link() {
        let link = r#"<https://api.github.com/repos/o/r/hooks/1/deliveries?per_page=2&cursor=v1_12345>; rel="next""#;
        assert_eq!(
            next_cursor(Some(link)).expect("ok").as_deref(),
            Some("v1_12345")
        );
        let relative = r#"</repos/o/r/hooks/1/deliveries?cursor=a%2Bb%3D&per_page=2>; rel="next", <x?cursor=z>; rel="prev""#;
        assert_eq!(
            next_cursor(Some(relative)).expect("ok").as_deref(),
            Some("a+b=")
        );
        let only_prev = r#"<https://x/d?cursor=z>; rel="prev""#;
        assert_eq!(next_cursor(Some(only_prev)).expect("ok"), None);
        assert_eq!(next_cursor(None).expect("ok"), None);
        let no_cursor = r#"<https://x/d?page=2>; rel="next""#;
        assert!(matches!(
            next_cursor(Some(no_cursor)),
            Err(Error::Unexpected { .. })
        ));
    }

    #[test]
    fn urls_compare_parsed() {
        assert!(same_url("http://Host:80/hook", "http://host/hook/"));
        assert!(same_url("https://a.example/x", "https://a.example/x"));
        assert!(!same_url("https://a.example/x", "https://a.example/y"));
        assert!(!same_url("https://a.example/x", "http://a.example/x"));
    }
}

//! Shared pieces of the REST handlers: scope extraction, the `Caller` extractor (who calls about
//! which scope) and authorization, JSON bodies, paging.

use super::*;

/// The scope and optional ids from the path.
pub(crate) struct ScopeParams {
    pub(super) scope: Scope,
    pub(super) runner_id: Option<String>,
    pub(super) label: Option<String>,
    pub(super) installation_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ScopeParams {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(mut map) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| not_found())?;
        let scope = if let (Some(owner), Some(repo)) = (map.get("owner"), map.get("repo")) {
            Scope::repo(owner.clone(), repo.clone())
        } else if let Some(org) = map.get("org") {
            Scope::org(org.clone())
        } else if let Some(enterprise) = map.get("enterprise") {
            Scope::enterprise(enterprise.clone())
        } else {
            Scope::org(String::new())
        };
        Ok(Self {
            scope,
            runner_id: map.remove("runner_id"),
            label: map.remove("label"),
            installation_id: map.remove("installation_id"),
        })
    }
}

/// A REST call about a scope: the app, who calls (`Identity`, from the auth layer) and the
/// scope and ids of the path.
pub(super) struct Caller {
    pub(super) shared: AppState,
    identity: Identity,
    pub(super) params: ScopeParams,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Extension(identity) = Extension::<Identity>::from_request_parts(parts, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        let params = ScopeParams::from_request_parts(parts, shared).await?;
        Ok(Self {
            shared: shared.clone(),
            identity,
            params,
        })
    }
}

impl Caller {
    /// The locked state and the scope resolved, once the caller may manage its runners (see
    /// [`authorize`]).
    pub(super) fn authorized(&self) -> Result<(MutexGuard<'_, State>, Scope), Box<Response>> {
        let state = self.shared.state.lock();
        let scope = self.scope(&state)?;
        Ok((state, scope))
    }

    /// The scope resolved, once the caller may manage its runners (see [`authorize`]).
    pub(super) fn scope(&self, state: &State) -> Result<Scope, Box<Response>> {
        authorize(state, &self.identity, &self.params.scope)
    }

    /// The runner of the path, if `scope` has it (see [`scope_runner_id`]).
    pub(super) fn runner_id(&self, state: &State, scope: &Scope) -> Result<u64, Box<Response>> {
        scope_runner_id(state, scope, self.params.runner_id.as_deref())
    }
}

fn forbidden_integration() -> Response {
    gh_error(
        StatusCode::FORBIDDEN,
        "Resource not accessible by integration",
    )
}

/// Resolves the scope and checks that `identity` may manage its runners.
pub(super) fn authorize(
    state: &State,
    identity: &Identity,
    scope: &Scope,
) -> Result<Scope, Box<Response>> {
    let resolved = state.resolve_scope(scope).ok_or_else(boxed_not_found)?;
    match identity {
        Identity::Pat => Ok(resolved),
        Identity::Installation(id) => {
            let owner = match &resolved {
                Scope::Repo { owner, .. } => owner,
                Scope::Org(org) => org,
                Scope::Enterprise(_) => return Err(Box::new(forbidden_integration())),
            };
            if state.installation_for(owner) == Some(*id) {
                Ok(resolved)
            } else {
                Err(boxed_not_found())
            }
        }
        Identity::App | Identity::Anonymous => Err(Box::new(forbidden_integration())),
    }
}

/// Looks up a runner of `scope` by the id in the path.
pub(super) fn scope_runner_id(
    state: &State,
    scope: &Scope,
    runner_id: Option<&str>,
) -> Result<u64, Box<Response>> {
    let id: u64 = runner_id
        .and_then(|id| id.parse().ok())
        .ok_or_else(boxed_not_found)?;
    match state.runner(id) {
        Some(runner) if runner.scope == *scope => Ok(id),
        _ => Err(boxed_not_found()),
    }
}

/// Handlers answer errors early with a ready response; boxed to keep `Result`s small.
pub(super) fn boxed_not_found() -> Box<Response> {
    Box::new(not_found())
}

pub(super) fn parse_json(body: &Bytes) -> Result<Value, Box<Response>> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|_| Box::new(gh_error(StatusCode::BAD_REQUEST, "Problems parsing JSON")))
}

pub(super) fn with_accepted_permissions(mut response: Response, scope: &Scope) -> Response {
    let value = match scope {
        Scope::Repo { .. } => "administration=write",
        Scope::Org(_) => "organization_self_hosted_runners=write",
        Scope::Enterprise(_) => "manage_runners:enterprise",
    };
    response.headers_mut().insert(
        "x-accepted-github-permissions",
        HeaderValue::from_static(value),
    );
    response
}

/// `page` and `per_page` (default 30, at most 100).
pub(super) fn paging(query: &HashMap<String, String>) -> (usize, usize) {
    let per_page = query
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(30, |v| v.clamp(1, 100));
    let page = query
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    (page, per_page)
}

/// A list request: its query, the page it asks for (see [`paging`]) and the URL its `Link`
/// header points at.
pub(super) struct Listing {
    pub(super) query: HashMap<String, String>,
    pub(super) page: usize,
    pub(super) per_page: usize,
    uri: axum::http::Uri,
    headers: HeaderMap,
}

impl<S: Send + Sync> FromRequestParts<S> for Listing {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(query) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let OriginalUri(uri) = OriginalUri::from_request_parts(parts, state)
            .await
            .map_err(|never| match never {})?;
        let (page, per_page) = paging(&query);
        Ok(Self {
            query,
            page,
            per_page,
            uri,
            headers: parts.headers.clone(),
        })
    }
}

impl Listing {
    /// The items of the page asked for.
    pub(super) fn page_of<I: Iterator>(&self, items: I) -> impl Iterator<Item = I::Item> {
        items
            .skip((self.page - 1).saturating_mul(self.per_page))
            .take(self.per_page)
    }

    /// `http://HOST[/api/v3]`: the API base the client used.
    pub(super) fn api_base(&self) -> String {
        api_base(&self.headers, &self.uri)
    }

    /// The request's query string as sent (`""` without one).
    pub(super) fn query_string(&self) -> &str {
        self.uri.query().unwrap_or_default()
    }

    /// The request's URL without its query.
    pub(super) fn url(&self) -> String {
        format!("{}{}", base_url(None, &self.headers), self.uri.path())
    }

    /// Sets `link` (when it is a valid header value) on a list answer.
    pub(super) fn set_link(response: &mut Response, link: &str) {
        if let Ok(value) = HeaderValue::from_str(link) {
            response.headers_mut().insert("link", value);
        }
    }

    /// Sets the page-numbered `Link` header of the page asked for, out of `last`, keeping the
    /// `extra` query pairs; none when everything fits one page.
    pub(super) fn link_pages(&self, response: &mut Response, extra: &[(&str, &str)], last: usize) {
        if let Some(link) = link_header(&self.url(), extra, self.page, self.per_page, last) {
            Self::set_link(response, &link);
        }
    }
}

/// The `Link` header for a page (absent when everything fits one page).
pub(super) fn link_header(
    url: &str,
    extra: &[(&str, &str)],
    page: usize,
    per_page: usize,
    last: usize,
) -> Option<String> {
    if last <= 1 && page <= 1 {
        return None;
    }
    let make = |p: usize, rel: &str| {
        let mut query: Vec<String> = extra
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                )
            })
            .collect();
        query.push(format!("per_page={per_page}"));
        query.push(format!("page={p}"));
        format!("<{url}?{}>; rel=\"{rel}\"", query.join("&"))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(make((page - 1).min(last), "prev"));
    }
    if page < last {
        links.push(make(page + 1, "next"));
        links.push(make(last, "last"));
    }
    if page > 1 {
        links.push(make(1, "first"));
    }
    (!links.is_empty()).then(|| links.join(", "))
}

pub(super) fn missing_key(key: &str) -> Response {
    validation_error(
        &format!("Invalid input: object is missing required key: {key}."),
        &[],
    )
}

pub(super) fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    value?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// `http://HOST[/api/v3]`: the API base the client used.
pub(super) fn api_base(headers: &HeaderMap, uri: &axum::http::Uri) -> String {
    let base = base_url(None, headers);
    if uri.path().starts_with("/api/v3/") {
        format!("{base}/api/v3")
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_table() {
        let url = "http://h/orgs/o/actions/runners";
        let check = |page, last, expected: Option<&str>| {
            assert_eq!(
                link_header(url, &[], page, 100, last).as_deref(),
                expected,
                "page {page} of {last}"
            );
        };
        check(1, 1, None);
        check(
            1,
            3,
            Some(&format!(
                "<{url}?per_page=100&page=2>; rel=\"next\", <{url}?per_page=100&page=3>; rel=\"last\""
            )),
        );
        check(
            3,
            3,
            Some(&format!(
                "<{url}?per_page=100&page=2>; rel=\"prev\", <{url}?per_page=100&page=1>; rel=\"first\""
            )),
        );
        check(
            5,
            3,
            Some(&format!(
                "<{url}?per_page=100&page=3>; rel=\"prev\", <{url}?per_page=100&page=1>; rel=\"first\""
            )),
        );
        let named = link_header(url, &[("name", "a b&c")], 1, 1, 2).expect("link");
        assert!(
            named.starts_with(&format!("<{url}?name=a+b%26c&per_page=1&page=2>")),
            "{named}"
        );
    }

    #[test]
    fn paging_bounds() {
        let query = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(paging(&query(&[])), (1, 30));
        assert_eq!(
            paging(&query(&[("per_page", "500"), ("page", "3")])),
            (3, 100)
        );
        assert_eq!(paging(&query(&[("per_page", "0"), ("page", "0")])), (1, 1));
        assert_eq!(
            paging(&query(&[("per_page", "x"), ("page", "-1")])),
            (1, 30)
        );
    }
}

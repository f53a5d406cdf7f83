//! The runner endpoints, at whichever scope the client was built for.

use reqwest::Method;
use serde::de::DeserializeOwned;
use url::Url;

use crate::client::{next_link, Call, Client, MAX_PAGES};
use crate::error::Error;
use crate::scope::Scope;
use crate::stats::EndpointKind;
use crate::types::{
    JitConfig, JitRequest, RegistrationToken, Runner, RunnerApplication, RunnerGroup, RunnerId,
};
use crate::wire::{
    ApplicationWire, JitConfigWire, JitRequestWire, LabelListWire, LabelsBody, RunnerGroupListWire,
    RunnerListWire, RunnerWire, TokenWire,
};

/// The runner group id of a repository scope (repositories have no groups).
pub const DEFAULT_RUNNER_GROUP_ID: u64 = 1;

impl Client {
    fn runners_url(&self, suffix: &str) -> Result<Url, Error> {
        self.endpoint(&format!("{}{suffix}", self.inner.prefix))
    }

    /// GETs every page (`per_page=100`, following `Link: rel="next"`), with ETag reuse per page.
    pub(crate) async fn get_all_pages<W: DeserializeOwned, T>(
        &self,
        kind: EndpointKind,
        mut url: Url,
        mut extract: impl FnMut(W) -> Vec<T>,
    ) -> Result<Vec<T>, Error> {
        url.query_pairs_mut().append_pair("per_page", "100");
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let call = Call::new(kind, Method::GET, url.clone()).conditional();
            let response = self.execute(call).await?;
            let page = self
                .decode(kind, &response.body)
                .inspect_err(|_| self.forget_etag(&url))?;
            items.extend(extract(page));
            match response.link.as_deref().and_then(next_link) {
                Some(next) => url = self.follow_link(&next)?,
                None => return Ok(items),
            }
        }
        Err(Error::Unexpected {
            status: 200,
            message: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// Lists the scope's runners, optionally only those with exactly this name.
    pub async fn list_runners(&self, name: Option<&str>) -> Result<Vec<Runner>, Error> {
        let mut url = self.runners_url("")?;
        if let Some(name) = name {
            url.query_pairs_mut().append_pair("name", name);
        }
        let runners = self
            .get_all_pages(EndpointKind::ListRunners, url, |w: RunnerListWire| {
                w.runners.into_iter().map(Runner::from).collect()
            })
            .await?;
        // `?name=` is an exact filter on GitHub; filter again in case a server ignores it.
        Ok(match name {
            Some(name) => runners.into_iter().filter(|r| r.name == name).collect(),
            None => runners,
        })
    }

    /// The runner with this exact name, if registered.
    pub async fn find_runner(&self, name: &str) -> Result<Option<Runner>, Error> {
        Ok(self.list_runners(Some(name)).await?.into_iter().next())
    }

    /// One runner by id. `Error::NotFound` when it is gone.
    pub async fn get_runner(&self, id: RunnerId) -> Result<Runner, Error> {
        let url = self.runners_url(&format!("/{id}"))?;
        let response = self
            .execute(Call::new(EndpointKind::GetRunner, Method::GET, url))
            .await?;
        Ok(self
            .decode::<RunnerWire>(EndpointKind::GetRunner, &response.body)?
            .into())
    }

    /// Deregisters a runner. A runner still running a job gives `Error::RunnerBusy`;
    /// an unknown id gives `Error::NotFound`.
    pub async fn delete_runner(&self, id: RunnerId) -> Result<(), Error> {
        let url = self.runners_url(&format!("/{id}"))?;
        self.execute(Call::new(EndpointKind::DeleteRunner, Method::DELETE, url))
            .await?;
        Ok(())
    }

    /// A registration token for `config.sh` (valid one hour). Retried like an idempotent call:
    /// a second token within the hour is as good as the first.
    pub async fn create_registration_token(&self) -> Result<RegistrationToken, Error> {
        self.token(EndpointKind::RegistrationToken, "/registration-token")
            .await
    }

    /// A remove token for `config.sh remove` (valid one hour).
    pub async fn create_remove_token(&self) -> Result<RegistrationToken, Error> {
        self.token(EndpointKind::RemoveToken, "/remove-token").await
    }

    async fn token(&self, kind: EndpointKind, suffix: &str) -> Result<RegistrationToken, Error> {
        let url = self.runners_url(suffix)?;
        let response = self.execute(Call::new(kind, Method::POST, url)).await?;
        Ok(self.decode::<TokenWire>(kind, &response.body)?.into())
    }

    /// The runner application downloads (conditional GET: a 304 reuses the cached list).
    pub async fn list_downloads(&self) -> Result<Vec<RunnerApplication>, Error> {
        let url = self.runners_url("/downloads")?;
        let call = Call::new(EndpointKind::Downloads, Method::GET, url.clone()).conditional();
        let response = self.execute(call).await?;
        let apps: Vec<ApplicationWire> = self
            .decode(EndpointKind::Downloads, &response.body)
            .inspect_err(|_| self.forget_etag(&url))?;
        Ok(apps.into_iter().map(Into::into).collect())
    }

    /// Registers a just-in-time runner and returns its one-time config.
    ///
    /// The POST is **never blindly retried** (only after a rate-limit answer, which GitHub did
    /// not process). The rule for ambiguous outcomes:
    /// - `409` (name taken): the runner with that name is looked up and returned in
    ///   `Error::Conflict { existing }`; the caller decides (typically: delete it if no instance
    ///   owns it, then retry with a new name).
    /// - timeout, transport error or 5xx: the first attempt may have registered the runner, but
    ///   its config is lost. If a runner with the name now exists, `Error::Conflict { existing:
    ///   Some(_) }` is returned; otherwise the original error (retrying with the same name is
    ///   then safe, and a later 409 is handled as above).
    pub async fn generate_jitconfig(&self, request: &JitRequest) -> Result<JitConfig, Error> {
        if request.name.is_empty() || request.labels.is_empty() || request.labels.len() > 100 {
            return Err(Error::Validation {
                message: "a jit runner needs a name and 1 to 100 labels".into(),
                errors: vec![],
            });
        }
        let body = JitRequestWire {
            name: &request.name,
            runner_group_id: request.runner_group_id,
            labels: &request.labels,
            work_folder: request.work_folder.as_deref(),
        };
        let body = serde_json::to_value(&body).map_err(|source| Error::Decode {
            endpoint: EndpointKind::JitConfig,
            source,
        })?;
        let url = self.runners_url("/generate-jitconfig")?;
        let call = Call::new(EndpointKind::JitConfig, Method::POST, url)
            .json(body)
            .never_retry();
        match self.execute(call).await {
            Ok(response) => {
                Ok(self.decode::<JitConfigWire>(EndpointKind::JitConfig, &response.body)?.into())
            }
            Err(Error::Conflict { message, .. }) => {
                let existing = self.find_runner(&request.name).await.ok().flatten().map(Box::new);
                Err(Error::Conflict { message, existing })
            }
            Err(error @ (Error::Server { .. } | Error::Transport(_) | Error::Timeout { .. })) => {
                match self.find_runner(&request.name).await {
                    Ok(Some(runner)) => Err(Error::Conflict {
                        message: format!(
                            "the jit request failed ({error}) but runner {} was registered; its config is lost",
                            request.name
                        ),
                        existing: Some(Box::new(runner)),
                    }),
                    _ => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// All labels of a runner.
    pub async fn list_labels(&self, id: RunnerId) -> Result<Vec<String>, Error> {
        self.labels_call(Method::GET, id, None, None).await
    }

    /// Replaces the runner's custom labels (0 to 100); returns all labels.
    pub async fn set_labels(&self, id: RunnerId, labels: &[String]) -> Result<Vec<String>, Error> {
        self.labels_call(Method::PUT, id, None, Some(labels)).await
    }

    /// Adds custom labels (1 to 100); returns all labels.
    pub async fn add_labels(&self, id: RunnerId, labels: &[String]) -> Result<Vec<String>, Error> {
        self.labels_call(Method::POST, id, None, Some(labels)).await
    }

    /// Removes one custom label; returns the remaining labels.
    pub async fn remove_label(&self, id: RunnerId, label: &str) -> Result<Vec<String>, Error> {
        self.labels_call(Method::DELETE, id, Some(label), None)
            .await
    }

    async fn labels_call(
        &self,
        method: Method,
        id: RunnerId,
        label: Option<&str>,
        labels: Option<&[String]>,
    ) -> Result<Vec<String>, Error> {
        let mut url = self.runners_url(&format!("/{id}/labels"))?;
        if let Some(label) = label {
            url.path_segments_mut()
                .map_err(|()| Error::Config {
                    reason: "api_url cannot be a base".into(),
                })?
                .push(label);
        }
        let mut call = Call::new(EndpointKind::Labels, method, url);
        if let Some(labels) = labels {
            let body =
                serde_json::to_value(LabelsBody { labels }).map_err(|source| Error::Decode {
                    endpoint: EndpointKind::Labels,
                    source,
                })?;
            call = call.json(body);
        }
        let response = self.execute(call).await?;
        Ok(self
            .decode::<LabelListWire>(EndpointKind::Labels, &response.body)?
            .names())
    }

    /// The runner groups of an organisation or enterprise (empty for a repository).
    pub async fn list_runner_groups(&self) -> Result<Vec<RunnerGroup>, Error> {
        let Some(path) = self.inner.scope.runner_groups_path() else {
            return Ok(Vec::new());
        };
        let url = self.endpoint(&path)?;
        self.get_all_pages(EndpointKind::RunnerGroups, url, |w: RunnerGroupListWire| {
            w.runner_groups.into_iter().map(RunnerGroup::from).collect()
        })
        .await
    }

    /// The id of the named runner group; a repository scope always answers
    /// [`DEFAULT_RUNNER_GROUP_ID`] without a request.
    ///
    /// Names are matched as actions/runner's `config.sh --runnergroup` matches them: ignoring
    /// case (GitHub calls an organisation's default group `Default`, so `default` finds it). An
    /// exact match wins over one that differs only by case. Every page of the list is read.
    /// `Error::NotFound` if no group has the name; its message names the group, the scope, the
    /// groups that exist and the request that lists them.
    pub async fn runner_group_id(&self, name: &str) -> Result<u64, Error> {
        let Some(path) = self.inner.scope.runner_groups_path() else {
            return Ok(DEFAULT_RUNNER_GROUP_ID);
        };
        let groups = self.list_runner_groups().await?;
        find_group(&groups, name).ok_or_else(|| Error::NotFound {
            message: group_not_found(name, &self.inner.scope, &path, &groups),
        })
    }
}

/// The id of the group named `name`: an exact match first, else the first (in GitHub's order)
/// that differs only by case, as actions/runner compares (`StringComparison.OrdinalIgnoreCase`).
pub(crate) fn find_group(groups: &[RunnerGroup], name: &str) -> Option<u64> {
    let same = |a: &str| a.eq_ignore_ascii_case(name) || a.to_uppercase() == name.to_uppercase();
    groups
        .iter()
        .find(|g| g.name == name)
        .or_else(|| groups.iter().find(|g| same(&g.name)))
        .map(|g| g.id)
}

/// The not-found message of [`Client::runner_group_id`].
fn group_not_found(name: &str, scope: &Scope, path: &str, groups: &[RunnerGroup]) -> String {
    let owner = match scope {
        Scope::Org { org } => format!("organisation {org}"),
        Scope::Enterprise { slug } => format!("enterprise {slug}"),
        Scope::Repo { owner, repo } => format!("repository {owner}/{repo}"),
    };
    let existing = if groups.is_empty() {
        "it has no runner group these credentials can see".to_owned()
    } else {
        let names: Vec<String> = groups
            .iter()
            .map(|g| {
                let default = if g.default { ", default" } else { "" };
                format!("{:?} (id {}{default})", g.name, g.id)
            })
            .collect();
        format!("its runner groups are {}", names.join(", "))
    };
    format!(
        "runner group {name:?} not found in {owner} (names are compared ignoring case); \
         {existing}. List them with `GET {path}`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: u64, name: &str) -> RunnerGroup {
        RunnerGroup {
            id,
            name: name.to_owned(),
            default: id == 1,
        }
    }

    #[test]
    fn group_names_match_ignoring_case_exact_first() {
        let groups = [
            group(1, "Default"),
            group(2, "GPU"),
            group(3, "gpu"),
            group(4, "Über"),
        ];
        assert_eq!(find_group(&groups, "default"), Some(1));
        assert_eq!(find_group(&groups, "DEFAULT"), Some(1));
        assert_eq!(find_group(&groups, "Default"), Some(1));
        assert_eq!(find_group(&groups, "gpu"), Some(3), "exact match wins");
        assert_eq!(find_group(&groups, "GPU"), Some(2), "exact match wins");
        assert_eq!(
            find_group(&groups, "Gpu"),
            Some(2),
            "else the first by case"
        );
        assert_eq!(find_group(&groups, "über"), Some(4));
        assert_eq!(find_group(&groups, "defaul"), None);
        assert_eq!(find_group(&groups, " default"), None);
        assert_eq!(find_group(&[], "default"), None);
    }

    #[test]
    fn group_not_found_names_everything_needed() {
        let scope = Scope::parse("octo-org").expect("scope");
        let message = group_not_found(
            "gpu",
            &scope,
            "/orgs/octo-org/actions/runner-groups",
            &[group(1, "Default"), group(7, "linux")],
        );
        assert_eq!(
            message,
            "runner group \"gpu\" not found in organisation octo-org (names are compared ignoring \
             case); its runner groups are \"Default\" (id 1, default), \"linux\" (id 7). List them \
             with `GET /orgs/octo-org/actions/runner-groups`"
        );
        let scope = Scope::parse("enterprises/acme").expect("scope");
        let message = group_not_found("x", &scope, "/enterprises/acme/actions/runner-groups", &[]);
        assert!(message.contains("enterprise acme"), "{message}");
        assert!(
            message.contains("no runner group these credentials can see"),
            "{message}"
        );
    }
}

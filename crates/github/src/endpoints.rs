//! The runner endpoints, at whichever scope the client was built for.

use reqwest::Method;
use serde::de::DeserializeOwned;
use url::Url;

use crate::client::{next_link, Call, Client, MAX_PAGES};
use crate::error::Error;
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
    async fn get_all_pages<W: DeserializeOwned, T>(
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
    /// [`DEFAULT_RUNNER_GROUP_ID`] without a request. `Error::NotFound` if no group has the name.
    pub async fn runner_group_id(&self, name: &str) -> Result<u64, Error> {
        if self.inner.scope.runner_groups_path().is_none() {
            return Ok(DEFAULT_RUNNER_GROUP_ID);
        }
        self.list_runner_groups()
            .await?
            .into_iter()
            .find(|g| g.name == name)
            .map(|g| g.id)
            .ok_or_else(|| Error::NotFound {
                message: format!("runner group {name:?} not found"),
            })
    }
}

//! [`Scope`]: where a runner is registered (repository, organization or enterprise).

use std::fmt;

/// A runner scope, as in the `--url` given to `config.sh` and the REST path prefixes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `owner/repo`.
    Repo {
        /// Repository owner (user or organization).
        owner: String,
        /// Repository name.
        repo: String,
    },
    /// An organization.
    Org(String),
    /// An enterprise, by slug.
    Enterprise(String),
}

impl Scope {
    /// A repository scope.
    pub fn repo(owner: impl Into<String>, repo: impl Into<String>) -> Self {
        Self::Repo {
            owner: owner.into(),
            repo: repo.into(),
        }
    }

    /// An organization scope.
    pub fn org(org: impl Into<String>) -> Self {
        Self::Org(org.into())
    }

    /// An enterprise scope.
    pub fn enterprise(slug: impl Into<String>) -> Self {
        Self::Enterprise(slug.into())
    }

    /// Parses the path form: `owner/repo`, `org` or `enterprises/slug` (surrounding slashes allowed).
    pub fn parse(path: &str) -> Option<Self> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            ["enterprises", slug] if !slug.is_empty() => Some(Self::enterprise(*slug)),
            [owner, repo] if !owner.is_empty() && !repo.is_empty() => {
                Some(Self::repo(*owner, *repo))
            }
            [org] if !org.is_empty() => Some(Self::org(*org)),
            _ => None,
        }
    }

    /// Parses a `config.sh --url` value (`http://host/owner/repo`, `…/org`, `…/enterprises/slug`).
    pub fn from_url(url: &str) -> Option<Self> {
        let parsed = url::Url::parse(url).ok()?;
        Self::parse(parsed.path())
    }

    /// The path form, as accepted by [`Scope::parse`].
    pub fn path(&self) -> String {
        match self {
            Self::Repo { owner, repo } => format!("{owner}/{repo}"),
            Self::Org(org) => org.clone(),
            Self::Enterprise(slug) => format!("enterprises/{slug}"),
        }
    }

    /// The REST prefix of the runner endpoints, e.g. `/repos/octo/app/actions/runners`.
    pub fn runners_path(&self) -> String {
        match self {
            Self::Repo { owner, repo } => format!("/repos/{owner}/{repo}/actions/runners"),
            Self::Org(org) => format!("/orgs/{org}/actions/runners"),
            Self::Enterprise(slug) => format!("/enterprises/{slug}/actions/runners"),
        }
    }

    /// Whether this scope has runner groups (organizations and enterprises do).
    pub fn has_groups(&self) -> bool {
        !matches!(self, Self::Repo { .. })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_urls() {
        assert_eq!(Scope::parse("octo/app"), Some(Scope::repo("octo", "app")));
        assert_eq!(Scope::parse("/octo-org/"), Some(Scope::org("octo-org")));
        assert_eq!(
            Scope::parse("enterprises/acme"),
            Some(Scope::enterprise("acme"))
        );
        assert_eq!(Scope::parse("a/b/c"), None);
        assert_eq!(Scope::parse(""), None);
        assert_eq!(
            Scope::from_url("http://10.0.0.1:8080/octo/app"),
            Some(Scope::repo("octo", "app"))
        );
        assert_eq!(
            Scope::from_url("http://h/enterprises/acme"),
            Some(Scope::enterprise("acme"))
        );
        assert_eq!(
            Scope::repo("o", "r").runners_path(),
            "/repos/o/r/actions/runners"
        );
    }
}

//! Where runners are registered: a repository, an organisation or an enterprise.

use std::fmt;
use std::str::FromStr;

/// A runner scope, parsed from the one `path` string the user gives:
/// `owner/repo`, `org` or `enterprises/slug`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `owner/repo`.
    Repo { owner: String, repo: String },
    /// `org`. The runner group is chosen separately (see `Client::runner_group_id`).
    Org { org: String },
    /// `enterprises/slug`.
    Enterprise { slug: String },
}

/// Why a scope path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope path is empty; expected `owner/repo`, `org` or `enterprises/slug`")]
    Empty,
    #[error("scope path `{path}` has too many slashes; expected `owner/repo`, `org` or `enterprises/slug`")]
    TooManySlashes { path: String },
    #[error("scope path `{path}` has an empty segment")]
    EmptySegment { path: String },
    #[error("scope path `{path}` contains the illegal character {ch:?}")]
    IllegalCharacter { path: String, ch: char },
    #[error("scope path `{path}`: `{segment}` is not a valid name")]
    InvalidName { path: String, segment: String },
}

impl Scope {
    /// Parses `owner/repo`, `org` or `enterprises/slug`.
    pub fn parse(path: &str) -> Result<Self, ScopeError> {
        if path.is_empty() {
            return Err(ScopeError::Empty);
        }
        let segments: Vec<&str> = path.split('/').collect();
        if segments.len() > 2 {
            return Err(ScopeError::TooManySlashes {
                path: path.to_owned(),
            });
        }
        if segments.iter().any(|s| s.is_empty()) {
            return Err(ScopeError::EmptySegment {
                path: path.to_owned(),
            });
        }
        match segments.as_slice() {
            [org] => {
                check_owner(path, org)?;
                Ok(Self::Org {
                    org: (*org).to_owned(),
                })
            }
            ["enterprises", slug] => {
                check_owner(path, slug)?;
                Ok(Self::Enterprise {
                    slug: (*slug).to_owned(),
                })
            }
            [owner, repo] => {
                check_owner(path, owner)?;
                check_repo(path, repo)?;
                Ok(Self::Repo {
                    owner: (*owner).to_owned(),
                    repo: (*repo).to_owned(),
                })
            }
            _ => Err(ScopeError::Empty),
        }
    }

    /// The REST prefix of the runner endpoints, e.g. `/repos/o/r/actions/runners`.
    pub fn api_prefix(&self) -> String {
        match self {
            Self::Repo { owner, repo } => format!("/repos/{owner}/{repo}/actions/runners"),
            Self::Org { org } => format!("/orgs/{org}/actions/runners"),
            Self::Enterprise { slug } => format!("/enterprises/{slug}/actions/runners"),
        }
    }

    /// The path under the web URL that `config.sh --url` points at, e.g. `o/r`.
    pub fn web_path(&self) -> String {
        match self {
            Self::Repo { owner, repo } => format!("{owner}/{repo}"),
            Self::Org { org } => org.clone(),
            Self::Enterprise { slug } => format!("enterprises/{slug}"),
        }
    }

    /// The runner-groups endpoint; repositories have none.
    pub fn runner_groups_path(&self) -> Option<String> {
        match self {
            Self::Repo { .. } => None,
            Self::Org { org } => Some(format!("/orgs/{org}/actions/runner-groups")),
            Self::Enterprise { slug } => Some(format!("/enterprises/{slug}/actions/runner-groups")),
        }
    }

    /// The webhooks endpoint (`/repos/o/r/hooks`, `/orgs/o/hooks`); enterprises have none.
    pub fn hooks_path(&self) -> Option<String> {
        match self {
            Self::Repo { owner, repo } => Some(format!("/repos/{owner}/{repo}/hooks")),
            Self::Org { org } => Some(format!("/orgs/{org}/hooks")),
            Self::Enterprise { .. } => None,
        }
    }

    /// The endpoint that finds a GitHub App installation; enterprises cannot use Apps.
    pub fn installation_path(&self) -> Option<String> {
        match self {
            Self::Repo { owner, repo } => Some(format!("/repos/{owner}/{repo}/installation")),
            Self::Org { org } => Some(format!("/orgs/{org}/installation")),
            Self::Enterprise { .. } => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.web_path())
    }
}

impl FromStr for Scope {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Owners, organisations and enterprise slugs: ASCII letters, digits and `-`, not at the ends.
fn check_owner(path: &str, name: &str) -> Result<(), ScopeError> {
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(ScopeError::IllegalCharacter {
            path: path.to_owned(),
            ch,
        });
    }
    if name.starts_with('-') || name.ends_with('-') || name.len() > 100 {
        return Err(ScopeError::InvalidName {
            path: path.to_owned(),
            segment: name.to_owned(),
        });
    }
    Ok(())
}

/// Repository names: ASCII letters, digits, `-`, `_` and `.`, but not `.` or `..`.
fn check_repo(path: &str, name: &str) -> Result<(), ScopeError> {
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(ScopeError::IllegalCharacter {
            path: path.to_owned(),
            ch,
        });
    }
    if name == "." || name == ".." || name.len() > 100 {
        return Err(ScopeError::InvalidName {
            path: path.to_owned(),
            segment: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        match (Scope::parse(input), expected) {
            (Ok(scope), Ok(prefix)) => {
                assert_eq!(scope.api_prefix(), prefix, "{input}");
                assert_eq!(scope.to_string(), input, "display round-trips");
            }
            (Err(err), Err(needle)) => {
                let msg = err.to_string();
                assert!(msg.contains(needle), "{input}: `{msg}` lacks `{needle}`");
            }
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parses_scopes() {
        check("octo-org/app", Ok("/repos/octo-org/app/actions/runners"));
        check(
            "octo/my_repo.rs",
            Ok("/repos/octo/my_repo.rs/actions/runners"),
        );
        check("octo-org", Ok("/orgs/octo-org/actions/runners"));
        check("enterprises/acme", Ok("/enterprises/acme/actions/runners"));
        check("", Err("empty"));
        check("a/b/c", Err("too many slashes"));
        check("enterprises/acme/x", Err("too many slashes"));
        check("a//b", Err("too many slashes"));
        check("a/", Err("empty segment"));
        check("/b", Err("empty segment"));
        check("octo org", Err("illegal character ' '"));
        check("octo/re?po", Err("illegal character '?'"));
        check("octo_org/x", Err("illegal character '_'"));
        check("octo/..", Err("not a valid name"));
        check("-octo", Err("not a valid name"));
    }

    #[test]
    fn paths() {
        let repo = Scope::parse("o/r").expect("valid");
        assert_eq!(repo.web_path(), "o/r");
        assert_eq!(repo.runner_groups_path(), None);
        assert_eq!(
            repo.installation_path().as_deref(),
            Some("/repos/o/r/installation")
        );
        let org = Scope::parse("o").expect("valid");
        assert_eq!(
            org.runner_groups_path().as_deref(),
            Some("/orgs/o/actions/runner-groups")
        );
        let ent = Scope::parse("enterprises/e").expect("valid");
        assert_eq!(ent.web_path(), "enterprises/e");
        assert_eq!(ent.installation_path(), None);
        assert_eq!(ent.hooks_path(), None);
        assert_eq!(repo.hooks_path().as_deref(), Some("/repos/o/r/hooks"));
        assert_eq!(org.hooks_path().as_deref(), Some("/orgs/o/hooks"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_never_panics_and_valid_scopes_round_trip(path in "[a-z0-9_./ -]{0,24}") {
            if let Ok(scope) = Scope::parse(&path) {
                prop_assert_eq!(scope.to_string(), path.clone());
                prop_assert_eq!(Scope::parse(&scope.to_string()), Ok(scope));
            }
        }

        #[test]
        fn valid_repo_paths_parse(owner in "[a-z0-9][a-z0-9-]{0,10}[a-z0-9]", repo in "[a-z0-9_.-]{3,12}") {
            let scope = Scope::parse(&format!("{owner}/{repo}")).expect("valid");
            let is_repo = matches!(scope, Scope::Repo { .. });
            prop_assert!(is_repo || owner == "enterprises");
        }
    }
}

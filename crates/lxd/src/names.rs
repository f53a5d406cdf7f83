//! Instance name rules, checked before any call is made.

use crate::error::{Error, Result};

/// Checks an instance name: 1–63 characters from `[a-zA-Z0-9-]`, no leading or trailing `-`,
/// not all digits (it becomes a host name).
pub fn validate_instance_name(name: &str) -> Result<()> {
    let fail = |message: &str| {
        Err(Error::Invalid {
            what: "instance name",
            message: format!("{name:?}: {message}"),
        })
    };
    if name.is_empty() {
        return fail("must not be empty");
    }
    if name.len() > 63 {
        return fail(&format!(
            "is {} characters long, the limit is 63",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return fail(&format!(
            "contains {c:?}; only letters, digits and '-' are allowed"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return fail("must not start or end with '-'");
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return fail("must not be all digits");
    }
    Ok(())
}

/// Checks a name used inside a URL path (profiles, pools, aliases): not empty, no `/`-free escape
/// tricks. Aliases may contain `/` (`debian/bookworm`) and are percent-encoded by the caller.
pub(crate) fn validate_simple_name(what: &'static str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || name.contains(['?', '#'])
        || name == "."
        || name == ".."
    {
        return Err(Error::Invalid {
            what,
            message: format!("{name:?} is not a valid name"),
        });
    }
    Ok(())
}

/// Percent-encodes one path segment.
pub(crate) fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, ok: bool) {
        assert_eq!(validate_instance_name(name).is_ok(), ok, "{name:?}");
    }

    #[test]
    fn instance_names() {
        check("a", true);
        check("gh-runner-0-5f2c", true);
        check("Runner7", true);
        check("1a", true);
        check(&"a".repeat(63), true);
        check(&"a".repeat(64), false);
        check("", false);
        check("-a", false);
        check("a-", false);
        check("12345", false);
        check("a_b", false);
        check("a.b", false);
        check("a b", false);
        check("ä", false);
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("debian/bookworm"), "debian%2Fbookworm");
        assert_eq!(segment("a b"), "a%20b");
        assert_eq!(segment("plain-1"), "plain-1");
    }
}

//! [`Secret`]: the workspace's one secret type, [`github::Secret`] (redacted in `Debug` and
//! `Display`, zeroed on drop). The simulator hands out the same type the client takes, so a test
//! passes a simulator token to the client by `clone`.

pub use github::Secret;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("ghp_value");
        assert_eq!(format!("{s:?} {s}"), "Secret([redacted]) [redacted]");
        assert_eq!(s.expose(), "ghp_value");
    }
}

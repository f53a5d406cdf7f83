//! [`Secret`]: the workspace's one secret type, [`github::Secret`] (redacted in `Debug` and
//! `Display`, zeroed on drop). The simulator hands out the same type the client takes, so a test
//! passes a simulator token to the client by `clone`.

pub use github::Secret;

//! github-sim

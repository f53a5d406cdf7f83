//! Builds the fake actions-runner tarball served by the simulator's downloads endpoint.

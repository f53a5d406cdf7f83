//! lxd

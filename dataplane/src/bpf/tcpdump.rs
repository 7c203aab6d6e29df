//! tcpdump (in progress)

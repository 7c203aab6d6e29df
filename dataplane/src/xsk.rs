//! xsk (in progress)

//! classic (in progress)

//! interp (in progress)

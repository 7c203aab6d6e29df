//! jit (in progress)

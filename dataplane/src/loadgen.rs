//! loadgen (in progress)

//! disasm (in progress)

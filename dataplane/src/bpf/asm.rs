//! asm (in progress)

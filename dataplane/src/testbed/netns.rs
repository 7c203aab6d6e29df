//! netns (in progress)

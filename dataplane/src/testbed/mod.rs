//! Test beds shared by the integration tests, the benches and the demo: network-namespace
//! topologies built from veth pairs (`netns`), and a generated packet corpus (`corpus`).
//! Nothing here runs in the dataplane itself.

pub mod corpus;
pub mod netns;

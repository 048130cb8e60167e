//! `sibyl dkg`: the ceremony and its command live in `sibyl_node::dkg`,
//! beside the network it runs over.

pub use sibyl_node::dkg::{DkgArgs, command};

//! `sibyl keygen --dealer`: trusted-dealer keys for tests and the devnet;
//! `sibyl_node::keygen` holds it because `sibyl dkg` shares its key files.

pub use sibyl_node::keygen::{KeygenArgs, run};

//! `sibyl dkg`: the ceremony and its command live in `sibyl_node::dkg`,
//! beside the network it runs over.

pub use sibyl_node::dkg::{DkgArgs, command};

/// `sibyl refresh`: new shares of the same group key (`sibyl_node::refresh`).
pub use sibyl_node::refresh::{RefreshArgs, command as refresh_command};

/// `sibyl repair`: a lost member's own shares back from t helpers
/// (`sibyl_node::repair`).
pub use sibyl_node::repair::{RepairArgs, command as repair_command};

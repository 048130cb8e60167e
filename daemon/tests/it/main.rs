//! The `sibyl` binary's integration tests, one module per suite, in one test
//! binary so the daemon is linked once. Most run real `sibyl` processes.
//! Suites that need an external tool or a feature (chain_anvil,
//! dashboard_e2e, hostile_processes) stay separate `test = false` targets
//! that scripts/test.d runs by name.

#[path = "../common/mod.rs"]
mod common;

mod both_suites;
mod clock_skew;
mod committee_processes;
mod config_check;
mod devnet_member_exit;
mod devnet_scenarios;
mod dkg_cli;
mod gateway;
mod hostile_member;
mod ledger_move;
mod margin_devnet;
mod operator_guide;
mod partition_netns;
mod refresh_processes;
mod repair_processes;
mod rotation_live;
mod sources_cli;

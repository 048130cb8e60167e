//! `sibyl config check`: the checks live with the config in `sibyl-node`.

pub use sibyl_node::config::check_command;

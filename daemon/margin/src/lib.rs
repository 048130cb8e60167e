//! The margin and liquidation engine: prices and commands in, events out.

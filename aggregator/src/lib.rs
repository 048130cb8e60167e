//! Sibyl's protocol core: pure and deterministic. No I/O, no clock, no OS
//! randomness: time and randomness come in as arguments.

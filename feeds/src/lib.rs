//! Price sources: one adapter per exchange format, source health, and the
//! simulated exchange the devnet and tests run against.

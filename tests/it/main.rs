//! End-to-end tests against real services, compiled into one test binary.
//! The services come from `cargo xtask test` (or `cargo xtask services up`).

// The services themselves: PostgreSQL answers, S3 and EC2 calls work against the emulator.
mod services;
// Checkpoint stores under SIGKILL, transactions and concurrent runners.
mod checkpoint;
// Every sequence under `sequences/` loads.
mod sequences;
// Spawning and killing fixture processes.
mod support;

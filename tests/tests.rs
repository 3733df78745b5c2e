//! Black-box tests of the `pseudopipe` binary, run as a user would run it.
//!
//! - `util`: a scratch directory with a KEK and a keyring, and a runner for the binary.
//! - `keys`: KEK creation, the keyring life cycle, wrong KEKs and corrupted keyrings.
//! - `audit`: `audit verify` and `audit show` on intact and tampered logs.
//! - `batch`: `pseudonymize` over simulated exports with malformed lines.
//! - `pipeline`: ingest, sink and produce against two real Apache Kafka brokers (the
//!   cloud one demanding the sink's client certificate), shared by the tests that do not
//!   stop them: end to end, restarts, skipped offsets, a cloud outage, bad configs.
//! - `schemas`: the Avro schema, the example event and the default policy agree.

mod util;

mod audit;
mod batch;
mod keys;
mod pipeline;
mod schemas;

//! `sunset-teardown` as operators run it: the built binary against moto's EC2, ELB and Route 53
//! emulator, one module per area, and `support` for what they share. One test binary (`it`).

mod bad_input;
mod gates;
mod metrics;
mod safety;
mod shift;
mod steps;
mod support;
mod teardown;

//! The machine's limits, measured at start-up: the bounds achieved throughput is quoted against.

use serde::Serialize;

use cranegrad_runtime::probe::{MachineLimits, probe_machine};

use super::super::progress::spinner;

/// The measured limits as `--json` reports them.
#[derive(Serialize)]
pub struct MachineReport {
    /// 4-lane FMA peak on every thread, GFLOP/s (null with `--no-probe`).
    pub peak_gflops: Option<f64>,
    /// DRAM copy bandwidth, GB/s.
    pub dram_gbps: Option<f64>,
    /// DRAM read bandwidth (the bound of decode's weight streaming), GB/s.
    pub dram_read_gbps: Option<f64>,
}

impl From<Option<&MachineLimits>> for MachineReport {
    fn from(l: Option<&MachineLimits>) -> Self {
        MachineReport {
            peak_gflops: l.map(|l| l.fma_gflops),
            dram_gbps: l.map(|l| l.dram_copy_gbps),
            dram_read_gbps: l.map(|l| l.dram_read_gbps),
        }
    }
}

/// Measures the limits on `threads` threads.
pub fn probe(threads: usize) -> anyhow::Result<MachineLimits> {
    let pb = spinner("probing the machine");
    let limits = probe_machine(threads)?;
    pb.finish_and_clear();
    Ok(limits)
}

//! Invariants the schedule states about itself, checked on schedules that break them.

use cranegrad_graph::{DType, Graph, Shape};
use cranegrad_lower::kernel::Access;
use cranegrad_lower::{LowerOptions, lower};

#[test]
fn a_written_buffer_bound_to_two_slots_is_refused() {
    // Code generation moves loads past stores of other slots; a launch whose written buffer
    // also sits in another slot would break that, so the check must name it.
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[4, 8]), DType::F32);
    let y = x.exp().unwrap();
    let mut l = g
        .with(|d| lower(d, &[y.id()], LowerOptions::default()))
        .unwrap();
    assert!(l.schedule.check_distinct_args().is_ok());
    let launch = &mut l.schedule.launches[0];
    let written = (launch.kernel.args.iter())
        .position(|a| a.access == Access::Write)
        .expect("a written slot");
    let read = (launch.kernel.args.iter())
        .position(|a| a.access == Access::Read)
        .expect("a read slot");
    launch.args[read] = launch.args[written];
    let err = l.schedule.check_distinct_args().unwrap_err().to_string();
    assert!(err.contains("two argument slots"), "{err}");
}

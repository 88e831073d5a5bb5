//! Schedule pass, the last: every launch is named after what it became (see
//! [`kernel_name`]), so names follow the final launch order and templates.

use crate::Schedule;
use crate::kernel::KernelBody;
use crate::label::kernel_name;

/// Names every launch; returns how many names changed.
pub fn name_kernels(schedule: &mut Schedule) -> usize {
    let mut renamed = 0;
    for (i, l) in schedule.launches.iter_mut().enumerate() {
        if let KernelBody::Siblings(parts) = &mut l.kernel.body {
            for (j, p) in parts.iter_mut().enumerate() {
                p.name = format!("{}_part{j}", kernel_name(i, p));
            }
        }
        let name = kernel_name(i, &l.kernel);
        if l.kernel.name != name {
            l.kernel.name = name;
            renamed += 1;
        }
    }
    renamed
}

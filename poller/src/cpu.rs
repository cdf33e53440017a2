//! Online CPUs, core lists and NUMA nodes (filled in by the cpu helper).

//! Online CPUs, core lists and NUMA nodes.
//!
//! Reactors are pinned to explicit cores, so the daemon has to know which
//! CPUs exist before it spawns anything: a typo in the core list should be a
//! clear configuration error, not a failed `sched_setaffinity` deep inside a
//! reactor thread. Everything here reads Linux sysfs; the list syntax is the
//! kernel's own (`0-3,8,10-11`), which is also what users type in configs.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Largest CPU id accepted in a core list.
///
/// Anything above this is almost certainly a typo (e.g. `10000` for
/// `1000`), and rejecting it early keeps a range like `0-99999999` from
/// allocating a huge vector.
pub const MAX_CPU_ID: usize = 4096;

const SYSFS_CPU: &str = "/sys/devices/system/cpu";
const SYSFS_NODE: &str = "/sys/devices/system/node";

/// Errors from CPU discovery, core-list parsing and core validation.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// A comma-separated item was empty (`"0,,1"`, `"0,"`, or an empty list).
    #[error("empty item in CPU list {list:?}")]
    EmptyItem {
        /// The whole list as given.
        list: String,
    },
    /// An item was not a number or a `lo-hi` range.
    #[error("{item:?} is not a CPU number or range (use e.g. \"0-3,8\")")]
    InvalidItem {
        /// The offending item.
        item: String,
    },
    /// A range whose end is below its start, such as `3-1`.
    #[error("range {start}-{end} is reversed (write {end}-{start})")]
    ReversedRange {
        /// First number of the range.
        start: usize,
        /// Second number of the range.
        end: usize,
    },
    /// A CPU id above [`MAX_CPU_ID`].
    #[error("CPU {cpu} is out of range (at most {MAX_CPU_ID})")]
    OutOfRange {
        /// The offending id.
        cpu: usize,
    },
    /// The same core appears twice, directly or through overlapping ranges.
    #[error("core {core} is listed more than once")]
    Duplicate {
        /// The repeated core.
        core: usize,
    },
    /// A core list with no cores at all.
    #[error("the core list is empty")]
    EmptyList,
    /// A core that is not online on this machine.
    #[error("core {core} does not exist on this machine (online CPUs: {online})")]
    NotOnline {
        /// The missing core.
        core: usize,
        /// What is online, so the user can fix the list without looking it up.
        online: CpuSet,
    },
    /// Reading sysfs failed for a reason other than the file being absent.
    #[error("cannot read {}: {source}", path.display())]
    Sysfs {
        /// The sysfs file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A sysfs CPU list did not parse.
    #[error("{}: {source}", path.display())]
    SysfsFormat {
        /// The sysfs file.
        path: PathBuf,
        /// Why its content was rejected.
        source: Box<CpuError>,
    },
}

/// An ordered set of CPU ids without duplicates.
///
/// Displays in the kernel's compact list form, e.g. `0-3,8`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CpuSet {
    // Sorted and deduplicated; kept as a vector because sets are small and
    // iteration order must be stable for display.
    cpus: Vec<usize>,
}

impl CpuSet {
    /// An empty set.
    pub fn new() -> CpuSet {
        CpuSet::default()
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        self.cpus.binary_search(&cpu).is_ok()
    }

    /// The CPUs in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.cpus.iter().copied()
    }

    /// Number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.cpus.len()
    }

    /// Whether the set has no CPUs.
    pub fn is_empty(&self) -> bool {
        self.cpus.is_empty()
    }

    /// Adds `cpu`; returns `false` if it was already present.
    pub fn insert(&mut self, cpu: usize) -> bool {
        match self.cpus.binary_search(&cpu) {
            Ok(_) => false,
            Err(at) => {
                self.cpus.insert(at, cpu);
                true
            }
        }
    }
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> CpuSet {
        let mut cpus: Vec<usize> = iter.into_iter().collect();
        cpus.sort_unstable();
        cpus.dedup();
        CpuSet { cpus }
    }
}

impl<'a> IntoIterator for &'a CpuSet {
    type Item = usize;
    type IntoIter = std::iter::Copied<std::slice::Iter<'a, usize>>;

    fn into_iter(self) -> Self::IntoIter {
        self.cpus.iter().copied()
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.cpus.len() {
            let start = self.cpus[i];
            let mut end = start;
            while i + 1 < self.cpus.len() && self.cpus[i + 1] == end + 1 {
                i += 1;
                end += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

/// Parses a kernel-style CPU list such as `"0-3,8, 10-11"`.
///
/// Returns the CPUs in the order written. Whitespace around items and
/// around the `-` is ignored. Empty items, reversed ranges, ids above
/// [`MAX_CPU_ID`] and duplicates (including overlapping ranges) are errors,
/// because each of them is far more likely a typo than an intent.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, CpuError> {
    let mut out = Vec::new();
    let mut seen = CpuSet::new();
    if s.trim().is_empty() {
        return Err(CpuError::EmptyList);
    }
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(CpuError::EmptyItem { list: s.to_owned() });
        }
        let (start, end) = match item.split_once('-') {
            Some((a, b)) => (parse_cpu_id(a, item)?, parse_cpu_id(b, item)?),
            None => {
                let cpu = parse_cpu_id(item, item)?;
                (cpu, cpu)
            }
        };
        if end < start {
            return Err(CpuError::ReversedRange { start, end });
        }
        for cpu in start..=end {
            if !seen.insert(cpu) {
                return Err(CpuError::Duplicate { core: cpu });
            }
            out.push(cpu);
        }
    }
    Ok(out)
}

fn parse_cpu_id(text: &str, item: &str) -> Result<usize, CpuError> {
    let text = text.trim();
    // `usize::from_str` accepts a leading `+`, which has no place in a CPU list.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CpuError::InvalidItem {
            item: item.to_owned(),
        });
    }
    match text.parse::<usize>() {
        Ok(cpu) if cpu <= MAX_CPU_ID => Ok(cpu),
        Ok(cpu) => Err(CpuError::OutOfRange { cpu }),
        // Only overflow can fail here since the text is all digits.
        Err(_) => Err(CpuError::OutOfRange { cpu: usize::MAX }),
    }
}

/// The CPUs currently online.
///
/// Reads `/sys/devices/system/cpu/online`. Only if that file does not exist
/// (containers without sysfs, non-Linux) does it fall back to
/// `0..available_parallelism`, which is a guess: that count honours the
/// affinity mask, not which ids exist.
pub fn online_cpus() -> Result<CpuSet, CpuError> {
    online_cpus_from(&Path::new(SYSFS_CPU).join("online"))
}

fn online_cpus_from(path: &Path) -> Result<CpuSet, CpuError> {
    match fs::read_to_string(path) {
        Ok(text) => parse_sysfs_list(path, &text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            Ok((0..n).collect())
        }
        Err(source) => Err(CpuError::Sysfs {
            path: path.to_owned(),
            source,
        }),
    }
}

fn parse_sysfs_list(path: &Path, text: &str) -> Result<CpuSet, CpuError> {
    parse_cpu_list(text.trim())
        .map(|cpus| cpus.into_iter().collect())
        .map_err(|e| CpuError::SysfsFormat {
            path: path.to_owned(),
            source: Box::new(e),
        })
}

/// The NUMA node of `cpu`, or `None` if unknown (no NUMA support in the
/// kernel, no sysfs, or no such CPU).
pub fn numa_node_of(cpu: usize) -> Option<u32> {
    numa_node_in(Path::new(SYSFS_CPU), Path::new(SYSFS_NODE), cpu)
}

fn numa_node_in(cpu_root: &Path, node_root: &Path, cpu: usize) -> Option<u32> {
    // The per-CPU `nodeN` link is the cheap path; node cpulists are the
    // fallback for kernels that do not create those links.
    if let Ok(entries) = fs::read_dir(cpu_root.join(format!("cpu{cpu}"))) {
        for entry in entries.flatten() {
            if let Some(node) = node_suffix(&entry.file_name().to_string_lossy()) {
                return Some(node);
            }
        }
    }
    for entry in fs::read_dir(node_root).ok()?.flatten() {
        let Some(node) = node_suffix(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        let Ok(text) = fs::read_to_string(entry.path().join("cpulist")) else {
            continue;
        };
        // A node without CPUs has an empty cpulist; that just means "not here".
        if let Ok(cpus) = parse_cpu_list(text.trim()) {
            if cpus.contains(&cpu) {
                return Some(node);
            }
        }
    }
    None
}

fn node_suffix(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("node")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checks a reactor core list against the online CPUs.
///
/// An empty list, a repeated core, or a core that is not online is an error;
/// the not-online message lists what is online.
pub fn validate_cores(cores: &[usize], online: &CpuSet) -> Result<(), CpuError> {
    if cores.is_empty() {
        return Err(CpuError::EmptyList);
    }
    let mut seen = CpuSet::new();
    for &core in cores {
        if !seen.insert(core) {
            return Err(CpuError::Duplicate { core });
        }
        if !online.contains(core) {
            return Err(CpuError::NotOnline {
                core,
                online: online.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cpus: &[usize]) -> CpuSet {
        cpus.iter().copied().collect()
    }

    #[test]
    fn parses_single_and_ranges() {
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert_eq!(parse_cpu_list("0-3,8").unwrap(), vec![0, 1, 2, 3, 8]);
        assert_eq!(
            parse_cpu_list("0-3,8,10-11").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpu_list("5-5").unwrap(), vec![5]);
    }

    #[test]
    fn parse_keeps_written_order() {
        assert_eq!(parse_cpu_list("8,0-1").unwrap(), vec![8, 0, 1]);
    }

    #[test]
    fn parse_tolerates_whitespace() {
        assert_eq!(
            parse_cpu_list(" 0 - 2 , 8 ,\t10-11\n").unwrap(),
            vec![0, 1, 2, 8, 10, 11]
        );
    }

    #[test]
    fn parse_rejects_empty_items() {
        for s in ["", "  ", "0,,1", "0,", ",0", "0, ,1"] {
            let err = parse_cpu_list(s).unwrap_err();
            assert!(
                matches!(err, CpuError::EmptyItem { .. } | CpuError::EmptyList),
                "{s:?}: {err}"
            );
        }
    }

    #[test]
    fn parse_rejects_garbage() {
        for s in ["a", "0-", "-3", "1-2-3", "+1", "0x1", "1.5", "0-b"] {
            let err = parse_cpu_list(s).unwrap_err();
            assert!(matches!(err, CpuError::InvalidItem { .. }), "{s:?}: {err}");
        }
    }

    #[test]
    fn parse_rejects_reversed_range() {
        let err = parse_cpu_list("3-1").unwrap_err();
        assert!(matches!(err, CpuError::ReversedRange { start: 3, end: 1 }));
        assert_eq!(err.to_string(), "range 3-1 is reversed (write 1-3)");
    }

    #[test]
    fn parse_rejects_absurd_ids() {
        assert_eq!(parse_cpu_list("4096").unwrap(), vec![4096]);
        let err = parse_cpu_list("4097").unwrap_err();
        assert!(matches!(err, CpuError::OutOfRange { cpu: 4097 }));
        assert!(matches!(
            parse_cpu_list("0-99999999999999999999999").unwrap_err(),
            CpuError::OutOfRange { .. }
        ));
    }

    #[test]
    fn parse_rejects_duplicates_naming_the_core() {
        let err = parse_cpu_list("0-3,2").unwrap_err();
        assert!(matches!(err, CpuError::Duplicate { core: 2 }));
        assert_eq!(err.to_string(), "core 2 is listed more than once");
        assert!(matches!(
            parse_cpu_list("0-3,3-5").unwrap_err(),
            CpuError::Duplicate { core: 3 }
        ));
    }

    #[test]
    fn display_compacts_ranges() {
        assert_eq!(set(&[]).to_string(), "");
        assert_eq!(set(&[0]).to_string(), "0");
        assert_eq!(set(&[0, 1]).to_string(), "0-1");
        assert_eq!(set(&[0, 1, 2, 3, 8, 10, 11]).to_string(), "0-3,8,10-11");
        assert_eq!(set(&[11, 10, 3, 8, 0, 2, 1]).to_string(), "0-3,8,10-11");
        assert_eq!(set(&[1, 3, 5]).to_string(), "1,3,5");
    }

    #[test]
    fn display_round_trips_through_parse() {
        let s = set(&[0, 2, 3, 4, 7, 9, 10]);
        let back: CpuSet = parse_cpu_list(&s.to_string())
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(back, s);
    }

    #[test]
    fn set_queries() {
        let s = set(&[3, 1, 2, 1]);
        assert_eq!(s.len(), 3);
        assert!(!s.is_empty());
        assert!(s.contains(1) && s.contains(3));
        assert!(!s.contains(0) && !s.contains(4));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(CpuSet::new().is_empty());
    }

    #[test]
    fn validate_accepts_online_cores() {
        validate_cores(&[1, 0], &set(&[0, 1])).unwrap();
    }

    #[test]
    fn validate_names_missing_core_and_online_list() {
        let err = validate_cores(&[0, 7], &set(&[0, 1])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "core 7 does not exist on this machine (online CPUs: 0-1)"
        );
    }

    #[test]
    fn validate_rejects_empty_and_duplicates() {
        assert!(matches!(
            validate_cores(&[], &set(&[0])).unwrap_err(),
            CpuError::EmptyList
        ));
        let err = validate_cores(&[0, 1, 0], &set(&[0, 1])).unwrap_err();
        assert_eq!(err.to_string(), "core 0 is listed more than once");
    }

    #[test]
    fn cpu0_is_online() {
        let online = online_cpus().unwrap();
        assert!(online.contains(0), "online CPUs: {online}");
    }

    #[test]
    fn online_falls_back_when_sysfs_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let online = online_cpus_from(&dir.path().join("online")).unwrap();
        assert!(online.contains(0));
        assert!(!online.is_empty());
    }

    #[test]
    fn online_reads_sysfs_format_and_reports_bad_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online");
        fs::write(&path, "0-3,8,10-11\n").unwrap();
        assert_eq!(online_cpus_from(&path).unwrap().to_string(), "0-3,8,10-11");

        fs::write(&path, "0-x\n").unwrap();
        let err = online_cpus_from(&path).unwrap_err();
        assert!(err.to_string().contains("online: "), "{err}");
    }

    #[test]
    fn numa_node_from_cpu_link_and_node_cpulist() {
        let dir = tempfile::tempdir().unwrap();
        let cpu_root = dir.path().join("cpu");
        let node_root = dir.path().join("node");
        fs::create_dir_all(cpu_root.join("cpu0/node0")).unwrap();
        fs::create_dir_all(cpu_root.join("cpu5")).unwrap();
        fs::create_dir_all(node_root.join("node0")).unwrap();
        fs::create_dir_all(node_root.join("node1")).unwrap();
        fs::write(node_root.join("node0/cpulist"), "0-3\n").unwrap();
        fs::write(node_root.join("node1/cpulist"), "4-7\n").unwrap();
        // Not a node directory; must be ignored.
        fs::create_dir_all(node_root.join("nodefoo")).unwrap();

        assert_eq!(numa_node_in(&cpu_root, &node_root, 0), Some(0));
        assert_eq!(numa_node_in(&cpu_root, &node_root, 5), Some(1));
        assert_eq!(numa_node_in(&cpu_root, &node_root, 9), None);
        assert_eq!(
            numa_node_in(&dir.path().join("x"), &dir.path().join("y"), 0),
            None
        );
    }

    #[test]
    fn numa_node_of_cpu0_is_consistent() {
        // Either unknown or a real node; never a panic.
        if let Some(node) = numa_node_of(0) {
            assert!(Path::new(SYSFS_NODE).join(format!("node{node}")).exists());
        }
    }
}

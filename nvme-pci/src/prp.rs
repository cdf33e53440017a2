//! Data pointers: PRP lists and SGLs built from an I/O's segments (bus
//! addresses, IOVA = VA). Pure functions; the list page is written through
//! a callback so tests can look at it.

use pollux_nvme::sqe::{sgl_subtype, Sgl};

use crate::regs::PAGE;

/// One contiguous piece of an I/O buffer, by bus address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    /// Bus address.
    pub iova: u64,
    /// Length in bytes.
    pub len: u32,
}

/// Entries of one PRP list page: one page of 8-byte entries. A command
/// needs one list page at most because commands are cut to `MAX_XFER`.
pub const PRP_LIST_ENTRIES: usize = PAGE / 8;

/// SGL descriptors in one list page.
pub const SGL_LIST_ENTRIES: usize = PAGE / Sgl::SIZE;

/// Largest transfer of one command the driver builds: what one PRP list
/// page can describe even when the first page is partial (PRP1 and 512
/// list entries).
pub const MAX_XFER: usize = PRP_LIST_ENTRIES * PAGE;

/// Why segments cannot be described.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DptrError {
    /// PRP entries need every segment but the first to start on a page,
    /// and every one but the last to end on one; SGL descriptors may need
    /// dword alignment.
    #[error("segments are not aligned for this data pointer")]
    Unaligned,
    /// More entries than one list page holds.
    #[error("too many pages or segments for one command")]
    TooLong,
    /// No data, or an empty segment.
    #[error("empty segment")]
    Empty,
}

/// Builds PRP1/PRP2 for `segs`; entries past the second page go to the list
/// page at `list_iova` through `put(index, entry)`.
pub fn build_prp(
    segs: &[Seg],
    list_iova: u64,
    mut put: impl FnMut(usize, u64),
) -> Result<(u64, u64), DptrError> {
    let page = PAGE as u64;
    let last = segs.len().checked_sub(1).ok_or(DptrError::Empty)?;
    let mut prp1 = 0;
    let mut second = 0;
    let mut n = 0usize;
    for (i, s) in segs.iter().enumerate() {
        if s.len == 0 {
            return Err(DptrError::Empty);
        }
        let end = s
            .iova
            .checked_add(s.len as u64)
            .ok_or(DptrError::Unaligned)?;
        let start_ok = if i == 0 {
            s.iova % 4 == 0
        } else {
            s.iova % page == 0
        };
        if !start_ok || (i != last && end % page != 0) {
            return Err(DptrError::Unaligned);
        }
        let mut p = s.iova;
        while p < end {
            match n {
                0 => prp1 = p,
                1 => second = p,
                _ => {
                    if n > PRP_LIST_ENTRIES {
                        return Err(DptrError::TooLong);
                    }
                    if n == 2 {
                        // The second page moves into the list.
                        put(0, second);
                    }
                    put(n - 1, p);
                }
            }
            n += 1;
            p = (p & !(page - 1)) + page;
        }
    }
    Ok(match n {
        1 => (prp1, 0),
        2 => (prp1, second),
        _ => (prp1, list_iova),
    })
}

/// Builds the SGL for `segs`: one data block in the command, or a last
/// segment descriptor pointing at data blocks in the list page. `dword`:
/// the controller wants dword-aligned addresses and lengths (SGLS = 10b).
pub fn build_sgl(
    segs: &[Seg],
    list_iova: u64,
    dword: bool,
    mut put: impl FnMut(usize, [u8; 16]),
) -> Result<Sgl, DptrError> {
    if segs.is_empty() || segs.iter().any(|s| s.len == 0) {
        return Err(DptrError::Empty);
    }
    if dword && segs.iter().any(|s| s.iova % 4 != 0 || s.len % 4 != 0) {
        return Err(DptrError::Unaligned);
    }
    let block = |s: &Seg| Sgl::DataBlock {
        address: s.iova,
        length: s.len,
    };
    if let [one] = segs {
        return Ok(block(one));
    }
    if segs.len() > SGL_LIST_ENTRIES {
        return Err(DptrError::TooLong);
    }
    for (i, s) in segs.iter().enumerate() {
        put(i, block(s).to_bytes());
    }
    Ok(Sgl::Segment {
        address: list_iova,
        length: (segs.len() * Sgl::SIZE) as u32,
        last: true,
        subtype: sgl_subtype::ADDRESS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE as u64;

    fn prp(segs: &[Seg]) -> Result<(u64, u64, Vec<u64>), DptrError> {
        let mut list = vec![0u64; PRP_LIST_ENTRIES];
        let mut used = 0;
        let (a, b) = build_prp(segs, 0xdead_0000, |i, v| {
            list[i] = v;
            used = used.max(i + 1);
        })?;
        list.truncate(used);
        Ok((a, b, list))
    }

    fn seg(iova: u64, len: u64) -> Seg {
        Seg {
            iova,
            len: len as u32,
        }
    }

    #[test]
    fn one_and_two_pages_need_no_list() {
        assert_eq!(prp(&[seg(0x10000, 4096)]).unwrap(), (0x10000, 0, vec![]));
        assert_eq!(prp(&[seg(0x10200, 512)]).unwrap(), (0x10200, 0, vec![]));
        assert_eq!(
            prp(&[seg(0x10000, 8192)]).unwrap(),
            (0x10000, 0x11000, vec![])
        );
        // An offset first page spills into a second.
        assert_eq!(
            prp(&[seg(0x10800, 4096)]).unwrap(),
            (0x10800, 0x11000, vec![])
        );
    }

    #[test]
    fn longer_transfers_use_the_list() {
        let (a, b, list) = prp(&[seg(0x10000, 4 * P)]).unwrap();
        assert_eq!((a, b), (0x10000, 0xdead_0000));
        assert_eq!(list, vec![0x11000, 0x12000, 0x13000]);
    }

    #[test]
    fn scattered_page_aligned_segments() {
        let segs = [seg(0x20800, 0x800), seg(0x50000, 2 * P), seg(0x90000, 100)];
        let (a, b, list) = prp(&segs).unwrap();
        assert_eq!((a, b), (0x20800, 0xdead_0000));
        assert_eq!(list, vec![0x50000, 0x51000, 0x90000]);
    }

    #[test]
    fn misaligned_segments_are_refused() {
        // A middle segment that does not start on a page.
        assert_eq!(
            prp(&[seg(0x10000, P), seg(0x20200, P)]),
            Err(DptrError::Unaligned)
        );
        // A first segment that does not end on a page, followed by more.
        assert_eq!(
            prp(&[seg(0x10000, 512), seg(0x20000, P)]),
            Err(DptrError::Unaligned)
        );
        assert_eq!(prp(&[seg(0x10002, 512)]), Err(DptrError::Unaligned));
        assert_eq!(prp(&[]), Err(DptrError::Empty));
        assert_eq!(prp(&[seg(0x1000, 0)]), Err(DptrError::Empty));
    }

    #[test]
    fn max_transfer_fits_one_list_page() {
        let (_, _, list) = prp(&[seg(0x10800, MAX_XFER as u64)]).unwrap();
        assert_eq!(list.len(), PRP_LIST_ENTRIES);
        assert!(prp(&[seg(0x10800, MAX_XFER as u64 + P)]).is_err());
    }

    #[test]
    fn sgl_single_and_list() {
        let one = build_sgl(&[seg(0x1234, 100)], 0, false, |_, _| panic!()).unwrap();
        assert_eq!(
            one,
            Sgl::DataBlock {
                address: 0x1234,
                length: 100
            }
        );
        let mut put = Vec::new();
        let s = build_sgl(
            &[seg(0x1001, 7), seg(0x9000, 4096)],
            0x7000,
            false,
            |i, d| put.push((i, Sgl::parse(&d))),
        )
        .unwrap();
        assert_eq!(
            s,
            Sgl::Segment {
                address: 0x7000,
                length: 32,
                last: true,
                subtype: sgl_subtype::ADDRESS
            }
        );
        assert_eq!(put.len(), 2);
        assert_eq!(
            put[0].1,
            Sgl::DataBlock {
                address: 0x1001,
                length: 7
            }
        );
        assert_eq!(
            build_sgl(&[seg(0x1001, 7), seg(0x9000, 8)], 0, true, |_, _| {}),
            Err(DptrError::Unaligned)
        );
    }
}

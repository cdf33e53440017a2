//! The TCP transport's options (SPDK's `spdk_nvmf_transport_opts` plus
//! its TCP-specific ones), as `nvmf_create_transport` sets them and every
//! connection accepted afterwards applies them.
//!
//! A connection takes one snapshot at accept (ICResp's MAXH2CDATA, its
//! buffer charges, its socket priority); a controller takes the snapshot
//! of its admin queue at Connect, and its I/O queues follow the
//! controller's (so Identify, CAP and the queues never disagree).

use super::MAX_CONNECTIONS_PER_LISTENER;

/// Smallest queue: a queue of N entries holds N - 1 commands, and the
/// spec's SQSIZE minimum is 1 (two entries).
pub const QUEUE_DEPTH_MIN: u32 = 2;
/// Deepest I/O or admin queue. Linux's host never asks for more
/// (NVMF_MAX_QUEUE_SIZE), and request slots are allocated per queue pair
/// at Connect, so the bound keeps a queue pair's table small.
pub const QUEUE_DEPTH_MAX: u32 = 1024;
/// I/O queues per controller: each is a connection, and one listener takes
/// at most MAX_CONNECTIONS_PER_LISTENER of them, admin queue included.
pub const IO_QPAIRS_MAX: u32 = MAX_CONNECTIONS_PER_LISTENER as u32 - 1;
/// In-capsule data is not charged to the buffer budget (it arrives with the
/// command), so its size times the queue depth is what a host can make a
/// queue pair hold: 64 KiB x 1024 entries = 64 MiB at most.
pub const IN_CAPSULE_MAX: u32 = 64 * 1024;
/// IOCCSZ counts the capsule in 16-byte units.
pub const IN_CAPSULE_UNIT: u32 = 16;
/// MDTS is a power of two of CAP.MPSMIN (4 KiB) pages.
pub const IO_SIZE_MIN: u32 = 4096;
/// Largest command: each holds one contiguous buffer of its length from
/// the poll group's budget while its data is in flight.
pub const IO_SIZE_MAX: u32 = 1024 * 1024;
/// Smallest buffer granule: the smallest block size, so one block never
/// costs more than one unit.
pub const IO_UNIT_MIN: u32 = 512;
/// Most buffer memory one poll group (reactor) may hold for R2T and read
/// data.
pub const BUFFER_BUDGET_MAX: u64 = 1024 * 1024 * 1024;
/// Linux's SO_PRIORITY range without CAP_NET_ADMIN is 0..=6, with it any
/// value; SPDK refuses above 16, and so do we.
pub const SOCK_PRIORITY_MAX: u32 = 16;
/// Keep Alive Support granularity (Identify KAS) in 100 ms units: 1 s.
pub const KAS_DEFAULT: u32 = 10;
/// Smallest honoured KATO: below the KAS granularity a timeout cannot be
/// kept, so shorter ones are raised to it (as SPDK's `min_kato`).
pub const MIN_KATO_DEFAULT: u32 = KAS_DEFAULT * 100;

/// Options in force for new connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportOpts {
    /// I/O queue entries (CAP.MQES + 1, MAXCMD).
    pub max_queue_depth: u32,
    /// Admin queue entries (and the discovery log's ASQSZ).
    pub max_aq_depth: u32,
    /// I/O queues per controller (Number of Queues grants at most this).
    pub max_io_qpairs_per_ctrlr: u32,
    /// In-capsule data on I/O queues (IOCCSZ * 16 - 64).
    pub in_capsule_data_size: u32,
    /// Largest command (MDTS) and, as in SPDK, largest H2CData PDU
    /// (ICResp MAXH2CDATA).
    pub max_io_size: u32,
    /// Granule of the buffer budget: a command's data buffer costs its
    /// length rounded up to whole units (SPDK's pool buffers).
    pub io_unit_size: u32,
    /// Units of the buffer budget of each poll group: requests beyond it
    /// wait for buffers (SPDK's shared data buffer pool).
    pub num_shared_buffers: u32,
    /// Complete reads by C2HData SUCCESS where the host allows it (SQ flow
    /// control disabled).
    pub c2h_success: bool,
    /// SO_PRIORITY of accepted sockets (0 leaves the default).
    pub sock_priority: u32,
    /// Identify KAS (100 ms units).
    pub kas: u32,
    /// KATO floor in ms.
    pub min_kato: u32,
    /// How long an Abort may wait for its command (Pollux answers Abort at
    /// once, so it never waits).
    pub abort_timeout_sec: u32,
    /// ONCS bits hidden from hosts (`masked_oncs`).
    pub masked_oncs: u16,
    /// FUSES bits hidden from hosts, and their fused operations refused
    /// (`masked_fuses`).
    pub masked_fuses: u16,
    /// DIF insert/strip: vacuous, no namespace carries protection
    /// information.
    pub dif_insert_or_strip: bool,
}

impl Default for TransportOpts {
    fn default() -> Self {
        TransportOpts {
            max_queue_depth: super::MAX_QUEUE_DEPTH,
            max_aq_depth: super::ADMIN_QUEUE_DEPTH,
            max_io_qpairs_per_ctrlr: u32::from(super::MAX_IO_QUEUES),
            in_capsule_data_size: super::IN_CAPSULE_DATA,
            max_io_size: super::MDTS_BYTES,
            io_unit_size: super::MAXH2CDATA,
            num_shared_buffers: (super::BUFFER_BUDGET_PER_REACTOR / u64::from(super::MAXH2CDATA))
                as u32,
            c2h_success: true,
            sock_priority: 0,
            kas: KAS_DEFAULT,
            min_kato: MIN_KATO_DEFAULT,
            abort_timeout_sec: 1,
            masked_oncs: 0,
            masked_fuses: 0,
            dif_insert_or_strip: false,
        }
    }
}

/// An option outside Pollux's bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {value} {why}")]
pub struct OptsError {
    /// The option, by its SPDK name.
    pub param: &'static str,
    /// The value asked for.
    pub value: u64,
    /// The bound it breaks.
    pub why: String,
}

fn range(param: &'static str, value: u64, min: u64, max: u64) -> Result<(), OptsError> {
    if value < min || value > max {
        return Err(OptsError {
            param,
            value,
            why: format!("is outside {min}..={max}"),
        });
    }
    Ok(())
}

impl TransportOpts {
    /// Checks every bound, adjusting `io_unit_size` down to `max_io_size`
    /// (a unit larger than any command buys nothing; SPDK likewise uses one
    /// buffer per command then).
    pub fn validate(&mut self) -> Result<(), OptsError> {
        let qd = (u64::from(QUEUE_DEPTH_MIN), u64::from(QUEUE_DEPTH_MAX));
        range("max_queue_depth", self.max_queue_depth.into(), qd.0, qd.1)?;
        range("max_aq_depth", self.max_aq_depth.into(), qd.0, qd.1)?;
        range(
            "max_io_qpairs_per_ctrlr",
            self.max_io_qpairs_per_ctrlr.into(),
            1,
            IO_QPAIRS_MAX.into(),
        )?;
        range(
            "max_io_size",
            self.max_io_size.into(),
            IO_SIZE_MIN.into(),
            IO_SIZE_MAX.into(),
        )?;
        if !self.max_io_size.is_power_of_two() {
            return Err(OptsError {
                param: "max_io_size",
                value: self.max_io_size.into(),
                why: "is not a power of two (MDTS is a power of two of 4 KiB pages)".into(),
            });
        }
        let icd_max = IN_CAPSULE_MAX.min(self.max_io_size);
        range(
            "in_capsule_data_size",
            self.in_capsule_data_size.into(),
            0,
            icd_max.into(),
        )?;
        if self.in_capsule_data_size % IN_CAPSULE_UNIT != 0 {
            return Err(OptsError {
                param: "in_capsule_data_size",
                value: self.in_capsule_data_size.into(),
                why: format!("is not a multiple of {IN_CAPSULE_UNIT} (IOCCSZ is in 16-byte units)"),
            });
        }
        range(
            "io_unit_size",
            self.io_unit_size.into(),
            IO_UNIT_MIN.into(),
            u64::from(u32::MAX),
        )?;
        self.io_unit_size = self.io_unit_size.min(self.max_io_size);
        let unit = u64::from(self.io_unit_size);
        // One command of max_io_size must fit, or it would wait forever.
        let min_bufs = u64::from(self.max_io_size).div_ceil(unit);
        range(
            "num_shared_buffers",
            self.num_shared_buffers.into(),
            min_bufs,
            BUFFER_BUDGET_MAX / unit,
        )
        .map_err(|mut e| {
            e.why = format!(
                "{} (at least one max_io_size command of {}-byte units, at most {} MiB per poll group)",
                e.why,
                unit,
                BUFFER_BUDGET_MAX >> 20
            );
            e
        })?;
        range(
            "sock_priority",
            self.sock_priority.into(),
            0,
            SOCK_PRIORITY_MAX.into(),
        )?;
        range("kas", self.kas.into(), 1, u64::from(u16::MAX))?;
        range("min_kato", self.min_kato.into(), 1, u64::from(u32::MAX))?;
        Ok(())
    }

    /// MDTS: max_io_size as a power of two of 4 KiB pages.
    pub fn mdts(&self) -> u8 {
        (self.max_io_size / IO_SIZE_MIN).trailing_zeros() as u8
    }

    /// ICResp MAXH2CDATA: the largest command, as SPDK advertises, so a
    /// host sends each R2T's data in one PDU.
    pub fn maxh2cdata(&self) -> u32 {
        self.max_io_size
    }

    /// Bytes of the buffer budget of each poll group.
    pub fn buffer_budget(&self) -> u64 {
        u64::from(self.num_shared_buffers) * u64::from(self.io_unit_size)
    }

    /// What a data buffer of `len` bytes costs the budget: whole units.
    pub fn buffer_charge(&self, len: u32) -> u32 {
        let unit = self.io_unit_size.max(1);
        len.div_ceil(unit).saturating_mul(unit)
    }

    /// Identify IOCCSZ: SQE plus in-capsule data, in 16-byte units.
    pub fn ioccsz(&self) -> u32 {
        (64 + self.in_capsule_data_size) / IN_CAPSULE_UNIT
    }

    /// The KATO in force for a host's request: 0 stays off, anything else
    /// is at least `min_kato`.
    pub fn kato(&self, requested_ms: u32) -> u32 {
        if requested_ms == 0 {
            0
        } else {
            requested_ms.max(self.min_kato)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_old_limits() {
        let mut o = TransportOpts::default();
        let before = o.clone();
        o.validate().unwrap();
        assert_eq!(o, before);
        assert_eq!(o.mdts(), super::super::MDTS);
        assert_eq!(o.buffer_budget(), super::super::BUFFER_BUDGET_PER_REACTOR);
        assert_eq!(o.ioccsz() * 16 - 64, super::super::IN_CAPSULE_DATA);
    }

    #[test]
    fn bounds_name_the_option_and_the_bound() {
        let bad = |f: &dyn Fn(&mut TransportOpts)| {
            let mut o = TransportOpts::default();
            f(&mut o);
            o.validate().unwrap_err()
        };
        let e = bad(&|o| o.max_queue_depth = 1);
        assert_eq!(e.param, "max_queue_depth");
        assert!(e.to_string().contains("2..=1024"), "{e}");
        assert_eq!(bad(&|o| o.max_queue_depth = 4096).param, "max_queue_depth");
        assert_eq!(bad(&|o| o.max_aq_depth = 1).param, "max_aq_depth");
        assert_eq!(
            bad(&|o| o.max_io_qpairs_per_ctrlr = 0).param,
            "max_io_qpairs_per_ctrlr"
        );
        assert_eq!(bad(&|o| o.max_io_size = 3 * 4096).param, "max_io_size");
        assert_eq!(bad(&|o| o.max_io_size = 2048).param, "max_io_size");
        assert_eq!(bad(&|o| o.max_io_size = 4 << 20).param, "max_io_size");
        let e = bad(&|o| o.in_capsule_data_size = 8200);
        assert!(e.to_string().contains("16"), "{e}");
        // Larger than the largest command.
        let e = bad(&|o| {
            o.max_io_size = 16384;
            o.in_capsule_data_size = 32768;
        });
        assert_eq!(e.param, "in_capsule_data_size");
        assert_eq!(bad(&|o| o.io_unit_size = 100).param, "io_unit_size");
        // Not even one largest command fits.
        let e = bad(&|o| {
            o.io_unit_size = 4096;
            o.num_shared_buffers = 31;
        });
        assert_eq!(e.param, "num_shared_buffers");
        assert!(e.to_string().contains("32..="), "{e}");
        assert_eq!(
            bad(&|o| o.num_shared_buffers = u32::MAX).param,
            "num_shared_buffers"
        );
        assert_eq!(bad(&|o| o.sock_priority = 17).param, "sock_priority");
        assert_eq!(bad(&|o| o.kas = 0).param, "kas");
    }

    #[test]
    fn derived_limits() {
        let mut o = TransportOpts {
            max_io_size: 65536,
            io_unit_size: 131072,
            in_capsule_data_size: 4096,
            num_shared_buffers: 2,
            ..TransportOpts::default()
        };
        o.validate().unwrap();
        // A unit beyond the largest command is cut to it.
        assert_eq!(o.io_unit_size, 65536);
        assert_eq!(o.mdts(), 4);
        assert_eq!(o.maxh2cdata(), 65536);
        assert_eq!(o.ioccsz(), (64 + 4096) / 16);
        assert_eq!(o.buffer_budget(), 131072);
        o.io_unit_size = 8192;
        assert_eq!(o.buffer_charge(1), 8192);
        assert_eq!(o.buffer_charge(8192), 8192);
        assert_eq!(o.buffer_charge(8193), 16384);
        assert_eq!(o.kato(0), 0);
        assert_eq!(o.kato(10), MIN_KATO_DEFAULT);
        assert_eq!(o.kato(30_000), 30_000);
    }
}

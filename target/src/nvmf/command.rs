//! What a command handler tells the transport to do next. The admin and
//! I/O command sets (`admin`, `io_cmd`) run on a request and its
//! controller and return one of these; the NVMe/TCP queue pair (`conn`)
//! turns it into the request's next state, so a later transport can drive
//! the same handlers with its own state machine.

/// The next step for an executed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: complete it now with the request's status and dwords.
    Complete,
    /// Graph I/O was submitted (`Request::outstanding` of them); the
    /// command completes when the last one does.
    Submitted,
    /// An Asynchronous Event Request: hold it until the controller has an
    /// event (`admin::complete_aer`).
    HoldAer,
    /// Complete it, then close the queue pair once the response is on its
    /// way (Disconnect).
    CompleteAndClose,
}

/// A controller of a one-namespace subsystem over a RAM disk, on a
/// one-reactor runtime, for calling the command sets without a
/// connection.
#[cfg(test)]
pub(super) mod bench {
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use pollux_graph::AlignedBuf;
    use pollux_nvme::fabrics::Cc;
    use pollux_nvme::Sqe;
    use pollux_poller::Reactor;

    use crate::config::NvmfSubsystemConfig;
    use crate::nvmf::controller::{Controller, CtrlKind};
    use crate::nvmf::request::Request;
    use crate::nvmf::subsystem::Subsystem;
    use crate::nvmf::transport::TransportOpts;
    use crate::nvmf::Shared;
    use crate::testing::{loopback_subsystem, Reactors, RAM_BLOCK_SIZE};

    /// Blocks of namespace 1 ([`RAM_BLOCK_SIZE`] each).
    pub const BLOCKS: u64 = 2048;
    /// Its NQN.
    pub const NQN: &str = "nqn.2024-11.dev.pollux:bench";

    pub struct Bench {
        // First: the graph and reactors shut down once `Drop::drop` removed
        // the subsystem's roots, before the subsystem itself goes.
        reactors: Reactors,
        pub shared: Arc<Shared>,
        pub ctrl: Arc<Controller>,
    }

    impl Bench {
        /// `enabled`: CC.EN written, so admin commands beyond Fabrics are
        /// accepted.
        pub fn new(enabled: bool) -> Bench {
            let reactors = Reactors::adaptive(vec![0]);
            reactors.add_ram("ram0", BLOCKS * u64::from(RAM_BLOCK_SIZE));
            let graph = &reactors.graph;
            // Built directly, never listened on.
            let cfg = NvmfSubsystemConfig {
                listen: vec![],
                ..loopback_subsystem(NQN, "ram0")
            };
            let sub = Arc::new(Subsystem::build(&cfg, graph, Vec::new()).unwrap());
            let shared = Arc::new(Shared::new(graph, TransportOpts::default()));
            shared.subsystems.lock().unwrap().push(sub.clone());
            let ctrl = shared
                .controllers()
                .create(
                    CtrlKind::Io(sub),
                    "nqn.host".into(),
                    [7; 16],
                    0,
                    Arc::new(TransportOpts::default()),
                )
                .unwrap();
            if enabled {
                ctrl.write_cc(Cc(1));
            }
            Bench {
                reactors,
                shared,
                ctrl,
            }
        }

        /// Runs `f` on the reactor and returns what it returns.
        pub fn run<T: Send + 'static>(
            &self,
            f: impl FnOnce(&Reactor, &Shared, &Controller) -> T + Send + 'static,
        ) -> T {
            let (tx, rx) = mpsc::channel();
            let (shared, ctrl) = (self.shared.clone(), self.ctrl.clone());
            self.reactors.runtime().handle().send_blocking(0, move |r| {
                let _ = tx.send(f(r, &shared, &ctrl));
            });
            rx.recv_timeout(Duration::from_secs(10)).unwrap()
        }
    }

    impl Drop for Bench {
        fn drop(&mut self) {
            for s in self.shared.subsystem_list() {
                s.remove_roots(&self.reactors.graph);
            }
        }
    }

    /// A request for `sqe` moving `len` bytes, with a zeroed buffer of
    /// that size (or none for 0), as the driver hands it to a handler.
    pub fn request(sqe: Sqe, len: usize) -> Request {
        let mut req = Request::free();
        req.sqe = sqe;
        req.xfer_len = len as u32;
        if len > 0 {
            req.buf = Some(AlignedBuf::zeroed(len));
        }
        req
    }
}

//! How far a queue pair got, as one value: its controller and queue ID
//! exist exactly in the phases that have them, so "an I/O queue without a
//! controller" or "Connect done but no QID" cannot be represented.
//!
//! ```text
//! AwaitIcReq → AwaitConnect → Admin(ctrl) | Io { ctrl, qid } → Closing
//! ```

use std::sync::Arc;

use super::controller::Controller;

/// The phase of one queue pair.
#[derive(Clone, Debug)]
pub enum QueuePhase {
    /// Accepted; waiting for ICReq.
    AwaitIcReq,
    /// IC exchange done; the next command must be Connect.
    AwaitConnect,
    /// The admin queue (QID 0) of its controller.
    Admin(Arc<Controller>),
    /// I/O queue `qid` (1 and up) of its controller.
    Io {
        /// The controller the admin queue created.
        ctrl: Arc<Controller>,
        /// The queue's ID.
        qid: u16,
    },
    /// Torn down: the controller is released, the socket shut; `qid` is
    /// what the queue was (for the close log).
    Closing {
        /// The queue ID it had, if it got that far.
        qid: Option<u16>,
    },
}

impl QueuePhase {
    /// The queue ID once connected (0 = admin queue).
    #[inline]
    pub fn qid(&self) -> Option<u16> {
        match self {
            QueuePhase::Admin(_) => Some(0),
            QueuePhase::Io { qid, .. } => Some(*qid),
            QueuePhase::Closing { qid } => *qid,
            QueuePhase::AwaitIcReq | QueuePhase::AwaitConnect => None,
        }
    }

    /// The controller of a connected queue.
    #[inline]
    pub fn ctrl(&self) -> Option<&Arc<Controller>> {
        match self {
            QueuePhase::Admin(c) | QueuePhase::Io { ctrl: c, .. } => Some(c),
            _ => None,
        }
    }

    /// Whether this is a connected I/O queue.
    #[inline]
    pub fn is_io(&self) -> bool {
        matches!(self, QueuePhase::Io { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvmf::controller::{ControllerTable, CtrlKind};
    use crate::nvmf::transport::TransportOpts;

    #[test]
    fn qid_and_controller_exist_only_once_connected() {
        let mut table = ControllerTable::default();
        let ctrl = table
            .create(
                CtrlKind::Discovery,
                String::new(),
                [0; 16],
                0,
                Arc::new(TransportOpts::default()),
            )
            .unwrap();
        for p in [QueuePhase::AwaitIcReq, QueuePhase::AwaitConnect] {
            assert_eq!(p.qid(), None);
            assert!(p.ctrl().is_none());
            assert!(!p.is_io());
        }
        let admin = QueuePhase::Admin(ctrl.clone());
        assert_eq!(admin.qid(), Some(0));
        assert_eq!(admin.ctrl().unwrap().cntlid, ctrl.cntlid);
        assert!(!admin.is_io());
        let io = QueuePhase::Io {
            ctrl: ctrl.clone(),
            qid: 3,
        };
        assert_eq!(io.qid(), Some(3));
        assert!(io.is_io());
        let closing = QueuePhase::Closing { qid: Some(3) };
        assert_eq!(closing.qid(), Some(3));
        assert!(
            closing.ctrl().is_none(),
            "a closing queue holds no controller"
        );
    }
}

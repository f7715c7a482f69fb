//! The crate's error type. Every message names the operation and this process's rank, because
//! in a multi-process job the first question about a failure is "which rank, doing what".

/// Errors from setting up a process group or running a collective.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// Group setup or a collective failed inside libtorch: a peer died or hung past the timeout,
    /// the rendezvous could not complete, or c10d rejected the tensors. `message` is libtorch's
    /// own text (without its C++ backtrace).
    #[error("{op} failed on rank {rank} (world size {world_size}): {message}")]
    Op {
        op: &'static str,
        rank: usize,
        world_size: usize,
        message: String,
    },
    /// A torchrun variable (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`)
    /// that is missing or malformed.
    #[error("environment variable {var}: {reason}")]
    Env { var: &'static str, reason: String },
}

impl DistError {
    /// The failed operation's name (`"all_reduce_sum"`, `"ProcessGroup::new"`, ...), or `None`
    /// for environment errors.
    pub fn op(&self) -> Option<&'static str> {
        match self {
            DistError::Op { op, .. } => Some(op),
            DistError::Env { .. } => None,
        }
    }
}

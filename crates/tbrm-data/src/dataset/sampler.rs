//! The batch order: a seeded permutation per epoch, and a [`Sampler`] whose position can be
//! saved with a checkpoint and resumed.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// Position in the data stream: which shuffled epoch and how far into it. Saving this with a
/// checkpoint and passing it to [`Sampler::resume`] continues with exactly the same batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataOrder {
    pub seed: u64,
    pub epoch: u64,
    /// Index into the epoch's permutation of the next item to hand out.
    pub cursor: usize,
}

/// The order of `n` items in `epoch`: a ChaCha8 stream per epoch (seeded by `seed`), so an
/// epoch's permutation depends only on `(seed, epoch)` and is the same on every platform.
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    idx.shuffle(&mut rng);
    idx
}

/// Yields batches of indices into a dataset of `n` items, reshuffling every epoch. A batch that
/// runs past the end of an epoch continues into the next one, so every item is used once per
/// epoch and no batch is short.
#[derive(Debug, Clone)]
pub struct Sampler {
    n: usize,
    batch_size: usize,
    shuffle: bool,
    order: DataOrder,
    perm: Vec<usize>,
}

impl Sampler {
    /// Starts at epoch 0. With `shuffle == false` every epoch is `0..n` in order.
    pub fn new(n: usize, batch_size: usize, seed: u64, shuffle: bool) -> Result<Self, DataError> {
        Self::resume(
            n,
            batch_size,
            shuffle,
            DataOrder {
                seed,
                epoch: 0,
                cursor: 0,
            },
        )
    }

    /// Continues from a saved position.
    pub fn resume(
        n: usize,
        batch_size: usize,
        shuffle: bool,
        order: DataOrder,
    ) -> Result<Self, DataError> {
        if n == 0 {
            return Err(DataError::InvalidArgument(
                "cannot sample batches from an empty dataset".into(),
            ));
        }
        if batch_size == 0 {
            return Err(DataError::InvalidArgument(
                "batch size must be at least 1".into(),
            ));
        }
        if order.cursor >= n {
            return Err(DataError::InvalidArgument(format!(
                "saved data position (epoch {}, cursor {}) does not fit a dataset of {n} rows; \
                 was the dataset or a filter changed?",
                order.epoch, order.cursor
            )));
        }
        let perm = Self::make_perm(n, shuffle, order.seed, order.epoch);
        Ok(Self {
            n,
            batch_size,
            shuffle,
            order,
            perm,
        })
    }

    fn make_perm(n: usize, shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
        if shuffle {
            epoch_permutation(n, seed, epoch)
        } else {
            (0..n).collect()
        }
    }

    /// The next `batch_size` indices.
    pub fn next_batch(&mut self) -> Vec<usize> {
        let mut batch = Vec::with_capacity(self.batch_size);
        while batch.len() < self.batch_size {
            batch.push(self.perm[self.order.cursor]);
            self.order.cursor += 1;
            if self.order.cursor == self.n {
                self.order.epoch += 1;
                self.order.cursor = 0;
                self.perm =
                    Self::make_perm(self.n, self.shuffle, self.order.seed, self.order.epoch);
            }
        }
        batch
    }

    /// Where the next batch starts; save it to resume.
    pub fn position(&self) -> DataOrder {
        self.order
    }

    pub fn epoch(&self) -> u64 {
        self.order.epoch
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
}

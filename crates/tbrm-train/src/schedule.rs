//! Learning-rate schedule: linear warm-up, then constant or cosine decay.
//!
//! Warm-up starts at `lr / warmup_steps` rather than 0 so that no step is wasted on a zero
//! learning rate. The cosine form is SGDR's (Loshchilov & Hutter, arXiv:1608.03983) without
//! restarts, decaying from `lr` to `min_lr_ratio * lr` over the steps after warm-up.

use crate::config::{OptimSection, ScheduleKind};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub kind: ScheduleKind,
    pub min_lr_ratio: f64,
}

impl LrSchedule {
    pub fn new(lr: f64, optim: &OptimSection, total_steps: u64) -> Self {
        Self {
            lr,
            warmup_steps: optim.warmup_steps,
            total_steps,
            kind: optim.schedule,
            min_lr_ratio: optim.min_lr_ratio,
        }
    }

    /// Learning rate of training step `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.kind {
            ScheduleKind::Constant => self.lr,
            ScheduleKind::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
                let floor = self.lr * self.min_lr_ratio;
                floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind, warmup: u64, total: u64, min: f64) -> LrSchedule {
        LrSchedule {
            lr: 1.0,
            warmup_steps: warmup,
            total_steps: total,
            kind,
            min_lr_ratio: min,
        }
    }

    #[test]
    fn warmup_is_linear_and_never_zero() {
        let s = sched(ScheduleKind::Constant, 4, 10, 0.0);
        let lrs: Vec<f64> = (0..6).map(|t| s.at(t)).collect();
        assert_eq!(lrs, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn cosine_decays_from_lr_to_floor() {
        let s = sched(ScheduleKind::Cosine, 2, 12, 0.1);
        assert_eq!(s.at(1), 1.0);
        assert!((s.at(2) - 1.0).abs() < 1e-12);
        // Halfway through the decay: the mean of lr and the floor.
        assert!((s.at(7) - 0.55).abs() < 1e-12, "{}", s.at(7));
        assert!((s.at(12) - 0.1).abs() < 1e-12);
        assert!((s.at(100) - 0.1).abs() < 1e-12);
        let mut prev = f64::INFINITY;
        for t in 2..=12 {
            assert!(s.at(t) <= prev);
            prev = s.at(t);
        }
    }
}

//! Tests of the replicated AdamW: libtorch parity, exact save/load, clipping, offload,
//! float32 accumulation.

use super::*;
use std::collections::HashMap;
use tch::nn::OptimizerConfig;

fn quadratic_loss(w: &Tensor, target: &Tensor) -> Tensor {
    (w - target).square().sum(Kind::Float) + w.sum(Kind::Float) * 0.1
}

fn make_param(seed: i64) -> (nn::VarStore, Tensor) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().randn("w", &[3, 4], 0.0, 1.0);
    (vs, w)
}

#[test]
fn matches_libtorch_adamw() {
    let target = Tensor::from_slice(&[0.5f32; 12]).reshape([3, 4]);
    let (vs_a, wa) = make_param(3);
    let (vs_b, wb) = make_param(3);
    let cfg = AdamWConfig {
        beta1: 0.8,
        beta2: 0.95,
        eps: 1e-6,
        weight_decay: 0.1,
    };
    let mut ours = AdamW::for_var_store(&vs_a, cfg);
    let mut theirs = nn::AdamW {
        beta1: 0.8,
        beta2: 0.95,
        wd: 0.1,
        eps: 1e-6,
        amsgrad: false,
    }
    .build(&vs_b, 0.05)
    .unwrap();
    for _ in 0..6 {
        ours.zero_grad();
        quadratic_loss(&wa, &target).backward();
        ours.step(0.05);
        theirs.zero_grad();
        quadratic_loss(&wb, &target).backward();
        theirs.step();
    }
    let diff = (&wa - &wb).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "max |ours - libtorch| = {diff}");
    let moved = (&wa - make_param(3).1).abs().max().double_value(&[]);
    assert!(
        moved > 0.1,
        "the parameters should have moved, moved {moved}"
    );
}

#[test]
fn save_load_continues_bit_identically() {
    let target = Tensor::from_slice(&[-1.0f32; 12]).reshape([3, 4]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opt.safetensors");
    let run = |steps: usize, opt: &mut AdamW, w: &Tensor| {
        for _ in 0..steps {
            opt.zero_grad();
            quadratic_loss(w, &target).backward();
            opt.step(0.01);
        }
    };
    let (vs_a, wa) = make_param(5);
    let mut a = AdamW::for_var_store(&vs_a, AdamWConfig::default());
    run(3, &mut a, &wa);
    a.save(&path).unwrap();
    run(4, &mut a, &wa);

    let (vs_b, wb) = make_param(5);
    run(
        3,
        &mut AdamW::for_var_store(&vs_b, AdamWConfig::default()),
        &wb,
    );
    let mut b = AdamW::for_var_store(&vs_b, AdamWConfig::default());
    b.load(&path).unwrap();
    assert_eq!(b.steps(), 3);
    run(4, &mut b, &wb);
    assert!(wa.equal(&wb), "resumed optimizer diverged");

    let (vs_c, _) = make_param(5);
    let _ = vs_c.root().zeros("extra", &[2]);
    let err = AdamW::for_var_store(&vs_c, AdamWConfig::default())
        .load(&path)
        .unwrap_err();
    assert!(err.to_string().contains("m.extra"), "{err}");
}

#[test]
fn half_precision_params_get_float32_master_weights() {
    let w = Tensor::ones([4], (Kind::BFloat16, Device::Cpu)).set_requires_grad(true);
    let mut opt = AdamW::new(
        vec![("w".into(), w.shallow_clone())],
        AdamWConfig::default(),
    );
    for _ in 0..10 {
        opt.zero_grad();
        w.to_kind(Kind::Float).sum(Kind::Float).backward();
        // 1e-4 per step is far below bf16's resolution at 1.0 (2^-7): only the master moves.
        opt.step(1e-4);
    }
    let master = &opt.slots[0].master.as_ref().unwrap();
    assert!((master.double_value(&[0]) - (1.0 - 1e-3)).abs() < 1e-5);
    assert_eq!(w.kind(), Kind::BFloat16);
}

#[test]
fn clipping_scales_to_max_norm_and_reports_the_original() {
    let (vs, w) = make_param(1);
    let mut opt = AdamW::for_var_store(&vs, AdamWConfig::default());
    (&w * 10.0).sum(Kind::Float).backward();
    // 12 gradients of 10: norm sqrt(1200).
    let norm = opt.clip_grad_norm(1.0);
    assert!((norm - 1200f64.sqrt()).abs() < 1e-4, "{norm}");
    let after = opt.clip_grad_norm(0.0);
    assert!((after - 1.0).abs() < 1e-4, "{after}");
    opt.zero_grad();
    (&w * f64::NAN).sum(Kind::Float).backward();
    assert!(!opt.clip_grad_norm(1.0).is_finite());
}

#[test]
fn free_clip_grad_norm_works_on_param_grads() {
    let (_vs, w) = make_param(1);
    (&w * 10.0).sum(Kind::Float).backward();
    let norm = clip_grad_norm(&[w.shallow_clone()], 1.0);
    assert!((norm - 1200f64.sqrt()).abs() < 1e-4, "{norm}");
    let after = clip_grad_norm(&[w.shallow_clone()], 0.0);
    assert!((after - 1.0).abs() < 1e-4, "{after}");
}

fn bf16_param(values: &[f32]) -> Tensor {
    Tensor::from_slice(values)
        .to_kind(Kind::BFloat16)
        .set_requires_grad(true)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

#[test]
fn bf16_gradients_accumulate_in_float32() {
    let w = bf16_param(&[1.0; 3]);
    let mut opt = AdamW::new(
        vec![("w".into(), w.shallow_clone())],
        AdamWConfig::default(),
    );
    // 1 + 1000 * 1e-3: each 1e-3 is below half of bf16's spacing at 1 (2^-7), so a bf16
    // sum would stay at 1.
    let tiny = Tensor::from_slice(&[1e-3f32; 3]).to_kind(Kind::BFloat16);
    let tiny_f32 = tiny.to_kind(Kind::Float).double_value(&[0]);
    let want = 1.0 + 1000.0 * tiny_f32;
    opt.add_grad("w", &Tensor::ones([3], (Kind::BFloat16, Device::Cpu)))
        .unwrap();
    for _ in 0..1000 {
        opt.add_grad("w", &tiny).unwrap();
    }
    let g = opt.grad("w").unwrap();
    assert_eq!(g.kind(), Kind::Float);
    assert!(max_abs_diff(&g, &Tensor::full([3], want, (Kind::Float, Device::Cpu))) < 1e-4);

    // The same through backward(): each bf16 `.grad` is absorbed into the float32 sum.
    opt.zero_grad();
    assert!(opt.grad("w").is_none());
    (&w * 1.0).sum(Kind::Float).backward();
    opt.absorb_param_grads();
    for _ in 0..1000 {
        (&w * tiny_f32).sum(Kind::Float).backward();
        opt.absorb_param_grads();
    }
    let g = opt.grad("w").unwrap();
    assert!(
        max_abs_diff(&g, &Tensor::full([3], want, (Kind::Float, Device::Cpu))) < 1e-4,
        "{g}"
    );
}

#[test]
fn added_and_backward_gradients_sum() {
    let (vs, w) = make_param(2);
    let mut opt = AdamW::for_var_store(&vs, AdamWConfig::default());
    let g1 = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
    let g2 = Tensor::randn([3, 4], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
    (&w * &g1).sum(Kind::Float).backward();
    let i = opt.index_of("w").unwrap();
    opt.add_grad_at(i, &g2);
    // Not yet absorbed: only g2 is in the accumulator.
    assert!(opt.grad("w").unwrap().equal(&g2.to_kind(Kind::Float)));
    opt.absorb_param_grads();
    let want = &g1 + g2.to_kind(Kind::Float);
    assert!(max_abs_diff(&opt.grad("w").unwrap(), &want) < 1e-6);
    assert_eq!(w.grad().abs().max().double_value(&[]), 0.0, ".grad zeroed");
    // Absorbing again adds nothing; another backward adds g1 once more.
    opt.absorb_param_grads();
    (&w * &g1).sum(Kind::Float).backward();
    opt.absorb_param_grads();
    let want = want + &g1;
    assert!(max_abs_diff(&opt.grad("w").unwrap(), &want) < 1e-6);
    // zero_grad clears; the next add starts from zero with the same buffer.
    let buffer = opt.slots[i].acc.as_ref().unwrap().data_ptr();
    opt.zero_grad();
    assert!(opt.grad("w").is_none());
    opt.add_grad("w", &g1).unwrap();
    assert!(opt.grad("w").unwrap().equal(&g1));
    assert_eq!(opt.slots[i].acc.as_ref().unwrap().data_ptr(), buffer);
}

#[test]
fn step_uses_accumulated_gradients_and_skips_params_without_one() {
    let a = Tensor::ones([4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let b = Tensor::ones([4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let cfg = AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(
        vec![
            ("a".into(), a.shallow_clone()),
            ("b".into(), b.shallow_clone()),
        ],
        cfg,
    );
    opt.add_grad("a", &Tensor::ones([4], (Kind::Float, Device::Cpu)))
        .unwrap();
    opt.step(0.1);
    // First Adam step moves by lr * sign(g) (plus decay); b got no gradient.
    let moved = 1.0 - a.double_value(&[0]);
    assert!((moved - (0.1 + 0.01)).abs() < 1e-5, "{moved}");
    assert!(b.equal(&Tensor::ones([4], (Kind::Float, Device::Cpu))));
}

/// Runs `steps` AdamW steps on a quadratic loss from the same start, with or without
/// offload; returns the parameter and the optimizer.
fn run_quadratic(kind: Kind, offload: bool, steps: usize) -> (Tensor, AdamW) {
    let device = Device::cuda_if_available();
    tch::manual_seed(11);
    let w = Tensor::randn([5, 3], (Kind::Float, Device::Cpu))
        .to_kind(kind)
        .to_device(device)
        .set_requires_grad(true);
    let target = Tensor::full([5, 3], 0.25, (Kind::Float, device));
    let cfg = AdamWConfig {
        weight_decay: 0.05,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(vec![("w".into(), w.shallow_clone())], cfg).with_offload(offload);
    for _ in 0..steps {
        opt.zero_grad();
        quadratic_loss(&w.to_kind(Kind::Float), &target).backward();
        opt.clip_grad_norm(1.0);
        opt.step(0.01);
    }
    (w, opt)
}

#[test]
fn offload_gives_the_same_weights_with_state_on_the_host() {
    for kind in [Kind::Float, Kind::BFloat16] {
        let (w_dev, opt_dev) = run_quadratic(kind, false, 5);
        let (w_off, opt_off) = run_quadratic(kind, true, 5);
        assert!(!opt_dev.offloaded() && opt_off.offloaded());
        assert_eq!(w_off.kind(), kind);
        let start = run_quadratic(kind, false, 0).0;
        assert!(
            max_abs_diff(&w_dev, &start) > 1e-3,
            "{kind:?}: did not move"
        );
        if w_dev.device() == Device::Cpu {
            assert!(w_dev.equal(&w_off), "{kind:?}: offload changed the weights");
        } else {
            assert!(max_abs_diff(&w_dev, &w_off) < 1e-5, "{kind:?}");
        }
        let s = &opt_off.slots[0];
        let master = s.master.as_ref().expect("offloaded master");
        for t in [&s.m, &s.v, master] {
            assert_eq!(t.device(), Device::Cpu);
            assert_eq!(t.kind(), Kind::Float);
        }
        assert_eq!(s.acc.as_ref().unwrap().device(), w_off.device());
        assert!(max_abs_diff(master, &w_off) < 1e-2);
        // Device memory holds only the accumulator; the host holds m, v and the master.
        let n = 15 * 4;
        let (dev, host) = opt_off.state_bytes();
        if w_off.device() == Device::Cpu {
            assert_eq!((dev, host), (0, 4 * n), "{kind:?}");
        } else {
            assert_eq!((dev, host), (n, 3 * n), "{kind:?}");
        }
        let (dev, host) = opt_dev.state_bytes();
        // Without offload: m, v, accumulator, and the master for bf16 only.
        let want = if kind == Kind::Float { 3 * n } else { 4 * n };
        assert_eq!(dev + host, want, "{kind:?}");
    }
}

#[test]
fn state_saved_with_offload_loads_without_and_back() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [Kind::Float, Kind::BFloat16] {
        for offload_first in [true, false] {
            let path = dir.path().join("opt.safetensors");
            // Uninterrupted: 6 steps.
            let (w_full, _) = run_quadratic(kind, offload_first, 6);
            // 3 steps, save, then a new optimizer of the other mode loads and does 3 more.
            let (w, opt) = run_quadratic(kind, offload_first, 3);
            opt.save(&path).unwrap();
            let names: Vec<String> = Tensor::read_safetensors(&path)
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            assert_eq!(
                names.contains(&"master.w".to_string()),
                kind != Kind::Float,
                "{names:?}"
            );
            let mut resumed = AdamW::new(vec![("w".into(), w.shallow_clone())], opt.cfg)
                .with_offload(!offload_first);
            resumed.load(&path).unwrap();
            assert_eq!(resumed.steps(), 3);
            let target = Tensor::full([5, 3], 0.25, (Kind::Float, w.device()));
            for _ in 0..3 {
                resumed.zero_grad();
                quadratic_loss(&w.to_kind(Kind::Float), &target).backward();
                resumed.clip_grad_norm(1.0);
                resumed.step(0.01);
            }
            if w.device() == Device::Cpu {
                assert!(w.equal(&w_full), "{kind:?} offload first {offload_first}");
            } else {
                assert!(max_abs_diff(&w, &w_full) < 1e-5);
            }
        }
    }
}

#[test]
fn add_grad_errors_name_the_parameter() {
    let (vs, _w) = make_param(1);
    let mut opt = AdamW::for_var_store(&vs, AdamWConfig::default());
    let err = opt
        .add_grad("nope", &Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`nope`"), "{err}");
    let err = opt
        .add_grad("w", &Tensor::zeros([4, 3], (Kind::Float, Device::Cpu)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`w`") && err.contains("[4, 3]"), "{err}");
    let err = opt
        .add_grad("w", &Tensor::zeros([3, 4], (Kind::Int64, Device::Cpu)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`w`") && err.contains("Int64"), "{err}");
    assert!(opt.grad("w").is_none());
    assert_eq!(opt.index_of("nope"), None);
}

#[test]
fn clipping_scales_the_float32_accumulators() {
    let w = bf16_param(&[0.0; 12]);
    let mut opt = AdamW::new(
        vec![("w".into(), w.shallow_clone())],
        AdamWConfig::default(),
    );
    // 10.001 is not a bf16 value: the norm must come from the float32 sum.
    opt.add_grad("w", &Tensor::full([12], 10.001, (Kind::Float, Device::Cpu)))
        .unwrap();
    let norm = opt.clip_grad_norm(1.0);
    let want = 10.001f32 as f64 * 12f64.sqrt();
    assert!((norm - want).abs() < 1e-5, "{norm} vs {want}");
    let g = opt.grad("w").unwrap();
    let after = g.square().sum(Kind::Double).sqrt().double_value(&[]);
    assert!((after - 1.0).abs() < 1e-5, "{after}");
    assert!((opt.clip_grad_norm(0.0) - after).abs() < 1e-12);
}

#[test]
fn save_load_round_trips_state_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opt.safetensors");
    for kind in [Kind::Float, Kind::BFloat16] {
        let (w, opt) = run_quadratic(kind, false, 4);
        opt.save(&path).unwrap();
        let mut back = AdamW::new(vec![("w".into(), w.shallow_clone())], opt.cfg);
        back.load(&path).unwrap();
        assert_eq!(back.steps(), 4);
        let (a, b) = (&opt.slots[0], &back.slots[0]);
        assert!(a.m.equal(&b.m) && a.v.equal(&b.v), "{kind:?}");
        assert_eq!(a.master.is_some(), b.master.is_some());
        if let (Some(x), Some(y)) = (&a.master, &b.master) {
            assert!(x.equal(y), "{kind:?} master");
        }
        // The file is ordinary safetensors: tch's reader sees the same tensors.
        let saved: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(saved["step"].int64_value(&[0]), 4);
        assert!(saved["m.w"].equal(&a.m.to_device(Device::Cpu)));
        assert!(saved["v.w"].equal(&a.v.to_device(Device::Cpu)));
    }
}

#[test]
fn truncated_state_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optimizer.safetensors");
    let (w, opt) = run_quadratic(Kind::BFloat16, false, 2);
    opt.save(&path).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let mut fresh = AdamW::new(vec![("w".into(), w.shallow_clone())], opt.cfg);
    let err = fresh.load(&path).unwrap_err().to_string();
    assert!(
        err.contains("optimizer.safetensors") && err.contains("truncated"),
        "{err}"
    );
    assert_eq!(fresh.steps(), 0);
}

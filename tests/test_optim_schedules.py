"""Learning-rate schedules against torch.optim.lr_scheduler and their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastgd import schedules

torch = pytest.importorskip("torch")


def torch_lrs(make, steps, lr=0.1):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


S = torch.optim.lr_scheduler
CASES = [
    (schedules.step(0.1, 7, 0.5), lambda o: S.StepLR(o, 7, 0.5)),
    (schedules.multistep(0.1, [5, 12, 30], 0.3), lambda o: S.MultiStepLR(o, [5, 12, 30], 0.3)),
    (schedules.exponential(0.1, 0.95), lambda o: S.ExponentialLR(o, 0.95)),
    (schedules.cosine(0.1, 40, min_lr=0.01), lambda o: S.CosineAnnealingLR(o, 40, 0.01)),
    (schedules.one_cycle(0.1, 50), lambda o: S.OneCycleLR(o, 0.1, total_steps=50)),
    (schedules.one_cycle(0.1, 50, pct_start=0.4, anneal="linear", div_factor=10),
     lambda o: S.OneCycleLR(o, 0.1, total_steps=50, pct_start=0.4, anneal_strategy="linear",
                            div_factor=10)),
    (schedules.constant(0.1), lambda o: S.ConstantLR(o, factor=1.0)),
]


@pytest.mark.parametrize("case", CASES, ids=[repr(c[0]) for c in CASES])
def test_matches_torch(case):
    mine, make = case
    steps = 50 if "one_cycle" in repr(mine) else 41
    want = torch_lrs(make, steps)
    np.testing.assert_allclose([mine(s) for s in range(steps)], want, rtol=1e-12, atol=1e-18)


def test_closed_forms_equal_torchs_bit_for_bit():
    """torch's _get_closed_form_lr: cosine as cos(π·s/T), not cos(π·(s/T)), which differed
    in the last bit at 23 of 101 steps (an audit). Stepped, torch's schedulers update the lr
    recursively and drift from these by ~1e-15: test_matches_torch."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    for mine, sched, steps in [
            (schedules.cosine(0.1, 100, 1e-3), S.CosineAnnealingLR(opt, 100, 1e-3), 101),
            (schedules.step(0.1, 7, 0.5), S.StepLR(opt, 7, 0.5), 60),
            (schedules.exponential(0.1, 0.93), S.ExponentialLR(opt, 0.93), 60)]:
        for s in range(steps):
            sched.last_epoch = s
            assert mine(s) == sched._get_closed_form_lr()[0], (mine, s)


def test_numpy_scalars_are_numbers():
    want = schedules.cosine(0.1, 40, min_lr=0.01)
    got = schedules.cosine(np.float32(0.1), 40, min_lr=np.float64(0.01))
    assert [got(t) for t in range(41)] == pytest.approx([want(t) for t in range(41)], rel=1e-7)
    with pytest.raises(ValueError, match="lr must be a number, got True"):
        schedules.constant(True)
    counted = [schedules.step(0.1, np.int64(10)), schedules.multistep(0.1, np.array([5, 10])),
               schedules.cosine(0.1, np.int32(100)), schedules.one_cycle(0.1, np.uint16(50))]
    plain = [schedules.step(0.1, 10), schedules.multistep(0.1, [5, 10]),
             schedules.cosine(0.1, 100), schedules.one_cycle(0.1, 50)]
    for got, want in zip(counted, plain):  # NumPy integers (from a config array) are counts
        assert [got(t) for t in range(60)] == [want(t) for t in range(60)]
    with pytest.raises(ValueError, match="total must be an int >= 1"):
        schedules.cosine(0.1, np.bool_(True))


def test_warmup_then_decay():
    sched = schedules.warmup_cosine(3e-4, warmup=100, total=10_000, min_lr=1e-5)
    assert sched(0) == pytest.approx(3e-6)
    assert sched(99) == pytest.approx(3e-4)
    assert sched(100) == pytest.approx(3e-4)
    mid = 100 + (10_000 - 100) // 2
    assert sched(mid) == pytest.approx((3e-4 + 1e-5) / 2, rel=1e-3)
    assert sched(10_000) == pytest.approx(1e-5) and sched(20_000) == pytest.approx(1e-5)
    lin = schedules.warmup_linear(1.0, warmup=10, total=110)
    assert [lin(s) for s in (0, 4, 9, 10, 60, 110, 200)] == pytest.approx(
        [0.1, 0.5, 1.0, 1.0, 0.5, 0.0, 0.0])
    assert schedules.warmup_cosine(1.0, warmup=0, total=10)(0) == 1.0
    values = [sched(s) for s in range(100, 10_000, 97)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay
    assert schedules.cosine(1.0, 10)(10) == pytest.approx(0.0) == schedules.cosine(1.0, 10)(50)
    assert "warmup_cosine(0.0003" in repr(sched)


BAD = [
    (lambda: schedules.constant(0.0), "lr must be a finite number > 0"),
    (lambda: schedules.step(0.1, 0), "step_size must be an int >= 1"),
    (lambda: schedules.step(0.1, 2, gamma=-1.0), "gamma must be a finite number > 0"),
    (lambda: schedules.multistep(0.1, [5, 3]), "milestones must be increasing"),
    (lambda: schedules.exponential(float("nan"), 0.9), "lr must be a finite number > 0"),
    (lambda: schedules.cosine(0.1, 0), "total must be an int >= 1"),
    (lambda: schedules.cosine(0.1, 10, min_lr=0.2), r"min_lr must be in \[0, lr=0.1\]"),
    (lambda: schedules.warmup_cosine(0.1, warmup=10, total=10), "warmup .10. must be less"),
    (lambda: schedules.warmup_linear(0.1, warmup=-1, total=10), "warmup must be an int >= 0"),
    (lambda: schedules.one_cycle(0.1, 10, pct_start=1.0), r"pct_start must be in \(0, 1\)"),
    (lambda: schedules.one_cycle(0.1, 10, pct_start="0.3"), "pct_start must be a number"),
    (lambda: schedules.one_cycle(0.1, 10, anneal="exp"), "anneal must be 'cos' or 'linear'"),
    (lambda: schedules.one_cycle(0.1, 2), "one_cycle needs pct_start"),
]


@pytest.mark.parametrize("make,msg", BAD)
def test_bad_arguments(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_any_callable_is_a_schedule():
    import fastgd

    p = {"w": np.zeros(1)}
    opt = fastgd.SGD(p, lr=lambda s: 0.5 * math.exp(-s))
    infos = [opt.step({"w": np.ones(1)}) for _ in range(3)]
    assert [i.lr for i in infos] == pytest.approx([0.5, 0.5 / math.e, 0.5 / math.e**2])


def test_schedules_hold_their_last_value_past_total():
    """cosine(…)(50) == 0 at min_lr 0 passed with the clamp gone too: cos(5π) = −1."""
    cosine = schedules.cosine(1.0, 10, min_lr=0.1)
    assert [cosine(s) for s in (10, 15, 25)] == pytest.approx([0.1] * 3, rel=1e-12)
    cycle = schedules.one_cycle(0.1, 50)
    assert [cycle(s) for s in (49, 60, 75)] == pytest.approx([0.1 / 25 / 1e4] * 3, rel=1e-12)


@pytest.mark.parametrize("options", [
    {},
    {"mode": "max", "factor": 0.5, "patience": 2, "cooldown": 1},
    {"threshold_mode": "abs", "threshold": 0.05, "patience": 1, "min_lr": 0.004},
    {"mode": "max", "threshold_mode": "abs", "patience": 0, "factor": 0.3, "eps": 1e-3},
])
def test_reduce_lr_on_plateau_follows_torch(options):
    """The learning rate after each of 60 epochs' metrics (improving, flat, noisy, NaN),
    against torch.optim.lr_scheduler.ReduceLROnPlateau with the same arguments."""
    torch = pytest.importorskip("torch")
    import fastgd

    rng = np.random.default_rng(3)
    metrics = np.concatenate([np.linspace(1, 0.5, 10), np.full(15, 0.5),
                              0.5 + rng.normal(0, 0.02, 25), [math.nan] * 3, np.full(7, 0.4)])
    if options.get("mode") == "max":
        metrics = -metrics
    opt = fastgd.SGD({"w": np.zeros(3)}, lr=0.1)
    plateau = schedules.ReduceLROnPlateau(opt, **options)
    topt = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=0.1)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **options)
    for m in metrics:
        tsched.step(float(m))
        assert plateau.step(m) == topt.param_groups[0]["lr"] == opt.lr
    assert opt.lr < 0.1


def test_reduce_lr_on_plateau_refuses_what_it_cannot_follow():
    import fastgd

    scheduled = fastgd.SGD({"w": np.zeros(3)}, lr=schedules.exponential(0.1, 0.9))
    with pytest.raises(TypeError, match="lr is a number, not a schedule"):
        schedules.ReduceLROnPlateau(scheduled)
    opt = fastgd.SGD({"w": np.zeros(3)}, lr=0.1)
    for bad, match in (({"mode": "up"}, "mode must be"), ({"factor": 1.0}, "factor"),
                       ({"patience": -1}, "patience"), ({"threshold_mode": "x"}, "rel")):
        with pytest.raises(ValueError, match=match):
            schedules.ReduceLROnPlateau(opt, **bad)

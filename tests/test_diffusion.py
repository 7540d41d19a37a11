import pytest
import torch

from workbench.core.diffusion import (
    DDIMSampler,
    DDPMSampler,
    NoiseSchedule,
    ScheduleConfig,
    check_condition,
    diffusion_loss,
    make_sampler,
)
from workbench.core.train_loop import EMA, LoopConfig, train_module
from workbench.nn import AEConfig, ParamAutoencoder, UNet1D, UNetConfig


def test_linear_schedule_matches_pdiff():
    s = NoiseSchedule(ScheduleConfig())
    assert s.num_steps == 1000
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(2e-2)
    c = NoiseSchedule(ScheduleConfig(kind="cosine"))
    assert (c.alphas_cumprod[1:] < c.alphas_cumprod[:-1]).all()


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_noise_and_inversion_round_trip(prediction):
    s = NoiseSchedule(ScheduleConfig(prediction=prediction))
    x0, eps = torch.randn(5, 3, 8), torch.randn(5, 3, 8)
    t = torch.tensor([0, 10, 500, 900, 999])
    xt = s.add_noise(x0, eps, t)
    assert torch.allclose(s.x0_from_eps(xt, eps, t), x0, atol=1e-3)
    out = eps if prediction == "eps" else x0
    x0_hat, eps_hat = s.split_output(out, xt, t)
    assert torch.allclose(x0_hat, x0, atol=1e-3) and torch.allclose(eps_hat, eps, atol=1e-3)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_reach_the_data_point_with_an_oracle(sampler):
    """With one data point x*, the ideal ε-predictor is ε(x_t) = (x_t − √ᾱ x*)/√(1−ᾱ); every sampler must end at x*."""
    s = NoiseSchedule()
    target = torch.randn(1, 2, 6)

    def oracle(x, t):
        return s.eps_from_x0(x, target.expand_as(x), t)

    smp = make_sampler(s, sampler, steps=25 if sampler == "ddim" else None)  # DDPM always runs all T steps
    states = list(smp.trajectory(oracle, (4, 2, 6), generator=torch.Generator().manual_seed(0)))
    assert len(states) == (1000 if sampler == "ddpm" else 25)
    assert [st.t for st in states] == sorted([st.t for st in states], reverse=True) and states[-1].t == 0
    assert torch.allclose(states[-1].xt, target.expand(4, -1, -1), atol=1e-3)
    again = smp.sample(oracle, (4, 2, 6), generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, states[-1].xt)


def test_ddim_eta_adds_noise_and_validates_steps():
    s = NoiseSchedule()
    with pytest.raises(ValueError, match="DDIM steps"):
        DDIMSampler(s, steps=0)
    assert DDIMSampler(s, steps=10).timesteps()[0] == 999 and DDIMSampler(s, steps=10).timesteps()[-1] == 0
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler(s, "euler")
    assert isinstance(make_sampler(s, "ddpm"), DDPMSampler)


def test_steps_default_and_ddpm_refuses_a_step_count():
    s = NoiseSchedule()
    default = make_sampler(s)
    assert isinstance(default, DDIMSampler) and default.steps == 50 and default.eta == 0.0
    assert make_sampler(s, "ddim", steps=None).steps == 50 and DDIMSampler(s, steps=None).steps == 50
    assert type(make_sampler(s, "ddpm", steps=None)) is DDPMSampler
    assert type(make_sampler(s, "ddpm", steps=1000)) is DDPMSampler  # T itself is what DDPM runs anyway
    for steps in (25, 0, 999, 2.5):
        with pytest.raises(ValueError, match=r"DDPM always runs all T=1000 steps.*sampler='ddim'"):
            make_sampler(s, "ddpm", steps=steps)
    with pytest.raises(ValueError, match="applies to DDIM only"):
        make_sampler(s, "ddpm", eta=0.5)
    for steps in (0, -1, 1001, 2.5, "10", True):
        with pytest.raises(ValueError, match=r"DDIM steps must lie in \[1, 1000\]"):
            make_sampler(s, "ddim", steps=steps)
    for eta in (float("nan"), -1, 1.5, float("inf"), "0"):
        with pytest.raises(ValueError, match=r"eta must be a number in \[0, 1\]"):
            make_sampler(s, "ddim", eta=eta)
    for name in ("euler", None, "DDIM"):
        with pytest.raises(ValueError, match="unknown sampler"):
            make_sampler(s, name)


def test_sampler_checks_its_inputs_before_drawing_noise():
    s = NoiseSchedule()
    smp = DDIMSampler(s, steps=5)

    def model(x, t, c=None):
        return torch.zeros_like(x)

    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    cond = torch.zeros(2, 3)
    bad = [({"shape": (0, 2, 6)}, "n must be >= 1"),
           ({"guidance_scale": float("nan"), "cond": cond}, "guidance_scale must be a finite number"),
           ({"guidance_scale": float("inf"), "cond": cond, "null_cond": torch.zeros(1, 3)}, "finite number"),
           ({"guidance_scale": 2.0}, "needs a condition"),
           ({"guidance_scale": 2.0, "cond": cond}, "needs the null condition"),
           ({"guidance_scale": 2.0, "cond": cond, "null_cond": torch.zeros(1, 4)}, r"null condition has shape \(1, 4\)"),
           ({"cond": torch.zeros(3, 3)}, r"shape \(3, 3\) but n=2"),
           ({"cond": torch.full((2, 3), float("nan"))}, "NaN or Inf")]
    for kw, match in bad:
        shape = kw.pop("shape", (2, 2, 6))
        with pytest.raises(ValueError, match=match):
            smp.trajectory(model, shape, generator=g, **kw)  # raises at the call, not at the first step
    assert torch.equal(g.get_state(), before)  # nothing was drawn
    states = list(smp.trajectory(model, (2, 2, 6), cond=cond, guidance_scale=3.0, null_cond=torch.zeros(1, 3),
                                 generator=g))
    assert len(states) == 5 and torch.isfinite(states[-1].xt).all()


def test_check_condition_against_the_denoiser():
    check_condition(None, 4, 0)
    check_condition(torch.zeros(4, 8), 4, 8, null_cond=torch.zeros(1, 8))
    check_condition(torch.tensor([[0.0], [2.0]]), 2, 16, cond_vocab=2)  # ids 0..vocab (vocab: the null row)
    with pytest.raises(ValueError, match=r"unconditional.*shape \(4, 8\)"):
        check_condition(torch.zeros(4, 8), 4, 0)
    with pytest.raises(ValueError, match=r"conditional: pass cond= of shape \(4, 8\)"):
        check_condition(None, 4, 8)
    with pytest.raises(ValueError, match=r"shape \(4, 7\) but this generator expects \(4, 8\)"):
        check_condition(torch.zeros(4, 7), 4, 8)
    with pytest.raises(ValueError, match=r"shape \(3, 8\) but this generator expects \(4, 8\)"):
        check_condition(torch.zeros(3, 8), 4, 8)
    with pytest.raises(ValueError, match=r"task ids in 0..2"):
        check_condition(torch.tensor([[0.0], [3.0]]), 2, 16, cond_vocab=2)
    with pytest.raises(ValueError, match=r"null condition has shape \(1, 5\)"):
        check_condition(torch.zeros(4, 8), 4, 8, null_cond=torch.zeros(1, 5))


def test_autoencoder_shapes_fold_and_vae():
    for fold in (1, 3):
        ae = ParamAutoencoder(AEConfig(in_dim=101, channels=(8, 8), fold=fold))
        x = torch.randn(4, 101)
        z = ae.encode(x)
        assert z.shape == (4, *ae.cfg.latent_shape) and ae.decode(z).shape == (4, 101)
    vae = ParamAutoencoder(AEConfig(in_dim=50, channels=(8, 8), variational=True, beta=0.5))
    loss, logs = vae.loss(torch.randn(6, 50), generator=torch.Generator().manual_seed(0))
    assert "kl" in logs and loss.item() == pytest.approx(float(logs["recon"]) + 0.5 * float(logs["kl"]), rel=1e-5)
    with pytest.raises(ValueError, match="length 50"):
        vae.encode(torch.randn(2, 49))


def test_unet_condition_and_odd_lengths():
    u = UNet1D(UNetConfig(in_channels=3, base_channels=8, channel_mults=(1, 2, 2), cond_dim=5))
    x = torch.randn(2, 3, 13)
    assert u(x, torch.tensor([1, 999]), torch.randn(2, 5)).shape == x.shape
    with pytest.raises(ValueError, match="conditional"):
        u(x, torch.tensor([1, 2]))


def test_diffusion_loss_trains_a_denoiser_down():
    torch.manual_seed(0)
    u = UNet1D(UNetConfig(in_channels=2, base_channels=8, channel_mults=(1, 2)))
    data = torch.randn(1, 2, 8).repeat(32, 1, 1)
    s = NoiseSchedule()
    hist, _ = train_module(u, lambda g: (diffusion_loss(u, s, data, generator=g), {}),
                           LoopConfig(steps=150, lr=3e-3, log_every=10), progress=False)
    assert hist["loss"].iloc[-3:].mean() < 0.5 * hist["loss"].iloc[:3].mean()


def _linear_problem(crash_at=None):
    torch.manual_seed(0)
    m = torch.nn.Linear(4, 1)
    data = torch.randn(64, 4)
    calls = {"n": 0}

    def loss_fn(g):
        calls["n"] += 1
        if crash_at is not None and calls["n"] > crash_at:
            raise KeyboardInterrupt("simulated crash")
        return ((m(data[torch.randint(0, 64, (8,), generator=g)]) - 1) ** 2).mean(), {}

    return m, loss_fn


def test_training_resumes_exactly(tmp_path):
    cfg = LoopConfig(steps=20, lr=1e-2, ema_decay=0.9, checkpoint_every=5, log_every=1)
    clean, loss_fn = _linear_problem()
    _, ema_clean = train_module(clean, loss_fn, cfg, progress=False)
    crashed, loss_fn = _linear_problem(crash_at=12)
    with pytest.raises(KeyboardInterrupt):
        train_module(crashed, loss_fn, cfg, directory=tmp_path, progress=False)
    resumed, loss_fn = _linear_problem()  # a fresh process: new module, resumes from the step-10 checkpoint
    hist, ema = train_module(resumed, loss_fn, cfg, directory=tmp_path, progress=False)
    assert torch.allclose(resumed.weight, clean.weight, atol=1e-6)
    assert torch.allclose(ema.shadow.weight, ema_clean.shadow.weight, atol=1e-6)
    assert list(hist["step"]) == list(range(1, 21))
    with pytest.raises(ValueError, match="different configuration"):
        train_module(resumed, loss_fn, LoopConfig(steps=30), directory=tmp_path, progress=False)


def test_ema_math():
    m = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema = EMA(m, decay=0.9)
    with torch.no_grad():
        m.weight.fill_(2.0)
    ema.update(m)
    assert torch.allclose(ema.shadow.weight, torch.full((1, 2), 1.1))

"""D2NWG's shared networks: the vector β-VAE (β = 0 is p-diff's deterministic AE) and the token denoiser
(permutation-equivariant over tokens without position embeddings)."""

import pytest
import torch
import torch.nn as nn

from workbench.nn.token_denoiser import TokenDenoiser, TokenDenoiserConfig
from workbench.nn.vae import VAEConfig, VectorVAE


def _vae(beta: float, **kw) -> VectorVAE:
    torch.manual_seed(0)
    return VectorVAE(VAEConfig(in_dim=9, latent_dim=4, hidden=16, depth=2, beta=beta, **kw))


# -- VectorVAE ------------------------------------------------------------------------------------------------------
def test_vae_beta0_is_a_deterministic_autoencoder():
    vae = _vae(0.0, input_noise=0.0, latent_noise=0.0)
    assert not vae.cfg.variational
    assert vae.encoder[-1].out_features == 4  # no log-variance half
    x = torch.randn(6, 9, generator=torch.Generator().manual_seed(1))
    mu, logvar = vae.encode_stats(x)
    assert logvar is None and torch.equal(mu, vae.encode(x))
    # without noise the loss is the plain reconstruction MSE, whatever the generator draws
    l1, logs1 = vae.loss(x, generator=torch.Generator().manual_seed(0))
    l2, logs2 = vae.loss(x, generator=torch.Generator().manual_seed(99))
    assert torch.equal(l1, l2) and set(logs1) == {"recon"} and "kl" not in logs2
    assert torch.allclose(l1, ((vae.decode(vae.encode(x)) - x) ** 2).mean())


def test_vae_beta_positive_has_a_posterior_variance_and_a_kl_term():
    beta = 0.5
    vae = _vae(beta, input_noise=0.0)
    assert vae.cfg.variational and vae.encoder[-1].out_features == 8
    x = torch.randn(6, 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mu, logvar = vae.encode_stats(x)
    assert logvar is not None and logvar.shape == mu.shape == (6, 4)
    assert torch.equal(vae.encode(x), mu)  # the deterministic latent is the posterior mean
    loss, logs = vae.loss(x, generator=torch.Generator().manual_seed(0))
    assert set(logs) == {"recon", "kl"} and logs["kl"] >= 0
    assert loss.item() == pytest.approx(float(logs["recon"]) + beta * float(logs["kl"]), rel=1e-5)
    # the KL is the closed form of N(mu, exp(logvar)) against N(0, I), averaged over rows
    kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(-1).mean()
    assert float(logs["kl"]) == pytest.approx(float(kl), rel=1e-5)
    # the sampled latent is random: two generators give two losses
    assert vae.loss(x, generator=torch.Generator().manual_seed(1))[0] != loss


def test_vae_any_leading_shape_and_errors():
    vae = _vae(1e-3)
    x = torch.randn(2, 5, 9)
    z = vae.encode(x)
    assert z.shape == (2, 5, 4) and vae.decode(z).shape == (2, 5, 9)
    assert torch.allclose(z[1, 3], vae.encode(x[1, 3]))  # row-wise: a row's latent ignores the others
    with pytest.raises(ValueError, match="length 9"):
        vae.encode(torch.randn(3, 8))
    with pytest.raises(ValueError, match="beta"):
        VAEConfig(in_dim=9, beta=-1.0)
    with pytest.raises(ValueError, match="sizes"):
        VAEConfig(in_dim=0)
    assert VAEConfig.from_dict(VAEConfig(in_dim=9, beta=0.0).to_dict()) == VAEConfig(in_dim=9, beta=0.0)


# -- TokenDenoiser --------------------------------------------------------------------------------------------------
def _denoiser(**kw) -> TokenDenoiser:
    torch.manual_seed(0)
    m = TokenDenoiser(TokenDenoiserConfig(**{"token_dim": 6, "cond_dim": 5, "hidden": 16, "depth": 2, "heads": 2,
                                             "time_dim": 8, **kw})).eval()
    nn.init.normal_(m.out[-1].weight, std=0.5)  # the output layer starts at zero: make the output informative
    if m.pos is not None:
        nn.init.normal_(m.pos)
    return m


def _inputs(b: int = 3, t: int = 5):
    g = torch.Generator().manual_seed(2)
    return torch.randn(b, t, 6, generator=g), torch.tensor([0, 400, 999][:b]), torch.randn(b, t, 5, generator=g)


def test_token_denoiser_is_permutation_equivariant_over_tokens():
    m = _denoiser()
    x, t, c = _inputs()
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        out = m(x, t, c)
        out_p = m(x[:, perm], t, c[:, perm])
    assert out.abs().max() > 1e-2  # not the trivial zero output
    assert torch.allclose(out_p, out[:, perm], atol=1e-5)
    # permuting the conditions alone changes the output: token c really reads condition c
    with torch.no_grad():
        assert not torch.allclose(m(x, t, c[:, perm]), out, atol=1e-3)


def test_token_denoiser_position_embeddings_break_equivariance():
    m = _denoiser(n_positions=5)
    x, t, c = _inputs()
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        assert not torch.allclose(m(x[:, perm], t, c[:, perm]), m(x, t, c)[:, perm], atol=1e-3)
        with pytest.raises(ValueError, match="position embeddings for 5"):
            m(torch.randn(1, 6, 6), t[:1], torch.randn(1, 6, 5))


def test_token_denoiser_conditions_and_errors():
    m = _denoiser()
    x, t, c = _inputs()
    with torch.no_grad():
        assert torch.equal(m(x, t, c.reshape(3, -1)), m(x, t, c))  # flattened conditions are accepted
        with pytest.raises(ValueError, match="conditional: pass cond"):
            m(x, t)
        with pytest.raises(ValueError, match="tokens are"):
            m(x[..., :4], t, c)
        unconditional = _denoiser(cond_dim=0)
        assert unconditional.adapter is None and unconditional(x, t).shape == x.shape
    with pytest.raises(ValueError, match="divisible"):
        TokenDenoiserConfig(token_dim=6, hidden=10, heads=4)
    with pytest.raises(ValueError, match="invalid"):
        TokenDenoiserConfig(token_dim=6, cond_dim=-1)


def test_token_denoiser_starts_as_the_zero_predictor():
    m = TokenDenoiser(TokenDenoiserConfig(token_dim=6, cond_dim=5, hidden=16, depth=1, heads=2, time_dim=8))
    x, t, c = _inputs()
    assert torch.equal(m(x, t, c), torch.zeros_like(x))

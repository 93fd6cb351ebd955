"""The deformation-model switches: velocity integration, field composition, inverse consistency,
the negative-Jacobian penalty and bending energy, against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from gemini_pl.losses import SMOOTHERS, bending_energy, inverse_consistency, negative_jacobian, regulariser, topology_terms
from gemini_pl.metrics import folding_percent
from gemini_pl.spatial import compose, integrate_velocity, validity_mask


def _coords(shape: tuple[int, ...]) -> torch.Tensor:
    """(1, ndim, *S) float64 voxel coordinates, channel i = index along spatial axis i."""
    axes = [torch.arange(s, dtype=torch.float64) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), 0).unsqueeze(0)


def _affine_field(matrix: torch.Tensor, shift: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Displacement of p ↦ c + A(p − c) + t about the centre c: (A − I)(p − c) + t, float32."""
    p = _coords(shape)
    c = torch.tensor([(s - 1) / 2 for s in shape], dtype=torch.float64).view(1, -1, *[1] * len(shape))
    eye = torch.eye(len(shape), dtype=torch.float64)
    flow = torch.einsum("ij,bj...->bi...", matrix.double() - eye, p - c) + shift.double().view(1, -1, *[1] * len(shape))
    return flow.float()


MATRICES = {
    2: torch.tensor([[0.10, -0.40], [0.30, 0.05]], dtype=torch.float64),
    3: torch.tensor([[0.05, -0.30, 0.10], [0.25, 0.00, -0.10], [-0.05, 0.15, -0.10]], dtype=torch.float64),
}


# ------------------------------------------------------------------------------------ integration
@pytest.mark.parametrize("dims,size", [(2, 33), (3, 17)])
def test_affine_velocity_integrates_to_its_matrix_exponential(dims, size):
    """v(p) = M(p − c) flows in time 1 to p ↦ c + exp(M)(p − c): displacement (exp(M) − I)(p − c)."""
    m = MATRICES[dims]
    shape = (size,) * dims
    velocity = _affine_field(torch.eye(dims, dtype=torch.float64) + m, torch.zeros(dims), shape)
    expected = _affine_field(torch.linalg.matrix_exp(m), torch.zeros(dims), shape)
    got = integrate_velocity(velocity, steps=10)
    r = size // 4  # interior: trajectories stay well inside the field of view
    inner = (slice(None), slice(None)) + (slice(size // 2 - r, size // 2 + r + 1),) * dims
    # the scaling-and-squaring limit (I + M/2^10)^(2^10) differs from exp(M) by ~|M|²/2^11 per voxel of radius
    assert torch.allclose(got[inner], expected[inner], atol=5e-3)
    assert (got[inner] - expected[inner]).abs().max() < 0.05 * (expected[inner] - velocity[inner]).abs().max()


def test_integration_with_zero_steps_is_the_displacement():
    v = torch.randn(1, 2, 8, 8)
    assert integrate_velocity(v, 0) is v


# ------------------------------------------------------------------------------------ composition
def test_compose_of_two_affine_maps_is_their_product():
    """(T_outer ∘ T_inner)(p) = c + A_o(A_i(p − c) + t_i) + t_o, exact where T_inner stays inside."""
    a_o, a_i = torch.eye(2) + 0.1 * torch.tensor([[1.0, -2.0], [0.5, 1.0]]), torch.eye(2) + 0.1 * torch.tensor([[-1.0, 1.0], [1.0, 0.0]])
    t_o, t_i = torch.tensor([0.7, -1.2]), torch.tensor([-0.3, 0.4])
    shape = (24, 20)
    got = compose(_affine_field(a_o, t_o, shape), _affine_field(a_i, t_i, shape))
    expected = _affine_field(a_o.double() @ a_i.double(), a_o.double() @ t_i.double() + t_o.double(), shape)
    mask = validity_mask(_affine_field(a_i, t_i, shape), strict=True).bool().expand_as(got)
    assert mask.float().mean() > 0.5
    assert torch.allclose(got[mask], expected[mask], atol=1e-4)


def test_compose_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        compose(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 9))


def test_strict_validity_mask_excludes_partial_bilinear_samples():
    """A shift of −0.4 along axis 0 reads row −0.4 for p₀ = 0: nearest rounds it inside, strict does not."""
    flow = torch.zeros(1, 2, 6, 5)
    flow[:, 0] = -0.4
    assert validity_mask(flow)[0, 0, 0].tolist() == [1.0] * 5
    strict = validity_mask(flow, strict=True)[0, 0]
    assert strict[0].tolist() == [0.0] * 5 and bool((strict[1:] == 1).all())


# ------------------------------------------------------------------------------------ inverse consistency
@pytest.mark.parametrize("dims,size", [(2, 24), (3, 12)])
def test_exactly_inverse_affine_pair_has_zero_inverse_consistency(dims, size):
    """T_AB = c + A(p − c) + t and T_BA = c + A⁻¹(p − c − t): T_AB ∘ T_BA = T_BA ∘ T_AB = id."""
    a = torch.eye(dims, dtype=torch.float64) + 0.3 * MATRICES[dims]
    t = torch.linspace(-0.8, 0.6, dims, dtype=torch.float64)
    shape = (size,) * dims
    ab = _affine_field(a, t, shape)
    ba = _affine_field(torch.linalg.inv(a), -torch.linalg.inv(a) @ t, shape)
    assert float(inverse_consistency(ab, ba)) < 1e-8
    # the same map both ways is not inverse-consistent
    assert float(inverse_consistency(ab, ab)) > 0.1


def test_inverse_consistency_of_two_shifts_is_hand_computed():
    """Constant shifts t₁ = (1, 2), t₂ = (0.5, −1): both compositions shift by t₁ + t₂ = (1.5, 1),
    so the loss is 2·(1.5² + 1²) = 6.5 (the mask leaves the voxels that sample outside)."""
    ab, ba = torch.zeros(2, 2, 16, 16), torch.zeros(2, 2, 16, 16)
    ab[:, 0], ab[:, 1], ba[:, 0], ba[:, 1] = 1.0, 2.0, 0.5, -1.0
    assert float(inverse_consistency(ab, ba)) == pytest.approx(6.5, rel=1e-5)
    assert float(inverse_consistency(ab, -ab)) == pytest.approx(0.0, abs=1e-10)


def test_inverse_consistency_gradient_reaches_both_fields():
    ab = (0.3 * torch.randn(1, 2, 12, 12)).requires_grad_()
    ba = (0.3 * torch.randn(1, 2, 12, 12)).requires_grad_()
    inverse_consistency(ab, ba).backward()
    assert ab.grad.abs().sum() > 0 and ba.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------ Jacobian penalty
def test_negative_jacobian_is_zero_without_folds():
    assert float(negative_jacobian(torch.zeros(2, 2, 16, 16))) == 0.0
    p = _coords((16, 16, 16)).float()
    smooth = 0.5 * torch.sin(2 * torch.pi * p / 16).roll(1, dims=1)  # |∂φ| ≤ 0.2: det > 0
    assert float(negative_jacobian(smooth)) == 0.0


def test_negative_jacobian_of_a_known_fold():
    """φ₀ along axis 0 = [0, 0, 0, −3, −6, −6, −6, −6], φ₁ = 0: torch.gradient gives ∂φ₀/∂x₀ =
    [0, 0, −1.5, −3, −1.5, 0, 0, 0], det = 1 + ∂φ₀/∂x₀ = [1, 1, −0.5, −2, −0.5, 1, 1, 1], so
    mean(max(0, −det)) = (0.5 + 2 + 0.5)/8 = 0.375 and 3 of 8 rows fold."""
    flow = torch.zeros(1, 2, 8, 5)
    flow[0, 0] = torch.tensor([0.0, 0, 0, -3, -6, -6, -6, -6]).view(8, 1)
    assert float(negative_jacobian(flow)) == pytest.approx(0.375, rel=1e-6)
    assert float(folding_percent(flow)[0]) == pytest.approx(37.5)
    # 3D: the same profile along axis 2 of channel 2
    flow3 = torch.zeros(1, 3, 4, 3, 8)
    flow3[0, 2] = torch.tensor([0.0, 0, 0, -3, -6, -6, -6, -6])
    assert float(negative_jacobian(flow3)) == pytest.approx(0.375, rel=1e-6)


def test_negative_jacobian_gradient_pushes_out_of_the_fold():
    flow = torch.zeros(1, 2, 8, 5)
    flow[0, 0] = torch.tensor([0.0, 0, 0, -3, -6, -6, -6, -6]).view(8, 1)
    flow.requires_grad_()
    negative_jacobian(flow).backward()
    assert flow.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------ bending energy
def test_bending_energy_of_quadratic_fields():
    """2D φ₀ = a·x₀², φ₁ = b·x₀x₁: channel 0 has ∂²/∂x₀² = 2a, channel 1 the mixed ∂²/∂x₀∂x₁ = b
    (counted twice), so the channel mean is ((2a)² + 2b²)/2. 3D φ₀ = a·x₀², φ₁ = b·x₁x₂, φ₂ = c·x₀x₂:
    ((2a)² + 2b² + 2c²)/3."""
    a, b, c = 0.3, 0.2, -0.1
    p = _coords((9, 10)).float()
    flow = torch.stack([a * p[:, 0] ** 2, b * p[:, 0] * p[:, 1]], 1)
    assert float(bending_energy(flow)) == pytest.approx(((2 * a) ** 2 + 2 * b**2) / 2, rel=1e-5)
    p = _coords((7, 8, 9)).float()
    flow = torch.stack([a * p[:, 0] ** 2, b * p[:, 1] * p[:, 2], c * p[:, 0] * p[:, 2]], 1)
    assert float(bending_energy(flow)) == pytest.approx(((2 * a) ** 2 + 2 * b**2 + 2 * c**2) / 3, rel=1e-5)


def test_bending_energy_of_affine_field_is_zero_and_smoothness_is_not():
    flow = _affine_field(torch.eye(2) + MATRICES[2].float(), torch.tensor([1.0, -2.0]), (12, 12))
    assert float(regulariser(flow, "bending")) == pytest.approx(0.0, abs=1e-10)
    # gradient smoothness: mean over the 2 axes j and the 2 channels i of (∂φ_i/∂x_j)² = M_ij², i.e. ΣM²/4
    assert float(regulariser(flow, "gradient")) == pytest.approx(float((MATRICES[2] ** 2).sum()) / 4, rel=1e-5)
    assert SMOOTHERS == ("gradient", "bending")
    with pytest.raises(ValueError, match="smoother"):
        regulariser(flow, "elastic")


# ------------------------------------------------------------------------------------ switches
def test_topology_terms_only_when_switched_on():
    ab, ba = torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8)
    ab[:, 0] = 1.0
    assert topology_terms(ab, ba) == ({}, 0.0)
    terms, total = topology_terms(ab, ba, lambda_inverse=2.0, lambda_jacobian=3.0)
    assert set(terms) == {"inverse", "neg_jacobian"}
    assert float(terms["inverse"]) == pytest.approx(2.0)  # 2·‖(1, 0)‖²
    assert float(total) == pytest.approx(2.0 * 2.0 + 3.0 * 0.0)
    with pytest.raises(ValueError, match="both directions"):
        topology_terms(ab, None, lambda_inverse=1.0)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("shape", [(2, 2, 9, 11), (1, 3, 5, 6, 7)])
def test_bending_energy_matches_monai(shape):
    from monai.losses import BendingEnergyLoss

    flow = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    assert float(bending_energy(flow)) == pytest.approx(float(BendingEnergyLoss()(flow)), rel=1e-5)


# ------------------------------------------------------------------------------------ the terms as objectives
def test_minimising_the_jacobian_penalty_unfolds_a_field():
    """Gradient descent on mean(max(0, −det J)) alone removes the known fold (37.5 % → 0 %)."""
    flow = torch.zeros(1, 2, 8, 5)
    flow[0, 0] = torch.tensor([0.0, 0, 0, -3, -6, -6, -6, -6]).view(8, 1)
    flow.requires_grad_()
    opt = torch.optim.SGD([flow], lr=1.0)
    for _ in range(100):
        opt.zero_grad()
        loss = negative_jacobian(flow)
        if float(loss.detach()) == 0:
            break
        loss.backward()
        opt.step()
    assert float(negative_jacobian(flow.detach())) == 0.0
    assert float(folding_percent(flow.detach())[0]) == 0.0


def test_minimising_inverse_consistency_recovers_the_inverse_map():
    """With φ_AB a fixed affine map, optimising φ_BA (from zero) on the inverse-consistency term
    alone approaches the analytic inverse c + A⁻¹(p − c − t) in the interior."""
    a = torch.eye(2, dtype=torch.float64) + 0.3 * MATRICES[2]
    t = torch.tensor([0.5, -0.7], dtype=torch.float64)
    shape = (20, 20)
    ab = _affine_field(a, t, shape)
    target = _affine_field(torch.linalg.inv(a), -torch.linalg.inv(a) @ t, shape)
    ba = torch.zeros_like(ab, requires_grad=True)
    opt = torch.optim.Adam([ba], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        inverse_consistency(ab, ba).backward()
        opt.step()
    inner = (slice(None), slice(None), slice(5, 15), slice(5, 15))
    start = (target[inner]).abs().max()
    assert (ba.detach()[inner] - target[inner]).abs().max() < 0.1 * start

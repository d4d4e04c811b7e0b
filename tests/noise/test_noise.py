import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from noisynn.errors import NoisyNNError
from noisynn.noise import NOISE_REGISTRY, NoiseDistribution, draw, get_noise, register_noise

BUILTINS = ("gaussian", "uniform", "cauchy", "laplacian", "student_t")
N = 400_000


@pytest.fixture
def registry_snapshot():
    saved = dict(NOISE_REGISTRY)
    yield
    NOISE_REGISTRY.clear()
    NOISE_REGISTRY.update(saved)


def sample(name, scale=0.5, **params):
    return get_noise(name, **params).sample((N,), scale, "cpu", generator=torch.Generator().manual_seed(1))


def test_builtins_registered():
    for name in BUILTINS:
        assert issubclass(NOISE_REGISTRY[name], NoiseDistribution)


def test_duplicate_and_wrong_base_raise(registry_snapshot):
    with pytest.raises(ValueError, match="already registered"):
        @register_noise("gaussian")
        class Other(NoiseDistribution):
            pass
    with pytest.raises(TypeError, match="not a NoiseDistribution"):
        register_noise("plain")(dict)


def test_unknown_name_lists_known():
    with pytest.raises(NoisyNNError) as err:
        get_noise("pink")
    for name in BUILTINS:
        assert name in str(err.value)


def test_original_readme_example_works(registry_snapshot):
    # The original README: subclass, implement sample(shape, scale, device), assign into the dict.
    class LaplacianNoise(NoiseDistribution):
        def sample(self, shape, scale, device):
            return torch.distributions.Laplace(0, scale).sample(shape).to(device)

    NOISE_REGISTRY["laplacian"] = LaplacianNoise
    noise = get_noise("laplacian")
    assert isinstance(noise, LaplacianNoise)
    a = draw(noise, (1000,), 1.0, "cpu", torch.Generator().manual_seed(3))
    b = draw(noise, (1000,), 1.0, "cpu", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)  # reproducible although its sample() takes no generator
    assert not torch.equal(a, draw(noise, (1000,), 1.0, "cpu", torch.Generator().manual_seed(4)))


def test_registry_entry_of_wrong_type_is_a_clear_error(registry_snapshot):
    NOISE_REGISTRY["broken"] = object
    with pytest.raises(NoisyNNError, match="not a NoiseDistribution"):
        get_noise("broken")


def test_gaussian_std():
    x = sample("gaussian", 0.5)
    assert abs(float(x.std()) - 0.5) < 0.005
    assert abs(float(x.mean())) < 0.005


def test_uniform_bounds_and_std():
    x = sample("uniform", 0.5)
    assert float(x.min()) >= -0.5 and float(x.max()) <= 0.5
    assert float(x.min()) < -0.499 and float(x.max()) > 0.499
    assert abs(float(x.std()) - 0.5 / math.sqrt(3)) < 0.003


def test_laplacian_quantiles():
    # Laplace(0, b): P(|X| <= b ln 2) = 1/2, std = sqrt(2) b.
    x = sample("laplacian", 0.5)
    assert abs(float(x.abs().median()) - 0.5 * math.log(2)) < 0.005
    assert abs(float(x.std()) - math.sqrt(2) * 0.5) < 0.01


def test_cauchy_quartiles():
    # Cauchy(0, gamma): quartiles at -gamma and +gamma, median 0.
    x = sample("cauchy", 0.5)
    q = torch.quantile(x[:100_000], torch.tensor([0.25, 0.5, 0.75]))
    assert abs(float(q[0]) + 0.5) < 0.02 and abs(float(q[2]) - 0.5) < 0.02 and abs(float(q[1])) < 0.02


def test_student_t_std_and_df():
    x = sample("student_t", 0.5, df=5.0)
    assert abs(float(x.std()) - 0.5 * math.sqrt(5 / 3)) < 0.02
    # Heavier tails with fewer degrees of freedom.
    assert float(sample("student_t", 1.0, df=2.5).abs().max()) > float(sample("gaussian", 1.0).abs().max())


def test_student_t_rejects_bad_df():
    with pytest.raises(NoisyNNError):
        get_noise("student_t", df=-1.0)


@pytest.mark.parametrize("name", BUILTINS)
def test_scale_zero_and_location_scale(name):
    noise = get_noise(name)
    z = noise.sample((1000,), 1.0, "cpu", generator=torch.Generator().manual_seed(7))
    s = noise.sample((1000,), 0.25, "cpu", generator=torch.Generator().manual_seed(7))
    assert torch.allclose(s, 0.25 * z, rtol=1e-5, atol=1e-7)
    assert torch.count_nonzero(noise.sample((1000,), 0.0, "cpu", generator=torch.Generator().manual_seed(7))) == 0


@settings(max_examples=25, deadline=None)
@given(name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_register_then_lookup_roundtrip(name):
    saved = dict(NOISE_REGISTRY)
    try:
        if name in NOISE_REGISTRY:
            with pytest.raises(ValueError):
                register_noise(name)(type("X", (NoiseDistribution,), {}))
        else:
            cls = register_noise(name)(type("X", (NoiseDistribution,), {}))
            assert type(get_noise(name)) is cls and get_noise(name).name == name
    finally:
        NOISE_REGISTRY.clear()
        NOISE_REGISTRY.update(saved)

"""Classifier-free guidance with diffusers' scale s: s = 0 is the unconditional prediction and s = 1 the
conditional one (one plain call each), other s one doubled forward call with the null label, Ho &
Salimans' eq. 6 with w = s − 1, linearity across parameterizations, every sampler, and the error paths.

The learning test (a conditional digits model whose class rate rises with s) is in tests/test_editing.py.
"""

import pytest
import torch

from ddpm.diffusion import make_schedule, predict_x0_eps
from ddpm.diffusion.guidance import ClassifierFreeGuidance, guided_output
from ddpm.diffusion.prediction import Parameterized
from ddpm.diffusion.samplers import SAMPLERS, sample_seeds

NULL = 10  # "no label" of a 10-class model
SCHEDULE = make_schedule("linear", 100)


class ConditionalToy:
    """Elementwise, label-dependent 'network' that records the arguments of each call."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, x_t, t, class_labels=None, **cond):
        self.calls.append({"x_t": x_t, "t": t, "class_labels": class_labels, **cond})
        labels = torch.full((x_t.shape[0],), NULL) if class_labels is None else class_labels
        shape = (-1, *[1] * (x_t.ndim - 1))
        gain = 0.05 + 0.01 * labels.to(x_t.dtype).reshape(shape)  # (B, 1, …)
        return (
            gain * x_t
            + 0.02 * torch.cos(labels.to(x_t.dtype)).reshape(shape)
            + t.to(x_t.dtype).reshape(shape) / 1e4
        )


def _inputs(batch=4):
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(batch, 1, 3, 3, generator=generator)
    t = torch.full((batch,), 37, dtype=torch.long)
    labels = torch.arange(batch) % NULL
    return x_t, t, labels


def test_zero_guidance_is_the_unconditional_prediction_exactly_with_one_null_label_call():
    x_t, t, labels = _inputs()
    model = ConditionalToy()
    guided = ClassifierFreeGuidance(model, 0.0, NULL)(x_t, t, class_labels=labels)
    assert torch.equal(guided, ConditionalToy()(x_t, t, class_labels=torch.full_like(labels, NULL)))
    assert len(model.calls) == 1 and model.calls[0]["x_t"] is x_t  # no doubled batch, no conditional call
    assert torch.equal(model.calls[0]["class_labels"], torch.full_like(labels, NULL))


def test_unit_guidance_is_the_conditional_prediction_exactly_with_one_plain_call():
    x_t, t, labels = _inputs()
    model = ConditionalToy()
    guided = ClassifierFreeGuidance(model, 1.0, NULL)(x_t, t, class_labels=labels)
    assert torch.equal(guided, ConditionalToy()(x_t, t, class_labels=labels))
    assert len(model.calls) == 1 and model.calls[0]["x_t"] is x_t  # no unconditional branch at all
    assert model.calls[0]["class_labels"] is labels


def test_guidance_doubles_the_batch_once_with_the_null_label_in_the_second_half():
    x_t, t, labels = _inputs()
    model = ConditionalToy()
    ClassifierFreeGuidance(model, 2.0, NULL)(x_t, t, class_labels=labels)
    assert len(model.calls) == 1
    call = model.calls[0]
    assert torch.equal(call["x_t"], torch.cat([x_t, x_t]))
    assert torch.equal(call["t"], torch.cat([t, t]))
    assert torch.equal(call["class_labels"], torch.cat([labels, torch.full_like(labels, NULL)]))


@pytest.mark.parametrize("s", [0.5, 1.5, 2.0, 4.0])
def test_guided_output_is_eq_6_of_the_two_predictions_with_w_equal_to_s_minus_1(s):
    x_t, t, labels = _inputs()
    model = ConditionalToy()
    conditional = model(x_t, t, class_labels=labels)
    unconditional = model(x_t, t, class_labels=torch.full_like(labels, NULL))
    guided = ClassifierFreeGuidance(model, s, NULL)(x_t, t, class_labels=labels)
    torch.testing.assert_close(guided, unconditional + s * (conditional - unconditional), rtol=0, atol=1e-6)
    w = s - 1  # Ho & Salimans 2022, eq. 6: (1 + w) ε(x, c) − w ε(x, ∅)
    torch.testing.assert_close(guided, (1 + w) * conditional - w * unconditional, rtol=0, atol=1e-6)


def test_scale_two_is_twice_the_conditional_minus_the_null_label_prediction():
    x_t, t, labels = _inputs()
    conditional = ConditionalToy()(x_t, t, class_labels=labels)
    unconditional = ConditionalToy()(x_t, t)  # class_labels=None: the network's null label
    guided = ClassifierFreeGuidance(ConditionalToy(), 2.0, NULL)(x_t, t, class_labels=labels)
    torch.testing.assert_close(guided, 2 * conditional - unconditional, rtol=0, atol=1e-6)


def test_other_per_sample_conditioning_is_doubled_and_the_rest_passed_as_is():
    x_t, t, labels = _inputs()
    model = ConditionalToy()
    extra = torch.randn(4, 5)
    ClassifierFreeGuidance(model, 2.0, NULL)(x_t, t, class_labels=labels, extra=extra, scale=0.5)
    assert torch.equal(model.calls[0]["extra"], torch.cat([extra, extra]))
    assert model.calls[0]["scale"] == 0.5
    for s in (0.0, 1.0):  # one plain call: the other conditioning passes as is
        ClassifierFreeGuidance(model, s, NULL)(x_t, t, class_labels=labels, extra=extra, scale=0.5)
        assert model.calls[-1]["extra"] is extra and model.calls[-1]["scale"] == 0.5


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_guiding_the_raw_output_guides_eps_for_every_parameterization(parameterization):
    # ε̂ = a·x_t + b·output at fixed ᾱ, and the weights s (conditional) and 1 − s (unconditional) sum
    # to 1, so ε̂(s o_c + (1−s) o_u) = s ε̂(o_c) + (1−s) ε̂(o_u): guidance may act on whatever the net predicts.
    generator = torch.Generator().manual_seed(1)
    x_t, a, b = (torch.randn(3, 4, dtype=torch.float64, generator=generator) for _ in range(3))
    alpha_bar = torch.tensor(0.3, dtype=torch.float64)
    s = 2.5
    _, eps_of_guided = predict_x0_eps(x_t, guided_output(a, b, s), alpha_bar, parameterization)
    _, eps_a = predict_x0_eps(x_t, a, alpha_bar, parameterization)
    _, eps_b = predict_x0_eps(x_t, b, alpha_bar, parameterization)
    torch.testing.assert_close(eps_of_guided, guided_output(eps_a, eps_b, s), rtol=1e-12, atol=1e-12)


OPTIONS = {"ddpm": {"steps": 10}, "ddim": {"steps": 10, "eta": 0.5}}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_runs_the_wrapper_like_a_hand_guided_model(name):
    options = OPTIONS.get(name, {"steps": 8})
    seeds = sample_seeds(3, 4)
    labels = torch.tensor([0, 3, 7, 9])
    s = 2.5

    def by_hand(x_t, t, class_labels):  # two separate calls: what the wrapper must equal
        toy = ConditionalToy()
        return guided_output(toy(x_t, t, class_labels=class_labels), toy(x_t, t), s)

    def run(model, **cond):  # guidance wraps the raw network, inside the parameterization
        denoiser = Parameterized(model, SCHEDULE)
        return SAMPLERS[name](denoiser, SCHEDULE, (4, 1, 3, 3), seeds=seeds, cond=cond, **options).samples

    wrapped = run(ClassifierFreeGuidance(ConditionalToy(), s, NULL), class_labels=labels)
    torch.testing.assert_close(wrapped, run(by_hand, class_labels=labels), rtol=0, atol=1e-5)
    unguided = run(ClassifierFreeGuidance(ConditionalToy(), 1.0, NULL), class_labels=labels)
    assert torch.equal(unguided, run(ConditionalToy(), class_labels=labels))
    unconditional = run(ClassifierFreeGuidance(ConditionalToy(), 0.0, NULL), class_labels=labels)
    assert torch.equal(unconditional, run(ConditionalToy(), class_labels=torch.full_like(labels, NULL)))
    assert not torch.allclose(wrapped, unguided, atol=1e-3)  # guidance changed the samples


@pytest.mark.parametrize(
    "s, match",
    [(-0.5, r"s=-0\.5 is invalid; it must be finite and ≥ 0 \(0 = unconditional, 1 = conditional\)"),
     (float("nan"), r"s=nan is invalid"), (float("inf"), r"s=inf is invalid"),
     (float("-inf"), r"s=-inf is invalid"), (True, r"guidance scale True is invalid; give a number s ≥ 0"),
     ("2", r"guidance scale '2' is invalid; give a number s ≥ 0"), (None, r"guidance scale None is invalid")],
)  # fmt: skip
def test_bad_guidance_scales_are_refused(s, match):
    with pytest.raises(ValueError, match=match):
        ClassifierFreeGuidance(ConditionalToy(), s, NULL)


@pytest.mark.parametrize("null_label", [-1, 2.0, True])
def test_bad_null_labels_are_refused(null_label):
    with pytest.raises(ValueError, match=r"null_label=.* is invalid; give the integer index of 'no label'"):
        ClassifierFreeGuidance(ConditionalToy(), 1.0, null_label)


@pytest.mark.parametrize("s", [0.0, 1.0, 2.0])
def test_guidance_without_labels_is_refused(s):
    x_t, t, _ = _inputs()
    with pytest.raises(ValueError, match=r"classifier-free guidance needs class_labels=…; got none"):
        ClassifierFreeGuidance(ConditionalToy(), s, NULL)(x_t, t)

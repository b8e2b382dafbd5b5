"""Conditional generation and editing on a class-conditional digits model trained once for this module.

The model (≈ 60 s of one CPU core) is the digits preset shrunk to 16 base channels and one residual
block per level, trained 700 steps with 20 % label dropout. Samples are judged by a logistic
regression on the real digits' pixels (96 % test accuracy). Thresholds come from measured runs
(quoted at each assert) with a margin; untrained or noise baselines are measured in the same test.
"""

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from ddpm import editing
from ddpm.data import load_dataset
from ddpm.data.controls import canny_edges
from ddpm.model import build_model, load
from ddpm.train.presets import get_preset
from ddpm.train.run import train

STEPS = 700


def _replace(config, **sections):
    return dataclasses.replace(
        config,
        **{name: dataclasses.replace(getattr(config, name), **values) for name, values in sections.items()},
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    config = _replace(
        get_preset("digits"),
        data={"class_conditional": True},
        model={"base_channels": 16, "num_res_blocks": 1, "dropout": 0.0},
        diffusion={"label_dropout": 0.2},
        optim={"lr": 2e-3, "warmup_steps": 100, "ema_decay": 0.995},
        run={"steps": STEPS, "batch_size": 128, "log_every": 1000, "sample_every": 0, "checkpoint_every": 0,
             "preview_images": 4, "preview_steps": 5},
    )  # fmt: skip
    path = tmp_path_factory.mktemp("conditional-digits") / "run"
    train(config, path, log=lambda *_: None)
    return path


@pytest.fixture(scope="module")
def model(run_dir):
    return load(run_dir)


@pytest.fixture(scope="module")
def untrained(model):
    torch.manual_seed(0)
    return build_model(model.spec)


@pytest.fixture(scope="module")
def classifier():
    digits = load_dataset("digits", split="train")
    features = digits.data.reshape(len(digits), -1).float().numpy() / 255.0
    return LogisticRegression(max_iter=2000).fit(features, digits.labels.numpy())


def _proba(classifier, images):
    return classifier.predict_proba(((images.clamp(-1, 1) + 1) / 2).reshape(len(images), -1).numpy())


@pytest.fixture(scope="module")
def test_digits():
    test = load_dataset("digits", split="test")
    return test.batch(torch.arange(40)), test.labels[:40]


def test_class_samples_are_recognised_and_the_rate_rises_with_guidance(model, classifier):
    # s = 0: the unconditional model (labels ignored), s = 1: the conditional one, s > 1: guided
    accuracy, confidence = {}, {}
    for s in (0.0, 1.0, 2.0, 4.0):
        images, labels = editing.sample_classes(model, "all", guidance=s, n_per_class=20, steps=25, seed=1)
        proba = _proba(classifier, images)
        accuracy[s] = float((proba.argmax(1) == labels.numpy()).mean())
        confidence[s] = float(proba.max(1).mean())
    print(f"class rate {accuracy}, mean confidence {confidence}")
    # measured (700 steps) at s = 0 / 1 / 2 / 4: rate 0.10 / 0.91 / 1.00 / 1.00, conf. 0.70/0.87/0.97/0.99
    assert accuracy[0.0] <= 0.3  # unconditional samples hit the asked class by chance only (0.1)
    assert accuracy[1.0] >= 0.7
    assert accuracy[2.0] >= 0.9
    assert accuracy[0.0] < accuracy[1.0] < accuracy[2.0] <= accuracy[4.0]
    assert confidence[1.0] < confidence[2.0] < confidence[4.0]


def test_scale_zero_ignores_the_label_and_scale_one_is_the_plain_conditional_model(model):
    options = {"steps": 5, "seed": 2}
    unconditional = model.sample(3, labels=[2] * 3, guidance=0.0, **options)
    assert torch.equal(unconditional, model.sample(3, labels=[7] * 3, guidance=0.0, **options))
    plain = model.sample(3, labels=[2] * 3, **options)  # the default scale is 1
    assert torch.equal(plain, model.sample(3, labels=[2] * 3, guidance=1.0, **options))
    assert not torch.allclose(plain, unconditional, atol=1e-3)


def test_class_rows_share_their_noises_and_match_the_pipeline(model):
    images, labels = editing.sample_classes(model, [2, 5], guidance=2.0, n_per_class=3, steps=10, seed=4)
    assert labels.tolist() == [2, 2, 2, 5, 5, 5]
    for row, k in enumerate((2, 5)):
        alone = model.sample(3, labels=[k] * 3, guidance=2.0, steps=10, seed=4)
        torch.testing.assert_close(images[3 * row : 3 * row + 3], alone, rtol=0, atol=1e-4)


def test_ddim_inversion_then_sampling_reconstructs_digits(model, test_digits):
    images, _ = test_digits
    latents, rebuilt = editing.reconstruct(model, images, steps=50)
    mse = (rebuilt - images).pow(2).flatten(1).mean(1)
    between = (images[1:] - images[:-1]).pow(2).flatten(1).mean(1)  # neighbouring, different digits
    print(
        f"reconstruction MSE mean {mse.mean():.5f} max {mse.max():.5f}; between digits {between.mean():.3f}"
    )
    # measured: mean 0.0011, max 0.0031 (pixels in [-1, 1]); different digits differ by ≈ 0.5
    assert float(mse.mean()) < 0.005
    assert float(mse.max()) < 0.02
    assert 0.5 < float(latents.std()) < 1.2  # noise-like: x_T of the data sits near N(0, I)


def test_interpolation_endpoints_are_the_samples_of_the_endpoint_noises(model):
    a, b = editing.noise_for_seed(model, 3), editing.noise_for_seed(model, 4)
    options = {"steps": 20, "labels": 2, "guidance": 2.0}
    strip = editing.interpolate(model, a, b, 5, batch_size=1, **options)
    for end, seed in ((strip[0], 3), (strip[-1], 4)):
        alone = model.sample(1, seed=seed, steps=20, labels=[2], guidance=2.0, **editing.EXACT_DDIM)[0]
        assert torch.equal(end, alone)  # the same noise, the same batch of one: bit for bit
    batched = editing.interpolate(model, a, b, 5, **options)  # one batch: equal up to float rounding
    torch.testing.assert_close(batched, strip, rtol=0, atol=1e-4)
    assert not torch.allclose(strip[2], strip[0], atol=0.1) and not torch.allclose(
        strip[2], strip[4], atol=0.1
    )


def test_interpolating_two_real_digits_starts_and_ends_at_their_reconstructions(model, test_digits):
    images, _ = test_digits
    strip = editing.interpolate_images(model, images[0], images[1], 4, steps=50)
    assert strip.shape == (4, 1, 8, 8)
    for end, image in ((strip[0], images[0]), (strip[-1], images[1])):
        assert float((end - image).pow(2).mean()) < 0.005  # the reconstruction bound above


def test_inpainting_keeps_the_known_pixels_and_fills_the_hole_with_digits(
    model, untrained, classifier, test_digits
):
    images, labels = test_digits
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4] = True  # fill the top half from the bottom half
    options = {"steps": 50, "jump_length": 5, "resamples": 5, "seed": 0}
    filled = editing.inpaint(model, images, mask, **options)
    assert torch.equal(filled[:, :, ~mask], images[:, :, ~mask])
    baselines = {
        "untrained": editing.inpaint(untrained, images, mask, **options),
        "noise": torch.where(
            mask, torch.randn(images.shape, generator=torch.Generator().manual_seed(0)), images
        ),
    }
    rows = np.arange(len(labels))

    def scores(x):
        proba = _proba(classifier, x)
        return float(proba.max(1).mean()), float(proba[rows, labels.numpy()].mean())

    confidence, true_class = scores(filled)
    measured = ", ".join(f"{k} {scores(v)[0]:.3f} / {scores(v)[1]:.3f}" for k, v in baselines.items())
    print(f"inpainted: confidence / p(true class) {confidence:.3f} / {true_class:.3f}; {measured}")
    # measured: inpainted 0.81 / 0.62; noise fill 0.63 / 0.35
    assert confidence > 0.7 and true_class > 0.5
    for baseline in baselines.values():
        base_confidence, base_true_class = scores(baseline)
        assert confidence > base_confidence + 0.08
        assert true_class > base_true_class + 0.15


def test_bad_inputs_are_refused(model, untrained, test_digits, tmp_path):
    digits, _ = test_digits
    unconditional = build_model(
        dataclasses.replace(model.spec, net=dataclasses.replace(model.spec.net, num_classes=None))
    )
    a = editing.noise_for_seed(model, 0)
    mask_5x5, soft_mask = torch.ones(5, 5), torch.full((8, 8), 0.5)
    cases = [
        (
            lambda: editing.sample_classes(model, [10]),
            r"class 10 is out of range; this model has classes 0…9",
        ),
        (lambda: editing.sample_classes(model, "-1"), r"class -1 is out of range"),
        (
            lambda: editing.sample_classes(model, "seven"),
            r"classes='seven' is invalid; give 'all', K or K1,K2",
        ),
        (lambda: editing.sample_classes(model, []), r"classes is empty"),
        (lambda: editing.sample_classes(model, 1, n_per_class=0), r"n_per_class=0 is invalid"),
        (lambda: editing.sample_classes(unconditional, "all"), r"given to an unconditional model"),
        (
            lambda: unconditional.sample(2, guidance=2.0),
            r"guidance=2\.0 needs a class-conditional model; this one is unconditional \(leave it at 1\.0\)",
        ),
        (
            lambda: editing.interpolate(unconditional, a, a, 3, guidance=0.0),
            r"guidance=0\.0 needs a class-conditional model; this one is unconditional \(leave it at 1\.0\)",
        ),
        (lambda: model.sample(2, guidance=0.0), r"guidance=0\.0 needs labels"),
        (lambda: editing.interpolate(model, a, a, 3, guidance=2.0), r"guidance=2\.0 needs labels"),
        (
            lambda: model.sample(2, labels=[1, 2], guidance=-1.0),
            r"s=-1\.0 is invalid; it must be finite and ≥ 0",
        ),
        (lambda: model.sample(2, labels=[1, 2], guidance=float("nan")), r"s=nan is invalid"),
        (lambda: editing.guidance_sweep(model, 1, []), r"scales is empty"),
        (lambda: editing.invert(model, digits[:2], labels=[1, 2, 3]), r"got 3 labels for 2 samples"),
        (
            lambda: editing.invert(model, digits[:2], labels=[1.0, 2.0]),
            r"labels must be integer class indices",
        ),
        (lambda: editing.reconstruct(model, digits[:2], labels=[0, 12]), r"class 12 is out of range"),
        (
            lambda: editing.inpaint(model, digits[:2], mask_5x5, steps=2),
            r"mask shape \(5, 5\) does not match images of shape \(2, 1, 8, 8\)",
        ),
        (lambda: editing.inpaint(model, digits[:2], soft_mask, steps=2), r"mask values must be 0"),
        (
            lambda: editing.interpolate(model, a, a, 1),
            r"num=1 interpolation steps is invalid; it must be .* ≥ 2",
        ),
        (lambda: editing.interpolate(model, a, a, 2.5), r"num=2\.5 interpolation steps is invalid"),
        (
            lambda: editing.interpolate(model, a, torch.zeros(1, 4, 4), 3),
            r"b have shape \(1, 4, 4\); this model needs \(N, 1, 8, 8\)",
        ),
        (
            lambda: editing.invert(model, torch.zeros(2, 8, 8)),
            r"images have shape \(2, 8, 8\); this model needs",
        ),
        (
            lambda: editing.invert(model, torch.zeros(2, 1, 8, 8, dtype=torch.uint8)),
            r"must be a float tensor",
        ),
        (lambda: model.sample(noise=a[None], sampler="plms"), r"unknown sampler 'plms'"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()


def test_compare_control_samples_with_and_without_controls_from_the_same_noises(control_run, control_base):
    model, base = load(control_run), load(control_base)
    real = load_dataset("digits", split="test").batch(torch.arange(4))
    labels = torch.tensor([0, 1, 2, 3])
    found = editing.compare_control(model, real, labels=labels, seed=5, sampler="ddim", steps=4)
    assert found.kind == "canny" and found.controls.shape == (4, 1, 8, 8)
    assert torch.equal(found.controls, canny_edges(real))  # the run's own kind, from the real images
    with_controls = model.sample(4, control=found.controls, labels=labels, seed=5, sampler="ddim", steps=4)
    assert torch.equal(found.samples, with_controls)
    base_samples = base.sample(4, labels=labels, seed=5, sampler="ddim", steps=4)
    assert torch.allclose(found.uncontrolled, base_samples, atol=1e-5)  # without control: the base model
    levels = found.adherence()
    assert set(levels) == {"controlled", "chance", "ceiling"} and levels["ceiling"].mean == 1.0
    assert editing.compare_control(model, real, labels=labels, uncontrolled=False).adherence() is None


def test_compare_control_refuses_a_model_without_a_branch(control_base):
    real = load_dataset("digits", split="test").batch(torch.arange(2))
    with pytest.raises(ValueError, match=r"compare_control needs a ControlNet run"):
        editing.compare_control(load(control_base), real)

"""The poster's default texts say what a run trained: a model from scratch, on latents, or a ControlNet."""

from ddpm.viz.poster_text import RunFacts, default_texts

FACTS = dict(data="mnist", schedule="linear", num_steps=1000, parameterization="eps", model="a U-Net",
             train_steps=500, batch_size=64, final_loss=0.03)  # fmt: skip


def first_line(**extra) -> str:
    return default_texts(RunFacts(**FACTS, **extra), {}, None).summary[0]


def test_a_pixel_run_is_trained_from_scratch():
    assert first_line() == "• DDPM trained from scratch on mnist: 500 steps of batch 64, a U-Net denoiser"


def test_a_latent_run_says_it_diffused_latents():
    assert "on mnist on an autoencoder's latents: 500 steps" in first_line(latent=True)


def test_a_control_run_names_its_signal_and_the_frozen_base():
    line = first_line(control="canny")
    assert line.startswith("• ControlNet (canny control) on a frozen base, mnist: 500 steps of batch 64")
    assert "from scratch" not in line

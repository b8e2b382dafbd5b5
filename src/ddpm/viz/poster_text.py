"""The words on a poster: Algorithms 1 and 2 as the paper prints them, and texts drawn from the run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ddpm.viz.run_files import RunInfo

# Ho, Jain, Abbeel 2020, Algorithms 1 and 2 in matplotlib mathtext. One level of scripts at most (scripts
# are drawn at 70 %), and roots as a "√" glyph under an overline: mathtext's \sqrt shrinks its sign to
# the radicand, below the poster's smallest text size.
ALGORITHM_1 = (
    "Algorithm 1  Training",
    (
        "repeat",
        r"$x_0 \sim q(x_0)$,   $t \sim \mathrm{Uniform}(\{1, \ldots, T\})$,"
        r"   $\epsilon \sim \mathcal{N}(0, I)$",
        r"gradient step on  $\nabla_\theta \, \| \epsilon - \epsilon_\theta(√\overline{\bar\alpha_t}\, x_0"
        r" + √\overline{1 - \bar\alpha_t}\, \epsilon,\; t) \|^2$",
        "until converged",
    ),
)
ALGORITHM_2 = (
    "Algorithm 2  Sampling",
    (
        r"$x_T \sim \mathcal{N}(0, I)$",
        r"for $t = T, \ldots, 1$:   $z \sim \mathcal{N}(0, I)$ if $t > 1$, else $z = 0$",
        r"$x_{t-1} = \dfrac{1}{√\overline{\alpha_t}} \left( x_t - "
        r"\dfrac{1 - \alpha_t}{√\overline{1 - \bar\alpha_t}}\, \epsilon_\theta(x_t, t) \right) + \sigma_t z$",
        r"return $x_0$",
    ),
)
TARGETS = {"eps": "the noise ε", "x0": "the clean image x₀", "v": "the velocity v = √ᾱₜ ε − √(1−ᾱₜ) x₀"}
SHORT_TARGETS = {"eps": "noise", "x0": "clean image", "v": "velocity"}
MODELS = {"unet": "a U-Net", "mlp": "an MLP"}
SUMMARY_METRICS = 3  # metrics quoted in the summary box


@dataclass(frozen=True)
class PosterText:
    """Texts a user may write; each one left None is drawn from the run."""

    problem: str | None = None
    method: str | None = None
    conclusion: str | None = None
    summary: tuple[str, ...] | None = None  # bullet points of contributions and results
    samples_caption: str | None = None  # under the sample grid; say which sampler drew it


@dataclass(frozen=True)
class RunFacts:
    """What the texts say about a run, with defaults for anything its config lacks."""

    data: str
    schedule: str
    num_steps: int
    parameterization: str
    model: str
    train_steps: int | None
    batch_size: int | None
    final_loss: float | None
    control: str | None = None  # a control run's signal (canny, …): a ControlNet trained a branch only
    control_mode: str = "controlnet"  # or concat: a U-Net trained from scratch on [x_t, control]
    latent: bool = False  # diffusion on an autoencoder's latents

    @classmethod
    def of(cls, run: RunInfo) -> RunFacts:
        losses = [r["loss"] for r in run.log if isinstance(r.get("loss"), (int, float))]
        steps = run.setting("steps", None, ("run", "train"))
        if steps is None and run.log:
            steps = max(int(r.get("step", 0)) for r in run.log)
        return cls(
            data=str(run.setting("spec", run.run_dir.name, ("data",))),
            schedule=str(run.setting("schedule", "linear", ("diffusion",))),
            num_steps=int(run.setting("num_steps", 1000, ("diffusion",))),
            parameterization=str(run.setting("parameterization", "eps", ("diffusion",))),
            model=MODELS.get(str(run.setting("kind", "unet", ("model",))), "a network"),
            train_steps=steps,
            batch_size=run.setting("batch_size", None, ("run", "train")),
            final_loss=_smoothed_last(losses),
            control=run.setting("kind", None, ("control",)),
            control_mode=str(run.setting("mode", "controlnet", ("control",))),
            latent=bool(run.setting("autoencoder", "", ("latent",))),
        )


def _what_was_trained(facts: RunFacts, amount: str) -> str:
    """The summary's first line: a ControlNet run trained a branch beside a frozen base, not a model."""
    if facts.control and facts.control_mode == "concat":
        return f"• DDPM from scratch on {facts.data}, {facts.control} controls in its input: {amount}"
    if facts.control:
        return f"• ControlNet ({facts.control} control) on a frozen base, {facts.data}: {amount}"
    space = " on an autoencoder's latents" if facts.latent else ""
    return f"• DDPM trained from scratch on {facts.data}{space}: {amount}, {facts.model} denoiser"


def _smoothed_last(losses: list[float], decay: float = 0.98) -> float | None:
    """Bias-corrected EMA of the losses at the end: the value the loss curve's smoothed line ends on."""
    if not losses:
        return None
    acc = weight = 0.0
    for v in losses:
        acc, weight = decay * acc + (1 - decay) * v, decay * weight + (1 - decay)
    return acc / weight


def format_value(value: float) -> str:
    """Four significant digits, integers as integers."""
    return f"{value:d}" if isinstance(value, int) else f"{value:.4g}"


def default_title(facts: RunFacts) -> str:
    return f"Denoising diffusion learns {facts.data}"


def default_texts(facts: RunFacts, metrics: Mapping[str, float], text: PosterText | None) -> PosterText:
    """Fill the texts ``text`` leaves None from the run's facts and metrics."""
    text = text or PosterText()
    problem = (
        f"Can a network learn to make new {facts.data} samples from examples alone? A diffusion model "
        "learns to undo a fixed process that turns data into Gaussian noise, one small step at a time; "
        "generating is then denoising, repeated T times."
    )
    method = (
        f"The forward process adds noise with a {facts.schedule} β schedule "
        f"over T = {facts.num_steps} steps: "
        f"xₜ = √ᾱₜ x₀ + √(1−ᾱₜ) ε. {facts.model[0].upper() + facts.model[1:]} learns to predict "
        f"{TARGETS.get(facts.parameterization, facts.parameterization)} from (xₜ, t) (Algorithm 1); "
        "sampling runs the chain backwards from pure noise (Algorithm 2). The loss is the mean squared error "
        f"between the true and the predicted {SHORT_TARGETS.get(facts.parameterization, 'target')} at a "
        f"random step t{' (L_simple, eq. 14)' if facts.parameterization == 'eps' else ''}."
    )
    conclusion = (
        f"A plain noise-prediction loss is enough to learn {facts.data}: Algorithm 2 turns Gaussian noise "
        "into samples. Along the reverse strip the prediction x̂₀ settles long before xₜ does: large t "
        "decide the coarse shape, small t the details (Ho et al., Fig. 6). The same network also serves "
        "faster samplers such as DDIM, which take far fewer steps."
    )
    trained = f"{facts.train_steps} steps" if facts.train_steps else "training"
    batch = f" of batch {facts.batch_size}" if facts.batch_size else ""
    summary = [_what_was_trained(facts, f"{trained}{batch}")]
    if facts.final_loss is not None:
        summary.append(f"• Final training loss {facts.final_loss:.4g} (smoothed)")
    summary += [f"• {name} = {format_value(v)}" for name, v in list(metrics.items())[:SUMMARY_METRICS]]
    return PosterText(
        problem=text.problem or problem,
        method=text.method or method,
        conclusion=text.conclusion or conclusion,
        summary=text.summary or tuple(summary),
        samples_caption=text.samples_caption or "Samples of Algorithm 2.",
    )

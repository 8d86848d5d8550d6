"""The sampler registry: every sampler msdm knows, in one table (names, scheduler factory, default steps).

Every command's ``--sampler`` choices (:func:`sampler_choices`), every default step count (:func:`default_steps`),
:meth:`msdm.pipeline.MSDMPipeline.set_sampler`, exports and the U-Net module build schedulers from here. **A new
sampler is one :class:`Sampler` entry in** :data:`SAMPLERS` (or :func:`register_sampler` from user code).

Each factory takes the training noise schedule's config (:data:`msdm.diffusion.TRAIN_SCHEDULER_CONFIG`, or the config
saved in a pipeline folder) and returns a diffusers scheduler that shares it: the sampler changes how the reverse
process is solved, never which process the U-Net was trained on. (Prompt to Polyp §4.2.1 samples with DDIM, η = 1,
150 steps on ``linspace(0, 999, 150)``: the reference's ``denoise(use_ddim=True)``.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# diffusers (and torch) are imported by the factories, not here: every command's --sampler choices come from this
# table, and `msdm --help` must not wait seconds for them (issue 23: start-up within 3 s).
REFERENCE_STEPS = 150  # Prompt to Polyp §4.2.1: DDIM, 150 steps (= msdm.diffusion.REFERENCE_STEPS; a test checks it)


@dataclass(frozen=True)
class Sampler:
    """One sampler: ``build(config)`` makes its diffusers scheduler from a training schedule config."""

    name: str
    build: Callable[[dict], object]
    default_steps: int  # what `msdm generate`, exports and modules use when no step count is given
    help: str
    aliases: tuple[str, ...] = ()
    # recognises a scheduler built by `build` (several samplers may share a diffusers class)
    matches: Callable[[object], bool] = field(default=lambda scheduler: False)


def _ddim(config: dict):
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config({**config, "timestep_spacing": "linspace", "set_alpha_to_one": True})


def _dpm(config: dict):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(
        {**config, "algorithm_type": "dpmsolver++", "use_karras_sigmas": False, "solver_order": 2,
         "timestep_spacing": "linspace", "final_sigmas_type": "zero", "lower_order_final": True})


def _dpm_sde(config: dict):
    from diffusers import DPMSolverMultistepScheduler

    # Karras sigmas spend more steps at low noise: on the quickstart model 3.3x closer to DDIM-150 than linspace
    # sigmas at 10 steps, 1.4x at 20 (docs/benchmarks.md, Fast sampling). Not under zero terminal SNR: diffusers then
    # puts sigma_max at 4096 (ᾱ_T clamped to 2^-24) and Karras' rho = 7 spacing from there spends half the steps at
    # t ≥ 997, i.e. on pure noise (timesteps 999, 998, 998, 997, ...; repeated timesteps even crash the solver with
    # some beta ranges); linspace timesteps (999, 946, ...) are what Lin et al. 2024 sample a zero-SNR model with.
    karras = not config.get("rescale_betas_zero_snr", False)
    return DPMSolverMultistepScheduler.from_config(
        {**config, "algorithm_type": "sde-dpmsolver++", "solver_order": 2, "timestep_spacing": "linspace",
         "final_sigmas_type": "zero", "lower_order_final": True, "use_karras_sigmas": karras})


def _diffusers(name: str):
    import diffusers

    return getattr(diffusers, name)


def _is(cls_name: str, sde: bool | None = None):
    def matches(scheduler) -> bool:
        if type(scheduler).__name__ != cls_name:
            return False
        return sde is None or ("sde" in str(getattr(scheduler.config, "algorithm_type", ""))) == sde
    return matches


#: name → :class:`Sampler`, in the order commands list them.
SAMPLERS: dict[str, Sampler] = {s.name: s for s in (
    Sampler("ddim", _ddim, REFERENCE_STEPS, "DDIM, linspace timesteps: the reference sampler (pass eta=1.0)",
            matches=_is("DDIMScheduler")),
    Sampler("dpm++", _dpm, 20, "DPM-Solver++ (2M), deterministic (an ODE solver, like DDIM with eta = 0)",
            aliases=("dpmsolver++", "dpm"), matches=_is("DPMSolverMultistepScheduler", sde=False)),
    Sampler("dpm++sde", _dpm_sde, 20, "SDE-DPM-Solver++ (2M), stochastic like the reference's DDIM eta = 1: the fast "
            "sampler closest to DDIM-150's images (docs/benchmarks.md)", aliases=("sde-dpmsolver++",),
            matches=_is("DPMSolverMultistepScheduler", sde=True)),
    Sampler("ddpm", lambda c: _diffusers("DDPMScheduler").from_config({**c, "timestep_spacing": "linspace"}),
            REFERENCE_STEPS, "DDPM, ancestral", matches=_is("DDPMScheduler")),
    Sampler("euler", lambda c: _diffusers("EulerDiscreteScheduler").from_config({**c, "timestep_spacing": "linspace"}),
            REFERENCE_STEPS, "Euler discrete", matches=_is("EulerDiscreteScheduler")),
)}


def register_sampler(sampler: Sampler) -> None:
    """Add a sampler (user code); it then shows in every command's choices and in :func:`make_sampler`."""
    SAMPLERS[sampler.name] = sampler


def sampler_choices() -> list[str]:
    """The names commands accept for ``--sampler``."""
    return list(SAMPLERS)


def get_sampler(name: str) -> Sampler:
    for s in SAMPLERS.values():
        if name == s.name or name in s.aliases:
            return s
    raise ValueError(f"unknown sampler {name!r}; choose one of {tuple(SAMPLERS)}")


def make_sampler(name: str, config: dict | None = None):
    """A diffusers scheduler for sampler ``name`` that shares the training noise schedule ``config``."""
    from msdm.diffusion import TRAIN_SCHEDULER_CONFIG

    config = dict(config or TRAIN_SCHEDULER_CONFIG)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    return get_sampler(name).build(config)


def sampler_name(scheduler) -> str:
    """The registry name of a scheduler (its class name when no entry built it)."""
    for s in SAMPLERS.values():
        if s.matches(scheduler):
            return s.name
    return type(scheduler).__name__


def default_steps(sampler: str | object) -> int:
    """The default sampling steps of a sampler (a name or a scheduler): 150 for DDIM as the reference, 20 for the
    DPM-Solver++ family."""
    name = sampler if isinstance(sampler, str) else sampler_name(sampler)
    try:
        return get_sampler(name).default_steps
    except ValueError:
        return REFERENCE_STEPS

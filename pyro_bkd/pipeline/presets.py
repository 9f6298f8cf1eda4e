"""How long each stage trains or samples, and on what: the jobs' presets in one place.

- :data:`TEMPERATURE`, :data:`KD_ALPHA`, :data:`PRIOR_SCALE`: the BKD hyper-parameters the jobs
  use unless told otherwise (``tau = 4``, KD weight ``alpha = 0.9``, i.e.
  ``lam = alpha tau^2 / (1 - alpha) = 144``, and the ``Normal(0, 1)`` weight prior).
- :class:`MethodBudget`: the one budget type, read by every method of ``fit``, ``compare``
  and ``demo``.
- :class:`Preset`: a data set's networks, teacher training, sizes and budget;
  :data:`PRESETS` are ``compare``'s, :data:`DEMO` the demo's (digits, more draws).
- :func:`quick` and :data:`DEMO_QUICK`: the ``--quick`` versions of ``compare``'s presets and
  of the demo's (seconds; the numbers mean nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

TEMPERATURE = 4.0
KD_ALPHA = 0.9
PRIOR_SCALE = 1.0


@dataclass(frozen=True)
class MethodBudget:
    """How much each method samples or trains.

    ``num_samples`` is the number of kept draws per chain (guide draws for SVI, dropout masks
    for ``mc-dropout``) and ``ensemble_size`` the members of ``ensemble``. ``warmup``,
    ``thin`` (``None``: the method's defaults in :func:`pyro_bkd.sample`), ``chains``,
    ``batch_size`` (minibatch of the stochastic-gradient chains and of training; HMC always
    uses the full data) and ``step_size`` (``None``: adapted in warm-up) apply to the Markov
    chains; ``svi_steps`` and ``lr`` to SVI; ``kd_epochs``, ``batch_size`` and ``lr`` to KD
    training (the student alone and by KD, ``mc-dropout`` and each ``ensemble`` member);
    ``dropout_rate`` is ``p`` of MC dropout.
    """

    num_samples: int = 200
    warmup: int | None = None
    thin: int | None = None
    chains: int = 4
    batch_size: int = 128
    step_size: float | None = None
    svi_steps: int = 2000
    lr: float = 3e-3
    kd_epochs: int = 30
    dropout_rate: float = 0.2
    ensemble_size: int = 5


@dataclass(frozen=True)
class Preset:
    """Architectures, sizes and budget of one data set (CPU-sized).

    ``teacher``/``student``: names of :func:`~pyro_bkd.pipeline.common.build_student`;
    ``teacher_epochs``/``teacher_lr``: its maximum-likelihood training (SGD with momentum, a
    cosine schedule); ``num_train``/``num_test``: a stratified subset of the train split / the
    first test inputs (``None``: all); ``standardize``: per-channel standardisation.
    """

    teacher: str
    student: str
    teacher_epochs: int
    teacher_lr: float
    budget: MethodBudget = field(default_factory=MethodBudget)
    num_train: int | None = None
    num_test: int | None = None
    standardize: bool = False


PRESETS: dict[str, Preset] = {
    "digits": Preset(
        teacher="mlp:256,256",
        student="mlp:32",
        teacher_epochs=40,
        teacher_lr=0.05,
        budget=MethodBudget(num_samples=200, chains=4, svi_steps=1500, kd_epochs=60),
    ),
    "mnist": Preset(
        teacher="mlp:256,256",
        student="mlp:32",
        teacher_epochs=10,
        teacher_lr=0.05,
        num_train=10_000,
        budget=MethodBudget(
            num_samples=50, warmup=800, thin=8, chains=4, svi_steps=1500, kd_epochs=20
        ),
    ),
    "fashion-mnist": Preset(
        teacher="small_cnn:16",
        student="small_cnn:4",
        teacher_epochs=8,
        teacher_lr=0.05,
        num_train=10_000,
        num_test=2_000,
        budget=MethodBudget(
            num_samples=25, warmup=300, thin=4, chains=4, svi_steps=800, kd_epochs=8
        ),
    ),
    "cifar10-subset": Preset(
        teacher="resnet8",
        student="small_cnn:8",
        teacher_epochs=15,
        teacher_lr=0.05,
        standardize=True,
        budget=MethodBudget(
            num_samples=25, warmup=300, thin=4, chains=4, svi_steps=600, kd_epochs=15
        ),
    ),
}
#: The demo: ``compare``'s digits preset with 600 draws per chain (4-5 minutes on two CPU
#: cores), so that its verdict is at least "borderline": R-hat < 1.05 on 98.5 / 96.7 / 98.0% of
#: the entries, max 1.09 / 1.15 / 1.12 at seeds 0 / 1 / 2; with compare's 200 draws, 81% at
#: seed 0 (``pyro-bkd demo --seed S``, measured on this project's 2-core CPU).
DEMO = replace(PRESETS["digits"], budget=replace(PRESETS["digits"].budget, num_samples=600))

#: ``--quick`` budget of ``compare``: seconds per method.
QUICK_BUDGET = MethodBudget(
    num_samples=6,
    warmup=10,
    thin=1,
    chains=2,
    svi_steps=20,
    kd_epochs=1,
    batch_size=64,
    ensemble_size=3,
)
#: ``demo --quick``: one teacher epoch, the whole training set, the first 60 test inputs and 4
#: chains of 8 draws (so the verdict has chains to compare).
DEMO_QUICK = replace(
    DEMO,
    teacher_epochs=1,
    num_test=60,
    budget=MethodBudget(num_samples=8, warmup=20, thin=1, chains=4, svi_steps=20, kd_epochs=1),
)


def quick(preset: Preset) -> Preset:
    """``compare --quick``: ``preset`` with one teacher epoch, :data:`QUICK_BUDGET` and the
    data cut to 256 training and 64 test inputs."""
    return replace(preset, teacher_epochs=1, budget=QUICK_BUDGET, num_train=256, num_test=64)

"""The jobs behind the ``pyro-bkd`` command: ``demo``, ``fit``, ``teacher`` and ``compare``.

:mod:`pyro_bkd.cli` parses the arguments and reports errors; this module does the work and
never prints (progress goes to tqdm bars, stage messages to a ``log`` callable).

Every job checks its options (against :data:`~pyro_bkd.pipeline.common.LIMITS`, with the
student's size and the draw buffers estimated before allocating them) and inputs before any
expensive work and raises :class:`~pyro_bkd.InputError` with a message naming the flag, array
or file (OS errors on the user's paths propagate as they are). A diverged computation or NaN
predictions raise ``FloatingPointError``. Output files are written into a staging folder beside
``--out`` and moved into place when all are complete, with ``manifest.json`` (the run and each
file's SHA-256) last: a failed run leaves no file, and staging folders of killed runs are
removed by the next run (:func:`pyro_bkd._atomic.staged_output`).

- :func:`run_demo`: ``compare``'s stages on digits (an MLP teacher trained by maximum
  likelihood, a small student trained alone and by KD, the MAP of :class:`~pyro_bkd.BKDModel`,
  BKD by the default sampler from the KD student), then the noise study; metrics, plots,
  ``posterior.nc`` and an HTML/Markdown report.
- :func:`run_fit`: bring your own teacher logits in an ``.npz`` file (:func:`load_fit_data`),
  any student (:func:`build_student`), one inference method (:data:`METHODS`, the names of the
  method registry :data:`REGISTRY` of :class:`MethodSpec`).
- :func:`run_teacher`: train an MLL or MCMI teacher on a bundled or local data set and save it
  with its logits (an ``.npz`` that ``fit`` reads directly).
- :func:`run_compare`: one teacher, every inference method of :data:`COMPARE_METHODS` on one
  data set, a comparison table and one ``posterior.nc`` per method.

``compare`` and ``demo`` are compositions of the stages of :mod:`~pyro_bkd.pipeline.stages`
(``load_data``, ``obtain_teacher``, ``run_stages``: teacher logits, ``train_students``,
``run_methods``); every preset and budget is in :mod:`~pyro_bkd.pipeline.presets`.
"""

from pyro_bkd.pipeline.common import build_student, resolve_device
from pyro_bkd.pipeline.compare import (
    COMPARE_DATASETS,
    COMPARE_METHODS,
    DEFAULT_METHODS,
    CompareOptions,
    run_compare,
)
from pyro_bkd.pipeline.demo import DEMO_METHODS, DemoOptions, run_demo
from pyro_bkd.pipeline.fit import FitData, FitOptions, load_fit_data, run_fit
from pyro_bkd.pipeline.methods import METHODS, REGISTRY, MethodSpec
from pyro_bkd.pipeline.presets import DEMO, PRESETS, MethodBudget, Preset, quick
from pyro_bkd.pipeline.teacher import (
    TEACHER_DATASETS,
    TeacherOptions,
    load_teacher,
    run_teacher,
    save_teacher,
)

__all__ = [
    "COMPARE_DATASETS",
    "COMPARE_METHODS",
    "DEFAULT_METHODS",
    "DEMO",
    "DEMO_METHODS",
    "METHODS",
    "PRESETS",
    "REGISTRY",
    "TEACHER_DATASETS",
    "CompareOptions",
    "DemoOptions",
    "FitData",
    "FitOptions",
    "MethodBudget",
    "MethodSpec",
    "Preset",
    "TeacherOptions",
    "build_student",
    "load_fit_data",
    "load_teacher",
    "quick",
    "resolve_device",
    "run_compare",
    "run_demo",
    "run_fit",
    "run_teacher",
    "save_teacher",
]

"""The expert evaluation kit (Prompt to Polyp §5.1.1–5.1.2): build a blinded study, rate it in a browser, report.

* :mod:`msdm.annotate.study` — ``msdm annotate build``: generated folders + real images + prompts → a study folder
  with a per-prompt random model → letter mapping sealed in a key file the page never serves;
* :mod:`msdm.annotate.store` — the SQLite store every answer is written to the moment it is given;
* :mod:`msdm.annotate.server` — ``msdm annotate serve``: the rating page (standard library HTTP server);
* :mod:`msdm.annotate.agreement` — Krippendorff's α (nominal, ordinal, interval, ratio);
* :mod:`msdm.annotate.report` — ``msdm annotate report``: unblind, aspect scores, ranks vs automatic metrics,
  inter-rater agreement, a Markdown summary and figures.

Nothing here imports torch at module import time; only the report's automatic metrics need it.
"""

"""The comparison suite: a resumable teacher x budget x seed runner (``runner``), tidy Parquet
records (``records``), t-interval statistics (``stats``), tables (``tables``), seaborn figures
(``plots``), ``report.md`` (``report``) and the ``l2t`` command line (``cli``).

Builds on students, envs and teachers; nothing imports analysis.
"""

"""Reproduce the paper's experiments and the image experiment: ``ocdl reproduce paper|highacc|seed --out DIR``.

    experiments  the experiment list: problem files of the catalogue, the --quick variant
    runner       runs experiments on a Dask cluster (local by default), caches finished ones
    figures      the paper's multi-panel figures from the run directories
    summary      summary.md / summary.json: one row per experiment

Layout of DIR::

    <group>/<data>-<variant>/   one run directory per experiment (ocdl.rundir) + done.json
    figures/*.png, *.pdf        the paper's figures
    summary.md, summary.json
"""

from ocdl.reproduce.experiments import Experiment, quick, select

__all__ = ["Experiment", "quick", "select"]

"""nbval's comparison with the tolerances notebook cells declare (``saliency_lib.outputs``).

``pytest --nbval`` compares every output of a re-executed cell with the stored one exactly. A cell that prints a
statistic over generated images declares in its metadata (``"reproduce": {"atol", "rtol", "why"}``) how far its
numbers may move on another CPU. Before nbval compares such a cell, this hook writes each fresh number that lies
within the tolerance of the stored one as the stored one is; the text around the numbers, and any number beyond the
tolerance, still go through nbval's exact comparison and its report. Cells without the metadata are untouched.
"""

from __future__ import annotations

from saliency_lib.outputs import Tolerance, snap_outputs


def pytest_configure(config):
    if not (getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False)):
        return
    from nbval.plugin import IPyNbCell   # installed with the test requirements; only loaded for --nbval runs

    if getattr(IPyNbCell.compare_outputs, "within_tolerance", False):
        return
    exact = IPyNbCell.compare_outputs

    def compare_outputs(self, test, ref, skip_compare=None):
        tol = Tolerance.of_cell(self.cell, where=f"{self.path.name} cell {self.cell_num}")
        return exact(self, snap_outputs(test, ref, tol), ref, skip_compare)

    compare_outputs.within_tolerance = True
    IPyNbCell.compare_outputs = compare_outputs

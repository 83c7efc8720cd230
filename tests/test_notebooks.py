"""Every notebook runs from a clean kernel and reproduces its stored outputs (saliency_lib.outputs):
exactly, or to within the tolerance a cell declares (and explains) in its metadata. Minutes per notebook:
scripts/test.sh runs these after the unit tests (``-m notebooks``)."""

import pytest

from saliency_lib import suite

pytestmark = pytest.mark.notebooks


@pytest.mark.parametrize("path", suite.discover(), ids=lambda p: p.stem)
def test_notebook_reproduces_its_stored_outputs(path):
    result, mismatches = suite.check_outputs(path)
    assert not mismatches, (f"{path.name}: {len(mismatches)} outputs differ from the stored ones "
                            f"(run in {result.seconds:.0f} s)\n" + "\n".join(str(m) for m in mismatches))

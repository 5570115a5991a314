"""Verify your own module: hand minibam a PyTorch module, get a verdict.

    from minibam import verify
    report = verify.bam(MyBAM(64))
    assert report.passed, report

``verify.bam`` (`minibam.verify.bam`) checks a BAM against every known variant
(``verify.VARIANTS``) and says which it is, or the closest and where it first departs.
``verify.cbam`` (`minibam.verify.cbam`) does the same for CBAM against the released
code and the known port bugs (``verify.CBAM_VARIANTS``).
The generic machinery (copy, randomise, run, compare, report) is
`minibam.verify.harness` and `minibam.verify.report`. PyTorch is imported only
when a check runs; ``import minibam.verify`` does not import it. See docs/verify.md.
"""

from __future__ import annotations

from minibam.verify.bam import bam, default_shapes
from minibam.verify.bam_variants import VARIANTS
from minibam.verify.cbam import VARIANTS as CBAM_VARIANTS
from minibam.verify.cbam import cbam
from minibam.verify.report import Report

__all__ = ["CBAM_VARIANTS", "VARIANTS", "Report", "bam", "cbam", "default_shapes"]

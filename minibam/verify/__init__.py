"""Verify your own module: hand minibam a PyTorch module, get a verdict.

    from minibam import verify
    report = verify.bam(MyBAM(64))
    assert report.passed, report

``verify.bam`` (`minibam.verify.bam`) reads a BAM's structure from its layers, builds
minibam's ``nn.BAM`` of that structure with the module's weights, and judges it on two
counts: does it compute what its structure says (``report.passed``), and how does that
structure differ from the paper and the released code (``report.deviations``); it names
the matching variant (``verify.VARIANTS``), or the closest and where the module first
departs. ``verify.cbam`` (`minibam.verify.cbam`) does the same for CBAM, and names the
known port bugs (``verify.CBAM_VARIANTS``). The one check both use is
`minibam.verify.check`; running and comparing is `minibam.verify.harness`, the report
`minibam.verify.report`. PyTorch is imported only
when a check runs; ``import minibam.verify`` does not import it. See docs/verify.md.
"""

from __future__ import annotations

from minibam.verify.bam import bam, default_shapes
from minibam.verify.bam_variants import VARIANTS
from minibam.verify.cbam import VARIANTS as CBAM_VARIANTS
from minibam.verify.cbam import cbam
from minibam.verify.report import Report

__all__ = ["CBAM_VARIANTS", "VARIANTS", "Report", "bam", "cbam", "default_shapes"]

"""The ``[baselines]`` table: one sub-table per baseline with settings of its own
(``[baselines.simgcl]``, ``--set baselines.simgcl.weight=0.2``).

Each baseline's defaults come from its paper or its authors' released configs (see its
module); its ``GRID`` is the small grid the comparison bench chooses from on validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmhni_local.baselines.bod import BODSettings
from llmhni_local.baselines.dns import DNSSettings
from llmhni_local.baselines.rlmrec import RLMRecConSettings, RLMRecGenSettings
from llmhni_local.baselines.simgcl import SimGCLSettings
from llmhni_local.baselines.wbpr import WBPRSettings
from llmhni_local.baselines.xsimgcl import XSimGCLSettings


@dataclass(frozen=True)
class BaselineSettings:
    """Settings of the baselines that have any (BPR, T-CE, R-CE and SGL read ``[train]``)."""

    wbpr: WBPRSettings = field(default_factory=WBPRSettings)
    dns: DNSSettings = field(default_factory=DNSSettings)
    bod: BODSettings = field(default_factory=BODSettings)
    simgcl: SimGCLSettings = field(default_factory=SimGCLSettings)
    xsimgcl: XSimGCLSettings = field(default_factory=XSimGCLSettings)
    rlmrec_con: RLMRecConSettings = field(default_factory=RLMRecConSettings)
    rlmrec_gen: RLMRecGenSettings = field(default_factory=RLMRecGenSettings)

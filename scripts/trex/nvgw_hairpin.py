"""TRex STL profile: nvgw benchmark 'hairpin' workload (see nvgw_trex.py).

    trex-console> start -f nvgw_hairpin.py -t records=1000000,streams=16,size=64 -m 10mpps
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nvgw_trex import NvgwProfile  # noqa: E402


class NvgwHairpin(NvgwProfile):
    kind = "hairpin"


def register():
    return NvgwHairpin()
